"""SFU workers (issue 12, docs/PROTOCOL.md section 1): rooms on `arbiter sfu` processes.

`arbiter serve` runs as a child process with `workers.local = 2`: two `arbiter sfu` children,
each with its own UDP port, attach to it; rooms are placed on the least loaded one and calls of
synthetic participants (real ICE, DTLS, SRTP) work on each. A worker SIGKILLed mid-call: its
rooms move to the other worker, and a room already there loses nothing. A remote worker
started as its own `arbiter sfu` process serves a room end to end; a wrong token is refused in
one line with exit status 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import trio

from arbiter.bench import payloads
from arbiter.bench.arbiter_target import ArbiterParticipant, ArbiterTarget
from arbiter.bench.participant import join_call
from arbiter.sfu.dtls import Certificate
from arbiter.testing.serve import Served, served

WORKERS = """
[workers]
local = 2
token = "worker-secret"
[rooms]
idle_pool = 0
[limits]
create_room_per_minute = 0
rooms_per_address = 0
"""


async def claim(srv: Served, name: str) -> int:
    assert (await srv.http.put("/createRoom")).status_code == 200
    r = await srv.http.patch("/claimRoom", json={"urlPath": name})
    return int(r.json()["roomId"])


async def workers_attached(srv: Served, count: int) -> list[dict[str, Any]]:
    with trio.fail_after(20):
        while True:
            health = (await srv.http.get("/health")).json()
            if len(health["workers"]) >= count:
                return list(health["workers"])
            await trio.sleep(0.1)


def received(people: list[ArbiterParticipant]) -> int:
    return sum(
        s.packets for p in people for leg in p.subscriptions.values() for s in leg.streams.values()
    )


async def call(
    srv: Served, room: int, numbers: list[int], nursery: trio.Nursery
) -> list[ArbiterParticipant]:
    """Participants `numbers` join `room`, all see all, and publish until `hang_up`."""
    target = ArbiterTarget()
    target.url = srv.url
    with trio.fail_after(20):
        people = cast(
            list[ArbiterParticipant],
            await join_call(target, room, numbers, Certificate.generate(), nursery),
        )
    await nursery.start(_publish, people)
    return people


async def _publish(people: list[ArbiterParticipant], *, task_status: trio.TaskStatus[None]) -> None:
    recording = payloads.load()
    scope = trio.CancelScope()
    for p in people:
        p.publishing = scope  # type: ignore[attr-defined]
    with scope:
        async with trio.open_nursery() as publishers:
            for p in people:
                assert p.publisher_leg is not None
                publishers.start_soon(p.publisher_leg.publish, recording, p.number,
                                      p.audio_ssrc, p.video_ssrc, trio.current_time() + 3600)  # fmt: skip
            task_status.started()


def hang_up(people: list[ArbiterParticipant]) -> None:
    """Stop publishing first (a publisher writing to a closed leg raises), then close."""
    for p in people:
        p.publishing.cancel()  # type: ignore[attr-defined]
        p.close_legs()


def worker_pids() -> dict[str, int]:
    """Local worker processes by id, from /proc (their command lines name them)."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "arbiter.cli" in args and "sfu" in args and "--id" in args:
            pids[args[args.index("--id") + 1]] = int(entry.name)
    return pids


async def test_two_local_workers_carry_rooms_and_survive_a_killed_worker(tmp_path: Path) -> None:
    async with served(tmp_path, WORKERS) as srv, trio.open_nursery() as nursery:
        await workers_attached(srv, 2)
        first, second = await claim(srv, "one"), await claim(srv, "two")
        health = (await srv.http.get("/health")).json()
        # The second room went to the other (less loaded) worker.
        assert sorted(w["rooms"] for w in health["workers"]) == [1, 1], health
        a = await call(srv, first, [1, 2], nursery)
        b = await call(srv, second, [3, 4], nursery)
        await trio.sleep(2.0)
        assert received(a) > 0 and received(b) > 0
        # /metrics sums the workers' media counters (from their load reports) into the
        # gateway's, which binds no media port itself.
        assert await srv.metric('arbiter_media_packets_total{kind="rtp_in"}') > 500
        # ... and their bytes (the gateway itself receives none).
        assert await srv.metric('arbiter_media_bytes_total{direction="in"}') > 100_000
        assert await srv.metric('arbiter_media_bytes_total{direction="out"}') > 100_000
        for worker in ("local-0", "local-1"):
            assert await srv.metric(f'arbiter_worker_rooms{{kind="{worker}"}}') == 1
            assert await srv.metric(f'arbiter_worker_participants{{kind="{worker}"}}') == 2
            # Each worker process's own figures, from its load reports.
            label = f'{{worker="{worker}"}}'
            assert 0 < await srv.metric(f"arbiter_worker_cpu_seconds{label}") < 60
            assert 10_000_000 < await srv.metric(f"arbiter_worker_resident_memory_bytes{label}")
            assert 5 < await srv.metric(f"arbiter_worker_open_fds{label}") < 1000
            assert 0 <= await srv.metric(f"arbiter_worker_event_loop_lag_seconds{label}") < 5
        assert await srv.metric('arbiter_media_transports{kind="transports"}') == 8  # 4 x (1 + 1)
        placement = dict(srv.query("SELECT id, worker_id FROM rooms WHERE id IN (?, ?)",
                                   (first, second)))  # fmt: skip
        assert placement[first] != placement[second]
        # SIGKILL the worker serving the first room, mid-call.
        victim = worker_pids()[placement[first]]
        b_before = received(b)
        t0 = trio.current_time()
        os.kill(victim, signal.SIGKILL)
        await trio.sleep(3.0)
        b_rate = (received(b) - b_before) / (trio.current_time() - t0)
        for p in b:
            assert "sfuDisconnect" not in {m.get("type") for m in p.messages}
        assert b_rate > 100, b_rate  # the room on the other worker kept flowing
        for p in a:
            assert "sfuDisconnect" in {m.get("type") for m in p.messages}
        # Its rooms are placed again (on the surviving worker, or the restarted one), and a
        # fresh call in the first room works within 10 s.
        hang_up(a)
        await trio.sleep(0.1)
        with trio.fail_after(10):
            while True:
                row = srv.query("SELECT worker_id FROM rooms WHERE id = ?", (first,))
                health = (await srv.http.get("/health")).json()
                if row[0][0] != placement[first] or len(health["workers"]) == 2:
                    break
                await trio.sleep(0.1)
        with trio.fail_after(10):
            while True:
                try:
                    again = await call(srv, first, [5, 6], nursery)
                    break
                except Exception:  # the room's SFU is still coming back
                    await trio.sleep(0.5)
        await trio.sleep(1.5)
        assert received(again) > 0
        hang_up([*b, *again])
        nursery.cancel_scope.cancel()


async def test_a_remote_worker_serves_a_room_and_a_wrong_token_is_refused(tmp_path: Path) -> None:
    toml = WORKERS.replace("local = 2", "local = 1")
    async with served(tmp_path, toml) as srv, trio.open_nursery() as nursery:
        await workers_attached(srv, 1)
        ws_url = srv.ws_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
        # A wrong token: one line, exit status 1, no retry.
        wrong = await trio.run_process(
            [sys.executable, "-m", "arbiter.cli", "sfu", "--gateway", ws_url, "--token", "nope"],
            env={**env, "ARBITER_MEDIA_LISTEN": "127.0.0.1", "ARBITER_MEDIA_PORT": "0"},
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        assert wrong.returncode == 1
        assert wrong.stderr.decode().strip().splitlines()[-1] == (
            "arbiter sfu: the gateway refused this worker: Forbidden"
        )
        # A remote worker: its own process, config and UDP port.
        config = tmp_path / "worker.toml"
        config.write_text(
            '[media]\nlisten = "127.0.0.1"\nport = 0\nannounced_ip = ["127.0.0.1"]\n'
            '[workers]\ntoken = "worker-secret"\n'
        )
        remote = await trio.lowlevel.open_process(
            [sys.executable, "-m", "arbiter.cli", "sfu", "--gateway", ws_url,
             "--config", str(config), "--id", "remote-1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            workers = await workers_attached(srv, 2)
            assert {(w["id"], w["local"]) for w in workers} == {
                ("local-0", True), ("remote-1", False),
            }  # fmt: skip
            # Rooms alternate between the two (least loaded): the second lands on the remote.
            rooms = [await claim(srv, f"r{i}") for i in range(2)]
            placed = dict(srv.query("SELECT id, worker_id FROM rooms WHERE id IN (?, ?)",
                                    tuple(rooms)))  # fmt: skip
            on_remote = [r for r, w in placed.items() if w == "remote-1"]
            assert len(on_remote) == 1, placed
            people = await call(srv, on_remote[0], [1, 2], nursery)
            await trio.sleep(2.0)
            assert received(people) > 100
            hang_up(people)
        finally:
            remote.kill()
            await remote.wait()
        nursery.cancel_scope.cancel()


async def test_workers_reconnect_after_a_gateway_restart(tmp_path: Path) -> None:
    """The gateway restarts: a remote worker reconnects by itself (back-off), the room (in
    SQLite) is placed again, and a call in it works."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    toml = WORKERS.replace("local = 2", "local = 1") + f"[http]\nport = {port}\n"
    config = tmp_path / "worker.toml"
    config.write_text(
        '[media]\nlisten = "127.0.0.1"\nport = 0\nannounced_ip = ["127.0.0.1"]\n'
        '[workers]\ntoken = "worker-secret"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    remote = await trio.lowlevel.open_process(
        [sys.executable, "-m", "arbiter.cli", "sfu", "--gateway", f"ws://127.0.0.1:{port}/ws",
         "--config", str(config), "--id", "remote-1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with served(tmp_path, toml) as srv:
            await workers_attached(srv, 2)
            room = await claim(srv, "kept")
        # The gateway is gone (its local worker with it); the remote worker keeps retrying.
        async with served(tmp_path, toml) as srv, trio.open_nursery() as nursery:
            workers = await workers_attached(srv, 2)
            assert {w["id"] for w in workers} == {"local-0", "remote-1"}
            r = await srv.http.get("/getRoomId", params={"urlPath": "kept"})
            assert r.json()["roomId"] == room  # the URL survived the restart
            with trio.fail_after(10):
                while True:
                    try:
                        people = await call(srv, room, [1, 2], nursery)
                        break
                    except Exception:  # the room's SFU is still being placed
                        await trio.sleep(0.5)
            await trio.sleep(1.5)
            assert received(people) > 0
            hang_up(people)
            nursery.cancel_scope.cancel()
    finally:
        remote.kill()
        await remote.wait()


async def test_local_workers_stop_when_the_server_is_killed(tmp_path: Path) -> None:
    """A SIGKILLed `arbiter serve` runs no cleanup: its local workers notice that their parent
    is gone and stop, instead of retrying a dead gateway forever."""
    toml = WORKERS.replace("local = 2", "local = 1")
    async with served(tmp_path, toml) as srv:
        await workers_attached(srv, 1)
        pids = worker_pids()
        assert "local-0" in pids
        srv.process.kill()
        with trio.fail_after(10):
            while pids["local-0"] in worker_pids().values():
                await trio.sleep(0.2)


async def test_pages_rejoin_after_their_worker_is_killed(tmp_path: Path) -> None:
    """Two Chromium pages in a room on worker X (web client, real media): X is SIGKILLed; the
    pages are told (sfuDisconnect), rejoin by themselves, and decode each other again within
    10 s, with the room now on a live worker."""
    from arbiter.testing import make_config, running_server
    from arbiter.testing.browser import no_leaked_threads, poll, require_chromium
    from arbiter.testing.webpage import Page, run_pages, wait_settled

    require_chromium()
    config = make_config(tmp_path, workers={"local": "2", "token": "worker-secret"})
    seen: dict[str, Any] = {}
    with no_leaked_threads():
        async with running_server(config) as srv:
            with trio.fail_after(20):
                while len(srv.server.rooms.workers.workers) < 2:  # type: ignore[union-attr]
                    await trio.sleep(0.1)

            def body(browser: Any) -> None:
                pages = {
                    label: Page(browser, srv.url + "/killed-worker", label) for label in ("A", "B")
                }
                for label, page in pages.items():
                    page.join(f"Person {label}")
                    page.wait_joined()
                wait_settled(pages, timeout=25)
                room = pages["A"].state()["roomId"]
                worker = trio.from_thread.run_sync(
                    lambda: srv.server.rooms.rooms[room].worker  # type: ignore[union-attr]
                )
                seen["worker"] = worker
                joined = {label: page.state()["marks"]["joined"] for label, page in pages.items()}
                os.kill(worker_pids()[worker], signal.SIGKILL)
                started = time.monotonic()
                # Each page must be seen leaving "joined" (sfuDisconnect -> reconnecting):
                # its old consumer stats would otherwise pass for decoding.
                noticed: set[str] = set()

                def all_noticed() -> bool:
                    # Seen reconnecting, or already joined again (a rejoin on loopback can take
                    # less than one poll: its join mark is then newer than the old one).
                    for label, page in pages.items():
                        state = page.state()
                        if state["phase"] != "joined" or state["marks"]["joined"] != joined[label]:
                            noticed.add(label)
                    return noticed == set(pages)

                poll(all_noticed, timeout=5, interval=0.02, what="the pages to notice")
                wait_settled(pages, timeout=10)
                seen["recovered_s"] = time.monotonic() - started
                seen["room"] = room
                seen["now_on"] = trio.from_thread.run_sync(
                    lambda: srv.server.rooms.rooms[room].worker  # type: ignore[union-attr]
                )

            with trio.fail_after(90):
                await trio.to_thread.run_sync(run_pages, body)
    print(f"pages decoding again {seen['recovered_s']:.1f} s after SIGKILL of {seen['worker']}")
    assert seen["recovered_s"] < 10
    assert seen["now_on"] is not None
