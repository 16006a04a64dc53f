"""Typed config: defaults, TOML, unknown keys named, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def test_bundled_toml_equals_code_defaults() -> None:
    # Every key in arbiter.toml is documented with its default value.
    assert load_config(REPO / "arbiter.toml", env={}) == Config()


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[http]\nprot = 80\n")
    with pytest.raises(ConfigError, match="unknown key 'http.prot'"):
        load_config(path, env={})
    path.write_text("[htttp]\nport = 80\n")
    with pytest.raises(ConfigError, match=r"unknown section '\[htttp\]'"):
        load_config(path, env={})


def test_types_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[http]\nport = "80"\n')
    with pytest.raises(ConfigError, match="http.port: expected an integer"):
        load_config(path, env={})
    path.write_text('[media]\nannounced_ip = "1.2.3.4"\n')
    with pytest.raises(ConfigError, match="media.announced_ip: expected a list"):
        load_config(path, env={})
    path.write_text("[media]\nconsent_timeout = 5\n")
    assert load_config(path, env={}).media.consent_timeout == 5.0
    path.write_text("[http\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml", env={})


def test_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[http]\nport = 80\n")
    config = load_config(
        path,
        env={
            "ARBITER_HTTP_PORT": "9000",
            "ARBITER_MEDIA_ANNOUNCED_IP": "203.0.113.5, 198.51.100.7",
            "ARBITER_ROOMS_EMPTY_TIMEOUT": "60",
            "ARBITER_WORKERS_TOKEN": "abc",
            "ARBITER_UNRELATED": "ignored: not a config section",
        },
    )
    assert config.http.port == 9000
    assert config.media.announced_ip == ["203.0.113.5", "198.51.100.7"]
    assert config.rooms.empty_timeout == 60.0
    assert config.workers.token == "abc"
    with pytest.raises(ConfigError, match="unknown environment override 'ARBITER_HTTP_PROT'"):
        load_config(None, env={"ARBITER_HTTP_PROT": "1"})
    with pytest.raises(ConfigError, match="ARBITER_HTTP_PORT: cannot parse 'eighty'"):
        load_config(None, env={"ARBITER_HTTP_PORT": "eighty"})
