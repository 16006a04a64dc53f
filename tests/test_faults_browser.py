"""Faults seen from the product web client in headless Chromium.

- The server process is SIGKILLed mid-call and started again on the same database and ports:
  the room keeps its id, and both pages rejoin by themselves and decode each other again.
- A page's media stops without a goodbye on its WebSocket (its peer connections are closed from
  inside the page; the signaling socket stays open): Chrome's DTLS close_notify reaches the SFU,
  which evicts it at once (consent expiry is the fallback when nothing arrives, see
  tests/test_eviction.py) and the other page is told (`clientDisconnect`, tile gone) within
  `media.consent_timeout` + 2 s.

Playwright's sync API runs in a worker thread; every wait there is bounded (`poll`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import make_config, running_server
from arbiter.testing.browser import poll, require_chromium
from arbiter.testing.webpage import MEDIA_TIMEOUT, Page, run_pages, wait_settled

pytestmark = [pytest.mark.browser, pytest.mark.media]

REJOIN_DEADLINE = 10.0  # seconds from the restarted server listening to both pages decoding


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """`arbiter serve` on fixed ports, output to a file (a pipe nobody reads could fill)."""

    def __init__(self, tmp_path: Path) -> None:
        self.http_port = _free_port(socket.SOCK_STREAM)
        self.media_port = _free_port(socket.SOCK_DGRAM)
        self.config = tmp_path / "arbiter.toml"
        self.config.write_text(
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n'
            f'[media]\nlisten = "127.0.0.1"\nport = {self.media_port}\n'
            'announced_ip = ["127.0.0.1"]\n'
            f'[store]\npath = "{tmp_path / "a.db"}"\n[rooms]\nidle_pool = 1\n[workers]\nlocal = 0\n'
        )
        self.log_dir = tmp_path
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.http_port}"

    def start(self) -> float:
        """Start it; returns the monotonic time at which it said it is listening."""
        self.runs += 1
        log = self.log_dir / f"serve-{self.runs}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if f"listening on {self.url}" in log.read_text(errors="replace"):
                return time.monotonic()
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"server did not start: {log.read_text(errors='replace')[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


def _still_decoding(pages: dict[str, Page]) -> dict[str, int]:
    """framesDecoded grows on every page for every other page (two samples 1 s apart)."""
    ids = {label: page.state()["id"] for label, page in pages.items()}
    first = {label: page.stats()["remote"] for label, page in pages.items()}
    time.sleep(1.0)
    grown = {}
    for label, page in pages.items():
        second = page.stats()["remote"]
        for other in pages:
            if other != label:
                a, b = first[label][ids[other]], second[ids[other]]
                assert b["framesDecoded"] > a["framesDecoded"] > 0, f"{label} <- {other}: {a} {b}"
                grown[f"{label}<-{other}"] = b["framesDecoded"] - a["framesDecoded"]
    return grown


def test_sigkill_mid_call_pages_rejoin_on_restart(tmp_path: Path) -> None:
    require_chromium()
    server = ServeProcess(tmp_path)
    report: dict[str, Any] = {}
    try:
        server.start()

        def body(browser: Any) -> None:
            pages = {label: Page(browser, server.url + "/killed", label) for label in "AB"}
            try:
                for label, page in pages.items():
                    page.join(f"Person {label}")
                wait_settled(pages, MEDIA_TIMEOUT)
                before = {label: page.state() for label, page in pages.items()}
                report["decoding before"] = _still_decoding(pages)
                status, room = server.get("/getRoomId?urlPath=killed")
                assert status == 200, room
                assert room["roomId"] == before["A"]["roomId"] == before["B"]["roomId"]

                killed = time.monotonic()
                server.kill()
                listening = server.start()
                report["restart s"] = round(listening - killed, 2)
                assert server.get("/getRoomId?urlPath=killed") == (200, room)
                for label, page in pages.items():
                    poll(
                        lambda page=page, old=before[label]["id"]: (
                            (s := page.state())["joined"] and s["id"] != old
                        ),
                        timeout=REJOIN_DEADLINE - (time.monotonic() - listening),
                        what=f"{label} to rejoin: {page.describe()}",
                    )
                wait_settled(pages, REJOIN_DEADLINE - (time.monotonic() - listening))
                report["restart to decoding s"] = round(time.monotonic() - listening, 2)
                report["kill to decoding s"] = round(time.monotonic() - killed, 2)
                report["decoding after"] = _still_decoding(pages)
                after = {label: page.state() for label, page in pages.items()}
                assert after["A"]["roomId"] == after["B"]["roomId"] == room["roomId"]
                report["errors seen by the pages"] = {
                    label: s["errors"][-3:] for label, s in after.items()
                }
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        run_pages(body)
    finally:
        server.kill()
    print(report)


WRAP_PEER_CONNECTIONS = """() => {
  // Test hook: remember every RTCPeerConnection the client makes, so the test can close them
  // from inside the page (the client looks the constructor up at each call).
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
}"""

CONSENT_TIMEOUT = 6.0  # Chrome checks consent every ~2.5 s on a stable pair: no false eviction


async def test_page_whose_media_stops_is_evicted(tmp_path: Path) -> None:
    require_chromium()
    config = make_config(tmp_path, media={"consent_timeout": CONSENT_TIMEOUT})
    report: dict[str, Any] = {}
    async with running_server(config) as srv:
        token = trio.lowlevel.current_trio_token()
        endpoint, media = srv.server.endpoint, srv.server.media
        assert endpoint is not None and media is not None

        def producer_dtls_state(room_id: int, peer_id: str) -> str:
            publisher = media.rooms[room_id].publishers.get(peer_id)
            if publisher is None or publisher.transport.dtls is None:
                return "gone"
            return f"{publisher.transport.dtls.state}, closed={publisher.transport.closed}"

        def body(browser: Any) -> None:
            pages = {label: Page(browser, srv.url + "/vanish", label) for label in "AB"}
            try:
                pages["A"].page.evaluate(WRAP_PEER_CONNECTIONS)
                for label, page in pages.items():
                    page.join(f"Person {label}")
                wait_settled(pages, MEDIA_TIMEOUT)
                a, b = pages["A"].state(), pages["B"].state()
                assert pages["A"].page.evaluate("window.__pcs.length") == 2  # producer, B's
                # A's browser closes its peer connections without a word on its WebSocket.
                pages["A"].page.evaluate("window.__pcs.forEach((pc) => pc.close())")
                closed = time.monotonic()
                time.sleep(0.5)
                # What reached the SFU: did Chrome's close say close_notify over DTLS?
                report["A's producer transport 0.5 s after pc.close()"] = trio.from_thread.run_sync(
                    producer_dtls_state, a["roomId"], a["id"], trio_token=token
                )
                poll(
                    lambda: a["id"] not in pages["B"].remote_tile_ids(),
                    timeout=CONSENT_TIMEOUT + 2 - (time.monotonic() - closed),
                    interval=0.05,
                    what=f"A's tile to leave B's grid: {pages['B'].describe()}",
                )
                report["pc.close() to tile gone s"] = round(time.monotonic() - closed, 2)
                assert pages["B"].tile(a["id"]).count() == 0
                assert pages["B"].state()["id"] == b["id"]  # B was never evicted
                # A's WebSocket was closed with 4001: the page rejoins under a new id.
                rejoined = poll(
                    lambda: (s := pages["A"].state())["joined"] and s["id"] != a["id"] and s,
                    timeout=15,
                    what=f"A to rejoin: {pages['A'].describe()}",
                )
                wait_settled(pages, MEDIA_TIMEOUT)
                report["A rejoined and decoding s"] = round(time.monotonic() - closed, 2)
                assert pages["B"].state()["id"] == b["id"]
                assert rejoined["roomId"] == a["roomId"]
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(120):
            await trio.to_thread.run_sync(run_pages, body)
    # The path taken: Chrome's close_notify closed A's transports, then the eviction followed.
    assert endpoint.counters["dtls_peer_closed"] >= 1
    print(report)
