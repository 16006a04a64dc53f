"""Typed config: defaults, TOML, unknown keys named, environment overrides."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[http]\nallowed_origins = ["evil.example"]', "http.allowed_origins: expected"),
        ('[http]\nallowed_origins = ["https://a.example/path"]', "http.allowed_origins"),
        ('[http]\nmetrics_allow = ["not-an-address"]', "http.metrics_allow: not an address"),
        ('[limits]\ntrusted_proxies = ["10.0.0.0/33"]', "limits.trusted_proxies: not an"),
        ('[ice]\nservers = ["http://stun.example"]', "ice.servers: expected a stun:"),
        ("[ice]\nturn_ttl = 10", "ice.turn_ttl: expected 60-86400 seconds, got 10"),
        ("[limits]\nrooms_per_address = -1", "limits.rooms_per_address: must be >= 0"),
        ("[limits]\nidentify_timeout = 0", "limits.identify_timeout: expected 0-3600"),
        ("[limits]\nbody_timeout = 0", "limits.body_timeout: expected 0-3600"),
        ("[limits]\nchat_rows_per_room = 0", "limits.chat_rows_per_room: must be >= 1"),
        ("[limits]\nchat_burst = 0", "limits.chat_per_second and limits.chat_burst"),
        ("[limits]\nsend_queue = 0", "limits.send_queue: must be >= 1"),
        ("[media]\nport = 70000", "media.port: expected 0-65535, got 70000"),
        ("[rooms]\nmax_participants = 0", "rooms.max_participants: must be >= 1"),
        ("[rooms]\nunjoined_timeout = 0", "rooms.unjoined_timeout: must be > 0"),
        ('[ice]\nservers = ["turn:"]', "ice.servers: expected a stun:, stuns:, turn: or turns:"),
        ('[ice]\nservers = ["stun:host:0"]', "ice.servers: port out of range (1-65535) in"),
        ('[ice]\nservers = ["stun:h?transport=udp"]', "ice.servers: ?transport= is for turn:"),
        ('[ice]\nservers = ["turn:h?transport=sctp"]', "ice.servers: expected a stun:"),
        ('[ice]\nservers = ["turn:[not-v6]:3478"]', "ice.servers: expected a stun:"),
        ('[ice]\nservers = ["turns:[1::2::3]:443"]', "ice.servers: not an IP address: '1::2::3'"),
        ('[http]\nhost = "a b"', "http.host: not an IP address or host name: 'a b'"),
        ('[media]\nlisten = "localhost"', "media.listen: not an IP address: 'localhost'"),
        ('[media]\nannounced_ip = ["1.2.3"]', "media.announced_ip: not an IP address: '1.2.3'"),
        ('[log]\nlevel = "loud"', "log.level: expected one of debug, info, warning, error"),
        ('[log]\nformat = "xml"', "log.format: expected text or json, got 'xml'"),
        ('[http]\ntls_cert = "c.pem"', "http.tls_key: not set, but http.tls_cert is"),
    ],
)
def test_security_keys_are_checked(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, env={})


def test_good_ice_urls_and_log_overrides(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    servers = [
        "stun:stun.example.org",
        "stuns:stun.example.org:5349",
        "turn:192.0.2.1:3478?transport=udp",
        "turns:turn.example.org:443?transport=tcp",
        "turn:[2001:db8::1]:3478",
    ]
    path.write_text(f"[ice]\nservers = {servers!r}\n".replace("'", '"'))
    config = load_config(path, env={"ARBITER_LOG_FORMAT": "json", "ARBITER_LOG_ACCESS": "on"})
    assert config.ice.servers == servers
    assert (config.log.level, config.log.format, config.log.access) == ("info", "json", True)
