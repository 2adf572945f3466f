#!/bin/sh
# Run a command as on a machine where some Debian/Ubuntu packages are not installed, to see that the tests
# needing them are skipped (or fail under PIORCH_E2E_REQUIRED=1) rather than break:
#
#   sudo tests/without_packages.sh netcat-traditional -- .venv/bin/pytest -q tests/test_bootstrap.py
#
# Needs root. Nothing is uninstalled: in a private mount namespace (gone when the command ends, invisible to
# every other process) each program of those packages is covered by an empty non-executable file, so PATH
# lookups skip it and running it by its full path fails. A program reached through an alternatives link
# (/usr/bin/nc) is covered with its target, so `nc` is gone too when netcat-openbsd is.
set -eu
[ "$(id -u)" -eq 0 ] || { echo "without_packages.sh: needs root (a mount namespace)" >&2; exit 2; }
packages=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do packages="$packages $1"; shift; done
[ $# -gt 1 ] && [ -n "$packages" ] || { echo "usage: without_packages.sh PACKAGE... -- COMMAND..." >&2; exit 2; }
shift
for package in $packages; do
    dpkg -s "$package" >/dev/null 2>&1 || { echo "without_packages.sh: $package is not installed" >&2; exit 2; }
done
# The child shell gets the packages and the command as its arguments: nothing is pasted into its script.
# --propagation private: the covering mounts never reach the machine's own mount table.
exec unshare --mount --propagation private sh -c '
set -eu
blank=$(mktemp)
chmod 0644 "$blank"
packages=$1; shift
for package in $packages; do
    # Programs only: files in a bin or sbin folder that are executable (not folders, not man pages).
    dpkg -L "$package" | grep -E "/s?bin/[^/]+$" | while read -r path; do
        real=$(readlink -f "$path") || continue
        [ -f "$real" ] && [ -x "$real" ] || continue
        mount --bind "$blank" "$real"
        echo "without_packages.sh: hid $path ($package)" >&2
    done
done
exec "$@"
' without_packages "$packages" "$@"
