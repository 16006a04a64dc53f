"""The web client against hostile peers and under its security policy, in headless Chromium.

Peer ids and names chosen to collide with what a careless client keys by; TURN credentials
only from the identified frame; the whole client running under the served Content-Security-
Policy with no violation; suggested room names that cannot be scanned. The tests add their own
instruments before the page loads (`Page(..., setup)`: init scripts recording RTCPeerConnection
configurations or CSP violations, routes standing in for an older server); the client itself
exposes nothing for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import make_config, running_server, ws_client
from arbiter.testing.browser import no_leaked_threads, poll, require_chromium
from arbiter.testing.media_peer import open_media_peer
from arbiter.testing.webpage import (
    CAMERA,
    CSP_LISTENER,
    HOSTILE_NAME,
    INJECTED_MARKUP,
    MEDIA_TIMEOUT,
    Page,
    run_pages,
    wait_decoding,
)

pytestmark = [pytest.mark.browser, pytest.mark.media]


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with no_leaked_threads():
        yield


# ------------------------------------------------------------------ security

# Ids a peer may pick that collide with what a careless client keys by: its own tile's name,
# Object.prototype's members, and the client's own queue name for the producer.
HOSTILE_IDS = ("self", "__proto__", "constructor", "toString", "hasOwnProperty", "producer")

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
