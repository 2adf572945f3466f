"""The smallest OpenBSD-netcat sender, for a demo on a laptop that has no nc installed.

Only what the simulated Pi's pipeline uses: `nc -h` (so the flavour probe finds "OpenBSD netcat") and
`nc [-v] [-n] -N HOST PORT` (copy stdin to the connection, then close it; the address is numeric anyway).
Anything else is refused.
"""

from __future__ import annotations

import socket
import sys

USAGE = "OpenBSD netcat (piorch simulator: sender only)\nusage: nc -N destination port\n"


def main(argv: list[str]) -> int:
    if argv in (["-h"], []):
        sys.stderr.write(USAGE)
        return 1  # like the real one: help goes to stderr with a failure status
    # -v: this sender has nothing extra to say; -n: it never looks a name up.
    while argv[:1] in (["-v"], ["-n"]):
        argv = argv[1:]
    if len(argv) != 3 or argv[0] != "-N":
        sys.stderr.write(f"nc (piorch simulator): unsupported arguments {argv}\n{USAGE}")
        return 1
    host, port = argv[1], int(argv[2])
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.settimeout(None)
        stdin = sys.stdin.buffer
        while chunk := stdin.read1(1 << 16):  # type: ignore[union-attr]
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)  # -N: tell the receiver the stream is complete
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
