"""Configuration precedence (defaults < file < PIORCH_* < flags) and errors that name file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import KEYS, build_config_text, load_config, read_config_file
from orchestrator.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "configs" / "piorch.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_precedence_each_layer_wins_over_the_one_below(tmp_path: Path) -> None:
    path = write(tmp_path, 'pi = "file-pi"\nport = 2000\nbitrate = 9000000\nfps = 20\n')
    env = {"PIORCH_PORT": "3000", "PIORCH_BITRATE": "8000000"}
    config = load_config({"bitrate": 7_000_000, "pi": None}, path, env)
    assert config["fps"] == 20 and config.sources["fps"] == str(path)
    assert config["pi"] == "file-pi"  # flag given as None = not given
    assert config["port"] == 3000 and config.sources["port"] == "environment"
    assert config["bitrate"] == 7_000_000 and config.sources["bitrate"] == "flag"
    assert config["width"] == 1920 and config.sources["width"] == "default"


def test_user_file_found_through_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 4242\n")
    assert load_config({}, None, {"PIORCH_CONFIG": str(path)})["port"] == 4242
    assert load_config({}, None, {"PIORCH_CONFIG": str(tmp_path / "absent.toml")})["port"] == 10401


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("prot = 1\n", ["unknown key 'prot'", "known keys are"]),
        ("port = 70000\n", ["key 'port'", "between 1 and 65535"]),
        ('port = "ten"\n', ["key 'port'", "whole number"]),
        ("vflip = 3\n", ["key 'vflip'", "true or false"]),
        ('pi = "pi@host; rm -rf ~"\n', ["key 'pi'", "[user@]host[:port]"]),
        ('pi = "-oProxyCommand=evil"\n', ["key 'pi'"]),
        ('camera_tool = "raspistill"\n', ["key 'camera_tool'", "one of auto"]),
        ("width = 1921\n", ["key 'width'", "even"]),
        ('laptop_ip = "192.168.50.1; reboot"\n', ["key 'laptop_ip'", "IP address"]),
        ("port = \n", ["not valid TOML"]),
    ],
)
def test_bad_file_names_file_key_and_fix(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config({}, path, {})
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert caught.value.fix


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PIORCH_FPS"):
        load_config({}, None, {"PIORCH_FPS": "fast", "PIORCH_CONFIG": "/nonexistent"})


def test_bad_flag_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"--bitrate"):
        load_config({"bitrate": 5}, None, {"PIORCH_CONFIG": "/nonexistent"})


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, tmp_path / "nope.toml", {})


def test_example_config_documents_every_key_and_loads(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    for name in KEYS:
        assert f"\n# {name} = " in text or f"\n{name} = " in text, f"{name} undocumented in {EXAMPLE}"
    # Uncommented, the example must itself be a valid config file.
    uncommented = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# ") and " = " in line)
    assert read_config_file(write(tmp_path, uncommented)).keys() == KEYS.keys()


def test_build_config_text_replaces_in_place_and_keeps_comments() -> None:
    before = '# my Pi\npi = "old"\nport = 1\n'
    after = build_config_text(before, {"pi": "pi@192.168.50.2", "laptop_ip": "192.168.50.1"})
    assert after == '# my Pi\npi = "pi@192.168.50.2"\nport = 1\nlaptop_ip = "192.168.50.1"\n'
    assert build_config_text(after, {"pi": "pi@192.168.50.2"}) == after
    assert 'x = "a\\"b"' in build_config_text("", {"x": 'a"b'})


def test_pi_ports_parsed_and_checked(tmp_path: Path) -> None:
    from orchestrator.config import parse_pi_ports

    path = write(tmp_path, 'pis = ["cam1", "cam2"]\npi_ports = ["cam2=10450"]\n')
    config = load_config({}, path, {})
    assert parse_pi_ports(config["pi_ports"]) == {"cam2": 10450}
    bad = write(tmp_path, 'pi_ports = ["cam2:10450"]\n')
    with pytest.raises(ConfigError, match="not NAME=PORT"):
        load_config({}, bad, {})


def test_a_secret_others_can_read_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'pi = "cam1"\npassword = "hunter2"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="holds a secret") as caught:
        load_config({}, path, {})
    assert "hunter2" not in str(caught.value) and "chmod 600" in caught.value.fix
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="unknown key 'password'"):  # still not a piorch setting
        load_config({}, path, {})
