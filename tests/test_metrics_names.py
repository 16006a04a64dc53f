"""The metric names on /metrics, exactly (docs/PROTOCOL.md section 1): what dashboards and
alerts are written against. A served `arbiter serve`, read over HTTP."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import trio

from arbiter.metrics import EVENTS, TRAFFIC, media_families
from arbiter.testing.serve import Served, served

# Family name -> type, from the `# TYPE` lines.
EXPECTED = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
    "python_info": "gauge",
    "arbiter_participants": "gauge",
    "arbiter_rooms": "gauge",
    "arbiter_ws_connections": "gauge",
    "arbiter_join_seconds": "histogram",
    "arbiter_event_loop_lag_seconds": "histogram",
    "arbiter_media_packets_total": "counter",
    "arbiter_media_bytes_total": "counter",
    "arbiter_media_events_total": "counter",
    "arbiter_media_dropped_total": "counter",
    "arbiter_media_transports": "gauge",
    "arbiter_worker_participants": "gauge",
    "arbiter_worker_rooms": "gauge",
    "arbiter_worker_pps": "gauge",
    "arbiter_worker_cpu_seconds": "gauge",
    "arbiter_worker_resident_memory_bytes": "gauge",
    "arbiter_worker_open_fds": "gauge",
    "arbiter_worker_event_loop_lag_seconds": "gauge",
    "arbiter_http_requests_total": "counter",
    "arbiter_ws_frames_received_total": "counter",
    "arbiter_ws_errors_total": "counter",
    "arbiter_ws_closed_by_server_total": "counter",
    "arbiter_room_sfu_crashes_total": "counter",
    "arbiter_identify_refused_budget_total": "counter",
    "arbiter_sfu_busy_total": "counter",
    "arbiter_origin_refused_total": "counter",
    "arbiter_moderation_total": "counter",
}


def types(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            out[name] = kind
    return out


async def test_metric_names(tmp_path: Path) -> None:
    async with served(tmp_path, "[rooms]\nidle_pool = 1", stderr=True) as srv:
        await trio.sleep(1.2)  # two event-loop lag samples
        text = (await srv.http.get("/metrics")).text
        found = types(text)
        for name, kind in EXPECTED.items():
            assert found.get(name) == kind, (name, found.get(name))
        rooms = {k: v for k, v in (await srv.counters("arbiter_rooms", "state")).items()}
        assert set(rooms) == {"starting", "unclaimed", "claimed"}
        assert await srv.metric("arbiter_participants") == 0
        assert await srv.metric("arbiter_event_loop_lag_seconds_count") >= 2
        assert await srv.metric("process_resident_memory_bytes") > 10_000_000
        assert await srv.metric("process_open_fds") > 5
        await _udp_bytes_are_counted(srv)


async def _udp_bytes_are_counted(srv: Served) -> None:
    """Datagrams no protocol claims: their bytes count in, and they are drops, not traffic."""
    port = int(re.search(r"media: UDP (\d+) on", srv.log()).group(1))  # type: ignore[union-attr]
    before = await srv.metric('arbiter_media_bytes_total{direction="in"}')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(3):
            sock.sendto(b"\xff" * 100, ("127.0.0.1", port))
    with trio.fail_after(5):
        while await srv.metric('arbiter_media_bytes_total{direction="in"}') < before + 300:
            await trio.sleep(0.05)
    assert await srv.metric('arbiter_media_bytes_total{direction="in"}') == before + 300
    assert await srv.metric('arbiter_media_dropped_total{reason="unknown_protocol"}') == 3
    assert await srv.metric('arbiter_media_bytes_total{direction="out"}') == 0
    assert await srv.counters("arbiter_media_packets_total", "kind") == {}


def test_media_counters_sort_into_families() -> None:
    counters = {name: 1 for name in TRAFFIC | EVENTS}
    counters.update(oversize=2, srtp_auth=3, send_error=4, bytes_in=500, bytes_out=700)
    families = media_families(counters)
    assert families == {
        "packets": {name: 1 for name in TRAFFIC},
        "events": {name: 1 for name in EVENTS},
        "dropped": {"oversize": 2, "srtp_auth": 3, "send_error": 4},
        "bytes": {"in": 500, "out": 700},
    }
    assert {"rtp_in", "rtcp_in", "pli_sent", "nack_retransmitted"} <= TRAFFIC
    assert not TRAFFIC & EVENTS
    # A name nobody listed yet is a drop reason (and bytes default to 0).
    assert media_families({"something_new": 1}) == {
        "packets": {}, "events": {}, "dropped": {"something_new": 1},
        "bytes": {"in": 0, "out": 0},
    }  # fmt: skip
