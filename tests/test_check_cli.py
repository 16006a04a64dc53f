"""`arbiter check`, `arbiter --version` and `arbiter rooms` without a server, as an operator runs
them (subprocesses; docs/PROTOCOL.md section 6)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import arbiter
from arbiter.config import MASK, Config, load_config


def arbiter_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "arbiter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr


SECRETS = """
[http]
host = "127.0.0.1"
[ice]
servers = ["stun:stun.example.org", "turn:turn.example.org:3478?transport=udp"]
turn_secret = "coturn-shared-secret"
[workers]
token = "worker-token-value"
"""


def test_check_prints_every_key_with_secrets_masked(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(SECRETS, encoding="utf-8")
    code, out, err = arbiter_cli("check", "--config", str(path), env={"ARBITER_HTTP_PORT": "9000"})
    assert (code, err) == (0, "")
    assert "coturn-shared-secret" not in out and "worker-token-value" not in out
    lines = out.splitlines()
    assert lines[:2] == [
        f"# arbiter check: the effective configuration of {path}, environment applied,",
        "# secrets masked",
    ]
    assert 'turn_secret = "********"' in lines and 'token = "********"' in lines
    assert "port = 9000" in lines  # the environment override, in [http]
    # It is TOML: every section and key, defaults filled in, equal to the loaded config but
    # for the masked secrets.
    printed = tomllib.loads(out)
    config = load_config(path, env={"ARBITER_HTTP_PORT": "9000"})
    expected = dataclasses.asdict(config)
    expected["ice"]["turn_secret"] = MASK
    expected["workers"]["token"] = MASK
    assert printed == expected
    assert list(printed) == [f.name for f in dataclasses.fields(Config)]


def test_check_leaves_empty_secrets_empty_and_reads_defaults() -> None:
    # On loopback: the default 0.0.0.0 would warn about this host's private address.
    code, out, err = arbiter_cli("check", env={"ARBITER_HTTP_HOST": "127.0.0.1"})
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == (
        "# arbiter check: the effective configuration of (no file: defaults), environment applied,"
    )
    printed = tomllib.loads(out)
    # Empty secrets print as "".
    assert printed == dataclasses.asdict(Config().replace(http={"host": "127.0.0.1"}))


def test_check_warns_about_a_private_announced_address(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(
        '[http]\nhost = "0.0.0.0"\n[media]\nannounced_ip = ["10.1.2.3"]\n[workers]\nlocal = 2\n'
    )
    code, _, err = arbiter_cli("check", "--config", str(path))
    assert (code, err) == (
        0,
        "arbiter: warning: media.announced_ip: 10.1.2.3 (private) is not reachable from other "
        "networks but http.host 0.0.0.0 accepts clients from any network: their browsers' media "
        "will not arrive unless they relay through TURN; announce this host's public address "
        "(behind 1:1 NAT the public IP, with udp 40000-40001 forwarded here)\n",
    )
    # Served to its own network only (a private http.host, no proxy): no warning.
    path.write_text('[http]\nhost = "10.1.2.3"\n[media]\nannounced_ip = ["10.1.2.3"]\n')
    assert arbiter_cli("check", "--config", str(path))[2] == ""
    # ... unless a proxy forwards clients from anywhere.
    path.write_text(
        '[http]\nhost = "127.0.0.1"\n[media]\nannounced_ip = ["127.0.0.1"]\n'
        '[limits]\ntrusted_proxies = ["127.0.0.1"]\n[workers]\nlocal = 0\n'
    )
    assert arbiter_cli("check", "--config", str(path))[2] == (
        "arbiter: warning: media.announced_ip: 127.0.0.1 (loopback) is not reachable from other "
        "networks but limits.trusted_proxies is set (a proxy forwards clients from anywhere): "
        "their browsers' media will not arrive unless they relay through TURN; announce this "
        "host's public address (behind 1:1 NAT the public IP, with udp 40000 forwarded here)\n"
    )
    # A public announced address: nothing to say.
    path.write_text('[media]\nannounced_ip = ["8.8.8.8"]\n')
    assert arbiter_cli("check", "--config", str(path))[2] == ""


def test_check_refuses_a_bad_configuration_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[ice]\nservers = ["turn:turn.example.org:99999"]\n')
    assert arbiter_cli("check", "--config", str(path)) == (
        2,
        "",
        "arbiter: configuration error: ice.servers: port out of range (1-65535) in "
        "'turn:turn.example.org:99999'\n",
    )
    path.write_text('[http]\ntls_cert = "/nonexistent/cert.pem"\ntls_key = "/nonexistent/k"\n')
    assert arbiter_cli("check", "--config", str(path)) == (
        2,
        "",
        "arbiter: configuration error: http.tls_cert: no such file: /nonexistent/cert.pem\n",
    )


def test_version_is_the_package_metadata() -> None:
    version = importlib.metadata.version("arbiter")
    assert version == arbiter.__version__
    assert arbiter_cli("--version") == (0, f"arbiter {version}\n", "")


def test_rooms_says_the_server_is_not_reachable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on (bound, never listening)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        path = tmp_path / "a.toml"
        path.write_text(f"[http]\nport = {port}\n")
        code, out, err = arbiter_cli("rooms", "list", "--config", str(path))
    assert (code, out) == (1, "")
    assert err.startswith(f"arbiter rooms: server not reachable at http://127.0.0.1:{port} ("), err
    assert err.count("\n") == 1 and "Traceback" not in err
