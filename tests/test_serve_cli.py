"""`arbiter serve` as a user runs it: prints its URL, serves, stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import trio

from arbiter.store import Store
from arbiter.testing.serve import served
from arbiter.testing.signaling import ws_client


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    config = tmp_path / "arbiter.toml"
    config.write_text(
        f'[http]\nhost = "127.0.0.1"\nport = 0\n[media]\nlisten = "127.0.0.1"\nport = 0\n'
        f'[store]\npath = "{tmp_path / "a.db"}"\n[rooms]\nidle_pool = 1\n[workers]\nlocal = 0\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("Arbiter listening on "):
            return proc, line.split()[-1]
    proc.kill()
    raise AssertionError("server did not print its URL")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_url_and_stops_cleanly(tmp_path: Path, signum: int) -> None:
    proc, url = _start(tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        for _ in range(100):
            req = urllib.request.Request(
                f"{url}/claimRoom", data=b'{"urlPath": "cli-room"}', method="PATCH"
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert json.load(resp)["roomId"] >= 1
                    break
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
                time.sleep(0.05)
        else:
            raise AssertionError("room never claimable")
        started = time.monotonic()
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
        assert proc.returncode == 0, out
        assert "Arbiter stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
    store = Store.open(tmp_path / "a.db")
    try:
        assert store.count_connections() == 0
        row = store.room_by_path("cli-room")
        assert row is not None and row.status == "claimed"
    finally:
        store.close()


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[rooms]\nmax_room = 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "configuration error: unknown key 'rooms.max_room'" in proc.stderr


async def test_sigterm_tells_clients_the_server_restarts(tmp_path: Path) -> None:
    """SIGTERM: every browser socket, identified or not, gets {"type":"serverRestarting"} and
    is closed 1012 "Server restarting" (RFC 6455 7.4.1 Service Restart); then the server exits
    0 (docs/PROTOCOL.md section 1)."""
    async with served(tmp_path, stderr=True) as srv:
        assert (await srv.http.put("/createRoom")).status_code == 200
        room = (await srv.http.patch("/claimRoom", json={"urlPath": "restart"})).json()["roomId"]
        async with ws_client(srv.ws_url) as client, ws_client(srv.ws_url) as lurker:
            await client.identify_client(room, "a1")
            await lurker.send("chat", {"content": "not identified"})
            assert (await lurker.recv())["status"] == 400
            srv.process.send_signal(signal.SIGTERM)
            for ws in (client, lurker):
                assert await ws.recv() == {"type": "serverRestarting"}
                reason = await ws.drain()
                assert (reason.code, reason.reason) == (1012, "Server restarting")
        code = await trio.to_thread.run_sync(srv.process.wait, 10)
        assert code == 0
        log = srv.log()
    assert re.search(rf"room {room}: peer a1 left after \d+ s, Server restarting \(0 in the room\)",
                     log), log  # fmt: skip
    assert "Traceback" not in log and " ERROR " not in log
