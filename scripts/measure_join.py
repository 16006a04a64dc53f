"""Measure, in the browser, the time from clicking Join to the first remote video frame.

Starts `arbiter serve` as its own process on loopback (fresh database in a temp dir, a ready
idle room in the pool as in a deployment), opens one headless Chromium page that joins the room
through the web client's lobby and publishes its (fake) camera, then `--joins` times: a fresh
page (its own browser context) opens the room, waits in the lobby until its camera preview
plays (as a person would), clicks Join, and the page itself records `performance.now()` at the
click and at the first remote video frame presented (`requestVideoFrameCallback` on the remote
<video>; window.arbiter.state().marks). The page then clicks Leave and is closed.

Prints JSON: every join's milliseconds (click → identified and producer offered, click → first
remote frame) and the medians.

Usage: .venv/bin/python scripts/measure_join.py [--joins 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from arbiter.bench.procstat import spawn_serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def start_server(tmp: Path) -> tuple[subprocess.Popen[str], str]:
    config = tmp / "arbiter.toml"
    config.write_text(
        '[http]\nhost = "127.0.0.1"\nport = 0\n'
        '[media]\nlisten = "127.0.0.1"\nport = 0\nannounced_ip = ["127.0.0.1"]\n'
        f'[store]\npath = "{tmp / "join.db"}"\n[rooms]\nidle_pool = 1\n[workers]\nlocal = 0\n'
    )
    return spawn_serve(config)


def wait_for(page: Any, expression: str, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        page.wait_for_timeout(20)


def join_page(browser: Any, url: str, name: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 960, "height": 600})
    page = context.new_page()
    page.goto(url)
    page.get_by_label("Your name").fill(name)
    wait_for(page, "document.querySelector('#preview').videoWidth > 0", 10, "the lobby preview")
    return context, page


def measure(url: str, joins: int) -> dict[str, Any]:
    runs: list[dict[str, float]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            _, publisher = join_page(browser, url, "Publisher")
            publisher.get_by_role("button", name="Join call").click()
            wait_for(publisher, "window.arbiter.state().joined", 15, "the publisher to join")
            for i in range(joins):
                context, page = join_page(browser, url, f"Joiner {i + 1}")
                page.get_by_role("button", name="Join call").click()
                marks = wait_for(
                    page,
                    "(m => m.firstRemoteFrame && m)(window.arbiter.state().marks)",
                    20,
                    f"join {i + 1}'s first remote frame",
                )
                runs.append(
                    {
                        "joined_ms": round(marks["joined"] - marks["joinClick"], 1),
                        "first_frame_ms": round(marks["firstRemoteFrame"] - marks["joinClick"], 1),
                    }
                )
                page.get_by_role("button", name="Leave call").click()
                wait_for(
                    publisher,
                    "window.arbiter.state().tiles.length === 1",
                    5,
                    "the joiner to leave the publisher's grid",
                )
                context.close()
        finally:
            browser.close()
    first = [r["first_frame_ms"] for r in runs]
    return {
        "joins": runs,
        "first_frame_ms": first,
        "median_first_frame_ms": statistics.median(first),
        "median_joined_ms": statistics.median(r["joined_ms"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_server(Path(tmp))
        try:
            result = measure(base + "/join-timing", args.joins)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
