"""The user's SSH key files, read once a process: every Pi of a fleet logs in with the same key.

paramiko's SSHClient reads a key file at every login and, not knowing its type, tries it as RSA, then ECDSA,
then Ed25519 (SSHClient._auth), each try a read of the file and a parse: an Ed25519 key, OpenSSH's default,
is read three times a login, ~0.1 ms of CPU alone and two to three times that while 8 Pis log in at once
(benchmarks/README.md, tenth round). Here each try of a file as one type is kept for the process: the key it
gave (with its certificate, as paramiko loads it), or the plain "not this type" error it raised, raised
again as a new exception of the same type and words. paramiko still decides the order and what to do with
each outcome, so the login tries exactly what it tried before.

Not kept: a try with a passphrase (piorch never passes one; nothing secret is held as a key of a table), an
encrypted key's "passphrase needed", a file that cannot be read. Those are tried again each time, as before.
A key file, or its `-cert.pub`, whose stat changed since is read again; a deleted one is not served.

What that changes besides: an unencrypted key stays in this process's memory once read (paramiko's own
objects, as while a connection is open), and paramiko's debug lines "Trying discovered key" and "Adding
public certificate" are logged for the first read only (piorch's CLI shows no paramiko log; the Python API
shows it only where the caller turned it on).
"""

from __future__ import annotations

import functools
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

CERT_SUFFIX = "-cert.pub"  # paramiko's and OpenSSH's name for a key's certificate beside it

# (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of the key file and of its certificate (None where there
# is none). The change time too: a key copied over the old one with its time kept (`cp -p`) still changes it.
_Stat = tuple[int, int, int, int, int]
_Signature = tuple[_Stat | None, _Stat | None]


def _stat_of(path: str) -> _Stat | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _key_paths(filename: str) -> tuple[str, str]:
    """The private key and its certificate, as paramiko names them: an identity given as its `-cert.pub`
    is that certificate's key."""
    if filename.endswith(CERT_SUFFIX):
        return filename[: -len(CERT_SUFFIX)], filename
    return filename, filename + CERT_SUFFIX


class KeptKeys:
    """What each (file, key type) try gave, for the process; `load` may be called by several Pis' threads
    at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # for _file_locks
        # One lock a key file, held while it is read: a fleet's logins reach the same file at the same moment,
        # and the first read then serves them all, while a file on a stuck mount holds up only its own logins.
        self._file_locks: dict[str, threading.Lock] = {}
        # (file, type) -> (signature, the key) or (signature, the error's words)
        self._kept: dict[tuple[str, type], tuple[_Signature, Any, tuple[object, ...] | None]] = {}

    def load(self, filename: str, klass: type, password: str | None, read: Any,
             seen: dict[str, _Signature] | None = None) -> Any:
        """`read()` (paramiko's own try) unless the same try of the same unchanged file is kept. `seen`: the
        files' stats already taken in this login (one login tries a file as each type in turn)."""
        from paramiko.ssh_exception import SSHException

        if password is not None:
            return read()
        key_path, cert_path = _key_paths(filename)
        signature = seen.get(filename) if seen is not None else None
        if signature is None:
            signature = (_stat_of(key_path), _stat_of(cert_path))
            if seen is not None:
                seen[filename] = signature
        if signature[0] is None:
            return read()  # no such file: paramiko says so, in its words
        with self._lock:
            file_lock = self._file_locks.setdefault(key_path, threading.Lock())
        # Every try of this file, kept or read, happens under its lock (its entries are no other lock's).
        with file_lock:
            kept = self._kept.get((filename, klass))
            if kept is not None and kept[0] == signature:
                _, key, words = kept
                if words is not None:
                    raise SSHException(*words)
                return key
            try:
                key = read()
            except SSHException as exc:
                # Only the plain "not a key of this type": a subclass (a passphrase needed) is tried again.
                if type(exc) is SSHException:
                    self._kept[(filename, klass)] = (signature, None, exc.args)
                raise
            self._kept[(filename, klass)] = (signature, key, None)
            return key


_KEYS = KeptKeys()


@functools.cache
def kept_keys_client() -> type[paramiko.SSHClient]:
    """paramiko's SSHClient whose key file tries are kept for the process (`KeptKeys`)."""
    import paramiko

    class KeptKeysClient(paramiko.SSHClient):
        # The key files' stats taken during one `_auth` (a login): it tries each file as RSA, ECDSA and
        # Ed25519 in turn, and each try would stat the key and its certificate again, each stat a let-go of
        # the GIL while a fleet's other Pis want it. Outside a login every call looks afresh.
        _seen: dict[str, _Signature] | None = None

        def _auth(self, *args: Any, **kwargs: Any) -> Any:
            self._seen = {}
            try:
                return super()._auth(*args, **kwargs)  # type: ignore[misc]
            finally:
                self._seen = None

        # paramiko's one place where SSHClient._auth reads a key file (identity files and look_for_keys alike),
        # since paramiko 2.x; a paramiko without it reads the files itself, as before. (Private, so the type
        # stubs do not list it.)
        def _key_from_filepath(self, filename: str, klass: type, password: str | None) -> Any:
            own = super()._key_from_filepath  # type: ignore[misc]
            return _KEYS.load(filename, klass, password, functools.partial(own, filename, klass, password), self._seen)

    return KeptKeysClient
