"""Shared helpers for tests that drive Debian's Chromium through Playwright's sync API.

The sync API runs in a worker thread (`trio.to_thread.run_sync`) while trio runs the server in
the test's own thread; everything a browser thread waits for is bounded, so the thread always
returns and the browser is always closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Fake camera/microphone, and permission prompts (camera, microphone, screen) auto-accepted:
# with both flags getDisplayMedia returns a fake 1280x720 "screen".
CHROMIUM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(scripts/test installs it; or: apt-get install chromium)",
            pytrace=False,
        )


@contextmanager
def chromium(extra_args: list[str] | None = None) -> Iterator[Any]:
    """A headless Chromium browser (Playwright sync API), closed on exit whatever happened."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + (extra_args or [])
        )
        try:
            yield browser
        finally:
            browser.close()


def poll(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call `check` until it returns something truthy; AssertionError naming `what` after
    `timeout` seconds (with the last value seen)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@contextmanager
def no_leaked_threads() -> Iterator[None]:
    """No thread started inside the block outlives it (trio's idle cache workers excepted)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith("Trio thread")
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert leaked == [], f"threads outlived the test: {leaked}"
