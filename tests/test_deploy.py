"""The deployment kit in deploy/ checked by the tools that will run it.

- deploy/arbiter.service: `systemd-analyze verify` (skipped where systemd-analyze is missing) and
  `systemd-analyze security --offline` for its exposure score.
- deploy/arbiter.toml, arbiter.env and turnserver.conf agree: the TURN URLs Arbiter hands out
  name coturn's ports, the shared secret is the same placeholder, coturn may relay back to
  Arbiter's announced private address.
- deploy/turnserver.conf runs in Debian's coturn (addresses and ports moved to loopback): a TURN
  client with credentials from `arbiter.turn.turn_credentials` gets an allocation whose relayed
  address is the 1:1 NAT's public one, and a permission to a public peer and to Arbiter's
  address, while private, link-local (the cloud metadata service) and loopback peers get 403.
- deploy/Caddyfile runs in Debian's Caddy in front of a real Arbiter: the API and the WebSocket
  gateway pass, /metrics and /admin/ do not (Arbiter would serve them to the proxy's loopback
  address).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from aioice import stun
from aioice.turn import UDP_TRANSPORT, make_integrity_key

from arbiter.config import load_config
from arbiter.testing import make_config, running_server
from arbiter.testing.signaling import ws_client
from arbiter.turn import turn_credentials

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
TURNSERVER = Path("/usr/bin/turnserver")
CADDY = Path("/usr/bin/caddy")


def require(binary: Path, package: str) -> None:
    if not binary.exists():
        pytest.fail(
            f"{binary} is missing: scripts/test installs Debian's {package} "
            f"(or: apt-get install {package})",
            pytrace=False,
        )


def conf_entries(path: Path) -> list[tuple[str, str]]:
    """coturn's format: `key` or `key=value` per line, # comments; keys may repeat."""
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            entries.append((key, value))
    return entries


def env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both UDP and TCP on 127.0.0.1")


def wait_listening(port: int, proc: subprocess.Popen[bytes] | trio.Process, log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-3000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"not listening: {log.read_text()[-3000:]}"
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_systemd_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine (Debian: systemd)")
    text = (DEPLOY / "arbiter.service").read_text()
    service = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
    )
    assert service["ExecStart"] == (
        "/opt/arbiter/venv/bin/arbiter serve --config /etc/arbiter/arbiter.toml"
    )
    assert service["StateDirectory"] == "arbiter"
    assert service["Environment"] == "ARBITER_STORE_PATH=/var/lib/arbiter/arbiter.db"
    assert service["DynamicUser"] == "yes"
    assert service["RestartPreventExitStatus"] == "2"  # a start-up error: no restart loop
    # verify checks that ExecStart exists: point it at this checkout's arbiter.
    unit = tmp_path / "arbiter.service"
    arbiter = Path(sys.executable).parent / "arbiter"
    unit.write_text(text.replace("/opt/arbiter/venv/bin/arbiter", str(arbiter)))
    verify = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", "")
    security = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for arbiter\.service: (\d+\.\d+) (\w+)", security.stdout)
    assert m is not None, security.stdout + security.stderr
    # systemd's scale: 0 (sandboxed) to 10 (exposed); "OK" is below 2.
    assert (float(m.group(1)) < 2.0, m.group(2)) == (True, "OK"), m.group(0)


def test_deploy_configs_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = env_file(DEPLOY / "arbiter.env")
    assert secrets == {"ARBITER_ICE_TURN_SECRET": "CHANGE-ME"}
    monkeypatch.setenv("ARBITER_ICE_TURN_SECRET", secrets["ARBITER_ICE_TURN_SECRET"])
    config = load_config(str(DEPLOY / "arbiter.toml"))
    turn = conf_entries(DEPLOY / "turnserver.conf")
    keys = dict(turn)
    assert ("use-auth-secret", "") in turn
    assert keys["static-auth-secret"] == config.ice.turn_secret == "CHANGE-ME"
    assert "allow-loopback-peers" not in keys and "no-auth" not in keys
    host = keys["realm"]
    assert config.ice.servers == [
        f"turn:{host}:{keys['listening-port']}?transport=udp",
        f"turn:{host}:{keys['listening-port']}?transport=tcp",
        f"turns:{host}:{keys['tls-listening-port']}?transport=tcp",
    ]
    assert (keys["listening-port"], keys["tls-listening-port"]) == ("3478", "443")
    # 1:1 NAT: coturn's external-ip maps the TURN address; Arbiter announces its public address
    # and its private one, which coturn is allowed to relay to.
    assert keys["external-ip"] == f"203.0.113.11/{keys['listening-ip']}"
    assert config.media.announced_ip == ["203.0.113.10", keys["allowed-peer-ip"]]
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.limits.trusted_proxies == ["127.0.0.1"]
    assert config.store.path == "/var/lib/arbiter/arbiter.db"
    assert "reverse_proxy 127.0.0.1:8080\n" in (DEPLOY / "Caddyfile").read_text()


@pytest.fixture
def deploy_coturn(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """deploy/turnserver.conf on loopback: its 10.0.0.6 becomes 127.0.0.1, ports are free ones,
    the log a file. Arbiter's private address (allowed-peer-ip) stays 10.0.0.5: permissions
    need no traffic, and coturn refuses loopback peers even when allowed (allow-loopback-peers
    is a separate switch, for tests only)."""
    require(TURNSERVER, "coturn")
    cert, key = tmp_path / "turn.crt", tmp_path / "turn.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=turn.example.org", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    port, tls_port = free_port(), free_port()
    log = tmp_path / "turnserver.log"
    replaced = {
        "listening-ip": "127.0.0.1",
        "external-ip": "203.0.113.11/127.0.0.1",
        "listening-port": str(port),
        "tls-listening-port": str(tls_port),
        "static-auth-secret": "deploy-test-secret",
        "cert": str(cert),
        "pkey": str(key),
    }
    lines = []
    for name, value in conf_entries(DEPLOY / "turnserver.conf"):
        if name == "syslog":
            lines += [f"log-file={log}", "verbose"]
        elif name in replaced:
            lines.append(f"{name}={replaced.pop(name)}")
        else:
            lines.append(f"{name}={value}" if value else name)
    assert replaced == {}, replaced  # every key the test moves is in the deploy file
    lines += [f"pidfile={tmp_path / 'turnserver.pid'}", f"userdb={tmp_path / 'turndb'}"]
    conf = tmp_path / "turnserver.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [str(TURNSERVER), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(tls_port, proc, log)
        yield {"port": port, "tls_port": tls_port, "log": log, "secret": "deploy-test-secret"}
    finally:
        stop(proc)
    assert "Bad configuration format" not in log.read_text()


class TurnClient:
    """Just enough TURN (RFC 8656) over UDP for allocate and permissions, with REST-API
    credentials (long-term mechanism, RFC 8489 section 9.2)."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.username, self.password = username, password
        self.realm = self.nonce = ""

    def request(self, method: stun.Method, **attributes: Any) -> stun.Message:
        msg = stun.Message(message_method=method, message_class=stun.Class.REQUEST)
        msg.attributes.update(attributes)
        if self.nonce:
            msg.attributes.update(USERNAME=self.username, REALM=self.realm, NONCE=self.nonce)
            msg.add_message_integrity(make_integrity_key(self.username, self.realm, self.password))
        msg.add_fingerprint()
        self.sock.send(bytes(msg))
        return stun.parse_message(self.sock.recv(4096))

    def allocate(self) -> stun.Message:
        first = self.request(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": UDP_TRANSPORT})
        assert first.attributes["ERROR-CODE"][0] == 401, first  # the challenge
        self.realm, self.nonce = first.attributes["REALM"], first.attributes["NONCE"]
        return self.request(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": UDP_TRANSPORT})

    def permit(self, peer: str) -> int:
        """200 or the error code of a CreatePermission for `peer`."""
        reply = self.request(stun.Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": (peer, 0)})
        if reply.message_class == stun.Class.RESPONSE:
            return 200
        return int(reply.attributes["ERROR-CODE"][0])


def test_deploy_turnserver_conf_relays_only_where_it_should(
    deploy_coturn: dict[str, Any],
) -> None:
    username, password = turn_credentials(deploy_coturn["secret"], 600, time.time(), "deploy")
    client = TurnClient(deploy_coturn["port"], username, password)
    try:
        allocation = client.allocate()
        assert allocation.message_class == stun.Class.RESPONSE, allocation
        relayed_ip, relayed_port = allocation.attributes["XOR-RELAYED-ADDRESS"]
        # The public address of external-ip, on a port of min-port..max-port.
        assert relayed_ip == "203.0.113.11"
        assert 49152 <= relayed_port <= 65535
        peers = [
            "198.51.99.7",  # a public address
            "10.0.0.5",  # Arbiter's private address (allowed-peer-ip)
            "10.0.0.6",  # the TURN server's own
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",  # the cloud's metadata service
            "0.0.0.0",
            "224.0.0.1",
        ]
        assert {peer: client.permit(peer) for peer in peers} == {
            "198.51.99.7": 200,
            "10.0.0.5": 200,
            "10.0.0.6": 403,
            "127.0.0.1": 403,
            "10.1.2.3": 403,
            "172.16.0.1": 403,
            "192.168.1.1": 403,
            "100.64.0.1": 403,
            "169.254.169.254": 403,
            "0.0.0.0": 403,
            "224.0.0.1": 403,
        }
    finally:
        client.sock.close()
    # The wrong secret gets no allocation.
    other = TurnClient(deploy_coturn["port"], *turn_credentials("wrong", 600, time.time(), "x"))
    try:
        refused = other.allocate()
        assert refused.attributes["ERROR-CODE"][0] == 401, refused
    finally:
        other.sock.close()
    # TURN over TLS: a TLS 1.2+ handshake on the TLS port (TLS 1.0 and 1.1 are off).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", deploy_coturn["tls_port"]), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


async def test_deploy_caddyfile_proxies_the_api_and_websocket_only(tmp_path: Path) -> None:
    require(CADDY, "caddy")
    validate = await trio.run_process(
        [str(CADDY), "validate", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")},
    )
    assert (validate.returncode, validate.stdout.strip()) == (0, b"Valid configuration"), validate
    async with running_server(make_config(tmp_path)) as srv:
        port = free_port()
        arbiter_port = srv.url.rsplit(":", 1)[1]
        text = (DEPLOY / "Caddyfile").read_text()
        # Plain HTTP on a free loopback port (no ACME here) in place of the host name, the
        # test's Arbiter in place of 8080, and no admin API (it would want port 2019).
        for old, new in [
            ("meet.example.org {", f"http://127.0.0.1:{port} {{"),
            ("reverse_proxy 127.0.0.1:8080", f"reverse_proxy 127.0.0.1:{arbiter_port}"),
            ("\tdefault_bind", "\tadmin off\n\tdefault_bind"),
        ]:
            assert old in text, old
            text = text.replace(old, new)
        caddyfile = tmp_path / "Caddyfile"
        caddyfile.write_text(text)
        log = tmp_path / "caddy.log"
        env = {**os.environ, "HOME": str(tmp_path), "ARBITER_WEB_IP": "127.0.0.1"}
        with log.open("wb") as out:
            proc = await trio.lowlevel.open_process(
                [str(CADDY), "run", "--adapter", "caddyfile", "--config", str(caddyfile)],
                stdout=out,
                stderr=out,
                env=env,
            )
        try:
            await trio.to_thread.run_sync(wait_listening, port, proc, log)
            proxy = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=proxy, timeout=10) as http:
                direct = await srv.http.get("/config")
                via = await http.get("/config")
                # wsUrl names the host the browser asked (behind HTTPS the client keeps its own
                # wss:// origin, arbiter/web/api.js).
                expected = {**direct.json(), "wsUrl": f"ws://127.0.0.1:{port}/ws"}
                assert (via.status_code, via.json()) == (200, expected)
                created = await http.put("/createRoom")
                assert created.status_code == 200, created.text
                room_id = int(created.json()["roomId"])
                claimed = await http.patch("/claimRoom", json={"urlPath": "via-caddy"})
                assert claimed.json()["roomId"] == room_id, claimed.text
                for path in ("/metrics", "/admin/rooms"):
                    assert (await srv.http.get(path)).status_code == 200, path
                    blocked = await http.get(path)
                    assert (blocked.status_code, blocked.content) == (404, b""), path
            with trio.fail_after(10):
                async with ws_client(f"ws://127.0.0.1:{port}/ws") as ws:
                    identified = await ws.identify_client(room_id, "caddy-peer", "Via Caddy")
            assert identified["type"] == "identified"
        finally:
            proc.terminate()
            with trio.move_on_after(5):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
