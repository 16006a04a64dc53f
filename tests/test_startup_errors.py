"""A start that cannot succeed is ONE line on stderr naming the key, path or port, exit code 2,
no traceback and nothing else (docs/PROTOCOL.md section 6): `arbiter serve` as a subprocess,
with the ports it wants occupied by this test."""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def serve(tmp_path: Path, toml: str, verb: tuple[str, ...] = ("serve",)) -> tuple[int, str, str]:
    """`arbiter <verb> --config` on `toml` (plus a store in tmp_path): (exit code, out, err)."""
    config = tmp_path / "arbiter.toml"
    config.write_text(toml + f'\n[store]\npath = "{tmp_path / "a.db"}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "arbiter.cli", *verb, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return proc.returncode, proc.stdout, proc.stderr


LOOPBACK = '[http]\nhost = "127.0.0.1"\nport = 0\n[media]\nlisten = "127.0.0.1"\nport = 0\n'


@pytest.fixture
def tcp_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that another program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def udp_port() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that another program holds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_tcp_port_in_use(tmp_path: Path, tcp_port: int) -> None:
    toml = f'[http]\nhost = "127.0.0.1"\nport = {tcp_port}\n[workers]\nlocal = 0\n'
    assert serve(tmp_path, toml) == (
        2,
        "",
        f"arbiter: http.port: TCP port {tcp_port} on 127.0.0.1 is already in use "
        "(another server running?)\n",
    )


def test_udp_port_in_use(tmp_path: Path, udp_port: int) -> None:
    toml = '[http]\nhost = "127.0.0.1"\nport = 0\n[media]\nlisten = "127.0.0.1"\n'
    toml += f"port = {udp_port}\n[workers]\nlocal = 0\n"
    assert serve(tmp_path, toml) == (
        2,
        "",
        f"arbiter: media.port: UDP port {udp_port} on 127.0.0.1 is already in use "
        "(another server running?)\n",
    )


def test_udp_port_of_the_second_local_worker_in_use(tmp_path: Path, udp_port: int) -> None:
    # Worker i takes media.port + i: the gateway checks them all before it starts any.
    toml = '[http]\nhost = "127.0.0.1"\nport = 0\n[media]\nlisten = "127.0.0.1"\n'
    toml += f"port = {udp_port - 1}\n[workers]\nlocal = 2\n"
    assert serve(tmp_path, toml) == (
        2,
        "",
        f"arbiter: media.port: UDP port {udp_port} on 127.0.0.1 is already in use "
        "(another server running?)\n",
    )


def test_sfu_worker_udp_port_in_use(tmp_path: Path, udp_port: int) -> None:
    toml = f'[media]\nlisten = "127.0.0.1"\nport = {udp_port}\n[workers]\ntoken = "t"\n'
    code, out, err = serve(tmp_path, toml, ("sfu", "--gateway", "ws://127.0.0.1:9/ws"))
    assert (code, out, err) == (
        2,
        "",
        f"arbiter sfu: media.port: UDP port {udp_port} on 127.0.0.1 is already in use "
        "(another server running?)\n",
    )


def test_address_not_of_this_host(tmp_path: Path) -> None:
    toml = '[http]\nhost = "192.0.2.77"\nport = 0\n[workers]\nlocal = 0\n'
    assert serve(tmp_path, toml) == (
        2,
        "",
        "arbiter: http.host: 192.0.2.77 is not an address of this host\n",
    )


def _pem_pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def tls_toml(cert: Path | str, key: Path | str) -> str:
    return (
        f'[http]\nhost = "127.0.0.1"\nport = 0\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        '[media]\nlisten = "127.0.0.1"\nport = 0\n[workers]\nlocal = 0\n'
    )


def test_tls_files(tmp_path: Path) -> None:
    cert, key = _pem_pair(tmp_path, "a")
    other_cert, other_key = _pem_pair(tmp_path, "b")
    missing = tmp_path / "missing.pem"
    error = "arbiter: configuration error: "
    cases = [
        (tls_toml(missing, key), f"http.tls_cert: no such file: {missing}"),
        (tls_toml(cert, missing), f"http.tls_key: no such file: {missing}"),
        # A directory stands for any file that cannot be read (the tests may run as root).
        (tls_toml(tmp_path, key), f"http.tls_cert: cannot read {tmp_path}: Is a directory"),
        (tls_toml(key, key), f"http.tls_cert: no PEM certificate in {key}"),
        (tls_toml(cert, cert), f"http.tls_key: no PEM private key in {cert}"),
        (tls_toml(cert, other_key),
         f"http.tls_key: {other_key} is not the key of the certificate in {cert}"),
        (tls_toml(cert, ""), "http.tls_key: not set, but http.tls_cert is: set both or neither"),
        (tls_toml("", key), "http.tls_cert: not set, but http.tls_key is: set both or neither"),
    ]  # fmt: skip
    for toml, line in cases:
        assert serve(tmp_path, toml) == (2, "", error + line + "\n"), line
    assert other_cert.exists()


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        ("[http]\nport = 70000", "http.port: expected 0-65535, got 70000"),
        ("[http]\nport = -1", "http.port: expected 0-65535, got -1"),
        ("[media]\nport = 65536", "media.port: expected 0-65535, got 65536"),
        ('[http]\nhost = "not a host"', "http.host: not an IP address or host name: 'not a host'"),
        ('[media]\nlisten = "eth0"', "media.listen: not an IP address: 'eth0'"),
        ('[media]\nannounced_ip = ["example.org"]',
         "media.announced_ip: not an IP address: 'example.org'"),
        ('[ice]\nservers = ["foo://bar"]',
         "ice.servers: expected a stun:, stuns:, turn: or turns: URL "
         "(scheme:host[:port][?transport=udp|tcp]), got 'foo://bar'"),
        ('[log]\nformat = "xml"', "log.format: expected text or json, got 'xml'"),
        ("[log]\naccess = 1", "log.access: expected true or false, got 1"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line(tmp_path: Path, toml: str, line: str) -> None:
    assert serve(tmp_path, toml) == (2, "", f"arbiter: configuration error: {line}\n")


def test_too_many_workers_for_the_port_range(tmp_path: Path) -> None:
    toml = '[http]\nhost = "127.0.0.1"\nport = 0\n[media]\nlisten = "127.0.0.1"\n'
    toml += "port = 65535\n[workers]\nlocal = 2\n"
    assert serve(tmp_path, toml) == (
        2,
        "",
        "arbiter: media.port: 65535 + 2 workers is past 65535\n",
    )


def test_unopenable_store(tmp_path: Path) -> None:
    config = tmp_path / "arbiter.toml"
    (tmp_path / "a-file").write_text("not a directory")
    where = tmp_path / "a-file" / "a.db"
    config.write_text(
        LOOPBACK + f'[workers]\nlocal = 0\n[store]\npath = "{where}"\n', encoding="utf-8"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith(f"arbiter: store.path: cannot open {where}: "), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
