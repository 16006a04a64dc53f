"""MediaWorker: the media plane of one process (issue 12; mediasoup's Worker, roughly).

It owns what the rooms share: the MediaEndpoint (the one UDP socket and its demux), the live
MediaRooms and their Routers (one per room, made by `create_router`), and the timers that drive
them. The endpoint owns nothing but the socket and the tables that find a datagram's transport;
a Router owns its transports, Producers and Consumers; a MediaRoom owns who publishes and
subscribes. Every `TIMER_INTERVAL` the timers run DTLS retransmissions and SCTP timers of the
transports the endpoint knows, and the Routers' `tick` (deferred PLIs, byte samples); every
`REPORT_INTERVAL` they close transports whose consent expired (RFC 7675) and send each Router's
RTCP reports to its publishers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from .endpoint import MediaEndpoint
from .ratelog import RateLimitedLog
from .router import Router
from .transport import CloseReason

if TYPE_CHECKING:
    from .media import MediaRoom

log = logging.getLogger(__name__)

TIMER_INTERVAL = 0.05  # DTLS retransmission granularity (its timeouts start at 1 s)
REPORT_INTERVAL = 1.0  # consent checks and RTCP reports to publishers (RFC 3550 6.2)


class MediaWorker:
    """The endpoint, the rooms and their Routers, and the timers, of one process."""

    def __init__(self, endpoint: MediaEndpoint) -> None:
        self.endpoint = endpoint
        self.counters = endpoint.counters  # one Counter for the whole media plane
        self.routers: set[Router] = set()
        self.rooms: dict[int, MediaRoom] = {}  # live media rooms by room id (metrics, tests)
        self._log = RateLimitedLog(log)

    def create_router(self) -> Router:
        """A Router sending through the endpoint, driven by this worker's timers."""
        router = Router(self.endpoint.send, self.endpoint.counters)
        self.routers.add(router)
        return router

    def add_room(self, room: MediaRoom) -> None:
        self.rooms[room.room_id] = room

    def remove_room(self, room: MediaRoom) -> None:
        """Idempotent: forget the room and its Router (the room has closed it)."""
        self.routers.discard(room.router)
        if self.rooms.get(room.room_id) is room:
            del self.rooms[room.room_id]

    async def run(
        self, *, task_status: trio.TaskStatus[MediaWorker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind and run the endpoint, then the timers (until cancelled)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.endpoint.run)
            nursery.start_soon(self._timers)
            task_status.started(self)

    async def _timers(self) -> None:
        next_report = trio.current_time() + REPORT_INTERVAL
        counters = self.counters
        while True:
            await trio.sleep(TIMER_INTERVAL)
            now = trio.current_time()
            for transport in self.endpoint.transports():
                # DTLS retransmissions until connected; SCTP timers (data channels) after.
                if not transport.connected or transport.datachannels is not None:
                    try:
                        transport.handle_timeout(now)
                    except Exception:
                        counters["internal_error"] += 1
                        self._log.exception("dtls_timer", now, "DTLS timer of %r", transport)
            for router in list(self.routers):
                try:
                    router.tick(now)
                except Exception:
                    counters["internal_error"] += 1
                    self._log.exception("router_tick", now, "router timer failed")
            if now < next_report:
                continue
            next_report = now + REPORT_INTERVAL
            for transport in self.endpoint.transports():
                if transport.consent_expired(now):
                    # RFC 7675 section 5.1: no consent, no sending; the room hears of it.
                    log.info("%r: consent expired", transport)
                    counters["consent_expired"] += 1
                    transport.close(CloseReason.CONSENT)
            for router in list(self.routers):
                try:
                    router.send_reports(now)
                except Exception:
                    counters["internal_error"] += 1
                    self._log.exception("rtcp_reports", now, "RTCP reports failed")


def media_tables(worker: MediaWorker) -> dict[str, float]:
    """The media plane's tables, so a leak is visible from outside (/metrics)."""
    endpoint = worker.endpoint
    return {
        "transports": endpoint.transport_count(),
        "by_ufrag": len(endpoint.by_ufrag),
        "by_addr": len(endpoint.by_addr),
        "router_transports": sum(len(r.transports) for r in worker.routers),
        "media_rooms": len(worker.rooms),
    }
