#!/bin/sh
# piorch bootstrap step "netcat": make sure `nc` is OpenBSD or traditional netcat (piorch speaks both);
# otherwise install netcat-openbsd with apt-get, through sudo when not root. Running it again on a Pi
# that has netcat changes nothing. Prints one line for piorch:
#   piorch-step netcat done|already|failed DETAIL
# apt-get's own output goes to stderr, where piorch keeps it to explain a failure.
set -u
step=netcat
say() { echo "piorch-step $step $1 $2"; }

flavour() {
    if ! command -v nc >/dev/null 2>&1; then
        echo none
        return
    fi
    # Both flavours print their help to stderr and exit non-zero; the first lines name them.
    help=$(nc -h 2>&1 | head -n 3)
    case "$help" in
        *"OpenBSD netcat"*) echo openbsd ;;
        *"[v1.10"*) echo traditional ;;  # quoted: [ is literal here, not a pattern bracket
        *) echo unknown ;;
    esac
}

found=$(flavour)
case "$found" in
    openbsd|traditional) say already "$found netcat at $(command -v nc)"; exit 0 ;;
esac

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    # -n: never prompt. Raspberry Pi OS gives its first user password-less sudo; others must do it by hand.
    as_root="sudo -n"
else
    say failed "installing needs root and sudo wants a password: run 'sudo apt-get install netcat-openbsd' on the Pi"
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say failed "no apt-get: install OpenBSD netcat with this system's package manager"
    exit 1
fi

apt_get() {
    # $as_root is unquoted on purpose: empty for root, two words ("sudo -n") otherwise.
    # shellcheck disable=SC2086
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get "$@" 1>&2
}

# A freshly written card has empty package lists: fetch them once, then try again.
if ! apt_get install -y -q netcat-openbsd; then
    if ! apt_get update -q || ! apt_get install -y -q netcat-openbsd; then
        say failed "apt-get could not install netcat-openbsd: the Pi needs internet access for that once (Wi-Fi or a router), or install the .deb by hand"
        exit 1
    fi
fi

found=$(flavour)
case "$found" in
    openbsd|traditional) say done "installed netcat-openbsd ($found netcat at $(command -v nc))" ;;
    *) say failed "netcat-openbsd was installed but nc is still $found (check PATH and update-alternatives)"; exit 1 ;;
esac
