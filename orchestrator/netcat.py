"""netcat flavours and their command lines (pure).

Two flavours live on Debian-based systems and they disagree on the basics: OpenBSD netcat listens with
`nc -l PORT` and closes on end of input with `-N`; traditional netcat listens with `nc -l -p PORT` (its
`nc -l PORT` silently picks a random port) and closes with `-q 0`. Without the close flag the sender keeps
the connection open after the camera exits and the recording never ends.
"""

from __future__ import annotations

import enum


class NetcatFlavour(str, enum.Enum):
    OPENBSD = "openbsd"
    TRADITIONAL = "traditional"
    UNKNOWN = "unknown"


def parse_nc_flavour(help_text: str) -> NetcatFlavour:
    """Recognise the flavour from what `nc -h` prints (both flavours print help to stderr)."""
    for line in help_text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("OpenBSD netcat"):
            return NetcatFlavour.OPENBSD
        if stripped.startswith("[v1.10"):
            return NetcatFlavour.TRADITIONAL
    return NetcatFlavour.UNKNOWN


def build_nc_send_argv(flavour: NetcatFlavour, host: str, port: int, nc: str = "nc") -> list[str]:
    """Sender on the Pi: connect, copy stdin, close the connection as soon as stdin ends.

    -v: without it OpenBSD nc says nothing when the connection is refused, and piorch could only blame
    the camera, whose pipe broke. Its success line goes to stderr, which piorch keeps but does not show.
    -n: numeric only. With -v, traditional netcat looks the peer's address up in DNS before connecting
    (`nc.traditional -h`: "-n numeric-only IP addresses, no DNS"), and on a cable-only Pi whose resolver is
    unreachable every connection (every snapshot) would first wait for the resolver to time out. OpenBSD
    netcat takes -n too (nc_openbsd(1): "Do not perform domain name resolution"). `host` is always an
    address here (--laptop-ip is checked as one; otherwise it is this end of the SSH connection).
    """
    if flavour is NetcatFlavour.OPENBSD:
        return [nc, "-v", "-n", "-N", host, str(port)]
    if flavour is NetcatFlavour.TRADITIONAL:
        return [nc, "-v", "-n", "-q", "0", host, str(port)]
    raise ValueError(f"no sender command for netcat flavour {flavour.value}")


def build_nc_listen_argv(flavour: NetcatFlavour, port: int, bind: str | None = None, nc: str = "nc") -> list[str]:
    """Listener on the laptop: accept one connection and copy it to stdout (-n: no DNS lookups)."""
    if flavour is NetcatFlavour.OPENBSD:
        return [nc, "-n", "-l", *([bind] if bind else []), str(port)]
    if flavour is NetcatFlavour.TRADITIONAL:
        return [nc, "-n", "-l", "-p", str(port), *(["-s", bind] if bind else [])]
    raise ValueError(f"no listener command for netcat flavour {flavour.value}")


def parse_nc_failure(stderr: str) -> str | None:
    """Why the Pi's nc could not reach the laptop, from either flavour's message, else None.

    OpenBSD: `nc: connect to 192.168.50.1 port 10401 (tcp) failed: Connection refused`;
    traditional: `(UNKNOWN) [192.168.50.1] 10401 (?) : Connection refused`.
    """
    for reason in ("Connection refused", "Connection timed out", "No route to host", "Network is unreachable"):
        if reason.lower() in stderr.lower():
            return reason.lower()
    return None
