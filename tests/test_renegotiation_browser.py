"""Renegotiation with Chromium as real participants (issue 11; docs/PROTOCOL.md section 4).

Two pages run tests/browser_participant.js. Page B re-offers on every negotiationneeded of its
producer pc (as the deployed client does) while it adds and removes a camera transceiver or
restarts ICE; page C restarts ICE on its consumer pc of B, both ways (its own offer, and the
SFU's offer on request). Through all of it the far side keeps decoding (`framesDecoded` grows)
and no connection is replaced: every page keeps one consumer pc per publisher, and /metrics
`arbiter_media_transports{kind="transports"}` stays at 4 (two producers, two consumers).

Playwright's sync API runs in one worker thread; the server runs in trio in the test's thread
and is read from the worker with `trio.from_thread.run_sync`. Every wait in the worker is
bounded, so the thread always returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from arbiter.sfu.media import MediaRoom
from arbiter.testing import Running, make_config, new_room, running_server
from arbiter.testing.browser import chromium, no_leaked_threads, poll, require_chromium

pytestmark = [pytest.mark.browser, pytest.mark.media]

HARNESS = Path(__file__).with_name("browser_participant.js")
JOIN_TIMEOUT = 10.0
STEP_TIMEOUT = 8.0


@pytest.fixture(autouse=True)
def no_leaked_thread() -> Iterator[None]:
    with no_leaked_threads():
        yield


def metrics(srv: Running) -> dict[str, float]:
    """arbiter_media_transports and the media counters, from /metrics (worker thread)."""
    out: dict[str, float] = {}
    for line in httpx.get(srv.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("arbiter_media_transports{") or line.startswith(
            "arbiter_media_datagrams_total{"
        ):
            key = line.split('="', 1)[1].split('"', 1)[0]
            out[key] = float(line.rsplit(" ", 1)[1])
    return out


class Pages:
    """The pages of one test, driven from the worker thread."""

    def __init__(self, browser: Any, srv: Running, room_id: int) -> None:
        self.browser = browser
        self.srv = srv
        self.room_id = room_id
        self.pages: dict[str, Any] = {}

    def join(self, peer: str, **options: bool) -> Any:
        context = self.browser.new_context(bypass_csp=True)  # the harness is an inline script
        page = self.pages[peer] = context.new_page()
        page.goto(self.srv.url + "/")
        page.add_script_tag(content=HARNESS.read_text())
        page.evaluate("(o) => Object.assign(window.harness, o)", options)
        page.evaluate(
            """([url, room, id, ms]) => Promise.race([window.arbiterJoin(url, room, id, id),
                new Promise((_, no) => setTimeout(() => no(new Error("join timed out")), ms))])""",
            [self.srv.ws_url, self.room_id, peer, JOIN_TIMEOUT * 1000],
        )
        return page

    def state(self, peer: str) -> dict[str, Any]:
        return dict(self.pages[peer].evaluate("window.arbiterState()"))

    def frames(self, peer: str, publisher: str) -> int:
        stats = self.pages[peer].evaluate("window.stats()")
        return int(stats["remote"].get(publisher, {}).get("framesDecoded", 0))

    def videos(self, peer: str, publisher: str) -> dict[str, int]:
        stats = self.pages[peer].evaluate("window.stats()")
        return dict(stats["remote"].get(publisher, {}).get("videos", {}))

    def wait(self, check: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
        return poll(check, timeout=timeout, what=what, interval=0.1)

    def keeps_decoding(self, peer: str, publisher: str, frames: int = 10) -> int:
        """Until `peer` decoded `frames` more frames from `publisher`; the new count."""
        start = self.frames(peer, publisher)
        return int(self.wait(
            lambda: (n := self.frames(peer, publisher)) >= start + frames and n,
            f"{peer} decoding {publisher} past {start} frames",
        ))  # fmt: skip

    def describe(self) -> str:
        out = []
        for peer in self.pages:
            try:
                out.append(f"{peer}: {self.state(peer)}")
            except Exception as exc:  # a crashed page
                out.append(f"{peer}: unreachable ({exc})")
        return "; ".join(out)


def room_of(srv: Running, room_id: int) -> MediaRoom:
    assert srv.server.media is not None
    return srv.server.media.rooms[room_id]


def b_and_c_transports(srv: Running, room_id: int) -> tuple[Any, Any]:
    """B's producer transport and C's consumer transport of B, read from the worker thread."""
    room = trio.from_thread.run_sync(room_of, srv, room_id)
    return room.publishers["B"].transport, room.subscriptions[("C", "B")].transport


def run_pages(srv: Running, room_id: int, scenario: Callable[[Pages], None]) -> None:
    require_chromium()
    with chromium() as browser:
        pages = Pages(browser, srv, room_id)
        try:
            scenario(pages)
        except BaseException as exc:
            exc.add_note(f"pages: {pages.describe()}")
            exc.add_note(f"metrics: {metrics(srv)}")
            raise


def joined_and_decoding(pages: Pages) -> None:
    pages.join("B", autoReoffer=True)
    pages.join("C")
    pages.wait(lambda: pages.frames("C", "B") > 0 and pages.frames("B", "C") > 0,
               "both pages decoding each other", timeout=15)  # fmt: skip
    assert metrics(pages.srv)["transports"] == 4


def assert_no_new_connections(pages: Pages, consumer_offers_from_b: int) -> None:
    b, c = pages.state("B"), pages.state("C")
    assert b["errors"] == [] and c["errors"] == [], (b["errors"], c["errors"])
    assert b["consumerPcs"] == {"C": 1} and c["consumerPcs"] == {"B": 1}
    assert b["consumerOffers"] == {"C": 1}
    assert c["consumerOffers"] == {"B": consumer_offers_from_b}
    assert b["consumerStates"] == {"C": "connected"} and c["consumerStates"] == {"B": "connected"}
    assert b["producerState"] == c["producerState"] == "connected"
    assert metrics(pages.srv)["transports"] == 4


async def test_chromium_reoffers_after_adding_and_removing_a_transceiver(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv:
            room_id = await new_room(srv, "renegotiate-tracks")

            def scenario(pages: Pages) -> None:
                joined_and_decoding(pages)
                producer_transport, consumer_transport = b_and_c_transports(srv, room_id)
                before = metrics(srv)
                started = time.monotonic()
                # A second camera: B re-offers (negotiationneeded), C gets a re-offer on the
                # same consumer pc and decodes both videos.
                pages.pages["B"].evaluate("window.addVideo()")
                pages.wait(lambda: pages.state("C")["consumerOffers"] == {"B": 2},
                           "C's re-offer after B added a camera")  # fmt: skip
                videos = pages.wait(
                    lambda: len(v := pages.videos("C", "B")) == 2 and min(v.values()) > 0 and v,
                    "C decoding B's two videos",
                )
                assert_no_new_connections(pages, 2)
                # The camera goes: its section turns inactive; the first video goes on.
                pages.pages["B"].evaluate("window.removeVideo()")
                pages.wait(lambda: pages.state("C")["consumerOffers"] == {"B": 3},
                           "C's re-offer after B removed the camera")  # fmt: skip
                first_mid = min(videos)
                after = pages.keeps_decoding("C", "B", 15)
                assert pages.videos("C", "B")[first_mid] > videos[first_mid]
                pages.keeps_decoding("B", "C")
                elapsed = time.monotonic() - started
                assert_no_new_connections(pages, 3)
                b = pages.state("B")
                print(
                    f"\nB's producer offers: {b['producerOffers']} in {elapsed:.1f} s "
                    f"(negotiationneeded {b['negotiationNeeded']}); C decoded {after} frames "
                    f"of B; C's videos of B {pages.videos('C', 'B')}"
                )
                assert b["producerOffers"] == 3 and b["producerAnswers"] == 3  # a handful
                assert len(set(b["answerUfrags"])) == 1  # one set of SFU credentials
                # The same transports on the server all along.
                assert b_and_c_transports(srv, room_id) == (producer_transport, consumer_transport)
                assert not producer_transport.closed and not consumer_transport.closed
                now = metrics(srv)
                assert now.get("stun_unknown_ufrag", 0) == before.get("stun_unknown_ufrag", 0)
                assert now.get("sdp_rejected", 0) == 0

            await trio.to_thread.run_sync(run_pages, srv, room_id, scenario)


async def test_chromium_restarts_ice_on_producer_and_consumer_connections(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv:
            room_id = await new_room(srv, "renegotiate-ice")

            def scenario(pages: Pages) -> None:
                joined_and_decoding(pages)
                producer_transport, consumer_transport = b_and_c_transports(srv, room_id)
                first_ufrag = producer_transport.ice.ufrag
                dtls = producer_transport.dtls
                # B: pc.restartIce() -> negotiationneeded -> an offer with a new ufrag -> an
                # ICE restart of the same transport: new SFU credentials, same DTLS.
                pages.pages["B"].evaluate("window.restartIce()")
                ufrags = pages.wait(
                    lambda: len(u := pages.state("B")["answerUfrags"]) == 2 and u,
                    "the answer to B's ICE restart",
                )
                assert ufrags[0] == first_ufrag and ufrags[1] != first_ufrag
                pages.keeps_decoding("C", "B", 15)
                pages.wait(lambda: producer_transport.ice.selected is not None,
                           "the new ICE session's nomination")  # fmt: skip
                assert producer_transport.ice.ufrag == ufrags[1]
                assert producer_transport.dtls is dtls and not producer_transport.closed
                # C: restartIce() on its consumer pc of B and its own offer: the SFU answers
                # for the same transport with new credentials.
                sfu_ufrag = consumer_transport.ice.ufrag
                c_ufrag = pages.pages["C"].evaluate("window.restartConsumerIce('B')")
                pages.wait(lambda: pages.state("C")["consumerAnswers"] == {"B": 1},
                           "the SFU's answer to C's consumer offer")  # fmt: skip
                ufrags_c = pages.pages["C"].evaluate("window.consumerUfrags('B')")
                assert ufrags_c["local"] == c_ufrag and ufrags_c["remote"] != sfu_ufrag
                assert ufrags_c["remote"] == consumer_transport.ice.ufrag
                pages.keeps_decoding("C", "B", 15)
                # C asks the SFU to restart: the SFU re-offers with new credentials on the same
                # consumer pc.
                sfu_ufrag = consumer_transport.ice.ufrag
                pages.pages["C"].evaluate("window.askConsumerRestart('B')")
                pages.wait(lambda: pages.state("C")["consumerOffers"] == {"B": 2},
                           "the SFU's ICE restart offer to C")  # fmt: skip
                pages.keeps_decoding("C", "B", 15)
                assert consumer_transport.ice.ufrag != sfu_ufrag
                assert pages.pages["C"].evaluate("window.consumerUfrags('B')")["remote"] == (
                    consumer_transport.ice.ufrag
                )
                pages.keeps_decoding("B", "C")
                assert_no_new_connections(pages, 2)
                assert b_and_c_transports(srv, room_id) == (producer_transport, consumer_transport)
                assert pages.state("B")["producerOffers"] == 2
                print(f"\nICE restarts: producer ufrags {ufrags}, consumer {c_ufrag} -> {ufrags_c}")

            await trio.to_thread.run_sync(run_pages, srv, room_id, scenario)


async def test_a_subscriber_that_rebuilds_its_consumer_pc_keeps_receiving(tmp_path: Path) -> None:
    """Older clients close their consumer pc and answer every offer on a new one: the SFU's
    re-offer is then answered from a new peer connection, which gets a new transport with the
    credentials of that offer (the old one is closed), and media goes on."""
    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv:
            room_id = await new_room(srv, "renegotiate-rebuild")

            def scenario(pages: Pages) -> None:
                pages.join("B", autoReoffer=True)
                pages.join("C", rebuildConsumers=True)
                pages.wait(lambda: pages.frames("C", "B") > 0, "C decoding B", timeout=15)
                room = trio.from_thread.run_sync(room_of, srv, room_id)
                old = room.subscriptions[("C", "B")].transport
                pages.pages["B"].evaluate("window.addVideo()")
                pages.wait(lambda: pages.state("C")["consumerPcs"] == {"B": 2},
                           "C rebuilding its consumer pc for B's re-offer")  # fmt: skip
                pages.wait(lambda: len(v := pages.videos("C", "B")) == 2 and min(v.values()) > 0,
                           "C decoding B's two videos on its new pc")  # fmt: skip
                pages.keeps_decoding("C", "B", 15)
                room = trio.from_thread.run_sync(room_of, srv, room_id)
                new = room.subscriptions[("C", "B")].transport
                assert new is not old and old.closed and not new.closed
                assert new.ice.ufrag == old.ice.ufrag  # the credentials of the offer it answered
                c = pages.state("C")
                assert c["errors"] == [] and c["consumerStates"] == {"B": "connected"}
                assert metrics(srv)["transports"] == 4
                assert room.publishers["B"].transport.connected  # nobody was evicted

            await trio.to_thread.run_sync(run_pages, srv, room_id, scenario)


COUNT_PCS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = 0;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs += 1; }
  };
})();
"""


async def test_the_web_client_renegotiates_its_consumer_pc(tmp_path: Path) -> None:
    """The served web client (arbiter/web) receives re-offers on its consumer pc when a
    publisher adds and removes a camera: the same pc (two pcs in the page all along), its tile
    keeps showing the first camera, and it keeps decoding."""
    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv:

            def scenario(browser: Any) -> None:
                context = browser.new_context(viewport={"width": 960, "height": 600})
                context.add_init_script(COUNT_PCS)
                web = context.new_page()
                web.goto(srv.url + "/renegotiate-web")
                web.get_by_label("Your name").fill("Web")
                web.get_by_role("button", name="Join call").click()
                state = poll(lambda: (s := web.evaluate("window.arbiter.state()"))["joined"] and s,
                             timeout=15, what="the web client to join")  # fmt: skip
                pages = Pages(browser, srv, state["roomId"])
                b = pages.join("B", autoReoffer=True)

                def web_frames() -> int:
                    remote = web.evaluate("window.arbiter.stats()")["remote"]
                    return int(remote.get("B", {}).get("framesDecoded", 0))

                def tile_video() -> dict[str, Any]:
                    return dict(web.evaluate("""() => {
                        const v = document.querySelector('[data-peer-id="B"] video');
                        return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime};
                    }"""))  # fmt: skip

                poll(lambda: web_frames() > 0, timeout=15, what="the web client decoding B")
                poll(lambda: tile_video()["width"] == 320, timeout=5, what="B's camera in its tile")
                assert web.evaluate("window.__pcs") == 2  # its producer pc and one consumer pc
                for action, offers in (("addVideo()", 2), ("removeVideo()", 3)):
                    b.evaluate(f"window.{action}")
                    pages.wait(lambda o=offers: pages.state("B")["producerOffers"] == o,
                               f"B's re-offer after {action}")  # fmt: skip
                    start, shown = web_frames(), tile_video()
                    poll(lambda s=start: web_frames() > s + 15, timeout=STEP_TIMEOUT,
                         what=f"the web client decoding B after {action}")  # fmt: skip
                    now = tile_video()
                    assert now["width"] == 320 and now["time"] > shown["time"], (shown, now)
                assert web.evaluate("window.__pcs") == 2
                assert web.evaluate("window.arbiter.state()")["errors"] == []
                assert pages.state("B")["errors"] == []
                assert metrics(srv)["transports"] == 4

            require_chromium()
            await trio.to_thread.run_sync(lambda: _with_browser(scenario))


def _with_browser(scenario: Callable[[Any], None]) -> None:
    with chromium() as browser:
        scenario(browser)
