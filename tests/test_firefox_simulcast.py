"""Firefox ESR publishes simulcast through the SFU, with real media (docs/PROTOCOL.md section 4,
"Quality"; issue 13).

Firefox's web client sends its camera as three encodings (rid q/h/f); a Chromium page in the
same room decodes it. Checked:

- the Chromium subscriber decodes Firefox's video (`framesDecoded` rising);
- the SFU learnt Firefox's layers: the `simulcast_layers` counter, and the Firefox publisher's
  SimulcastTrack (found through the media worker's Routers) whose layers have distinct SSRCs
  and whose heights were read from VP8 keyframes (printed: they are what the fake camera makes,
  180/360/720). q and h are learnt at once; f may be learnt only when the SFU asks for it
  (Firefox's own estimate starts low and enables f last, and the SFU's first `layers` frame may
  turn it off before it started);
- layer switches on the Chromium side as its tile changes size, which the estimate starting at
  600 kbit/s (q first) makes the order: a large window (1600x1100, a 750 px tile) brings h or
  f within 20 s (the SFU probes before it steps up); a small one (640x360, a 155 px tile)
  brings q within 10 s, and 3 s later the SFU tells Firefox to encode q alone, which it does;
  large again brings h or f back within 20 s, Firefox turning the encodings it needs back on;
- the reverse direction: Firefox decodes the Chromium page's (simulcast) video.

Firefox ignores loopback candidates (DESIGN section 8), so the server listens on the wildcard
and announces a second address of the host that the test makes (arbiter/testing/hostaddr.py),
as tests/test_browser_multihomed.py does. Both browsers run in one worker thread (Playwright's
sync API and Marionette both block), every wait bounded, the browsers always closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.sfu.simulcast import LAYER_HOLD, SimulcastTrack
from arbiter.testing import make_config, running_server
from arbiter.testing.browser import chromium, no_leaked_threads, poll, require_chromium
from arbiter.testing.firefox import FirefoxPage, firefox, require_firefox
from arbiter.testing.hostaddr import veth_addresses
from arbiter.testing.webpage import JOIN_TIMEOUT, MEDIA_TIMEOUT, Page

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.firefox]

TEST_TIMEOUT = 90.0
DOWN_WITHIN = 10.0  # s: a smaller tile decodes the lowest layer within this
UP_WITHIN = 20.0  # s: a larger tile decodes a higher layer within this (probing first)
# The speaker layout's large tile is drawn 155 px high in a 640x360 window (q: under
# 360 / 1.25), 750 px in a 1600x1100 one (f), 332 px in the default 960x600 (h).
SMALL = {"width": 640, "height": 360}
BIG = {"width": 1600, "height": 1100}


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with no_leaked_threads():
        yield


def firefox_stats(page: FirefoxPage) -> dict[str, Any]:
    # Publisher ids travel as [key, value] pairs, as in webpage.Page.stats.
    stats = page.evaluate_async(
        "window.arbiter.stats().then((s) => ({ ...s, remote: Object.entries(s.remote) }))"
    )
    assert "error" not in stats, stats
    stats["remote"] = dict(stats["remote"])
    return stats


def firefox_track(srv: Any, room_id: int, publisher: str) -> dict[str, Any]:
    """The SFU's view of `publisher`'s simulcast video (run in trio's thread): its track as the
    Router holds it, with each layer's SSRC and keyframe height, and the layer each
    consumer of it is forwarded."""
    media = srv.server.media
    room = media.rooms[room_id]
    transport = room.publishers[publisher].transport
    tracks = [
        track
        for router in media.routers
        if transport in router.transports
        for track in router.transports[transport].simulcast
    ]
    assert len(tracks) == 1 and isinstance(tracks[0], SimulcastTrack), tracks
    track = tracks[0]
    assert room.router in media.routers
    return {
        "rids": list(track.rids),
        "ssrcs": [None if layer is None else layer.ssrc for layer in track.layers],
        "heights": list(track.heights),
        "active": None if track.active is None else list(track.active),
        "forwarded": [c.rewriter.current for c in track.consumers],
        "targets": [c.rewriter.target for c in track.consumers],
        "simulcast_layers": srv.server.endpoint.counters["simulcast_layers"],
    }


def encodings(page: FirefoxPage) -> list[dict[str, Any]]:
    return page.evaluate_async("window.arbiter.encodings()")


def actives(encodings: list[dict[str, Any]]) -> list[bool]:
    return [bool(e["active"]) for e in encodings]


def tile_height(page: Page, publisher: str) -> int:
    """The height the publisher's video is drawn at, in device pixels (what `preferences`
    sends as maxHeight)."""
    return page.page.evaluate(
        """(id) => {
          const tile = [...document.querySelectorAll('[data-testid=tile]')]
            .find((t) => t.dataset.peerId === id);
          return Math.round(tile.querySelector('video').getBoundingClientRect().height
                            * devicePixelRatio);
        }""",
        publisher,
    )


async def test_firefox_publishes_simulcast_and_chromium_switches_layers(tmp_path: Path) -> None:
    require_chromium()
    require_firefox()
    seen: dict[str, Any] = {}
    with veth_addresses() as host:
        config = make_config(
            tmp_path, media={"listen": "0.0.0.0", "port": 0, "announced_ip": [host.secondary]}
        )
        async with running_server(config) as srv:
            token = trio.lowlevel.current_trio_token()
            url = f"{srv.url}/firefox-simulcast"

            def body() -> None:
                with firefox() as ff, chromium() as browser:
                    fox: FirefoxPage | None = None
                    chrome: Page | None = None
                    try:
                        fox = ff.new_page(url, "F")
                        fox.fill("#name", "Fox")
                        fox.click("#join")
                        fox_id = str(
                            poll(
                                lambda: (
                                    (s := fox.evaluate("window.arbiter.state()"))["joined"] and s
                                ),
                                timeout=JOIN_TIMEOUT,
                                what=f"Firefox to join: {ff.log_tail(10)}",
                            )["id"]
                        )
                        chrome = Page(browser, url, "C")
                        chrome.join("Chrome")
                        state = chrome.wait_joined()
                        chrome_id, room_id = str(state["id"]), int(state["roomId"])
                        run(chrome, fox, fox_id, chrome_id, room_id)
                    except BaseException as exc:
                        if chrome is not None:
                            exc.add_note(chrome.describe())
                        if fox is not None:
                            try:
                                exc.add_note(f"F stats: {firefox_stats(fox)}")
                            except Exception as inner:
                                exc.add_note(f"F unreachable: {inner}")
                        exc.add_note(f"Firefox log: {ff.log_tail(15)}")
                        raise

            def sfu(room_id: int, fox_id: str) -> dict[str, Any]:
                return trio.from_thread.run_sync(
                    firefox_track, srv, room_id, fox_id, trio_token=token
                )

            def run(chrome: Page, fox: FirefoxPage, fox_id: str, chrome_id: str,
                    room_id: int) -> None:  # fmt: skip
                def remote() -> dict[str, Any]:
                    return chrome.stats()["remote"].get(fox_id) or {}

                # Chromium decodes Firefox, and keeps decoding.
                first = poll(
                    lambda: (r := remote()).get("framesDecoded", 0) > 0 and r,
                    timeout=MEDIA_TIMEOUT,
                    interval=0.25,
                    what="Chromium decoding Firefox",
                )
                time.sleep(1.0)
                seen["frames"] = (first["framesDecoded"], remote()["framesDecoded"])
                # The SFU learnt Firefox's q and h layers, and a keyframe of each. (f may
                # come later: Firefox's own estimate starts low and enables f last, and the
                # SFU's first `layers` frame may turn it off before it started.)
                seen["track"] = poll(
                    lambda: None not in (t := sfu(room_id, fox_id))["heights"][:2] and t,
                    timeout=10,
                    what=f"a keyframe of Firefox's q and h layers: {sfu(room_id, fox_id)}",
                )
                seen["sent"] = firefox_stats(fox)["producer"]["video"]
                print(f"Firefox's layers at the SFU: {seen['track']}")
                print(f"Firefox's outbound video: {seen['sent']}")
                heights = seen["track"]["heights"]
                seen["start"] = {"tile": tile_height(chrome, fox_id), "decoded": remote()}

                def resize(name: str, size: dict[str, int], ok: Any, within: float,
                           what: str) -> None:  # fmt: skip
                    """Resize Chromium's window; its tile's next `preferences` and the
                    decoded video `ok` accepts within `within` seconds of the resize."""
                    chrome.page.set_viewport_size(size)
                    started = time.monotonic()
                    seen[f"{name}_tile"] = poll(
                        lambda: (p := sent_height()) != seen.get("last_tile") and p,
                        timeout=5,
                        what=f"{name}: a new preferences frame ({chrome.state()['preferences']})",
                    )
                    seen["last_tile"] = seen[f"{name}_tile"]
                    seen[name] = poll(
                        lambda: ok((r := remote()).get("frameHeight", 0)) and r,
                        timeout=within,
                        interval=0.2,
                        what=f"{name}: Chromium decoding {what}: {sfu(room_id, fox_id)}",
                    )
                    seen[f"{name}_s"] = round(time.monotonic() - started, 1)
                    seen[f"{name}_sfu"] = sfu(room_id, fox_id)
                    frames = remote()["framesDecoded"]
                    time.sleep(1.0)
                    seen[f"{name}_frames"] = (frames, remote()["framesDecoded"])

                def sent_height() -> int:
                    sent = {p["id"]: p["sent"] for p in chrome.state()["preferences"]}
                    return int(sent[fox_id]["maxHeight"]) if fox_id in sent else 0

                seen["last_tile"] = sent_height()
                # The estimate starts low (600 kbit/s): a large tile waits for a probe.
                resize("big", BIG, lambda h: h >= heights[1], UP_WITHIN, f">= {heights[1]}")
                resize("small", SMALL, lambda h: h == heights[0], DOWN_WITHIN, f"{heights[0]}")
                # The SFU tells Firefox to stop what nobody watches (3 s later), and it does.
                seen["small_encodings"] = poll(
                    lambda: actives(x := encodings(fox)) == [True, False, False] and x,
                    timeout=LAYER_HOLD + 3,
                    what=f"Firefox sending q alone: {encodings(fox)} {sfu(room_id, fox_id)}",
                )
                seen["small_held"] = {"decoded": remote(), "sfu": sfu(room_id, fox_id)}
                # Large again: Firefox turns its encodings back on.
                resize("again", BIG, lambda h: h >= heights[1], UP_WITHIN, f">= {heights[1]}")
                # Firefox encodes what the SFU last asked for (q stops 3 s after the step up).

                def obeyed() -> dict[str, Any] | None:
                    told, running = sfu(room_id, fox_id)["active"], encodings(fox)
                    ok = actives(running) == [rid in told for rid in "qhf"]
                    return {"told": told, "encodings": running} if ok else None

                seen["again_layers"] = poll(
                    obeyed, timeout=LAYER_HOLD + 5, interval=0.25, what="Firefox obeying `layers`"
                )

                # The reverse direction: Firefox decodes Chromium's video.
                def reverse() -> dict[str, Any]:
                    return firefox_stats(fox)["remote"].get(chrome_id) or {}

                seen["reverse"] = poll(
                    lambda: (r := reverse()).get("framesDecoded", 0) > 0 and r,
                    timeout=MEDIA_TIMEOUT,
                    interval=0.5,
                    what="Firefox decoding Chromium",
                )
                seen["errors"] = {
                    "F": fox.evaluate("window.arbiter.state()")["errors"],
                    "C": chrome.state()["errors"],
                }

            with trio.fail_after(TEST_TIMEOUT):
                await trio.to_thread.run_sync(body)
    print({k: v for k, v in seen.items() if k not in ("track", "sent")})

    track = seen["track"]
    assert track["rids"] == ["q", "h", "f"], track
    assert None not in track["ssrcs"][:2], track
    assert track["simulcast_layers"] >= 2, track
    # The end: every layer the SFU learnt has its own SSRC, and each is twice the height of
    # the one below (scaleResolutionDownBy 4, 2, 1), f included once it was sent.
    final = seen["again_sfu"]
    learnt = [ssrc for ssrc in final["ssrcs"] if ssrc is not None]
    assert final["ssrcs"][:2] == track["ssrcs"][:2] and len(set(learnt)) == len(learnt), final
    heights = final["heights"]
    assert heights[:2] == track["heights"][:2] and heights[1] == 2 * heights[0], final
    assert heights[2] in (None, 2 * heights[1]), final
    assert (final["ssrcs"][2] is None) == (heights[2] is None), final
    assert seen["frames"][1] > seen["frames"][0] > 0, seen
    # Big: a higher layer, and frames keep coming.
    # The tile is tall enough for the middle layer at least (360 <= maxHeight x 1.25).
    assert seen["big_tile"] * 5 // 4 >= heights[1], seen
    assert seen["big"]["frameHeight"] in heights[1:], seen  # h, or f when it came
    assert seen["big_sfu"]["forwarded"] in ([1], [2]), seen
    assert seen["big_frames"][1] > seen["big_frames"][0], seen
    # Small: the tile asks for less than the middle layer allows, and gets the lowest layer.
    assert 0 < seen["small_tile"] * 5 // 4 < heights[1], seen
    assert seen["small"]["frameHeight"] == heights[0], seen
    assert seen["small_sfu"]["forwarded"] == [0], seen
    assert seen["small_frames"][1] > seen["small_frames"][0], seen
    assert seen["small_held"]["sfu"]["active"] == ["q"], seen
    # Big again, with Firefox's higher encodings back on.
    assert seen["again_tile"] * 5 // 4 >= heights[1], seen
    assert seen["again"]["frameHeight"] in heights[1:], seen
    assert seen["again_frames"][1] > seen["again_frames"][0], seen
    forwarded = seen["again_sfu"]["forwarded"][0]
    assert "qhf"[forwarded] in seen["again_layers"]["told"], seen
    assert seen["reverse"]["framesDecoded"] > 0
    assert seen["errors"] == {"F": [], "C": []}, seen
