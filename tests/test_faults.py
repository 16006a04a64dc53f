"""Faults and leaks: nothing a participant does, or a room's SFU suffers, is left behind or
spreads to another room.

- join/leave cycles with real ICE, DTLS and SRTP leave no row, transport, lookup entry or
  gateway peer behind (the 1,000-cycle version against `arbiter serve` is
  scripts/soak_join_leave.py);
- one room's SFU task raising is caught at its task boundary: its clients get `sfuDisconnect`
  and rejoin with media, while another room's call loses not one packet;
- the browser tests (SIGKILL of the server mid-call, a page whose media stops without a
  goodbye) are in tests/test_faults_browser.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from arbiter.bench import payloads
from arbiter.bench.arbiter_target import ArbiterParticipant, ArbiterTarget
from arbiter.config import Config
from arbiter.rooms import SignalingLink
from arbiter.server import Server
from arbiter.sfu.dtls import Certificate
from arbiter.sfu.media import run_media_room

from .conftest import Running, make_config, new_room, running_server
from .soak import Resident, Tables, cycle

CYCLES = 100


def _tables(srv: Running, room_id: int) -> dict[str, Any]:
    endpoint, gateway, store = srv.server.endpoint, srv.server.gateway, srv.server.store
    assert endpoint is not None and gateway is not None and store is not None
    room = endpoint.rooms[room_id]
    return {
        "by_ufrag": len(endpoint.by_ufrag),
        "by_addr": len(endpoint.by_addr),
        "endpoint_transports": endpoint.transport_count(),
        "router_transports": len(room.router.transports),
        "publishers": sorted(room.publishers),
        "subscriptions": len(room.subscriptions),
        "gateway_peers": sorted(str(p.peer_id) for p in gateway.peers.values()),
        "room_clients": sorted(gateway.rooms[room_id].clients),
        "rows": store.count_connections(),
    }


async def _settle(srv: Running, room_id: int, want: dict[str, Any]) -> dict[str, Any]:
    """The tables once the last leave has been processed (bounded: 5 s)."""
    seen = _tables(srv, room_id)
    with trio.move_on_after(5):
        while seen != want:
            await trio.sleep(0.02)
            seen = _tables(srv, room_id)
    return seen


async def test_join_leave_cycles_leave_nothing_behind(tmp_path: Path) -> None:
    certificate = Certificate.generate()
    async with running_server(make_config(tmp_path)) as srv, trio.open_nursery() as nursery:
        room_id = await new_room(srv, "cycles")
        resident = Resident(srv.ws_url, room_id, certificate)
        with trio.fail_after(10):
            await nursery.start(resident.run)
        only_resident = {
            "by_ufrag": 1,
            "by_addr": 1,
            "endpoint_transports": 1,
            "router_transports": 1,
            "publishers": ["resident"],
            "subscriptions": 0,
            "gateway_peers": sorted(["resident", str(room_id)]),
            "room_clients": ["resident"],
            "rows": 2,  # the resident's and the room SFU's (in-process peers have rows too)
        }
        assert _tables(srv, room_id) == only_resident
        with trio.fail_after(60):
            for n in range(CYCLES):
                await cycle(srv.ws_url, room_id, resident, certificate, n, abrupt=n % 2 == 1)
        assert await _settle(srv, room_id, only_resident) == only_resident
        assert (resident.joins, resident.leaves, resident.errors) == (CYCLES, CYCLES, [])
        r = await srv.http.get("/metrics")
        assert Tables.from_metrics(r.text) == Tables(
            transports=1, by_ufrag=1, by_addr=1, router_transports=1, ws_connections=2
        )
        # The resident leaves too: the room is empty and nothing of anyone remains.
        resident.stop.set()
        nobody = {
            **only_resident,
            "by_ufrag": 0,
            "by_addr": 0,
            "endpoint_transports": 0,
            "router_transports": 0,
            "publishers": [],
            "gateway_peers": [str(room_id)],
            "room_clients": [],
            "rows": 1,
        }
        assert await _settle(srv, room_id, nobody) == nobody
        counters = srv.server.endpoint.counters  # type: ignore[union-attr]
        # Every cycle's two consumer transports completed DTLS on the server: each asked its
        # publisher for a keyframe then (media._connected), and nothing was dropped or raised.
        assert dict(counters) == {"pli_sent": 2 * CYCLES}
        nursery.cancel_scope.cancel()
