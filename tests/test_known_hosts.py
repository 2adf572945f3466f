"""known_hosts as piorch reads it (pi/hostkey.read_known_hosts): only the lines for the host asked for become
keys, and what they give is what paramiko's own HostKeys.load gives for that host."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import paramiko
import pytest

from orchestrator.errors import ConnectError
from orchestrator.pi.hostkey import read_known_hosts


def _public(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def _hashed(name: str, salt: bytes) -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


@pytest.fixture(scope="module")
def keys() -> dict[str, paramiko.PKey]:
    return {"ed1": _ed25519(), "ed2": _ed25519(), "ecdsa": paramiko.ECDSAKey.generate(),
            "rsa": paramiko.RSAKey.generate(1024)}


def _ed25519() -> paramiko.PKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    blob = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                 serialization.PublicFormat.OpenSSH)
    kind, data = blob.decode().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data))


def _as_seen(table: paramiko.HostKeys, name: str) -> dict[str, str] | None:
    entry = table.lookup(name)
    return None if entry is None else {kind: key.get_base64() for kind, key in entry.items()}


NAMES = ("pi.local", "[10.0.0.2]:2222", "10.0.0.2", "other", "[pi.local]:22", "nowhere", "|1|x|y")


def test_every_name_reads_as_paramiko_reads_the_whole_file(tmp_path: Path, keys: dict[str, paramiko.PKey]) -> None:
    salt = os.urandom(20)
    path = tmp_path / "known_hosts"
    path.write_text("\n".join([
        "# a comment",
        "",
        f"pi.local,10.0.0.2 {_public(keys['ed1'])}",
        f"{_hashed('[10.0.0.2]:2222', salt)} {_public(keys['ecdsa'])}",
        f"[10.0.0.2]:2222 {_public(keys['rsa'])}",
        f"pi.local {_public(keys['ed2'])}",  # a second key of the same type: the first one counts
        f"other\t{_public(keys['rsa'])} a comment after the key",
        "too-few-fields ssh-ed25519",
        f"other ssh-unknown-type {keys['rsa'].get_base64()}",
        f"@cert-authority *.local {_public(keys['ed1'])}",  # OpenSSH's; paramiko's own load raises on it
        f"  {_hashed('pi.local', os.urandom(20))} {_public(keys['ecdsa'])}  ",
        "|1|not-base64!|also-not ssh-ed25519 AAAA",
    ]) + "\n")
    readable = tmp_path / "readable"
    readable.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                                if not line.startswith("@")))
    whole = paramiko.HostKeys()
    whole.load(str(readable))
    for name in NAMES:
        assert _as_seen(read_known_hosts((path,), name), name) == _as_seen(whole, name), name


def test_a_name_in_several_files_is_read_from_each_in_order(tmp_path: Path, keys: dict[str, paramiko.PKey]) -> None:
    first, second, missing = tmp_path / "a", tmp_path / "b", tmp_path / "none"
    first.write_text(f"pi.local {_public(keys['ed1'])}\n")
    second.write_text(f"pi.local {_public(keys['ed2'])}\npi.local {_public(keys['ecdsa'])}\n")
    table = read_known_hosts((missing, first, second), "pi.local")
    assert _as_seen(table, "pi.local") == {"ssh-ed25519": keys["ed1"].get_base64(),
                                           "ecdsa-sha2-nistp256": keys["ecdsa"].get_base64()}


def test_the_table_given_keeps_its_own_keys_and_gains_the_files(tmp_path: Path,
                                                               keys: dict[str, paramiko.PKey]) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"pi.local {_public(keys['ed1'])}\n")
    table = paramiko.HostKeys()
    table.add("jump", keys["rsa"].get_name(), keys["rsa"])
    assert read_known_hosts((path,), "pi.local", table) is table
    assert _as_seen(table, "jump") == {"ssh-rsa": keys["rsa"].get_base64()}
    assert _as_seen(table, "pi.local") == {"ssh-ed25519": keys["ed1"].get_base64()}


def test_only_the_lines_for_the_name_become_keys(tmp_path: Path, keys: dict[str, paramiko.PKey],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "known_hosts"
    lines = [f"{_hashed(f'host{n}', os.urandom(20))} {_public(keys['rsa'])}" for n in range(50)]
    lines.insert(25, f"{_hashed('pi.local', os.urandom(20))} {_public(keys['ed1'])}")
    path.write_text("\n".join(lines) + "\n")
    made: list[str] = []
    original = paramiko.PKey.from_type_string

    def counting(kind: str, blob: bytes) -> paramiko.PKey:
        made.append(kind)
        return original(kind, blob)

    monkeypatch.setattr(paramiko.PKey, "from_type_string", staticmethod(counting))
    assert _as_seen(read_known_hosts((path,), "pi.local"), "pi.local") == {"ssh-ed25519": keys["ed1"].get_base64()}
    assert made == ["ssh-ed25519"]


def test_a_changed_file_is_read_again(tmp_path: Path, keys: dict[str, paramiko.PKey]) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"other {_public(keys['rsa'])}\n")
    assert read_known_hosts((path,), "pi.local").lookup("pi.local") is None
    with path.open("a") as handle:  # what `piorch trust` does: a line appended
        handle.write(f"pi.local {_public(keys['ed1'])}\n")
    assert _as_seen(read_known_hosts((path,), "pi.local"), "pi.local") == {"ssh-ed25519": keys["ed1"].get_base64()}
    path.write_text(f"pi.local {_public(keys['ed2'])}\n")  # rewritten (ssh-keygen -R, then a new key)
    assert _as_seen(read_known_hosts((path,), "pi.local"), "pi.local") == {"ssh-ed25519": keys["ed2"].get_base64()}


def test_a_bad_line_for_another_host_does_not_matter_and_one_for_this_host_is_named(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("other ssh-ed25519 QUJ\npi.local ssh-ed25519 QUJ\n")
    assert read_known_hosts((path,), "elsewhere").lookup("elsewhere") is None
    with pytest.raises(ConnectError) as caught:
        read_known_hosts((path,), "pi.local")
    assert "line 2" in caught.value.message and "ssh-keygen -R 'pi.local'" in caught.value.fix


def test_an_unreadable_file_is_one_error_with_the_fix(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "known_hosts"
    path.write_text("pi.local ssh-ed25519 AAAA\n")
    path.chmod(0)
    with pytest.raises(ConnectError) as caught:
        read_known_hosts((path,), "pi.local")
    assert str(path) in caught.value.message and "permissions" in caught.value.fix


def test_a_folder_or_a_file_on_the_way_is_no_known_hosts(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    assert read_known_hosts((tmp_path, tmp_path / "plain" / "known_hosts"), "pi.local").lookup("pi.local") is None


def test_hashed_names_match_one_host_after_another_and_only_with_openssh_salts(tmp_path: Path,
                                                                               keys: dict[str, paramiko.PKey]) -> None:
    # Each line keeps its salt's padded blocks after its first comparison: the next host must match as well.
    # A salt that is not 20 bytes names no host, as in OpenSSH (paramiko's own lookup fails an assertion).
    hosts = [f"pi{n}.local" for n in range(6)]
    lengths = (20, 1, 20, 64, 65, 20)
    path = tmp_path / "known_hosts"
    lines = [f"{_hashed(host, os.urandom(length))} {_public(keys['ed1'] if n % 2 else keys['ecdsa'])}\n"
             for n, (host, length) in enumerate(zip(hosts, lengths, strict=True))]
    path.write_text("".join(lines))
    openssh = tmp_path / "openssh_salts"
    openssh.write_text("".join(line for line, length in zip(lines, lengths, strict=True) if length == 20))
    whole = paramiko.HostKeys()
    whole.load(str(openssh))
    for name in [*hosts, "pi9.local", *reversed(hosts)]:
        assert _as_seen(read_known_hosts((path,), name), name) == _as_seen(whole, name), name
    assert [host for host in hosts if _as_seen(read_known_hosts((path,), host), host)] == \
        ["pi0.local", "pi2.local", "pi5.local"]


def test_a_line_with_a_plain_name_and_a_malformed_hashed_one_reads_for_the_plain_name(
        tmp_path: Path, keys: dict[str, paramiko.PKey]) -> None:
    # paramiko's lookup fails an assertion on a hashed name whose salt is not 20 bytes: such a name stays out
    # of the table, the line's plain name is still found.
    path = tmp_path / "known_hosts"
    path.write_text(f"pi.local,{_hashed('pi.local', os.urandom(5))} {_public(keys['ed1'])}\n")
    assert _as_seen(read_known_hosts((path,), "pi.local"), "pi.local") == {"ssh-ed25519": keys["ed1"].get_base64()}
    assert read_known_hosts((path,), "other").lookup("other") is None


def test_the_first_line_wins_whether_its_name_is_hashed_or_plain(tmp_path: Path,
                                                                 keys: dict[str, paramiko.PKey]) -> None:
    """Plain names are found by the index, hashed ones by trying each: the file's order still decides."""
    name = "[10.0.0.2]:2222"
    for first, second in (("ed1", "ed2"), ("ed2", "ed1")):
        for hashed_first in (True, False):
            one = _hashed(name, os.urandom(20)) if hashed_first else name
            two = name if hashed_first else _hashed(name, os.urandom(20))
            path = tmp_path / f"known_hosts_{first}_{hashed_first}"
            path.write_text(f"other {_public(keys['rsa'])}\n{one} {_public(keys[first])}\n"
                            f"{two},other2 {_public(keys[second])}\n")
            whole = paramiko.HostKeys(str(path))
            assert _as_seen(read_known_hosts((path,), name), name) == _as_seen(whole, name)
            assert _as_seen(read_known_hosts((path,), name), name) == {"ssh-ed25519": keys[first].get_base64()}


def test_the_index_names_the_lines_each_line_would_name_itself(keys: dict[str, paramiko.PKey]) -> None:
    """_KnownFile.naming (a dictionary for plain names, one loop for hashed ones) against each line's own
    names_host, on random files: plain, hashed and malformed hashed names, several names a line, marked
    lines, and asked names that are hashed strings themselves; each asked twice (the second host on a hashed
    name takes another way through the HMAC)."""
    import random

    from orchestrator.pi.hostkey import _KnownFile, _read_line

    chance = random.Random(14)
    hosts = ["pi.local", "[10.0.0.2]:2222", "10.0.0.2", "other", "[pi.local]:22"]
    hashed_strings = [_hashed(name, os.urandom(20)) for name in hosts]
    names = [*hosts, *hashed_strings, "|1|bad|salt", "|1|" + base64.b64encode(os.urandom(8)).decode() + "|x",
             "!other", "*.local"]
    for _ in range(60):
        texts = []
        for _ in range(chance.randint(1, 12)):
            own = [chance.choice(names) if chance.random() < 0.5 else _hashed(chance.choice(hosts), os.urandom(20))
                   for _ in range(chance.randint(1, 3))]
            marker = chance.choice(["", "", "", "@revoked ", "@cert-authority "])
            texts.append(f"{marker}{','.join(own)} {_public(keys['ed1'])}")
        lines = tuple(line for number, text in enumerate(texts, 1) if (line := _read_line(number, text)) is not None)
        indexed = _KnownFile(lines)
        for asked in [*hosts, *hashed_strings] * 2:
            assert indexed.naming(asked) == [line for line in lines if not line.marker and line.names_host(asked)]
        assert indexed.marked == tuple(line for line in lines if line.marker)
