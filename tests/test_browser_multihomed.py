"""Real browsers against a server on `0.0.0.0` announcing a second address of the host (issue 11).

The host gets a second address from a veth pair the test makes (arbiter/testing/hostaddr.py):
`198.18.k.2`, which is never the kernel's preferred source, so a server that answered from the
kernel's choice would see every browser drop its answers. The server listens on the wildcard,
announces that address, and must answer from the address each packet arrived on. Pages load
Arbiter's own web client from `http://127.0.0.1:<port>` (a secure context) and join through
its DOM; success is every page decoding every other page's video (inbound-rtp `framesDecoded`
through the `window.arbiter` test hook) and receiving its audio.

- two Chromium pages (Playwright, Debian's chromium);
- a Firefox page and a Chromium page: Firefox (Debian's firefox-esr over Marionette,
  arbiter/testing/firefox.py) ignores loopback candidates, so this is also how Firefox is
  tested at all (DESIGN section 8);
- two Firefox pages.

Each test runs its browsers in one worker thread (Playwright's sync API and Marionette both
block), every wait in it bounded, the browsers always closed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import make_config, running_server
from arbiter.testing.browser import ARTIFACTS, chromium, no_leaked_threads, poll, require_chromium
from arbiter.testing.firefox import firefox, require_firefox
from arbiter.testing.hostaddr import HostAddresses, veth_addresses

pytestmark = [pytest.mark.browser, pytest.mark.media]

JOIN_TIMEOUT = 15.0
MEDIA_TIMEOUT = 25.0
TEST_TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with no_leaked_threads():
        yield


class ChromiumPage:
    """A Playwright page with the few calls `WebClient` makes (FirefoxPage has the same)."""

    def __init__(self, browser: Any, url: str, label: str) -> None:
        self.label = label
        self.page = browser.new_context(viewport={"width": 960, "height": 600}).new_page()
        self.page.set_default_timeout(10_000)
        self.log: list[str] = []
        self.page.on("console", lambda m: self.log.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.log.append(f"pageerror: {e}"))
        self.page.goto(url)

    def evaluate(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    evaluate_async = evaluate  # Playwright awaits a promise itself

    def fill(self, selector: str, text: str) -> None:
        self.page.fill(selector, text)

    def click(self, selector: str) -> None:
        self.page.click(selector)

    def screenshot(self, path: Path) -> Path:
        self.page.screenshot(path=str(path))
        return path

    def console(self) -> list[str]:
        return self.log[-15:]


class WebClient:
    """Arbiter's web client in one page: joined through the DOM, read through window.arbiter."""

    def __init__(self, page: Any, console: Callable[[], list[str]]) -> None:
        self.page = page
        self.label = page.label
        self.console = console

    def join(self, name: str) -> None:
        self.page.fill("#name", name)
        self.page.click("#join")

    def state(self) -> dict[str, Any]:
        return self.page.evaluate("window.arbiter.state()")

    def stats(self) -> dict[str, Any]:
        # Publisher ids travel as [key, value] pairs: a driver could drop a "__proto__" key.
        stats = self.page.evaluate_async(
            "window.arbiter.stats().then((s) => ({ ...s, remote: Object.entries(s.remote) }))"
        )
        stats["remote"] = dict(stats["remote"])
        return stats

    def wait_joined(self) -> str:
        state = poll(lambda: (s := self.state())["joined"] and s, timeout=JOIN_TIMEOUT,
                     what=f"{self.label} to join: {self.console()}")  # fmt: skip
        return str(state["id"])

    def decoding(self, publishers: set[str]) -> dict[str, Any] | None:
        """Every publisher's video decoded and audio received here, or None."""
        remote = self.stats()["remote"]
        for publisher in publishers:
            r = remote.get(publisher)
            if not r or r["framesDecoded"] <= 0 or r["packetsReceived"] <= 0:
                return None
        return remote

    def describe(self) -> str:
        try:
            state: Any = self.state()
            state = {k: state[k] for k in ("phase", "id", "banner", "errors", "tiles")}
            stats: Any = self.stats()
        except Exception as exc:  # a crashed page
            state, stats = f"unreachable: {exc}", None
        return f"{self.label}: state={state} stats={stats} console={self.console()}"


def call(pages: dict[str, WebClient], report: dict[str, Any]) -> None:
    """Every page joins; every page decodes every other page's video and gets its audio."""
    started = time.monotonic()
    for label, page in pages.items():
        page.join(f"Person {label}")
    ids = {label: page.wait_joined() for label, page in pages.items()}
    assert len(set(ids.values())) == len(pages), ids
    report["joined_s"] = round(time.monotonic() - started, 1)
    for label, page in pages.items():
        others = {ids[o] for o in pages if o != label}
        remote = poll(lambda page=page, others=others: page.decoding(others),
                      timeout=MEDIA_TIMEOUT, interval=0.25,
                      what=f"{label} decoding {others}: "
                      + " | ".join(p.describe() for p in pages.values()))  # fmt: skip
        report[label] = {o: remote[ids[o]]["framesDecoded"] for o in pages if o != label}
    report["decoding_s"] = round(time.monotonic() - started, 1)
    # ... and keeps decoding: a second sample a second later has more frames, every way.
    time.sleep(1.0)
    for label, page in pages.items():
        remote = page.stats()["remote"]
        for other in pages:
            if other != label:
                frames = remote[ids[other]]["framesDecoded"]
                assert frames > report[label][other], (label, other, frames, report)


def effective_source(endpoint: Any, addr: tuple[str, int]) -> str:
    """The source address the server's datagrams to `addr` leave from: the one it sets, or
    the kernel's own choice (which the server leaves alone when it is the right one)."""
    forced = endpoint.reply_source(addr)
    if forced is not None:
        return str(forced)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(addr)
        return str(probe.getsockname()[0])


async def run_call(
    tmp_path: Path, name: str, kinds: list[str]
) -> tuple[dict[str, Any], HostAddresses, list[str]]:
    """A server on 0.0.0.0 announcing the host's second address, and one page per `kinds`
    entry ("chromium" or "firefox") in a room: the call's report, the addresses, and the
    source address the server's datagrams to each connected browser address leave from."""
    with veth_addresses() as host:
        config = make_config(
            tmp_path, media={"listen": "0.0.0.0", "port": 0, "announced_ip": [host.secondary]}
        )
        report: dict[str, Any] = {}
        async with running_server(config) as srv:
            endpoint = srv.server.endpoint
            assert endpoint is not None and endpoint.answers_from_arrival
            assert endpoint.candidates() == [(host.secondary, endpoint.port)]
            url = f"{srv.url}/{name}"
            sources: list[str] = []

            def connected_sources() -> list[str]:
                return [effective_source(endpoint, t.remote_addr)
                        for t in list(endpoint._addrs) if t.connected and t.remote_addr]  # fmt: skip

            def body() -> None:
                with ExitStack() as stack:
                    pages: dict[str, WebClient] = {}
                    browsers: dict[str, Any] = {}
                    try:
                        for i, kind in enumerate(kinds):
                            label = f"{kind}-{i + 1}"
                            if kind not in browsers:
                                browsers[kind] = stack.enter_context(
                                    firefox() if kind == "firefox" else chromium()
                                )
                            if kind == "firefox":
                                ff = browsers[kind]
                                page: Any = ff.new_page(url, label)
                                pages[label] = WebClient(page, lambda ff=ff: ff.log_tail(15))
                            else:
                                page = ChromiumPage(browsers[kind], url, label)
                                pages[label] = WebClient(page, page.console)
                        call(pages, report)
                        # While the pages are up: where the server's datagrams to them leave from.
                        sources.extend(trio.from_thread.run_sync(connected_sources))
                    except BaseException as exc:
                        ARTIFACTS.mkdir(exist_ok=True)
                        for label, client in pages.items():
                            exc.add_note(client.describe())
                            try:
                                client.page.screenshot(ARTIFACTS / f"{name}-{label}-failed.png")
                            except Exception:
                                pass
                        raise

            with trio.fail_after(TEST_TIMEOUT):
                await trio.to_thread.run_sync(body)
    return report, host, sources


async def test_two_chromium_pages_on_the_second_address(tmp_path: Path) -> None:
    require_chromium()
    report, host, sources = await run_call(tmp_path, "multihomed-chromium", ["chromium"] * 2)
    print(f"report: {report}; server sources: {sources}")
    # One producer and one consumer connection per page, all answered from the announced
    # address (the browsers sent to it from the primary address or from eth0's).
    assert len(sources) == 4 and set(sources) == {host.secondary}, (sources, report)


@pytest.mark.firefox
async def test_a_firefox_page_and_a_chromium_page(tmp_path: Path) -> None:
    require_chromium()
    require_firefox()
    report, host, sources = await run_call(tmp_path, "firefox-chromium", ["firefox", "chromium"])
    print(f"report: {report}; server sources: {sources}")
    assert len(sources) == 4 and set(sources) == {host.secondary}, (sources, report)


@pytest.mark.firefox
async def test_two_firefox_pages(tmp_path: Path) -> None:
    require_firefox()
    report, host, sources = await run_call(tmp_path, "firefox-pair", ["firefox"] * 2)
    print(f"report: {report}; server sources: {sources}")
    assert len(sources) == 4 and set(sources) == {host.secondary}, (sources, report)
