"""TURN for real: two pages of the served web client, forced to `iceTransportPolicy: "relay"`,
decode each other through Debian's coturn, over UDP and over TLS (TCP).

coturn runs with `use-auth-secret` and the secret Arbiter signs credentials with
(`ice.turn_secret`, arbiter/turn.py: draft-uberti-behave-turn-rest-00), so the credentials the
pages get in their `identified` frame are what coturn checks. The SFU listens on loopback, hence
`allow-loopback-peers` (coturn refuses loopback peers by default: RFC 8656 section 21 leaves
peer filtering to the operator, and deploy/turnserver.conf denies them). The TLS listener uses a
self-signed certificate made here with `openssl`; Chromium verifies a `turns:` server's
certificate like any other TLS peer of its network service, and `--ignore-certificate-errors`
lets this one through (without the flag the relay candidate is never gathered).

Proof that media went through coturn and nothing else: the web client's own peer connections
are wrapped (an init script) so that every one is created with `iceTransportPolicy: "relay"`;
each connected pc's selected candidate pair has a local candidate of type "relay" whose
`relayProtocol` is the transport under test; and coturn logged a successful ALLOCATE for each
page's TURN username (`<expiry>:<connectionId>`).
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import make_config, running_server
from arbiter.testing.browser import require_chromium
from arbiter.testing.webpage import MEDIA_TIMEOUT, Page, run_pages, wait_decoding

pytestmark = [pytest.mark.browser, pytest.mark.media]

TURNSERVER = Path("/usr/bin/turnserver")
SECRET = "coturn-test-secret"
REALM = "arbiter.test"

# Every RTCPeerConnection the web client makes is relay-only (the client has no such switch:
# it is an operator's TURN server, not a user's choice) and recorded for getStats().
FORCE_RELAY = """(() => {
  const Native = window.RTCPeerConnection;
  const pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(config, ...rest) {
      super({ ...(config || {}), iceTransportPolicy: "relay" }, ...rest);
      pcs.push(this);
    }
    setConfiguration(config) {
      return super.setConfiguration({ ...(config || {}), iceTransportPolicy: "relay" });
    }
  };
  Object.defineProperty(window, "testRelayPairs", { value: async () => {
    const out = [];
    for (const pc of pcs) {
      if (pc.connectionState !== "connected") continue;
      const stats = await pc.getStats();
      let transport = null;
      stats.forEach((s) => { if (s.type === "transport") transport = s; });
      const pair = transport && stats.get(transport.selectedCandidatePairId);
      const local = pair && stats.get(pair.localCandidateId);
      out.push({
        policy: pc.getConfiguration().iceTransportPolicy,
        type: local ? local.candidateType : null,
        relayProtocol: local ? local.relayProtocol : null,
        url: local ? local.url : null,
        username: (pc.getConfiguration().iceServers || [])[0]?.username,
      });
    }
    return out;
  }});
})();"""


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)
    raise AssertionError("no port free for both UDP and TCP on 127.0.0.1")


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "turn.crt", directory / "turn.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Debian's turnserver on loopback: UDP/TCP on one port, TLS on another, shared secret."""
    if not TURNSERVER.exists():
        pytest.fail(
            f"{TURNSERVER} is missing: scripts/test installs Debian's coturn "
            "(or: apt-get install coturn)",
            pytrace=False,
        )
    cert, key = self_signed(tmp_path)
    port, tls_port = free_port(), free_port()
    log = tmp_path / "turnserver.log"
    conf = tmp_path / "turnserver.conf"
    conf.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={port}",
                f"tls-listening-port={tls_port}",
                # The next ports would be alt-listening ports (RFC 5780): not wanted here.
                f"alt-listening-port={free_port()}",
                f"alt-tls-listening-port={free_port()}",
                "use-auth-secret",
                f"static-auth-secret={SECRET}",
                f"realm={REALM}",
                f"cert={cert}",
                f"pkey={key}",
                "no-dtls",
                "allow-loopback-peers",
                "no-multicast-peers",
                "fingerprint",
                "no-cli",
                "verbose",
                f"log-file={log}",
                "simple-log",
                f"pidfile={tmp_path / 'turnserver.pid'}",
                f"userdb={tmp_path / 'turndb'}",
            ]
        )
        + "\n"
    )
    proc = subprocess.Popen(
        [str(TURNSERVER), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # ready when its TLS listener accepts
            assert proc.poll() is None, f"turnserver exited {proc.returncode}: {read(log)}"
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"turnserver not listening: {read(log)}"
                time.sleep(0.1)
        yield {"port": port, "tls_port": tls_port, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


def allocated_users(log: Path) -> set[str]:
    """TURN usernames coturn granted an allocation (its verbose log: one line per ALLOCATE)."""
    users = set()
    for line in log.read_text(errors="replace").splitlines():
        m = re.search(r"user <([^>]*)>: incoming packet ALLOCATE processed, success", line)
        if m:
            users.add(m.group(1))
    return users


@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_two_pages_decode_each_other_through_coturn(
    tmp_path: Path, coturn: dict[str, Any], transport: str
) -> None:
    require_chromium()
    if transport == "udp":
        url = f"turn:127.0.0.1:{coturn['port']}?transport=udp"
        extra_args: list[str] = []
    else:
        url = f"turns:127.0.0.1:{coturn['tls_port']}?transport=tcp"
        extra_args = ["--ignore-certificate-errors"]
    ice = {"servers": [url], "turn_secret": SECRET}
    seen: dict[str, Any] = {}

    async with running_server(make_config(tmp_path, ice=ice)) as srv:

        def body(browser: Any) -> None:
            force = lambda context: context.add_init_script(FORCE_RELAY)  # noqa: E731
            pages = {
                label: Page(browser, f"{srv.url}/turn-{transport}", label, force)
                for label in ("A", "B")
            }
            try:
                for label, page in pages.items():
                    page.join(f"Person {label}")
                ids = {label: page.wait_joined()["id"] for label, page in pages.items()}
                wait_decoding(pages, ids, MEDIA_TIMEOUT)
                seen["pairs"] = {
                    label: p.page.evaluate("testRelayPairs()") for label, p in pages.items()
                }
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                exc.add_note(f"turnserver log: {read(coturn['log'])}")
                raise

        with trio.fail_after(90):
            await trio.to_thread.run_sync(run_pages, body, extra_args)

    relay_protocol = "udp" if transport == "udp" else "tls"
    usernames = {}
    for label in ("A", "B"):
        # The producer pc and the consumer pc of the other page, both through the relay, both
        # with the page's credentials from its identified frame ("<expiry>:<connectionId>").
        pairs = seen["pairs"][label]
        usernames[label] = pairs[0]["username"]
        assert re.fullmatch(r"\d+:[\w-]+", usernames[label]), pairs
        assert (
            pairs
            == [
                {
                    "policy": "relay",
                    "type": "relay",
                    "relayProtocol": relay_protocol,
                    "url": url,
                    "username": usernames[label],
                }
            ]
            * 2
        ), seen
    assert usernames["A"] != usernames["B"]
    # coturn checked those credentials against the shared secret and relayed for both pages.
    assert allocated_users(coturn["log"]) == set(usernames.values()), read(coturn["log"])
