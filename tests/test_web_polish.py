"""The web client's polish (issue 14) in headless Chromium through a real server: two people
side by side fill the width in both layouts, the grid with the chat open, banners in plain words
when the API fails, the card after a call says why it ended (or nothing), a new room made from
the landing page leaves the console clean, and a server restart (`serverRestarting`, then a
close 1012) is told calmly and the call comes back by itself.

Frames and closes "from the server" are the gateway's own: its connection for the page's id
sends the frame and closes the socket (`Peer.request_close`), exactly as the server does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from arbiter.testing import make_config, running_server
from arbiter.testing.browser import ARTIFACTS, no_leaked_threads, poll, require_chromium
from arbiter.testing.webpage import (
    JOIN_TIMEOUT,
    MEDIA_TIMEOUT,
    Page,
    banner_history,
    console_problems,
    record_banners,
    run_pages,
    tile_boxes,
    wait_decoding,
    wait_settled,
)

pytestmark = [pytest.mark.browser, pytest.mark.media]

RESTARTING = "The server is restarting. Reconnecting…"
SERVICE_RESTART = 1012  # IANA WebSocket close code "Service Restart"


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with no_leaked_threads():
        yield


def gateway_peer(srv: Any, peer_id: str) -> Any:
    gateway = srv.server.gateway
    assert gateway is not None
    peers = [p for p in gateway.peers.values() if p.kind == "client" and p.peer_id == peer_id]
    assert len(peers) == 1, peers
    return peers[0]


def from_server(srv: Any, token: Any) -> Callable[..., None]:
    """`send(peer_id, frame=None, close=None)` from the browser thread: the gateway sends
    `frame` to that client, then closes its socket with `close` = (code, reason)."""

    def act(peer_id: str, frame: dict[str, Any] | None, close: tuple[int, str] | None) -> None:
        peer = gateway_peer(srv, peer_id)
        if frame is not None:
            peer.send(frame)
        if close is not None:
            peer.request_close(*close)

    def send(
        peer_id: str, frame: dict[str, Any] | None = None, close: tuple[int, str] | None = None
    ) -> None:
        trio.from_thread.run_sync(act, peer_id, frame, close, trio_token=token)

    return send


# ------------------------------------------------------------------ layout


def sixteen_by_nine(box: dict[str, float]) -> bool:
    return abs(box["width"] * 9 / 16 - box["height"]) <= 1


def settled_boxes(page: Page, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """The tile boxes once `check` holds (the grid lays out on the next frame after a resize)."""
    seen: list[dict[str, Any]] = []

    def ok() -> bool:
        seen.append(tile_boxes(page))
        return check(seen[-1])

    try:
        poll(ok, timeout=5, what=what)
    except AssertionError as exc:
        exc.add_note(f"last boxes: {seen[-1]}")
        raise
    return seen[-1]


def two_fill_the_row(b: dict[str, Any]) -> bool:
    """Two 16:9 tiles in one row (side by side) from the grid's left edge to its right."""
    if len(b["tiles"]) != 2:
        return False
    left, right = sorted(b["tiles"], key=lambda t: t["x"])
    grid = b["grid"]
    width = left["width"] + b["gap"] + right["width"]
    return (
        all(sixteen_by_nine(t) for t in b["tiles"])
        and right["x"] >= left["x"] + left["width"]
        and grid["width"] - 2 <= width <= grid["width"]
        and abs(left["x"] - grid["x"]) <= 2
        and abs(right["x"] + right["width"] - grid["x"] - grid["width"]) <= 2
        and not b["scrolls"]
    )


def fills_a_side(b: dict[str, Any], n: int) -> bool:
    """n 16:9 tiles inside the grid, none overlapping, no scrolling, and together as wide as
    the grid or as tall as it (the largest tiles that fit leave no room in one direction)."""
    tiles, grid = b["tiles"], b["grid"]
    if len(tiles) != n or b["scrolls"] or not all(sixteen_by_nine(t) for t in tiles):
        return False
    inside = all(
        t["x"] >= grid["x"] - 1
        and t["y"] >= grid["y"] - 1
        and t["x"] + t["width"] <= grid["x"] + grid["width"] + 1
        and t["y"] + t["height"] <= grid["y"] + grid["height"] + 1
        for t in tiles
    )
    apart = all(
        s["x"] + s["width"] <= t["x"] + 1
        or t["x"] + t["width"] <= s["x"] + 1
        or s["y"] + s["height"] <= t["y"] + 1
        or t["y"] + t["height"] <= s["y"] + 1
        for i, s in enumerate(tiles)
        for t in tiles[i + 1 :]
    )
    span_w = max(t["x"] + t["width"] for t in tiles) - min(t["x"] for t in tiles)
    span_h = max(t["y"] + t["height"] for t in tiles) - min(t["y"] for t in tiles)
    full = span_w >= grid["width"] - 2 or span_h >= grid["height"] - 2
    return inside and apart and full


def set_layout(page: Page, mode: str) -> None:
    if page.state()["layout"] != mode:
        page.page.get_by_test_id("toggle-layout").click()
    poll(lambda: page.state()["layout"] == mode, timeout=5, what=f"the {mode} layout")


async def test_two_people_fill_the_width_and_the_grid_copes_with_chat(tmp_path: Path) -> None:
    """Two people: in the speaker layout (the default) their large tile and ours side by side
    fill the width of a wide window (1280x720 and 960x600), ours beside theirs at its foot; in
    the grid layout two equal tiles fill it. In a phone-shaped window (390x844) the large tile
    (speaker) and both tiles (grid) fill the width, stacked. With the chat open (960x600), two
    and then three people get 16:9 tiles inside the narrower grid, apart, not scrolled, and as
    large as fits (spanning its width or its height). A screenshot of the two-person call goes
    to test-artifacts/two-person.png (docs/two-person.png in README is a copy of one)."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        url = srv.url + "/web-two-people"
        wide = {"width": 1280, "height": 720}

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                pages["A"] = a = Page(browser, url, "A", viewport=wide)
                a.join("Alice")
                alice = a.wait_joined()["id"]
                pages["B"] = b = Page(browser, url, "B", viewport=wide)
                b.join("Bob")
                bob = b.wait_joined()["id"]
                wait_decoding({"A": a, "B": b}, {"A": alice, "B": bob}, MEDIA_TIMEOUT)
                seen["default"] = a.state()["layout"]

                for size in ((1280, 720), (960, 600)):
                    a.page.set_viewport_size({"width": size[0], "height": size[1]})
                    for mode in ("speaker", "grid"):
                        set_layout(a, mode)
                        seen[(mode, size)] = settled_boxes(
                            a, two_fill_the_row, f"two tiles filling the row ({mode}, {size})"
                        )
                        if size == (1280, 720) and mode == "speaker":
                            # What README shows: the default layout of a two-person call.
                            a.page.wait_for_timeout(3000)  # the "Bob joined" toast gone
                            a.screenshot("two-person")

                a.page.set_viewport_size({"width": 390, "height": 844})
                for mode in ("speaker", "grid"):
                    set_layout(a, mode)
                    seen[(mode, "phone")] = settled_boxes(
                        a,
                        lambda bx: (
                            fills_a_side(bx, 2)
                            and any(t["width"] >= bx["grid"]["width"] - 2 for t in bx["tiles"])
                        ),
                        f"a tile as wide as a phone ({mode})",
                    )

                a.page.set_viewport_size({"width": 960, "height": 600})
                a.page.get_by_test_id("toggle-chat").click()
                for mode in ("grid", "speaker"):
                    set_layout(a, mode)
                    seen[(mode, "chat", 2)] = settled_boxes(
                        a, lambda bx: fills_a_side(bx, 2), f"two tiles beside the chat ({mode})"
                    )
                pages["C"] = c = Page(browser, url, "C")
                c.join("Carol")
                c.wait_joined()
                for mode in ("grid", "speaker"):
                    set_layout(a, mode)
                    seen[(mode, "chat", 3)] = settled_boxes(
                        a, lambda bx: fills_a_side(bx, 3), f"three tiles beside the chat ({mode})"
                    )
                seen["chat box"] = a.page.get_by_test_id("chat-panel").bounding_box()
                seen["errors"] = a.state()["errors"]
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(150):
            await trio.to_thread.run_sync(run_pages, body)

    assert seen["default"] == "speaker"
    for size in ((1280, 720), (960, 600)):
        speaker = seen[("speaker", size)]
        left, right = sorted(speaker["tiles"], key=lambda t: t["x"])
        # Theirs large on the left, ours on the right, standing on the same line.
        assert (left["self"], left["large"], right["self"], right["large"]) == (
            False,
            True,
            True,
            False,
        ), speaker
        assert left["width"] > 3 * right["width"], speaker
        assert abs(left["y"] + left["height"] - right["y"] - right["height"]) <= 1, speaker
        grid = seen[("grid", size)]
        one, two = grid["tiles"]
        assert (one["width"], one["height"], one["y"]) == (two["width"], two["height"], two["y"])
        assert not one["large"] and not two["large"]
    # 1280x720: theirs is as tall as the grid lets it be.
    speaker = seen[("speaker", (1280, 720))]
    large = next(t for t in speaker["tiles"] if t["large"])
    assert large["height"] >= speaker["grid"]["height"] - 2, speaker

    # Phone: the large tile is on top, ours below it.
    phone = seen[("speaker", "phone")]
    large = next(t for t in phone["tiles"] if t["large"])
    own = next(t for t in phone["tiles"] if t["self"])
    assert large["width"] >= phone["grid"]["width"] - 2, phone
    assert own["y"] >= large["y"] + large["height"], phone
    one, two = seen[("grid", "phone")]["tiles"]
    assert one["width"] == two["width"] and two["y"] >= one["y"] + one["height"]

    chat = seen["chat box"]
    for key in (("grid", "chat", 2), ("speaker", "chat", 2), ("grid", "chat", 3), ("speaker", "chat", 3)):  # fmt: skip
        boxes = seen[key]
        assert boxes["grid"]["x"] + boxes["grid"]["width"] <= chat["x"], (key, boxes, chat)
    assert seen["errors"] == []
    assert (ARTIFACTS / "two-person.png").stat().st_size > 10_000


# ------------------------------------------------------------------ banners

RETRYING = re.compile(r"^(?P<text>.+) Retrying in \d+ s…$")


def fail_api(status: int | None) -> Callable[[Any], None]:
    """A setup hook: getRoomId (and claimRoom) fail, as an unreachable server (`None`: the
    request fails in the network, fetch throws "Failed to fetch") or with `status`."""

    def handle(route: Any) -> None:
        if status is None:
            route.abort("connectionrefused")
        else:
            route.fulfill(
                status=status, content_type="application/json", body='{"message":"Unavailable"}'
            )

    def setup(context: Any) -> None:
        record_banners(context)
        context.route(re.compile(r"/(getRoomId|claimRoom)\b"), handle)

    return setup


def banner_fits(page: Page) -> dict[str, Any]:
    return page.page.evaluate(
        """() => {
          const b = document.querySelector('#banner'), r = b.getBoundingClientRect();
          return { left: r.left, right: r.right, top: r.top, bottom: r.bottom,
                   clipped: b.scrollWidth > b.clientWidth || b.scrollHeight > b.clientHeight,
                   innerWidth, innerHeight, text: b.innerText };
        }"""
    )


async def test_banners_say_in_plain_words_what_failed(tmp_path: Path) -> None:
    """The API unreachable (fetch throws "Failed to fetch"): the banner says "Cannot reach the
    server. Check your network connection. Retrying in N s…", whole and inside a phone's
    window; the browser's words go to the console only. The API answering 503: "The server ran
    into a problem. Retrying in N s…". Once the API answers again the page joins and the banner
    goes."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                for label, status, viewport in (
                    ("offline", None, {"width": 360, "height": 640}),
                    ("503", 503, {"width": 960, "height": 600}),
                ):
                    pages[label] = page = Page(
                        browser,
                        srv.url + f"/web-banner-{label}",
                        label,
                        setup=fail_api(status),
                        viewport=viewport,
                    )
                    page.join("Banner")
                    poll(
                        lambda page=page: (
                            RETRYING.match(page.state()["banner"])
                            and page.page.get_by_test_id("banner").get_attribute("data-kind")
                            == "warn"
                        ),
                        timeout=15,
                        what=f"a retry banner ({label})",
                    )
                    seen[label] = {
                        "state": page.state(),
                        "fits": banner_fits(page),
                        "console": [line for line in page.log if "Arbiter: joining failed" in line],
                    }
                    page.context.unroute_all(behavior="ignoreErrors")
                    page.wait_joined(timeout=JOIN_TIMEOUT + 10)
                    poll(
                        lambda page=page: page.state()["banner"] == "", timeout=5, what="no banner"
                    )
                    seen[label]["history"] = banner_history(page)
                    seen[label]["problems"] = console_problems(page)
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(120):
            await trio.to_thread.run_sync(run_pages, body)

    for label, plain in (
        ("offline", "Cannot reach the server. Check your network connection."),
        ("503", "The server ran into a problem."),
    ):
        got = seen[label]
        match = RETRYING.match(got["state"]["banner"])
        assert match is not None and match["text"] == plain, got["state"]["banner"]
        fits = got["fits"]
        assert fits["text"] == got["state"]["banner"], fits
        assert not fits["clipped"], fits
        assert 0 <= fits["left"] and fits["right"] <= fits["innerWidth"], fits
        assert 0 <= fits["top"] and fits["bottom"] <= fits["innerHeight"], fits
        # Every banner the page showed was one of ours: no browser or server words in it.
        ours = re.compile(
            rf"(|Joining…( \(attempt \d+\))?|Claiming the room…|Starting a new room…"
            rf"|{re.escape(plain)} Retrying in \d+ s…)"
        )
        assert all(ours.fullmatch(entry["text"]) for entry in got["history"]), got["history"]
        # The technical detail went to the console (as a warning, not an error).
        assert got["console"], got
        assert all(line.startswith("warning: Arbiter: joining failed: GET /getRoomId: ") for line in got["console"])  # fmt: skip
        assert got["state"]["errors"], got["state"]
    assert "Failed to fetch" in seen["offline"]["console"][0], seen["offline"]["console"]
    assert seen["503"]["console"][0].endswith("GET /getRoomId: 503 Unavailable")
    # Only the refused requests themselves are console errors (the browser reports every
    # failed or 5xx load); the page's own code logged none.
    for label in ("offline", "503"):
        assert all(
            p.startswith("error: Failed to load resource") for p in seen[label]["problems"]
        ), seen[label]["problems"]


# ------------------------------------------------------------------ the card after a call


def left_card(page: Page) -> dict[str, Any]:
    reason = page.page.get_by_test_id("left-reason")
    return {
        "phase": page.state()["phase"],
        "title": page.page.locator("#left-title").inner_text(),
        "reason": reason.text_content(),
        "reason shown": reason.is_visible(),
    }


async def test_the_card_after_a_call_says_why_it_ended(tmp_path: Path) -> None:
    """Leave: "You left the call" and nothing more. Removed by a moderator (`kicked`, close
    4003) whose name the page does not know: "You were removed from the call by a moderator."
    The operator closed the room: "The room was closed" and why. None of them rejoins."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        send = from_server(srv, trio.lowlevel.current_trio_token())

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                pages["left"] = page = Page(browser, srv.url + "/web-card-left", "left")
                page.join("Lea")
                page.wait_joined()
                page.page.get_by_role("button", name="Leave call").click()
                page.page.get_by_role("heading", name="You left the call").wait_for()
                seen["left"] = left_card(page)

                pages["kicked"] = page = Page(browser, srv.url + "/web-card-kicked", "kicked")
                page.join("Kim")
                me = page.wait_joined()["id"]
                send(me, {"type": "kicked", "by": "someone-unknown"}, (4003, "removed by a moderator"))  # fmt: skip
                poll(lambda: page.state()["phase"] == "removed", timeout=5, what="removed")
                seen["kicked"] = left_card(page)

                pages["closed"] = page = Page(browser, srv.url + "/web-card-closed", "closed")
                page.join("Cleo")
                room = page.wait_joined()["roomId"]
                r = httpx.post(f"{srv.url}/admin/rooms/{room}/close", timeout=10)
                assert r.status_code == 200, r.text
                poll(lambda: page.state()["phase"] == "left", timeout=5, what="the call ended")
                seen["closed"] = left_card(page)

                time.sleep(2)  # nobody rejoins
                seen["after"] = {label: p.state()["phase"] for label, p in pages.items()}
                seen["exceptions"] = {
                    label: [line for line in p.log if line.startswith("pageerror:")]
                    for label, p in pages.items()
                }
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(90):
            await trio.to_thread.run_sync(run_pages, body)

    assert seen["left"] == {
        "phase": "left",
        "title": "You left the call",
        "reason": "",
        "reason shown": False,
    }
    assert seen["kicked"] == {
        "phase": "removed",
        "title": "You were removed from the call",
        "reason": "You were removed from the call by a moderator.",
        "reason shown": True,
    }
    assert seen["closed"] == {
        "phase": "left",
        "title": "The room was closed",
        "reason": "The server's operator closed this room.",
        "reason shown": True,
    }
    assert seen["after"] == {"left": "left", "kicked": "removed", "closed": "left"}
    assert seen["exceptions"] == {"left": [], "kicked": [], "closed": []}


# ------------------------------------------------------------------ a new room, a clean console


@pytest.mark.parametrize("idle_pool", [0, 2])
async def test_a_new_room_from_the_landing_page_leaves_the_console_clean(
    tmp_path: Path, idle_pool: int
) -> None:
    """The landing page's "Start call" opens a new room's lobby (offering to create it), and
    joining creates it: no request answered with an error status, no console error, no
    uncaught exception; with an empty idle pool (the page starts a room before claiming one)
    and with a ready one."""
    require_chromium()
    seen: dict[str, Any] = {}
    config = make_config(tmp_path, rooms={"idle_pool": idle_pool})
    async with running_server(config) as srv:
        if idle_pool:
            await wait_pool(srv, idle_pool)

        def body(browser: Any) -> None:
            refused: list[str] = []

            def setup(context: Any) -> None:
                context.on(
                    "response",
                    lambda r: (
                        r.status >= 400 and refused.append(f"{r.status} {r.request.method} {r.url}")
                    ),  # fmt: skip
                )

            page = Page(browser, srv.url + "/", "L", setup=setup)
            try:
                page.page.get_by_role("button", name="Start or join this room").click()
                page.page.get_by_label("Your name").wait_for()
                poll(
                    lambda: page.state()["lobby"]["mode"] == "create",
                    timeout=5,
                    what="the lobby offering to create the room",
                )
                seen["path"] = page.page.evaluate("location.pathname")
                page.join("Nia")
                seen["state"] = page.wait_joined()
                time.sleep(1.5)
                seen["problems"] = console_problems(page)
                seen["refused"] = list(refused)
                seen["moderator"] = page.state()["moderator"]
            except BaseException as exc:
                exc.add_note(page.describe())
                raise

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
        rooms = (await srv.http.get("/admin/rooms")).json()["rooms"]

    assert re.fullmatch(r"/[a-km-np-z2-9]{4}-[a-km-np-z2-9]{4}-[a-km-np-z2-9]{5}", seen["path"])
    assert seen["problems"] == [], seen["problems"]
    assert seen["refused"] == [], seen["refused"]
    assert seen["moderator"] is True  # this page created the room
    assert [r["urlPath"] for r in rooms if r["status"] == "claimed"] == [seen["path"][1:]]


async def test_a_typed_new_room_url_leaves_the_console_clean(tmp_path: Path) -> None:
    """Opening a fresh room by its URL: the lobby asks whether it exists (`probe=1`, a miss is
    `200 {"exists": false}`), offers to create it, and joining creates it, with no response of
    an error status and nothing in the console."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:

        def body(browser: Any) -> None:
            refused: list[str] = []

            def setup(context: Any) -> None:
                context.on(
                    "response",
                    lambda r: (
                        r.status >= 400 and refused.append(f"{r.status} {r.request.method} {r.url}")
                    ),  # fmt: skip
                )

            page = Page(browser, srv.url + "/typed-fresh-room", "T", setup=setup)
            try:
                poll(
                    lambda: page.state()["lobby"]["mode"] == "create",
                    timeout=5,
                    what="the lobby offering to create the room",
                )
                page.join("Tom")
                seen["state"] = page.wait_joined()
                time.sleep(1.0)
                seen["problems"] = console_problems(page)
                seen["refused"] = list(refused)
            except BaseException as exc:
                exc.add_note(page.describe())
                raise

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
    assert seen["problems"] == [], seen["problems"]
    assert seen["refused"] == [], seen["refused"]


async def wait_pool(srv: Any, n: int) -> None:
    with trio.fail_after(10):
        while (await srv.http.get("/health")).json()["rooms"]["unclaimed"] < n:
            await trio.sleep(0.05)


# ------------------------------------------------------------------ a server restart


async def test_a_server_restart_is_told_calmly_and_the_call_comes_back(tmp_path: Path) -> None:
    """A gets `serverRestarting` then a close 1012; B only the close 1012. Both say "The
    server is restarting. Reconnecting…" as information (never a warning or an error banner),
    rejoin by themselves under new ids and decode each other again; the banner then goes."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        send = from_server(srv, trio.lowlevel.current_trio_token())
        url = srv.url + "/web-restart"

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                pages["A"] = a = Page(browser, url, "A", setup=record_banners)
                a.join("Ada")
                old_a = a.wait_joined()["id"]
                pages["B"] = b = Page(browser, url, "B", setup=record_banners)
                b.join("Ben")
                old_b = b.wait_joined()["id"]
                wait_settled(pages, MEDIA_TIMEOUT)

                send(old_a, {"type": "serverRestarting"})
                seen["told"] = poll(
                    lambda: (s := a.state())["restarting"] and s["joined"] and s,
                    timeout=5,
                    what="A told of the restart (still in the call)",
                )
                seen["told kind"] = a.page.get_by_test_id("banner").get_attribute("data-kind")
                send(old_a, close=(SERVICE_RESTART, "service restart"))
                send(old_b, close=(SERVICE_RESTART, "service restart"))
                poll(
                    lambda: (s := b.state())["banner"] == RESTARTING and s["restarting"],
                    timeout=5,
                    what="B told of the restart by the close alone",
                )
                for label, old in (("A", old_a), ("B", old_b)):
                    poll(
                        lambda label=label, old=old: (
                            (s := pages[label].state())["joined"] and s["id"] != old
                        ),
                        timeout=JOIN_TIMEOUT,
                        what=f"{label} to rejoin",
                    )
                wait_settled(pages, MEDIA_TIMEOUT)
                poll(
                    lambda: all(p.state()["banner"] == "" for p in pages.values()),
                    timeout=5,
                    what="the banners gone",
                )
                ids = {label: p.state()["id"] for label, p in pages.items()}
                seen["tiles"] = {label: pages[label].remote_tile_ids() for label in pages}
                seen["ids"] = ids
                seen["history"] = {label: banner_history(p) for label, p in pages.items()}
                seen["exceptions"] = {
                    label: [line for line in p.log if line.startswith("pageerror:")]
                    for label, p in pages.items()
                }
                seen["restarting"] = {label: p.state()["restarting"] for label, p in pages.items()}
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(120):
            await trio.to_thread.run_sync(run_pages, body)

    assert seen["told"]["banner"] == RESTARTING and seen["told kind"] == "info"
    assert seen["tiles"] == {"A": {seen["ids"]["B"]}, "B": {seen["ids"]["A"]}}
    for label in ("A", "B"):
        history = seen["history"][label]
        start = history.index({"text": RESTARTING, "kind": "info"})
        # From the restart on: the calm notice, then nothing (the call is back).
        assert history[start:] == [{"text": RESTARTING, "kind": "info"}, {"text": "", "kind": ""}], history  # fmt: skip
    assert seen["exceptions"] == {"A": [], "B": []}
    assert seen["restarting"] == {"A": False, "B": False}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def received_types(page: Page) -> list[str]:
    """Every frame `type` the page receives on WebSockets opened from now on (call it before
    `join`); fills while Playwright runs."""
    import json

    seen: list[str] = []

    def got(payload: str | bytes) -> None:
        try:
            frame = json.loads(payload)
        except ValueError:
            return
        if isinstance(frame, dict) and isinstance(frame.get("type"), str):
            seen.append(frame["type"])

    page.page.on("websocket", lambda ws: ws.on("framereceived", got))
    return seen


async def test_sigterm_of_arbiter_serve_then_a_restart_brings_the_call_back(
    tmp_path: Path,
) -> None:
    """Two pages in a call on `arbiter serve` (a child process); SIGTERM: both receive
    `serverRestarting`, say "The server is restarting. Reconnecting…" as information, and keep
    saying only calm things while the server is down; a new `arbiter serve` on the same port and
    database: both rejoin by themselves under new ids, decode each other, and the banner goes."""
    import signal
    import threading

    from arbiter.testing.serve import served

    require_chromium()
    toml = f"[http]\nport = {free_port()}\n"
    seen: dict[str, Any] = {}
    url: dict[str, str] = {}
    started, settled, restarted, done = (threading.Event() for _ in range(4))

    def body(browser: Any) -> None:
        pages: dict[str, Page] = {}
        try:
            assert started.wait(30), "the first server"
            room = url["url"] + "/web-sigterm"
            frames: dict[str, list[str]] = {}
            for label, name in (("A", "Ana"), ("B", "Bo")):
                pages[label] = page = Page(browser, room, label, setup=record_banners)
                frames[label] = received_types(page)
                page.join(name)
                page.wait_joined()
            wait_settled(pages, MEDIA_TIMEOUT)
            old = {label: p.state()["id"] for label, p in pages.items()}
            settled.set()
            for label, page in pages.items():
                poll(
                    lambda page=page: (
                        (s := page.state())["banner"] == RESTARTING and s["restarting"]
                    ),
                    timeout=10,
                    what=f"{label} told of the restart",
                )
            assert restarted.wait(60), "the second server"
            for label, page in pages.items():
                poll(
                    lambda page=page, label=label: (
                        (s := page.state())["joined"] and s["id"] != old[label]
                    ),
                    timeout=40,
                    what=f"{label} to rejoin the restarted server",
                )
            wait_settled(pages, MEDIA_TIMEOUT)
            poll(
                lambda: all(p.state()["banner"] == "" for p in pages.values()),
                timeout=10,
                what="the banners gone",
            )
            seen["history"] = {label: banner_history(p) for label, p in pages.items()}
            seen["frames"] = {label: list(f) for label, f in frames.items()}
            seen["tiles"] = {label: p.remote_tile_ids() for label, p in pages.items()}
            seen["ids"] = {label: p.state()["id"] for label, p in pages.items()}
            seen["exceptions"] = {
                label: [line for line in p.log if line.startswith("pageerror:")]
                for label, p in pages.items()
            }
        except BaseException as exc:
            for page in pages.values():
                exc.add_note(page.describe())
            raise
        finally:
            done.set()
            settled.set()  # never leave the server side waiting

    async def server_side() -> None:
        async with served(tmp_path, toml) as first:
            url["url"] = first.url
            started.set()
            assert await trio.to_thread.run_sync(settled.wait, 120)
            if done.is_set():
                return  # the browser side failed before the call settled
            first.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                while first.process.poll() is None:
                    await trio.sleep(0.05)
        await trio.sleep(2)  # the pages retry against nothing for a while
        async with served(tmp_path, toml) as second:
            assert second.url == url["url"]
            restarted.set()
            await trio.to_thread.run_sync(done.wait, 150)

    with trio.fail_after(200):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side)
            await trio.to_thread.run_sync(run_pages, body)

    ids = seen["ids"]
    assert seen["tiles"] == {"A": {ids["B"]}, "B": {ids["A"]}}
    for label in ("A", "B"):
        assert "serverRestarting" in seen["frames"][label], seen["frames"][label]
        history = seen["history"][label]
        start = history.index({"text": RESTARTING, "kind": "info"})
        after = history[start:]
        # Calm from the restart on (information only), ending with no banner.
        assert all(e["kind"] in ("info", "") for e in after), after
        assert after[-1] == {"text": "", "kind": ""}, after
    assert seen["exceptions"] == {"A": [], "B": []}
