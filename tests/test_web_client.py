"""The served web client (arbiter/web) in headless Chromium, driven through its DOM.

Pages open `http://127.0.0.1:<port>/<room>`, type a name in the lobby and click Join; the room
is created and claimed by the page itself (the pool is empty: getRoomId 404, claimRoom 404,
createRoom, claimRoom). Everything is *done* through the DOM (buttons, inputs, Enter) and only
*read* through the DOM or the read-only hook `window.arbiter` (`state()`, `stats()`). The
security tests add their own instruments before the page loads (`Page(..., setup)`: init scripts
recording RTCPeerConnection configurations or CSP violations, routes standing in for an older
server); the client itself exposes nothing for them.

Playwright's sync API runs in one worker thread while trio runs the server; every wait in the
thread is bounded and the browser is closed in a `finally`, so the thread always returns.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import make_config, running_server, ws_client
from arbiter.testing.browser import ARTIFACTS, chromium, no_leaked_threads, poll, require_chromium
from arbiter.testing.media_peer import open_media_peer

pytestmark = [pytest.mark.browser, pytest.mark.media]

CAMERA = (640, 360)  # what the client asks the (fake) camera for
JOIN_TIMEOUT = 15.0
MEDIA_TIMEOUT = 25.0
LEAVE_DEADLINE = 2.0


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with no_leaked_threads():
        yield


class Page:
    """One participant's page: actions through the DOM, reads through DOM or window.arbiter."""

    def __init__(
        self,
        browser: Any,
        url: str,
        label: str,
        setup: Callable[[Any], None] | None = None,
        **context: Any,
    ) -> None:
        self.label = label
        self.context = browser.new_context(**{"viewport": {"width": 960, "height": 600}, **context})
        self.context.set_default_timeout(10_000)
        if setup is not None:  # init scripts and routes, before the page loads
            setup(self.context)
        self.page = self.context.new_page()
        self.log: list[str] = []
        self.page.on("console", lambda m: self.log.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.log.append(f"pageerror: {e}"))
        self.page.on(
            "requestfailed",
            lambda r: self.log.append(f"requestfailed: {r.method} {r.url} {r.failure}"),
        )
        self.websockets: list[str] = []
        self.page.on("websocket", lambda ws: self.websockets.append(ws.url))
        self.page.goto(url)

    def join(self, name: str) -> None:
        self.page.get_by_label("Your name").fill(name)
        self.page.get_by_role("button", name="Join call").click()

    def state(self) -> dict[str, Any]:
        return self.page.evaluate("window.arbiter.state()")

    def stats(self) -> dict[str, Any]:
        # Publisher ids travel as [key, value] pairs: Playwright would drop a "__proto__" key.
        stats = self.page.evaluate(
            "window.arbiter.stats().then((s) => ({ ...s, remote: Object.entries(s.remote) }))"
        )
        stats["remote"] = dict(stats["remote"])
        return stats

    @property
    def id(self) -> str:
        return self.state()["id"]

    def wait_joined(self, timeout: float = JOIN_TIMEOUT) -> dict[str, Any]:
        return poll(
            lambda: (s := self.state())["joined"] and s,
            timeout=timeout,
            what=f"{self.label} to join ({self.log[-5:]})",
        )

    def remote_tile_ids(self) -> set[str]:
        return {t["id"] for t in self.state()["tiles"] if not t["self"]}

    def decoding(self, publishers: set[str]) -> dict[str, Any] | None:
        remote = self.stats()["remote"]
        for p in publishers:
            r = remote.get(p)
            if not r or r["framesDecoded"] <= 0 or r["packetsReceived"] <= 0:
                return None
        return remote

    def tile(self, peer_id: str) -> Any:
        return self.page.locator(f'[data-testid="tile"][data-peer-id="{peer_id}"]')

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def describe(self) -> str:
        try:
            state = self.state()
        except Exception as exc:  # a crashed page
            state = f"unreachable: {exc}"
        return f"{self.label}: state={state} console={self.log[-15:]}"


def run_pages(body: Callable[[Any], None], extra_args: list[str] | None = None) -> None:
    """`body(browser)` in this (worker) thread with a fresh Chromium that is always closed."""
    with chromium(extra_args) as browser:
        body(browser)


def wait_decoding(pages: dict[str, Page], ids: dict[str, str], timeout: float) -> None:
    for label, page in pages.items():
        others = {ids[o] for o in pages if o != label}
        poll(
            lambda page=page, others=others: page.decoding(others),
            timeout=timeout,
            what=f"{label} decoding {others}: {page.describe()}",
        )


def wait_settled(pages: dict[str, Page], timeout: float) -> dict[str, Page]:
    """Every page joined and decoding every other page under its *current* id."""

    def settled() -> bool:
        states = {label: page.state() for label, page in pages.items()}
        if not all(s["joined"] for s in states.values()):
            return False
        ids = {label: s["id"] for label, s in states.items()}
        return all(
            page.decoding({ids[o] for o in pages if o != label}) is not None
            for label, page in pages.items()
        )

    poll(
        settled,
        timeout=timeout,
        interval=0.2,
        what="every page decoding the others: "
        + " | ".join(page.describe() for page in pages.values()),
    )
    return pages


async def test_three_pages_call_chat_mute_share_leave_rejoin(tmp_path: Path) -> None:
    require_chromium()
    report: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        url = srv.url + "/web-call"
        token = trio.lowlevel.current_trio_token()

        def drop_websocket(peer_id: str) -> None:
            """Server side: close one client's WebSocket as a crashed proxy would."""
            gateway = srv.server.gateway
            assert gateway is not None
            for peer in list(gateway.peers.values()):
                if peer.peer_id == peer_id:
                    peer.request_close(1012, "service restart")
                    return
            raise AssertionError(f"no connection for {peer_id}")

        def restart_sfu(room_id: int) -> None:
            """Server side: the room's SFU goes away (its supervisor restarts it)."""
            gateway = srv.server.gateway
            assert gateway is not None
            sfus = [p for p in gateway.peers.values() if p.kind == "sfu" and p.room_id == room_id]
            assert len(sfus) == 1, sfus
            sfus[0].request_close(1011, "test: SFU restart")

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                scenario(browser, pages)
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                    page.screenshot(f"web-call-{page.label}-failed")
                raise

        def scenario(browser: Any, pages: dict[str, Page]) -> None:
            started = time.monotonic()
            for label in ("A", "B", "C"):
                pages[label] = Page(browser, url, label)
                pages[label].join(f"Person {label}")
            ids = {label: page.wait_joined()["id"] for label, page in pages.items()}
            assert len(set(ids.values())) == 3
            report["joined"] = time.monotonic() - started

            # Every page decodes the other two's video and receives their audio, and keeps
            # decoding: framesDecoded grows between two samples.
            wait_decoding(pages, ids, MEDIA_TIMEOUT)
            report["decoding"] = time.monotonic() - started
            first = {label: page.stats()["remote"] for label, page in pages.items()}
            time.sleep(1.0)
            second = {label: page.stats()["remote"] for label, page in pages.items()}
            for label in pages:
                for other in pages:
                    if other == label:
                        continue
                    a, b = first[label][ids[other]], second[label][ids[other]]
                    context = f"{label} <- {other}: {a} then {b}"
                    assert b["framesDecoded"] > a["framesDecoded"] > 0, context
                    assert b["packetsReceived"] > a["packetsReceived"] > 0, context
                    assert b["totalSamplesReceived"] > 0, context
                    assert (b["frameWidth"], b["frameHeight"]) == CAMERA, context
                # The DOM shows the other two by name, plus the self view.
                names = pages[label].page.get_by_test_id("tile-name").all_inner_texts()
                assert sorted(names) == sorted(
                    [f"Person {label} (you)"] + [f"Person {o}" for o in pages if o != label]
                ), names
                assert pages[label].page.locator('[data-testid="tile"].self.mirrored').count() == 1
            for label, page in pages.items():
                page.screenshot(f"web-call-{label}")

            # A mutes: both others show A's muted badge.
            pages["A"].page.get_by_role("button", name="Microphone").click()
            assert pages["A"].page.get_by_test_id("toggle-mic").get_attribute("aria-pressed") == (
                "false"
            )
            for label in ("B", "C"):
                badge = pages[label].tile(ids["A"]).get_by_test_id("badge-muted")
                badge.wait_for(state="visible", timeout=5_000)
            assert pages["B"].tile(ids["B"]).count() == 0  # nobody sees themselves by id

            # A chats (typed, Enter): it arrives on B and C.
            pages["A"].page.get_by_role("button", name="Chat", exact=True).click()
            chat_input = pages["A"].page.get_by_label("Message everyone")
            chat_input.fill("hello from A")
            chat_input.press("Enter")
            for label in ("B", "C"):
                poll(
                    lambda label=label: any(
                        m["content"] == "hello from A" and m["name"] == "Person A"
                        for m in pages[label].state()["chat"]
                    ),
                    timeout=5,
                    what=f"the chat message on {label}",
                )
                log = pages[label].page.get_by_test_id("chat-log")
                assert "hello from A" in log.inner_text()

            # D joins later on a phone-sized screen: it gets the history and the others' media.
            pages["D"] = Page(
                browser,
                url,
                "D",
                viewport={"width": 390, "height": 844},
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
            )
            pages["D"].join("Person D")
            ids["D"] = pages["D"].wait_joined()["id"]
            # The history frame follows `identified` and the roster: wait for it, then exactly.
            history = poll(
                lambda: pages["D"].state()["chat"],
                timeout=5,
                what=f"D's chat history: {pages['D'].describe()}",
            )
            assert [(m["name"], m["content"]) for m in history] == [("Person A", "hello from A")]
            poll(
                lambda: pages["D"].decoding({ids["A"], ids["B"], ids["C"]}),
                timeout=MEDIA_TIMEOUT,
                what=f"D decoding A, B, C: {pages['D'].describe()}",
            )
            muted = poll(
                lambda: pages["D"].tile(ids["A"]).get_by_test_id("badge-muted").is_visible(),
                timeout=5,
                what="A's muted badge on D (from the roster)",
            )
            assert muted
            page_width = pages["D"].page.evaluate("document.documentElement.scrollWidth")
            assert page_width <= 390, f"horizontal overflow on a phone: {page_width}px"
            pages["D"].screenshot("web-call-phone")

            # B shares its screen: A, C and D see B's video at a new resolution.
            pages["B"].page.get_by_role("button", name="Share screen").click()
            poll(lambda: pages["B"].state()["sharing"], timeout=5, what="B sharing")
            for label in ("A", "C", "D"):
                size = poll(
                    lambda label=label: (
                        (r := pages[label].stats()["remote"].get(ids["B"], {}))
                        and (r.get("frameWidth"), r.get("frameHeight"))
                        not in (CAMERA, (None, None))
                        and (r["frameWidth"], r["frameHeight"])
                    ),
                    timeout=15,
                    what=f"B's screen on {label}",
                )
                report[f"share on {label}"] = size
                assert size[0] > CAMERA[0], size
            pages["A"].screenshot("web-call-A-sees-share")
            # ... and back to the camera.
            pages["B"].page.get_by_role("button", name="Share screen").click()
            poll(
                lambda: (
                    (r := pages["A"].stats()["remote"][ids["B"]])
                    and (r["frameWidth"], r["frameHeight"]) == CAMERA
                ),
                timeout=15,
                what="B's camera again on A",
            )

            # C leaves: gone from every other grid within 2 s of the click.
            pages["C"].page.get_by_role("button", name="Leave call").click()
            clicked = time.monotonic()
            for label in ("A", "B", "D"):
                remaining = LEAVE_DEADLINE - (time.monotonic() - clicked)
                poll(
                    lambda label=label: ids["C"] not in pages[label].remote_tile_ids(),
                    timeout=max(remaining, 0.0),
                    interval=0.05,
                    what=f"C's tile to leave {label}'s grid",
                )
            report["leave seen by all"] = time.monotonic() - clicked
            assert pages["C"].page.get_by_role("heading", name="You left the call").is_visible()
            assert pages["C"].state()["phase"] == "left"

            # The server drops B's WebSocket: B says so, rejoins with a new id, and A and D
            # see the old B go and the new B arrive and decode again.
            dropped = time.monotonic()
            trio.from_thread.run_sync(drop_websocket, ids["B"], trio_token=token)
            poll(
                lambda: (
                    "Reconnecting" in pages["B"].state()["banner"]
                    or pages["B"].state()["id"] != ids["B"]
                ),
                timeout=5,
                what="B's reconnecting banner",
            )
            new_b = poll(
                lambda: (s := pages["B"].state())["joined"] and s["id"] != ids["B"] and s["id"],
                timeout=JOIN_TIMEOUT,
                what="B to rejoin",
            )
            for label in ("A", "D"):
                poll(
                    lambda label=label: (
                        pages[label].remote_tile_ids() == {ids["A"], ids["D"], new_b} - {ids[label]}
                    ),
                    timeout=5,
                    what=f"{label}'s grid after B rejoined",
                )
                poll(
                    lambda label=label: pages[label].decoding({new_b}),
                    timeout=MEDIA_TIMEOUT,
                    what=f"{label} decoding the rejoined B",
                )
            report["ws drop to decoding"] = time.monotonic() - dropped

            # The room's SFU goes away: every page gets sfuDisconnect, says so, rejoins (with
            # back-off while the SFU restarts) and decodes the others again.
            before = {label: pages[label].id for label in ("A", "B", "D")}
            restarted = time.monotonic()
            trio.from_thread.run_sync(restart_sfu, pages["A"].state()["roomId"], trio_token=token)
            for label in before:
                poll(
                    lambda label=label: pages[label].state()["id"] != before[label],
                    timeout=JOIN_TIMEOUT,
                    what=f"{label} to rejoin after the SFU restart",
                )
            settled = wait_settled({label: pages[label] for label in before}, MEDIA_TIMEOUT)
            report["errors after the SFU restart"] = {
                label: page.state()["errors"][-3:] for label, page in settled.items()
            }
            report["sfu restart to decoding"] = time.monotonic() - restarted
            report["total"] = time.monotonic() - started

        with trio.fail_after(150):
            await trio.to_thread.run_sync(run_pages, body)
    print(report)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_page_joins_over_wss(tmp_path: Path) -> None:
    require_chromium()
    cert, key = self_signed(tmp_path)
    config = make_config(
        tmp_path,
        http={"host": "127.0.0.1", "port": 0, "tls_cert": str(cert), "tls_key": str(key)},
    )
    seen: dict[str, Any] = {}
    async with running_server(config) as srv:
        assert srv.url.startswith("https://"), srv.url

        def body(browser: Any) -> None:
            page = Page(browser, srv.url + "/secure-room", "S", ignore_https_errors=True)
            try:
                assert page.page.evaluate("window.isSecureContext") is True
                page.join("Secure Sam")
                state = page.wait_joined()
                poll(
                    lambda: (
                        page.page.evaluate(
                            "document.querySelector('[data-testid=tile].self video').videoWidth"
                        )
                        > 0
                    ),
                    timeout=10,
                    what="the self view playing",
                )
                poll(
                    lambda: page.stats()["producer"]["video"]["packetsSent"] > 0,
                    timeout=10,
                    what="the producer sending over the SFU's DTLS",
                )
                protocol = page.page.evaluate(
                    "performance.getEntriesByType('navigation')[0].nextHopProtocol"
                )
                seen.update(state=state, websockets=list(page.websockets), protocol=protocol)
                page.screenshot("web-https")
            except BaseException as exc:
                exc.add_note(page.describe())
                raise

        # The browser is free to offer HTTP/2: the server offers only HTTP/1.1 over TLS
        # (server._hypercorn_config explains why), so this also checks that ALPN choice.
        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body, [])
    assert [t["name"] for t in seen["state"]["tiles"]] == ["Secure Sam"]
    assert seen["protocol"] == "http/1.1"
    assert seen["websockets"] and all(u.startswith("wss://") for u in seen["websockets"])


async def test_no_room_available_says_so_and_keeps_trying(tmp_path: Path) -> None:
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path, rooms={"idle_pool": 0, "max_rooms": 0})) as srv:

        def body(browser: Any) -> None:
            page = Page(browser, srv.url + "/no-room", "N")
            page.join("Nobody")
            seen["banner"] = poll(
                lambda: "could not start a room" in (b := page.state()["banner"]) and b,
                timeout=10,
                what=f"the failure banner: {page.describe()}",
            )
            seen["visible"] = page.page.get_by_test_id("banner").inner_text()
            seen["state"] = page.state()

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
    assert "Retrying in" in seen["banner"], seen
    assert seen["visible"] == seen["banner"]
    assert seen["state"]["phase"] == "joining" and not seen["state"]["joined"]


# ------------------------------------------------------------------ security

# Ids a peer may pick that collide with what a careless client keys by: its own tile's name,
# Object.prototype's members, and the client's own queue name for the producer.
HOSTILE_IDS = ("self", "__proto__", "constructor", "toString", "hasOwnProperty", "producer")
# A name that would run script if it ever reached innerHTML.
HOSTILE_NAME = '<img src=x onerror="window.pwned=1">'

OWN_TILE = """() => {
  const tiles = document.querySelectorAll('[data-testid=tile].self');
  const t = tiles[0];
  return t ? {
    count: tiles.length,
    first: t === document.querySelector('#grid').firstElementChild,
    peerId: t.getAttribute('data-peer-id'),
    name: t.querySelector('[data-testid=tile-name]').textContent,
    muted: !t.querySelector('[data-testid=badge-muted]').hidden,
    cameraOff: !t.querySelector('[data-testid=badge-camera-off]').hidden,
    video: !!t.querySelector('video').srcObject,
  } : null;
}"""

INJECTED_MARKUP = """() => document.querySelectorAll(
  '#grid img, #chat-log img, #chat-log b, #toast img, #toast b').length
  + (window.pwned === undefined ? 0 : 100)"""


def own_tile(page: Page) -> dict[str, Any]:
    """The self view as the DOM and the test hook show it."""
    keys = ("id", "name", "muted", "cameraOff", "status")  # not "speaking": the mic talks
    hook = [{k: t[k] for k in keys} for t in page.state()["tiles"] if t["self"]]
    return {"dom": page.page.evaluate(OWN_TILE), "hook": hook}


async def test_hostile_peer_ids_leave_the_own_tile_alone(tmp_path: Path) -> None:
    """Peers whose ids are "self", "__proto__", ... join, turn their media off, chat, publish
    media and leave: the victim's own tile never changes, their names stay text."""
    require_chromium()
    release_ws, release_media = trio.Event(), trio.Event()

    async def hostile_ws(
        srv: Any, room_id: int, peer_id: str, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with ws_client(srv.ws_url) as client:
            await client.identify_client(room_id, peer_id, HOSTILE_NAME)
            await client.send("features", {"audio": False, "video": False})
            await client.send("chat", {"content": f"<b>{peer_id}</b>"})
            async with trio.open_nursery() as inner:
                inner.start_soon(client.drain)
                task_status.started()
                await release_ws.wait()
                await client.send("disconnect", {})
                inner.cancel_scope.cancel()

    async def hostile_media(
        srv: Any, room_id: int, peer_id: str, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_media_peer() as peer:
            await peer.join(srv.ws_url, room_id, peer_id, HOSTILE_NAME)
            task_status.started()
            await release_media.wait()
            await peer.leave()

    with trio.fail_after(60):
        async with running_server(make_config(tmp_path)) as srv, trio.open_nursery() as nursery:
            token = trio.lowlevel.current_trio_token()

            def start(task: Any, room_id: int, peer_id: str) -> None:
                trio.from_thread.run(nursery.start, task, srv, room_id, peer_id, trio_token=token)

            def scenario(page: Page) -> None:
                page.join("Victim")
                room_id = page.wait_joined()["roomId"]
                mine = poll(
                    lambda: (t := own_tile(page))["dom"] and t["dom"]["video"] and t,
                    timeout=5,
                    what="the self view",
                )
                assert mine["dom"] == {
                    "count": 1,
                    "first": True,
                    "peerId": None,
                    "name": "Victim (you)",
                    "muted": False,
                    "cameraOff": False,
                    "video": True,
                }, mine
                assert [t["name"] for t in mine["hook"]] == ["Victim"], mine

                # Every hostile id joins, turns audio and video off and chats.
                for peer_id in HOSTILE_IDS:
                    start(hostile_ws, room_id, peer_id)
                poll(
                    lambda: (
                        {
                            (t["id"], t["name"], t["muted"], t["cameraOff"])
                            for t in page.state()["tiles"]
                            if not t["self"]
                        }
                        == {(i, HOSTILE_NAME, True, True) for i in HOSTILE_IDS}
                    ),
                    timeout=5,
                    what="a muted tile per hostile id",
                )
                poll(
                    lambda: len(page.state()["chat"]) == len(HOSTILE_IDS),
                    timeout=5,
                    what="the hostile chat messages",
                )
                assert own_tile(page) == mine
                names = page.page.get_by_test_id("tile-name").all_inner_texts()
                assert sorted(names) == sorted(["Victim (you)"] + [HOSTILE_NAME] * len(HOSTILE_IDS))
                count = page.page.locator("#people-count").inner_text()
                assert count == f"· {len(HOSTILE_IDS) + 1} people", count
                assert page.page.evaluate(INJECTED_MARKUP) == 0

                # ... and disconnects: their tiles go, ours stays as it was.
                trio.from_thread.run_sync(release_ws.set, trio_token=token)
                poll(lambda: not page.remote_tile_ids(), timeout=5, what="the hostile tiles to go")
                assert own_tile(page) == mine

                # Hostile ids that publish: the consumer handshakes (remotePeerId "self",
                # "__proto__") reach the page, it decodes both, and its own tile is untouched.
                publishers = {"self", "__proto__"}
                for peer_id in sorted(publishers):
                    start(hostile_media, room_id, peer_id)
                remote = poll(
                    lambda: page.decoding(publishers),
                    timeout=MEDIA_TIMEOUT,
                    what="the page decoding the hostile publishers",
                )
                assert set(remote) == publishers, remote
                assert page.remote_tile_ids() == publishers
                assert own_tile(page) == mine
                trio.from_thread.run_sync(release_media.set, trio_token=token)
                poll(lambda: not page.remote_tile_ids(), timeout=5, what="the publishers to go")
                poll(lambda: page.stats()["remote"] == {}, timeout=5, what="consumers closed")
                assert own_tile(page) == mine
                state = page.state()
                assert state["joined"] and state["phase"] == "joined", state
                assert page.page.evaluate(INJECTED_MARKUP) == 0
                assert [line for line in page.log if line.startswith("pageerror")] == []

            def body(browser: Any) -> None:
                page = Page(browser, srv.url + "/hostile-ids", "V")
                try:
                    scenario(page)
                except BaseException as exc:
                    exc.add_note(page.describe())
                    exc.add_note(f"stats: {page.stats()}")
                    page.screenshot("web-hostile-ids-failed")
                    raise

            await trio.to_thread.run_sync(run_pages, body)


# Records every RTCPeerConnection's iceServers as the browser took them (test instrumentation,
# injected before the page's scripts; the client itself exposes nothing new).
RECORD_ICE_SERVERS = """(() => {
  const Native = window.RTCPeerConnection;
  const seen = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      seen.push(JSON.parse(JSON.stringify(this.getConfiguration().iceServers || [])));
    }
  };
  Object.defineProperty(window, "testIceServers", { value: () => seen });
})();"""


def normalised(servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in servers:
        urls = s["urls"] if isinstance(s["urls"], list) else [s["urls"]]
        out.append({"urls": urls, **{k: s[k] for k in ("username", "credential") if s.get(k)}})
    return out


def ice_routes(
    identified: Callable[[dict[str, Any]], None], config_servers: list[dict[str, Any]]
) -> Callable[[Any], None]:
    """Page setup: record peer connections, serve `config_servers` in /config and pass the
    `identified` frame through `identified` (which edits it in place) on its way to the page."""

    def setup(context: Any) -> None:
        context.add_init_script(RECORD_ICE_SERVERS)

        def config(route: Any) -> None:
            response = route.fetch()
            data = response.json()
            data["iceServers"] = config_servers
            route.fulfill(response=response, json=data)

        context.route(re.compile(r"^https?://[^/]+/config$"), config)

        def ws(route: Any) -> None:
            server = route.connect_to_server()

            def from_server(message: str | bytes) -> None:
                if isinstance(message, str) and '"identified"' in message:
                    frame = json.loads(message)
                    if frame.get("type") == "identified":
                        identified(frame)
                        message = json.dumps(frame)
                route.send(message)

            server.on_message(from_server)

        context.route_web_socket(re.compile(r"/ws$"), ws)

    return setup


async def test_peer_connections_use_the_identified_frames_ice_servers(tmp_path: Path) -> None:
    """TURN credentials come only in `identified` (username <expiry>:<connectionId>); /config
    lists the URLs alone. Both pages build every peer connection from their identified frame."""
    require_chromium()
    ice = {
        "servers": ["stun:127.0.0.1:3490", "turn:127.0.0.1:3491?transport=udp"],
        "turn_secret": "test-secret",
    }
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path, ice=ice)) as srv:
        config = (await srv.http.get("/config")).json()

        def watch_identified(page: Page) -> None:
            def on_frame(payload: str | bytes) -> None:
                if isinstance(payload, str) and '"identified"' in payload:
                    frame = json.loads(payload)
                    if frame.get("type") == "identified":
                        seen.setdefault("identified", {})[page.label] = frame

            page.page.on("websocket", lambda ws: ws.on("framereceived", on_frame))

        def body(browser: Any) -> None:
            record = lambda context: context.add_init_script(RECORD_ICE_SERVERS)  # noqa: E731
            pages = {
                label: Page(browser, srv.url + "/ice-room", label, record) for label in ("A", "B")
            }
            try:
                for label, page in pages.items():
                    watch_identified(page)
                    page.join(f"Person {label}")
                ids = {label: page.wait_joined()["id"] for label, page in pages.items()}
                wait_decoding(pages, ids, MEDIA_TIMEOUT)
                seen["pcs"] = {
                    label: p.page.evaluate("testIceServers()") for label, p in pages.items()
                }
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
    assert normalised(config["iceServers"]) == [
        {"urls": ["stun:127.0.0.1:3490"]},
        {"urls": ["turn:127.0.0.1:3491?transport=udp"]},
    ], config
    for label in ("A", "B"):
        identified = seen["identified"][label]
        servers = identified["iceServers"]
        turn = servers[1]
        assert turn["username"].endswith(":" + identified["connectionId"]), identified
        assert turn["credential"], identified
        # The producer and the consumer of the other page: both from the identified frame.
        pcs = seen["pcs"][label]
        assert len(pcs) >= 2, seen
        assert [normalised(c) for c in pcs] == [normalised(servers)] * len(pcs), seen


async def test_without_identified_ice_servers_the_config_list_is_used(tmp_path: Path) -> None:
    """An older server sends no iceServers in `identified`: /config's (with credentials)."""
    require_chromium()
    config_servers = [
        {"urls": "stun:127.0.0.1:3490"},
        {"urls": "turn:127.0.0.1:3491", "username": "1700000000:arbiter", "credential": "b2xk"},
        {"urls": "turn:127.0.0.1:3492"},  # no credentials: left out (it would fail the pc)
        {"urls": "https://example.org/not-ice"},
    ]
    seen: dict[str, Any] = {}

    async with running_server(make_config(tmp_path)) as srv:

        def body(browser: Any) -> None:
            page = Page(
                browser,
                srv.url + "/old-server",
                "O",
                ice_routes(lambda frame: frame.pop("iceServers", None), config_servers),
            )
            try:
                page.join("Old")
                page.wait_joined()
                poll(
                    lambda: page.stats()["producer"]["video"]["packetsSent"] > 0,
                    timeout=10,
                    what="the producer sending",
                )
                seen["configs"] = page.page.evaluate("testIceServers()")
            except BaseException as exc:
                exc.add_note(page.describe())
                raise

        with trio.fail_after(40):
            await trio.to_thread.run_sync(run_pages, body)
    assert [normalised(c) for c in seen["configs"]] == [normalised(config_servers[:2])], seen


# Collects securitypolicyviolation events from the first script on.
CSP_LISTENER = """(() => {
  const seen = [];
  document.addEventListener("securitypolicyviolation", (e) => seen.push({
    directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile,
    line: e.lineNumber, sample: e.sample,
  }));
  Object.defineProperty(window, "cspViolations", { value: () => seen.slice() });
})();"""


def csp_for(host: str) -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; "
        f"connect-src 'self' ws://{host} wss://{host}; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )


async def test_the_client_runs_under_its_content_security_policy(tmp_path: Path) -> None:
    """A whole call (join, media, mute, camera, chat, share, leave) on two pages served with
    the CSP: no violation. Then one deliberate violation shows the policy was enforced."""
    require_chromium()
    seen: dict[str, Any] = {}

    def setup(context: Any) -> None:
        context.add_init_script(CSP_LISTENER)

    async with running_server(make_config(tmp_path)) as srv:
        served = await srv.http.get("/csp-room")
        host = srv.url.split("//", 1)[1]
        assert served.headers["content-security-policy"] == csp_for(host), served.headers
        assert served.headers["x-content-type-options"] == "nosniff"
        assert served.headers["referrer-policy"] == "no-referrer"
        assert served.headers["x-frame-options"] == "DENY"

        def scenario(pages: dict[str, Page]) -> None:
            for label, page in pages.items():
                page.join(f"Person {label}")
            ids = {label: page.wait_joined()["id"] for label, page in pages.items()}
            wait_decoding(pages, ids, MEDIA_TIMEOUT)
            a = pages["A"].page
            a.get_by_role("button", name="Microphone").click()
            a.get_by_role("button", name="Camera").click()
            a.get_by_role("button", name="Camera").click()
            a.get_by_role("button", name="Chat", exact=True).click()
            a.get_by_label("Message everyone").fill("under CSP")
            a.get_by_label("Message everyone").press("Enter")
            poll(
                lambda: any(m["content"] == "under CSP" for m in pages["B"].state()["chat"]),
                timeout=5,
                what="the chat message on B",
            )
            pages["B"].page.get_by_role("button", name="Share screen").click()
            poll(
                lambda: (
                    pages["A"].stats()["remote"].get(ids["B"], {}).get("frameWidth")
                    not in (None, CAMERA[0])
                ),
                timeout=15,
                what="B's screen on A",
            )
            pages["B"].page.get_by_role("button", name="Share screen").click()
            a.get_by_role("button", name="Copy meeting link").click()
            pages["B"].page.get_by_role("button", name="Leave call").click()
            poll(lambda: not pages["A"].remote_tile_ids(), timeout=5, what="B gone from A")
            seen["violations"] = {
                label: p.page.evaluate("cspViolations()") for label, p in pages.items()
            }
            # The policy is in force: an inline style attribute is reported.
            a.evaluate("document.body.setAttribute('style', 'color: red')")
            seen["probe"] = poll(lambda: a.evaluate("cspViolations()"), timeout=5, what="probe")

        def body(browser: Any) -> None:
            pages = {label: Page(browser, srv.url + "/csp-room", label, setup) for label in "AB"}
            try:
                scenario(pages)
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
    assert seen["violations"] == {"A": [], "B": []}, seen["violations"]
    assert [v["directive"] for v in seen["probe"]] == ["style-src-attr"], seen["probe"]


def test_web_files_need_nothing_the_policy_forbids() -> None:
    """No inline script or style, style attribute, event-handler attribute or javascript: URL
    in the HTML; no HTML parsing of strings, eval or style attributes in the JS."""
    from html.parser import HTMLParser

    web = Path(__file__).resolve().parents[1] / "arbiter" / "web"
    problems: list[str] = []

    class Check(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tag = ""

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tag = tag
            names = dict(attrs)
            if tag == "script" and not names.get("src"):
                problems.append("inline <script>")
            if tag == "style":
                problems.append("<style>")
            for name, value in attrs:
                if name == "style" or name.startswith("on"):
                    problems.append(f"<{tag} {name}=...>")
                if value and value.strip().lower().startswith("javascript:"):
                    problems.append(f"<{tag} {name}={value}>")

    for html in web.glob("*.html"):
        Check().feed(html.read_text())
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\b"
        r"|setAttribute\(\s*[\"']style|setAttribute\(\s*[\"']on|\.on\w+\s*=\s*[\"']"
        r"|set(?:Timeout|Interval)\(\s*[\"'`]"
    )
    for js in web.glob("*.js"):
        for n, line in enumerate(js.read_text().splitlines(), 1):
            if forbidden.search(line):
                problems.append(f"{js.name}:{n}: {line.strip()}")
    assert problems == []


async def test_suggested_room_names_carry_65_random_bits(tmp_path: Path) -> None:
    """Issue 9 item 14: the landing page's suggestions were one of 57,600 names (scanned in
    78 s). Now 13 symbols of a 32-letter alphabet from crypto.getRandomValues: 65 bits."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:

        def body(browser: Any) -> None:
            page = browser.new_page()
            page.goto(srv.url + "/")
            seen["shown"] = page.locator("#landing-room").input_value()
            seen["names"] = page.evaluate(
                """async () => {
                  const { suggestRoomName } = await import('/_app/names.js');
                  return Array.from({ length: 2000 }, () => suggestRoomName());
                }"""
            )

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
    pattern = re.compile(r"[a-km-np-z2-9]{4}-[a-km-np-z2-9]{4}-[a-km-np-z2-9]{5}")
    names = seen["names"]
    assert pattern.fullmatch(seen["shown"]), seen["shown"]
    assert all(pattern.fullmatch(n) for n in names)
    assert len(set(names)) == len(names)
    # Every symbol of the alphabet is used at every position (a fixed or biased position would
    # lower the entropy): 2000 draws over 32 symbols miss one with probability < 1e-25.
    for position in [i for i in range(15) if i not in (4, 9)]:
        assert len({n[position] for n in names}) == 32, position


async def test_the_active_speaker_is_shown_large(tmp_path: Path) -> None:
    """An aiortc peer sends a tone into the page's room: the SFU elects it from its RFC 6464
    audio levels and the page shows its tile large (the own tile never is)."""
    require_chromium()
    release = trio.Event()

    async def speaker(
        srv: Any, room_id: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_media_peer(tone=True) as peer:
            await peer.join(srv.ws_url, room_id, "talker", "Talker")
            task_status.started()
            await release.wait()

    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv, trio.open_nursery() as nursery:
            token = trio.lowlevel.current_trio_token()

            def body(browser: Any) -> None:
                page = Page(browser, srv.url + "/web-speaker", "S")
                try:
                    page.join("Listener")
                    room_id = page.wait_joined()["roomId"]
                    trio.from_thread.run(nursery.start, speaker, srv, room_id, trio_token=token)
                    tiles = poll(
                        lambda: (
                            t := {x["id"]: x for x in page.state()["tiles"]}
                        ).get("talker", {}).get("activeSpeaker") and t,
                        timeout=15,
                        what="the talker's tile marked as the active speaker",
                    )
                    assert not tiles[page.id]["activeSpeaker"], tiles
                    big = page.tile("talker").bounding_box()
                    small = page.page.locator('[data-testid="tile"].self').bounding_box()
                    assert big and small, (big, small)
                    area = big["width"] * big["height"], small["width"] * small["height"]
                    assert area[0] > 4 * area[1], (big, small)
                    assert page.page.locator("#grid.has-speaker").count() == 1
                    page.screenshot("web-active-speaker")
                except BaseException as exc:
                    exc.add_note(page.describe())
                    raise
                finally:
                    trio.from_thread.run_sync(release.set, trio_token=token)

            await trio.to_thread.run_sync(run_pages, body)
