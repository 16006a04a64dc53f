"""The web client's side of "Quality" (DESIGN section 4; issue 13) in headless Chromium (and
Firefox ESR for the publisher side), through a real server: simulcast publishing (three
encodings, rid q/h/f), `layers` frames and screen sharing turning encodings on and off,
`preferences` frames per remote tile, and the speaker/grid layouts with 16:9 tiles.

So that the publisher side is checked whatever the SFU answers, the Chromium pages that need an
accepted (or a refused) simulcast set it on the SFU's producer answer themselves with an init
script, as an SFU that simulcasts (or an older one) answers: `a=rid:<rid> recv` and
`a=simulcast:recv q;h;f` added when absent (RFC 8853 section 5.1; a no-op on an answer that
has them), or removed. `layers` frames are sent to the page by the gateway itself (its
connection for the page's id), exactly as the SFU's frames reach a client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import make_config, running_server
from arbiter.testing.browser import no_leaked_threads, poll, require_chromium
from arbiter.testing.firefox import firefox, require_firefox
from arbiter.testing.webpage import (
    JOIN_TIMEOUT,
    MEDIA_TIMEOUT,
    Page,
    record_sent_frames,
    run_pages,
)

pytestmark = [pytest.mark.browser, pytest.mark.media]

ALL_ON = [
    {"rid": "q", "active": True, "scaleResolutionDownBy": 4, "maxBitrate": 150_000},
    {"rid": "h", "active": True, "scaleResolutionDownBy": 2, "maxBitrate": 500_000},
    {"rid": "f", "active": True, "scaleResolutionDownBy": 1, "maxBitrate": 1_500_000},
]


def encodings_with(**active: bool) -> list[dict[str, Any]]:
    return [{**e, "active": active[e["rid"]]} for e in ALL_ON]


# Rewrites the producer answer's video section (the one our offer simulcasts) before the page
# applies it. MODE "accept": add the recv rids and a=simulcast when absent; "refuse": remove them.
ANSWER_SCRIPT = """(() => {
  const MODE = "%s";
  const sections = (sdp) => sdp.split(/(?=^m=)/m); // each ends with CRLF
  const rewrite = (offer, answer) => {
    const offered = new Map();
    for (const s of sections(offer)) {
      const mid = (s.match(/^a=mid:(.*)$/m) || [])[1];
      if (mid !== undefined && /^a=simulcast:send /m.test(s)) offered.set(mid, s);
    }
    return sections(answer).map((s) => {
      const mid = (s.match(/^a=mid:(.*)$/m) || [])[1];
      const offer = offered.get(mid);
      if (offer === undefined) return s;
      let lines = s.split("\\r\\n").slice(0, -1);
      if (MODE === "refuse") {
        lines = lines.filter((l) => !/^a=(simulcast|rid):/.test(l));
      } else if (!lines.some((l) => l.startsWith("a=simulcast:"))) {
        const rids = offer.match(/^a=rid:\\S+/gm).map((l) => l.slice(6));
        const ext = offer.match(/^a=extmap:\\d+ urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id$/m);
        if (ext && !lines.some((l) => l.endsWith(" urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"))) {
          lines.push(ext[0]);
        }
        for (const rid of rids) lines.push(`a=rid:${rid} recv`);
        lines.push(`a=simulcast:recv ${rids.join(";")}`);
      }
      return lines.join("\\r\\n") + "\\r\\n";
    }).join("");
  };
  const original = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (description, ...rest) {
    if (description && description.type === "answer" && this.localDescription) {
      description = { type: "answer", sdp: rewrite(this.localDescription.sdp, description.sdp) };
    }
    return original.call(this, description, ...rest);
  };
})();"""


def answer_simulcast(mode: str) -> Callable[[Any], None]:
    assert mode in ("accept", "refuse")
    return lambda context: context.add_init_script(ANSWER_SCRIPT % mode)


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with no_leaked_threads():
        yield


def to_client(srv: Any) -> Callable[[str, dict[str, Any]], None]:
    """Send a frame to a client of `srv` exactly as the gateway delivers the SFU's frames (run
    it in trio's thread)."""

    def send(peer_id: str, message: dict[str, Any]) -> None:
        gateway = srv.server.gateway
        assert gateway is not None
        peers = [p for p in gateway.peers.values() if p.kind == "client" and p.peer_id == peer_id]
        assert len(peers) == 1, peers
        peers[0].send(message)

    return send


def video_section(sdp: str, mid: str) -> list[str]:
    for section in sdp.split("\r\nm=")[1:]:
        lines = section.split("\r\n")
        if f"a=mid:{mid}" in lines:
            return lines
    raise AssertionError(f"no section with mid {mid} in {sdp}")


def encodings(page: Page) -> list[dict[str, Any]]:
    return page.page.evaluate("window.arbiter.encodings()")


def answered(page: Page) -> dict[str, Any]:
    return poll(
        lambda: (s := page.page.evaluate("window.arbiter.producerSdp()"))["remote"] and s,
        timeout=MEDIA_TIMEOUT,
        what=f"the producer answer: {page.describe()}",
    )


def wait_encodings(page: Page, want: list[dict[str, Any]], what: str) -> None:
    poll(lambda: encodings(page) == want, timeout=5, what=f"{what}: {encodings(page)}")


async def test_publisher_offers_three_encodings_and_sizes_a_refused_one(tmp_path: Path) -> None:
    """(a) The producer offer simulcasts q;h;f from a 1280x720 capture; an answer without
    a=simulcast leaves one encoding, which the client sends at 360 lines (as before)."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:

        def body(browser: Any) -> None:
            page = Page(browser, srv.url + "/web-simulcast", "P", setup=answer_simulcast("refuse"))
            try:
                page.join("Publisher")
                page.wait_joined()
                sdp = answered(page)
                seen["offer"] = video_section(sdp["local"], sdp["videoMid"])
                seen["answer"] = video_section(sdp["remote"], sdp["videoMid"])
                seen["capture"] = page.page.evaluate(
                    "(({width, height}) => [width, height])("
                    "document.querySelector('[data-testid=tile].self video')"
                    ".srcObject.getVideoTracks()[0].getSettings())"
                )
                wait_encodings(
                    page,
                    [{"rid": "q", "active": True, "scaleResolutionDownBy": 2, "maxBitrate": None}],
                    "one encoding at 360 lines",
                )
                sent: list[Any] = []
                try:
                    poll(
                        lambda: (
                            sent.append(page.stats()["producer"]["video"])
                            or sent[-1].get("frameHeight") == 360
                        ),
                        timeout=MEDIA_TIMEOUT,
                        what="640x360 going out",
                    )
                finally:
                    seen["sent"] = sent[-1]
                # A screen goes out at its full resolution.
                page.page.get_by_role("button", name="Share screen").click()
                wait_encodings(
                    page,
                    [{"rid": "q", "active": True, "scaleResolutionDownBy": 1, "maxBitrate": None}],
                    "the screen at full resolution",
                )
                seen["errors"] = page.state()["errors"]
            except BaseException as exc:
                exc.add_note(f"{page.describe()} sent={seen.get('sent')}")
                raise

        with trio.fail_after(90):
            await trio.to_thread.run_sync(run_pages, body)
    offer = seen["offer"]
    assert [line for line in offer if line.startswith(("a=rid:", "a=simulcast:"))] == [
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=simulcast:send q;h;f",
    ], offer
    assert "a=sendonly" in offer
    assert any(line.endswith(" urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id") for line in offer)
    assert not any(line.startswith(("a=rid:", "a=simulcast:")) for line in seen["answer"])
    assert seen["capture"] == [1280, 720]
    assert (seen["sent"]["frameWidth"], seen["sent"]["frameHeight"]) == (640, 360), seen
    assert seen["errors"] == []


async def test_layers_frames_and_screen_share_set_the_encodings(tmp_path: Path) -> None:
    """(c) `layers` frames from the gateway set exactly the watched encodings on; frames for
    another mid are ignored. (d) A screen share sends `f` alone at full resolution, whatever
    `layers` says; stopping it restores the encodings of the latest `layers` frame."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        token = trio.lowlevel.current_trio_token()
        send = to_client(srv)

        def body(browser: Any) -> None:
            page = Page(browser, srv.url + "/web-layers", "P", setup=answer_simulcast("accept"))
            try:
                page.join("Publisher")
                me = page.wait_joined()["id"]
                sdp = answered(page)
                mid = sdp["videoMid"]
                seen["answer"] = video_section(sdp["remote"], mid)
                # No layers frame yet: all three on, as offered.
                wait_encodings(page, ALL_ON, "all three encodings")

                def layers(active: list[Any], frame_mid: str = mid) -> None:
                    frame = {"type": "layers", "mid": frame_mid, "active": active}
                    trio.from_thread.run_sync(send, me, frame, trio_token=token)

                layers(["q"])
                wait_encodings(page, encodings_with(q=True, h=False, f=False), "q alone")
                layers(["h", "f"])
                wait_encodings(page, encodings_with(q=False, h=True, f=True), "h and f")
                # Not our video's mid, no list, unknown rids: ignored (unknown rids dropped).
                layers(["q"], frame_mid=f"{mid}9")
                trio.from_thread.run_sync(
                    send, me, {"type": "layers", "mid": mid}, trio_token=token
                )
                time.sleep(0.5)
                assert encodings(page) == encodings_with(q=False, h=True, f=True)
                layers(["x", "q", 7])
                wait_encodings(page, encodings_with(q=True, h=False, f=False), "q (rid x ignored)")
                layers([])
                wait_encodings(page, encodings_with(q=False, h=False, f=False), "nothing watched")

                # (d) Sharing: f alone, at full resolution, even while nobody watches f.
                layers(["q", "h"])
                wait_encodings(page, encodings_with(q=True, h=True, f=False), "q and h")
                page.page.get_by_role("button", name="Share screen").click()
                poll(lambda: page.state()["sharing"], timeout=5, what="sharing")
                wait_encodings(page, encodings_with(q=False, h=False, f=True), "the share: f alone")
                layers(["q"])
                time.sleep(0.5)
                assert encodings(page) == encodings_with(q=False, h=False, f=True)
                page.page.get_by_role("button", name="Share screen").click()
                poll(lambda: not page.state()["sharing"], timeout=5, what="sharing stopped")
                wait_encodings(page, encodings_with(q=True, h=False, f=False), "back to q alone")
                seen["errors"] = page.state()["errors"]
            except BaseException as exc:
                exc.add_note(page.describe())
                raise

        with trio.fail_after(90):
            await trio.to_thread.run_sync(run_pages, body)
    assert [line for line in seen["answer"] if line.startswith("a=simulcast:")] == [
        "a=simulcast:recv q;h;f"
    ]
    assert seen["errors"] == []


def preference_frames(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f["data"] for f in frames if f.get("action") == "preferences"]


async def test_subscriber_sends_preferences_per_tile(tmp_path: Path) -> None:
    """(b) A subscriber page (devicePixelRatio 2) sends one `preferences` frame when the
    publisher's tile appears, with the height the video is drawn at in device pixels, then one
    per change: paused when the tile is scrolled out of view, resumed when it is back, paused
    while the publisher's camera is off and while the page is hidden. Error frames about
    `preferences` (from a server that does not know the action) are not shown to the person."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        url = srv.url + "/web-preferences"

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                pages["P"] = publisher = Page(browser, url, "P")
                publisher.join("Publisher")
                pub = publisher.wait_joined()["id"]
                pages["S"] = subscriber = Page(browser, url, "S", device_scale_factor=2)
                frames = record_sent_frames(subscriber)
                subscriber.join("Subscriber")
                subscriber.wait_joined()

                def drawn() -> int:
                    return subscriber.page.evaluate(
                        """(id) => {
                          const video = [...document.querySelectorAll('[data-testid=tile]')]
                            .find((t) => t.dataset.peerId === id).querySelector('video');
                          return Math.round(video.getBoundingClientRect().height * devicePixelRatio);
                        }""",
                        pub,
                    )

                def wait_frames(n: int, what: str) -> list[dict[str, Any]]:
                    # `frames` fills while Playwright runs: wait in the page, not in time.sleep.
                    got = poll(
                        lambda: (
                            subscriber.page.wait_for_timeout(50)
                            or (len(p := preference_frames(frames)) >= n and p)
                        ),
                        timeout=5,
                        what=f"{what}: {preference_frames(frames)}",
                    )
                    subscriber.page.wait_for_timeout(600)  # two debounce periods: no more
                    assert preference_frames(frames) == got
                    return got

                seen["tile"] = wait_frames(1, "the tile's first frame")
                height = seen["height"] = drawn()
                seen["viewport"] = subscriber.page.viewport_size
                # The window gets so short that the tiles overflow the grid, and the person
                # scrolls the grid down: the publisher's (large, first) tile leaves the view.
                subscriber.page.set_viewport_size({"width": 960, "height": 100})
                grid = subscriber.page.locator("#grid").bounding_box()
                assert grid is not None
                subscriber.page.mouse.move(
                    grid["x"] + grid["width"] / 2, grid["y"] + grid["height"] / 2
                )
                subscriber.page.mouse.wheel(0, 2000)
                seen["scrolled"] = poll(
                    lambda: subscriber.page.locator("#grid").evaluate("(g) => g.scrollTop"),
                    timeout=5,
                    what="the grid scrolled",
                )
                seen["clipped"] = wait_frames(2, "paused when scrolled out of view")
                subscriber.page.set_viewport_size({"width": 960, "height": 600})
                seen["back"] = wait_frames(3, "resumed")
                assert drawn() == height
                # The publisher turns its camera off, then on.
                publisher.page.get_by_role("button", name="Camera").click()
                seen["camera off"] = wait_frames(4, "paused while the camera is off")
                publisher.page.get_by_role("button", name="Camera").click()
                seen["camera on"] = wait_frames(5, "resumed with the camera")
                # The page is hidden (another tab in front), then shown again. Headless
                # Chromium never hides a page by itself: the test says so, as the browser would.
                visibility = """(hidden) => {
                  if (hidden) Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
                  else delete document.hidden;
                  document.dispatchEvent(new Event("visibilitychange"));
                }"""
                subscriber.page.evaluate(visibility, True)
                seen["hidden"] = wait_frames(6, "paused while the page is hidden")
                subscriber.page.evaluate(visibility, False)
                seen["shown"] = wait_frames(7, "resumed when the page is shown")
                state = subscriber.state()
                seen["state"] = {k: state[k] for k in ("banner", "errors", "preferences")}
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(120):
            await trio.to_thread.run_sync(run_pages, body)
    height = seen["height"]
    # The large tile of a 960x600 window (the speaker layout: 16:9, under ~470 px of grid).
    assert 2 * 200 <= height <= 2 * 470, seen
    on = {
        "remotePeerId": seen["state"]["preferences"][0]["id"],
        "maxHeight": height,
        "paused": False,
    }
    off = {**on, "paused": True}
    assert seen["tile"] == [on]
    assert seen["scrolled"] > 0, seen
    assert seen["clipped"] == [on, off]
    assert seen["back"] == [on, off, on]
    assert seen["camera off"] == [on, off, on, off]
    assert seen["camera on"] == [on, off, on, off, on]
    assert seen["hidden"] == [on, off, on, off, on, off]
    assert seen["shown"] == [on, off, on, off, on, off, on]
    assert seen["state"]["preferences"] == [{"id": on["remotePeerId"], "sent": on}]
    assert seen["state"]["banner"] == ""
    assert not any(e.startswith("preferences") for e in seen["state"]["errors"]), seen


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.page.locator(selector).bounding_box()
    assert found is not None, selector
    return found


def sixteen_by_nine(b: dict[str, float]) -> bool:
    return abs(b["width"] * 9 / 16 - b["height"]) <= 1


async def test_speaker_and_grid_layouts_keep_16_9_tiles(tmp_path: Path) -> None:
    """(e) The speaker layout (the default) shows the other participant large and ourselves in
    the strip; the toggle switches to the grid, where two 16:9 tiles side by side fill the
    width; the choice survives a reload. Video fills its tile: no bars."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        url = srv.url + "/web-layout"

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                pages["A"] = a = Page(browser, url, "A")
                a.join("Alice")
                a.wait_joined()
                pages["B"] = b = Page(browser, url, "B")
                b.join("Bob")
                bob = b.wait_joined()["id"]
                poll(lambda: len(a.state()["tiles"]) == 2, timeout=5, what="B's tile on A")
                remote = f'[data-testid="tile"][data-peer-id="{bob}"]'
                own = '[data-testid="tile"].self'
                inner = """(sel) => {
                  const grid = document.querySelector('#grid'), s = getComputedStyle(grid);
                  const video = document.querySelector(sel + ' video');
                  const r = video.getBoundingClientRect();
                  return {
                    gridWidth: grid.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight),
                    gridLeft: grid.getBoundingClientRect().left + parseFloat(s.paddingLeft),
                    gap: parseFloat(s.columnGap),
                    box: [r.width, r.height], picture: [video.videoWidth, video.videoHeight],
                  };
                }"""

                seen["speaker state"] = a.state()
                seen["speaker classes"] = a.page.locator("#grid").get_attribute("class")
                seen["speaker"] = {"large": box(a, remote), "strip": box(a, own)}
                seen["speaker video"] = a.page.evaluate(inner, own)
                seen["speaker button"] = a.page.get_by_test_id("toggle-layout").get_attribute(
                    "aria-label"
                )

                a.page.get_by_role("button", name="Grid view").click()
                seen["grid state"] = a.state()
                seen["grid classes"] = a.page.locator("#grid").get_attribute("class")
                seen["grid"] = {"remote": box(a, remote), "own": box(a, own)}
                seen["grid video"] = a.page.evaluate(inner, own)
                seen["grid button"] = a.page.get_by_test_id("toggle-layout").get_attribute(
                    "aria-label"
                )
                seen["stored"] = a.page.evaluate("localStorage.getItem('arbiter.layout')")
                a.screenshot("web-layout-grid")

                a.page.reload()
                a.page.get_by_label("Your name").wait_for()
                seen["reloaded"] = a.state()["layout"]
                seen["reloaded button"] = a.page.get_by_test_id("toggle-layout").get_attribute(
                    "aria-label"
                )
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(90):
            await trio.to_thread.run_sync(run_pages, body)

    # Speaker layout: the other one large, ourselves beside it (two people fill the width).
    assert seen["speaker state"]["layout"] == "speaker"
    tiles = {t["self"]: t for t in seen["speaker state"]["tiles"]}
    assert (tiles[False]["large"], tiles[True]["large"]) == (True, False), tiles
    assert set(seen["speaker classes"].split()) >= {"grid", "layout-speaker", "has-speaker"}
    large, strip = seen["speaker"]["large"], seen["speaker"]["strip"]
    assert sixteen_by_nine(large) and sixteen_by_nine(strip), seen["speaker"]
    assert large["width"] * large["height"] > 4 * strip["width"] * strip["height"], seen["speaker"]
    # Two people side by side fill the width (issue 14): ours beside theirs, at its foot.
    assert strip["x"] >= large["x"] + large["width"], seen["speaker"]
    assert abs(large["y"] + large["height"] - strip["y"] - strip["height"]) <= 1, seen["speaker"]
    video = seen["speaker video"]
    assert sixteen_by_nine({"width": video["box"][0] + 4, "height": video["box"][1] + 4}), video
    filled = large["width"] + video["gap"] + strip["width"]
    assert video["gridWidth"] - 2 <= filled <= video["gridWidth"], (large, strip, video)
    assert seen["speaker button"] == "Grid view"

    # Grid layout: two equal 16:9 tiles side by side filling the width, nobody large.
    assert seen["grid state"]["layout"] == "grid"
    assert not any(t["large"] for t in seen["grid state"]["tiles"])
    classes = set(seen["grid classes"].split())
    assert "layout-grid" in classes and not classes & {"layout-speaker", "has-speaker"}, classes
    left, right = sorted(seen["grid"].values(), key=lambda b: b["x"])
    assert sixteen_by_nine(left) and sixteen_by_nine(right), seen["grid"]
    assert (left["width"], left["height"], left["y"]) == (
        right["width"],
        right["height"],
        right["y"],
    )
    video = seen["grid video"]
    filled = left["width"] + video["gap"] + right["width"]
    assert video["gridWidth"] - 1 <= filled <= video["gridWidth"], (seen["grid"], video)
    assert seen["grid button"] == "Speaker view"
    assert seen["stored"] == "grid"

    # Our camera's picture (16:9) fills its video box in both layouts: bars of at most a pixel
    # or two (the tile's 2 px border makes the box a hair wider than 16:9).
    for key in ("speaker video", "grid video"):
        (bw, bh), (pw, ph) = seen[key]["box"], seen[key]["picture"]
        assert pw * 9 == ph * 16, seen[key]
        drawn_w, drawn_h = min(bw, bh * pw / ph), min(bh, bw * ph / pw)
        assert bw - drawn_w <= 4 and bh - drawn_h <= 1, seen[key]

    assert seen["reloaded"] == "grid"
    assert seen["reloaded button"] == "Speaker view"


@pytest.mark.firefox
async def test_firefox_publishes_three_encodings_and_obeys_layers(tmp_path: Path) -> None:
    """(a, c) in Firefox ESR: the producer offer simulcasts q;h;f from a 1280x720 capture, the
    SFU's answer takes the three, and a `layers` frame sets the encodings exactly. No media
    needs to flow (Firefox ignores the loopback candidate): this is all signaling and the
    sender's parameters."""
    require_firefox()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        token = trio.lowlevel.current_trio_token()

        def body() -> None:
            with firefox() as ff:
                page = ff.new_page(srv.url + "/web-firefox", "F")
                try:
                    page.fill("#name", "Fox")
                    page.click("#join")
                    me = poll(
                        lambda: (s := page.evaluate("window.arbiter.state()"))["joined"] and s,
                        timeout=JOIN_TIMEOUT,
                        what="Firefox to join",
                    )["id"]
                    sdp = poll(
                        lambda: (
                            (s := page.evaluate("window.arbiter.producerSdp()"))["remote"] and s
                        ),
                        timeout=JOIN_TIMEOUT,
                        what="the producer answer in Firefox",
                    )
                    seen["offer"] = video_section(sdp["local"], sdp["videoMid"])
                    seen["answer"] = video_section(sdp["remote"], sdp["videoMid"])
                    seen["capture"] = page.evaluate(
                        "document.querySelector('[data-testid=tile].self video')"
                        ".srcObject.getVideoTracks()[0].getSettings().height"
                    )

                    def current() -> list[dict[str, Any]]:
                        return page.evaluate_async("window.arbiter.encodings()")

                    poll(lambda: current() == ALL_ON, timeout=5, what="three encodings")
                    frame = {"type": "layers", "mid": sdp["videoMid"], "active": ["h"]}
                    trio.from_thread.run_sync(to_client(srv), me, frame, trio_token=token)
                    want = encodings_with(q=False, h=True, f=False)
                    poll(lambda: current() == want, timeout=5, what="h alone")
                    seen["errors"] = page.evaluate("window.arbiter.state()")["errors"]
                except BaseException as exc:
                    exc.add_note(f"Firefox log: {ff.log_tail(15)}")
                    raise

        with trio.fail_after(90):
            await trio.to_thread.run_sync(body)
    assert [line for line in seen["offer"] if line.startswith(("a=rid:", "a=simulcast:"))] == [
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=simulcast:send q;h;f",
    ], seen["offer"]
    assert [line for line in seen["answer"] if line.startswith("a=simulcast:")] == [
        "a=simulcast:recv q;h;f"
    ]
    assert seen["capture"] == 720
    assert seen["errors"] == []
