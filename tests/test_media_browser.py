"""End to end with headless Chromium as a real participant (docs/PROTOCOL.md section 8).

Each page is served from the Arbiter server's own origin (a secure context on http://127.0.0.1),
then a small self-contained participant (tests/browser_participant.js, a test harness, not the
product's web client) is injected: it identifies, publishes the fake camera and microphone on one
producer pc (plus the deployed client's negotiated data channels, which the SFU rejects), and
answers every consumer offer. Success is frames *decoded* (`getStats()` inbound-rtp
`framesDecoded`), not "connected".

Playwright's sync API runs the whole browser side in one worker thread (`BrowserSide.run`, via
`trio.to_thread.run_sync`) while trio runs the server and any aiortc participant. The thread is
never abandoned: on failure or cancellation the trio side sets `release`, the thread notices it
at its next poll, closes the browser and returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import Running, make_config, new_room, running_server
from arbiter.testing.browser import no_leaked_threads
from arbiter.testing.media_peer import open_media_peer

pytestmark = [pytest.mark.browser, pytest.mark.media]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
HARNESS = Path(__file__).with_name("browser_participant.js")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# Bounds inside the browser thread; every test also runs under trio.fail_after(30).
JOIN_TIMEOUT = 10.0  # per page: identify, getUserMedia, producer offer sent
MEDIA_TIMEOUT = 15.0  # from the last page joining until every expected stream decodes
HOLD_TIMEOUT = 20.0  # how long the browser stays up for the trio side after reporting


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(scripts/test installs it; or: apt-get install chromium)",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def no_leaked_thread() -> Iterator[None]:
    """No thread started by the test (browser side, aiortc loop) is still alive after it."""
    with no_leaked_threads():
        yield


class Stopped(Exception):
    """The trio side released the browser before it decoded (the trio side failed)."""


@dataclass
class BrowserSide:
    """Every Chromium page of one test, driven from one worker thread with Playwright's sync API.

    `participants` are (peer id, name) pairs, one page each (each in its own browser context);
    `expect[peer]` is the set of publishers that page must decode. `run` joins every page, waits
    until each decodes video (framesDecoded > 0) and audio (packetsReceived > 0) from each of its
    publishers, takes two `window.stats()` samples `sample_gap` s apart, saves screenshots, sets
    `ready` (a trio.Event), then keeps the pages alive until `release` is set (if `hold`).
    """

    srv_url: str
    ws_url: str
    room_id: int
    participants: list[tuple[str, str]]
    expect: dict[str, set[str]]
    artifact_prefix: str
    hold: bool = False
    sample_gap: float = 1.0
    ready: trio.Event = field(default_factory=trio.Event)
    release: threading.Event = field(default_factory=threading.Event)
    samples: list[dict[str, Any]] = field(default_factory=list)  # [{peer: window.stats()}, ...]
    states: dict[str, Any] = field(default_factory=dict)  # peer -> window.arbiterState()
    console: dict[str, list[str]] = field(default_factory=dict)
    screenshots: list[Path] = field(default_factory=list)
    join_seconds: float = 0.0
    media_seconds: float = 0.0

    # ------------------------------------------------------------ worker thread

    def run(self) -> None:
        from playwright.sync_api import sync_playwright

        harness = HARNESS.read_text()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            pages: dict[str, Any] = {}
            try:
                started = time.monotonic()
                for peer_id, name in self.participants:
                    # The harness is injected as an inline script, which the page's CSP (rightly)
                    # forbids; it is test code, not the web client, so CSP is bypassed here only.
                    context = browser.new_context(
                        viewport={"width": 800, "height": 600}, bypass_csp=True
                    )
                    page = pages[peer_id] = context.new_page()
                    log = self.console[peer_id] = []
                    page.on("console", lambda m, log=log: log.append(f"{m.type}: {m.text}"))
                    page.on("pageerror", lambda e, log=log: log.append(f"pageerror: {e}"))
                    page.goto(self.srv_url + "/")
                    page.add_script_tag(content=harness)
                    # page.evaluate has no timeout of its own: bound the join in the page.
                    page.evaluate(
                        """([url, room, id, name, ms]) => Promise.race([
                            window.arbiterJoin(url, room, id, name),
                            new Promise((_, reject) => setTimeout(
                                () => reject(new Error(`join timed out after ${ms} ms`)), ms)),
                        ])""",
                        [self.ws_url, self.room_id, peer_id, name, JOIN_TIMEOUT * 1000],
                    )
                self.join_seconds = time.monotonic() - started
                try:
                    self._wait_for_media(pages)
                except Stopped:
                    return  # the trio side failed or was cancelled: its exception is the report
                self.media_seconds = time.monotonic() - started
                self.samples.append(self._stats(pages))
                self._sleep(pages, self.sample_gap, check=False)
                self.samples.append(self._stats(pages))
                self._screenshots(pages)
                trio.from_thread.run_sync(self.ready.set)
                if self.hold:
                    deadline = time.monotonic() + HOLD_TIMEOUT
                    while not self.release.is_set() and time.monotonic() < deadline:
                        self._sleep(pages, 0.05, check=False)
            finally:
                try:
                    self._collect_and_leave(pages)
                finally:
                    browser.close()

    def _collect_and_leave(self, pages: dict[str, Any]) -> None:
        """Best effort (never masks the real failure): final states, leave, failure screenshots."""
        for peer_id, page in pages.items():
            try:
                self.states[peer_id] = page.evaluate("window.arbiterState()")
                page.evaluate("window.arbiterLeave()")
            except Exception as exc:  # a crashed or closed page
                self.states.setdefault(peer_id, {"errors": [f"harness unreachable: {exc}"]})
        if pages and not self.screenshots:
            try:
                self._screenshots(pages, suffix="-failed")
            except Exception as exc:
                self.console.setdefault("screenshots", []).append(str(exc))

    def _stats(self, pages: dict[str, Any]) -> dict[str, Any]:
        return {peer_id: page.evaluate("window.stats()") for peer_id, page in pages.items()}

    def _sleep(self, pages: dict[str, Any], seconds: float, *, check: bool = True) -> None:
        # page.wait_for_timeout keeps Playwright's event dispatch running (console logs).
        if check and self.release.is_set():
            raise Stopped("released by the trio side")
        next(iter(pages.values())).wait_for_timeout(seconds * 1000)

    def _decoding(self, stats: dict[str, Any]) -> bool:
        for peer_id, publishers in self.expect.items():
            remote = stats[peer_id]["remote"]
            for publisher in publishers:
                got = remote.get(publisher, {})
                if got.get("framesDecoded", 0) <= 0 or got.get("packetsReceived", 0) <= 0:
                    return False
        return True

    def _wait_for_media(self, pages: dict[str, Any]) -> None:
        deadline = time.monotonic() + MEDIA_TIMEOUT
        while True:
            stats = self._stats(pages)
            if self._decoding(stats):
                return
            if time.monotonic() > deadline:
                states = {p: page.evaluate("window.arbiterState()") for p, page in pages.items()}
                raise AssertionError(
                    f"Chromium did not decode {self.expect} within {MEDIA_TIMEOUT} s: "
                    f"stats={stats} states={states} console={self.console}"
                )
            self._sleep(pages, 0.1)

    def _screenshots(self, pages: dict[str, Any], suffix: str = "") -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        for peer_id, page in pages.items():
            path = ARTIFACTS / f"{self.artifact_prefix}-{peer_id}{suffix}.png"
            page.screenshot(path=str(path))
            self.screenshots.append(path)

    # ------------------------------------------------------------ trio side

    async def run_in_thread(self) -> None:
        # Not abandoned on cancellation: the thread returns once `release` is set.
        await trio.to_thread.run_sync(self.run)

    def errors(self) -> dict[str, list[Any]]:
        return {peer_id: state["errors"] for peer_id, state in self.states.items()}


async def with_browser(side: BrowserSide, body: Callable[[], Any]) -> None:
    """Run the browser thread and `body` concurrently; the browser is released when body ends."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(side.run_in_thread)
        try:
            await body()
        finally:
            side.release.set()
    assert side.ready.is_set() and len(side.samples) == 2, "the browser side did not finish"


def sfu_counters(srv: Running) -> dict[str, int]:
    endpoint = srv.server.endpoint
    return dict(endpoint.counters) if endpoint is not None else {}


def assert_decoding_and_growing(side: BrowserSide, peer_id: str, publisher: str) -> None:
    first, second = (sample[peer_id]["remote"][publisher] for sample in side.samples)
    print(
        f"{peer_id} <- {publisher}: {first} -> {second} (joined in {side.join_seconds:.2f} s, "
        f"decoding after {side.media_seconds:.2f} s)"
    )
    context = f"{peer_id} <- {publisher}: {first} then {second}"
    assert first["framesDecoded"] > 0, context
    assert second["framesDecoded"] > first["framesDecoded"], context
    assert second["packetsReceived"] > 0, context
    assert second["totalSamplesReceived"] > 0, context
    assert (second["frameWidth"], second["frameHeight"]) == (320, 240), context


async def test_chromium_and_aiortc_exchange_media(tmp_path: Path) -> None:
    require_chromium()
    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv, open_media_peer() as a:
            room_id = await new_room(srv, "browser-aiortc")
            await a.join(srv.ws_url, room_id, "A", "aiortc")
            side = BrowserSide(
                srv.url,
                srv.ws_url,
                room_id,
                participants=[("B", "chromium")],
                expect={"B": {"A"}},
                artifact_prefix="chromium-and-aiortc",
                hold=True,
            )

            live: dict[str, Any] = {}

            async def aiortc_side() -> None:
                await a.wait_for_media({"B"}, video_frames=5, audio_frames=5, timeout=25)
                await side.ready.wait()
                # Before the browser is released (B's leave closes A's consumer of it).
                live.update(states=a.consumer_states(), stats=a.stats(), sizes=a.video_sizes())

            try:
                await with_browser(side, aiortc_side)
            except BaseException as exc:
                exc.add_note(f"SFU drop counters: {sfu_counters(srv)}")
                exc.add_note(f"aiortc: {a.describe()}")
                exc.add_note(f"browser states: {side.states} console: {side.console}")
                raise

            assert_decoding_and_growing(side, "B", "A")
            producer = side.samples[-1]["B"]["producer"]
            assert producer["video"]["packetsSent"] > 0, producer
            assert producer["audio"]["packetsSent"] > 0, producer
            assert live["stats"]["B"]["video"] >= 5, live
            assert live["stats"]["B"]["audio"] >= 5, live
            assert live["sizes"]["B"] == (320, 240), live
            assert live["states"] == {"B": "connected"}, live
            assert a.errors == [], a.describe()
            assert side.errors() == {"B": []}
            assert side.states["B"]["producerAnswered"]
            assert side.states["B"]["consumerStates"] == {"A": "connected"}
            # B's explicit leave reached A.
            await a.wait_for_disconnect("B")


async def test_two_chromium_pages(tmp_path: Path) -> None:
    require_chromium()
    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv:
            room_id = await new_room(srv, "two-chromium")
            side = BrowserSide(
                srv.url,
                srv.ws_url,
                room_id,
                participants=[("B", "chromium-1"), ("C", "chromium-2")],
                expect={"B": {"C"}, "C": {"B"}},
                artifact_prefix="two-chromium",
            )
            try:
                await with_browser(side, side.ready.wait)
            except BaseException as exc:
                exc.add_note(f"SFU drop counters: {sfu_counters(srv)}")
                exc.add_note(f"browser states: {side.states} console: {side.console}")
                raise

            assert_decoding_and_growing(side, "B", "C")
            assert_decoding_and_growing(side, "C", "B")
            assert side.errors() == {"B": [], "C": []}
            assert side.states["B"]["consumerStates"] == {"C": "connected"}
            assert side.states["C"]["consumerStates"] == {"B": "connected"}
