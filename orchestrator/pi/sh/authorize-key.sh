#!/bin/sh
# piorch bootstrap step "authorize-key": let the laptop's SSH key log in to this account.
#
#   sh authorize-key.sh 'ssh-ed25519 AAAAC3Nza... piorch@laptop'
#
# Adds the key to ~/.ssh/authorized_keys unless that key is already there (whatever its comment or
# options), so a second run changes nothing. Prints one line for piorch:
#   piorch-step authorize-key done|already|failed DETAIL
set -u
step=authorize-key
say() { echo "piorch-step $step $1 $2"; }

key_line=${1:-}
# Exactly "TYPE BASE64 [COMMENT]" on one line: anything else could slip options such as
# command="..." into authorized_keys, or break the file.
case "$key_line" in
    *"
"*) say failed "the key must be one line"; exit 2 ;;
esac
set -f  # the words below must not be glob-expanded
# shellcheck disable=SC2086  # splitting the line into its words is the point
set -- $key_line
set +f
kind=${1:-}
blob=${2:-}
case "$kind" in
    ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) ;;
    sk-ssh-ed25519@openssh.com|sk-ecdsa-sha2-nistp256@openssh.com) ;;
    *) say failed "not a public key line (type '$kind')"; exit 2 ;;
esac
case "$blob" in
    ""|*[!A-Za-z0-9+/=]*) say failed "not a public key line (bad key data)"; exit 2 ;;
esac

dir=$HOME/.ssh
file=$dir/authorized_keys
# sshd ignores keys in a file or folder others can write to (StrictModes): keep both private.
umask 077
if ! mkdir -p "$dir" || ! chmod 700 "$dir"; then
    say failed "cannot create $dir"; exit 1
fi

# The key data as a whole field of some line: options before it and comments after it do not matter.
has_key() {
    [ -f "$file" ] && awk -v blob="$blob" '{ for (i = 1; i <= NF; i++) if ($i == blob) found = 1 } END { exit !found }' "$file"
}

if has_key; then
    say already "$kind key in ~/.ssh/authorized_keys"
    exit 0
fi
# A file whose last line has no newline would glue our key onto it.
if [ -s "$file" ] && [ -n "$(tail -c 1 "$file")" ]; then
    echo >> "$file"
fi
if ! printf '%s\n' "$key_line" >> "$file" || ! chmod 600 "$file"; then
    say failed "cannot write $file"; exit 1
fi
if has_key; then
    say done "$kind key added to ~/.ssh/authorized_keys"
else
    say failed "the key is not in $file after writing it"; exit 1
fi
