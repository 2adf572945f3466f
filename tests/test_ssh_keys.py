"""Key files read once a process (orchestrator/pi/keys.py): every try of a file as one key type gives what
paramiko's own try gives, the second time without reading the file; a try that paramiko would answer
differently next time (a passphrase needed, no file) is made again; a changed key or certificate is read
again. Real keys made by ssh-keygen, every type OpenSSH makes."""

from __future__ import annotations

import functools
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
import pytest

from orchestrator.pi.keys import KeptKeys, kept_keys_client
from tests.system_tools import require_tool

CLASSES = (paramiko.RSAKey, paramiko.ECDSAKey, paramiko.Ed25519Key)  # SSHClient._auth's order


def keygen(path: Path, kind: str, *extra: str, passphrase: str = "") -> Path:
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", kind, "-N", passphrase, "-C", "piorch-test",
                    "-f", str(path), *extra], check=True, capture_output=True)
    return path


def sign(ca: Path, public: Path, serial: int) -> None:
    subprocess.run([require_tool("ssh-keygen"), "-q", "-s", str(ca), "-I", f"test-{serial}", "-n", "pi",
                    "-z", str(serial), str(public)], check=True, capture_output=True)


def outcome(read: Callable[[], Any]) -> tuple[object, ...]:
    """What a try gave, comparable across tries: the key (and its certificate), or the error's type and words."""
    try:
        key = read()
    except Exception as exc:  # compared, whatever it is
        return (type(exc), exc.args)
    blob = key.public_blob
    return ("key", key.get_name(), key.get_base64(), None if blob is None else (blob.key_type, blob.key_blob))


class Counted:
    """paramiko's own try of one file as one type, counting how often it runs."""

    def __init__(self, path: Path, klass: type, password: str | None = None) -> None:
        self.calls = 0
        self._read = functools.partial(klass.from_private_key_file, str(path), password)

    def __call__(self) -> Any:
        self.calls += 1
        return self._read()


def quiet_client() -> Any:
    """The client piorch logs in with; paramiko's try logs through the transport, which a test has not."""

    class Quiet(kept_keys_client()):  # type: ignore[misc]
        def _log(self, level: int, message: str) -> None:
            pass

    return Quiet()


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    files = {
        "ed25519": keygen(folder / "id_ed25519", "ed25519"),
        "ecdsa": keygen(folder / "id_ecdsa", "ecdsa"),
        "rsa": keygen(folder / "id_rsa", "rsa", "-b", "2048"),
        "rsa-pem": keygen(folder / "id_rsa_pem", "rsa", "-b", "2048", "-m", "PEM"),
        "encrypted": keygen(folder / "id_encrypted", "ed25519", passphrase="a passphrase"),
        "not-a-key": folder / "notes.txt",
        "missing": folder / "id_missing",
    }
    files["not-a-key"].write_text("this is not a key\n")
    return files


@pytest.mark.parametrize("name", ["ed25519", "ecdsa", "rsa", "rsa-pem", "encrypted", "not-a-key", "missing"])
def test_each_try_gives_what_paramikos_own_gives(key_files: dict[str, Path], name: str) -> None:
    path = key_files[name]
    kept = KeptKeys()
    for klass in CLASSES:
        expected = outcome(Counted(path, klass))
        read = Counted(path, klass)
        first = outcome(functools.partial(kept.load, str(path), klass, None, read))
        second = outcome(functools.partial(kept.load, str(path), klass, None, read))
        assert first == expected and second == expected, (name, klass.__name__)
        # A key, or "not a key of this type", is read once; "passphrase needed" and "no such file" each time,
        # as paramiko would answer them.
        once = expected[0] == "key" or expected[0] is paramiko.SSHException
        assert read.calls == (1 if once else 2), (name, klass.__name__, expected)


def test_the_second_login_of_a_process_does_not_read_the_key_file_again(key_files: dict[str, Path]) -> None:
    # The same Ed25519 file, as 8 Pis' logins ask for it: three types tried, in paramiko's order, each time.
    path, kept = key_files["ed25519"], KeptKeys()
    reads = {klass: Counted(path, klass) for klass in CLASSES}
    for _ in range(8):
        outcomes = [outcome(functools.partial(kept.load, str(path), klass, None, reads[klass])) for klass in CLASSES]
        assert [item[0] for item in outcomes] == [paramiko.SSHException, paramiko.SSHException, "key"]
    assert [reads[klass].calls for klass in CLASSES] == [1, 1, 1]


def test_logins_at_the_same_moment_read_the_file_once(key_files: dict[str, Path]) -> None:
    path, kept = key_files["ed25519"], KeptKeys()
    read = Counted(path, paramiko.Ed25519Key)
    start = threading.Barrier(8)

    def slow_read() -> Any:
        time.sleep(0.05)  # long enough that every thread asks while the first read is still under way
        return read()

    def login() -> None:
        start.wait(5)
        got.append(kept.load(str(path), paramiko.Ed25519Key, None, slow_read))

    got: list[Any] = []
    threads = [threading.Thread(target=login) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert read.calls == 1 and len(got) == 8 and all(key is got[0] for key in got)


def test_a_read_that_hangs_holds_up_only_its_own_file(key_files: dict[str, Path]) -> None:
    # A key on a stuck mount: the logins with another key file go on (they wait only for their own file).
    kept, release, reading = KeptKeys(), threading.Event(), threading.Event()
    stuck_path, other_path = key_files["ecdsa"], key_files["ed25519"]

    def stuck_read() -> Any:
        reading.set()
        assert release.wait(30), "never released"
        return paramiko.ECDSAKey.from_private_key_file(str(stuck_path))

    stuck = threading.Thread(target=kept.load, args=(str(stuck_path), paramiko.ECDSAKey, None, stuck_read))
    stuck.start()
    try:
        assert reading.wait(10)
        other = kept.load(str(other_path), paramiko.Ed25519Key, None, Counted(other_path, paramiko.Ed25519Key))
        assert other.get_name() == "ssh-ed25519" and not release.is_set() and stuck.is_alive()
    finally:
        release.set()
        stuck.join(10)


def test_a_changed_key_file_is_read_again(tmp_path: Path) -> None:
    path = keygen(tmp_path / "id_ed25519", "ed25519")
    kept = KeptKeys()
    first_read = Counted(path, paramiko.Ed25519Key)
    before = outcome(functools.partial(kept.load, str(path), paramiko.Ed25519Key, None, first_read))
    other = keygen(tmp_path / "other", "ed25519")
    os.replace(other, path)
    read = Counted(path, paramiko.Ed25519Key)
    after = outcome(functools.partial(kept.load, str(path), paramiko.Ed25519Key, None, read))
    assert read.calls == 1 and after != before
    assert after == outcome(Counted(path, paramiko.Ed25519Key))


def test_a_try_with_a_passphrase_is_never_kept(key_files: dict[str, Path]) -> None:
    path, kept = key_files["encrypted"], KeptKeys()
    read = Counted(path, paramiko.Ed25519Key, "a passphrase")
    for _ in range(2):
        got = outcome(functools.partial(kept.load, str(path), paramiko.Ed25519Key, "a passphrase", read))
        assert got[0] == "key"
    assert read.calls == 2


def test_the_client_keeps_the_certificate_with_its_key_and_reads_a_new_one(tmp_path: Path) -> None:
    ca = keygen(tmp_path / "ca", "ed25519")
    key = keygen(tmp_path / "id_ed25519", "ed25519")
    sign(ca, key.with_name("id_ed25519.pub"), serial=1)
    cert = key.with_name("id_ed25519-cert.pub")
    client = quiet_client()
    first = client._key_from_filepath(str(key), paramiko.Ed25519Key, None)
    assert first.public_blob is not None and first.public_blob.key_type.endswith("-cert-v01@openssh.com")
    # Kept: the same object, certificate and all, the second time; and by the certificate's own name too.
    assert client._key_from_filepath(str(key), paramiko.Ed25519Key, None) is first
    by_cert = client._key_from_filepath(str(cert), paramiko.Ed25519Key, None)
    assert by_cert.public_blob.key_blob == first.public_blob.key_blob
    # A certificate renewed beside the key is read with it.
    sign(ca, key.with_name("id_ed25519.pub"), serial=2)
    os.utime(cert, ns=(1, 1))  # rewritten in place, same size: its times differ even on a coarse clock
    renewed = client._key_from_filepath(str(key), paramiko.Ed25519Key, None)
    assert renewed is not first and renewed.public_blob.key_blob != first.public_blob.key_blob
    assert renewed.public_blob.key_blob == paramiko.PublicBlob.from_file(str(cert)).key_blob
    with pytest.raises(paramiko.SSHException):
        client._key_from_filepath(str(key), paramiko.RSAKey, None)


def test_one_login_stats_each_key_file_once_for_all_its_tries(key_files: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """paramiko's _auth tries a file as RSA, ECDSA, then Ed25519: the key and its certificate are looked at
    once for the three (each stat a let-go of the GIL while a fleet's Pis log in); the next login looks again."""
    import orchestrator.pi.keys as keys

    stats: list[str] = []
    real_stat = keys._stat_of
    monkeypatch.setattr(keys, "_stat_of", lambda path: stats.append(path) or real_stat(path))
    path = str(key_files["ed25519"])

    def tries(self: Any, *args: Any, **kwargs: Any) -> list[tuple[object, ...]]:  # paramiko's order, as _auth tries
        return [outcome(functools.partial(self._key_from_filepath, path, klass, None)) for klass in CLASSES]

    monkeypatch.setattr(paramiko.SSHClient, "_auth", tries)
    client = quiet_client()
    first = client._auth("pi", None, None, [path], False, False, None)
    assert stats == [path, path + "-cert.pub"]
    assert first == [outcome(Counted(Path(path), klass)) for klass in CLASSES]
    assert client._seen is None, "outside a login every call looks afresh"
    client._key_from_filepath(path, paramiko.Ed25519Key, None)
    client._auth("pi", None, None, [path], False, False, None)
    assert stats == [path, path + "-cert.pub"] * 3
