"""aiortc's SCTP stack as the far side of our association, in memory (no DTLS, no sockets).

aiortc's `RTCSctpTransport` only needs a DTLS transport that says it is connected, takes its
receiver with `_register_data_receiver` and sends with `_send_data`: `FakeDtls` is that, wired to
our `DataChannels` (sans-IO) through an asyncio loop, with an optional loss function and one-way
delay. Everything crossing the wire is recorded in `wire` as (seconds since start, "in"|"out",
packet) — "in" is what our side received — so tests can replay or inspect it.

Usage (plain asyncio, e.g. `asyncio.run(main())` in a sync test)::

    pair = SctpPair()
    await pair.start()          # the association is up
    channel = pair.client.createDataChannel("x")   # or aiortc's RTCDataChannel API
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from random import Random
from typing import Any

from aiortc import RTCSctpTransport
from aiortc.rtcsctptransport import RTCSctpCapabilities

from arbiter.sfu.dcep import ChannelEvent, DataChannels
from arbiter.sfu.sctp import SctpAssociation


class FakeDtls:
    """What RTCSctpTransport uses of an RTCDtlsTransport."""

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self.state = "connected"
        self._role = "client"  # the browser's role against the SFU
        self._deliver = deliver
        self.receiver: Any = None

    def _register_data_receiver(self, receiver: Any) -> None:
        self.receiver = receiver

    def _unregister_data_receiver(self, receiver: Any) -> None:
        self.receiver = None

    async def _send_data(self, data: bytes) -> None:
        self._deliver(data)


class SctpPair:
    """aiortc (client) <-> our DataChannels (server) on one asyncio loop."""

    def __init__(self, *, delay: float = 0.0, loss: Callable[[str, bytes], bool] | None = None,
                 seed: int = 1, **association: Any) -> None:  # fmt: skip
        self.loop = asyncio.get_running_loop()
        self.start_time = self.loop.time()
        self.delay = delay
        self.loss = loss
        self.association = SctpAssociation(rng=Random(seed), secret=b"s" * 32, **association)
        self.server = DataChannels(self.association)
        self.events: list[ChannelEvent] = []
        self.wire: list[tuple[float, str, bytes]] = []
        self.errors: list[BaseException] = []
        self.dtls = FakeDtls(self._to_server)
        self.client = RTCSctpTransport(self.dtls)  # type: ignore[arg-type]
        self._timer: asyncio.TimerHandle | None = None
        self.event_added = asyncio.Event()

    def now(self) -> float:
        return self.loop.time() - self.start_time

    async def start(self, timeout: float = 5.0) -> None:
        caps = RTCSctpCapabilities(maxMessageSize=self.association.max_message_size)
        await self.client.start(caps, 5000)
        async with asyncio.timeout(timeout):
            while self.client.state != "connected":
                await asyncio.sleep(0.005)

    # -- wire --------------------------------------------------------------------------------

    def _later(self, action: Callable[[], None]) -> None:
        if self.delay:
            self.loop.call_later(self.delay, action)
        else:
            self.loop.call_soon(action)

    def _to_server(self, data: bytes) -> None:
        if self.loss is not None and self.loss("in", data):
            return
        self._later(lambda: self._server_receive(data))

    def _server_receive(self, data: bytes) -> None:
        now = self.now()
        self.wire.append((now, "in", data))
        try:
            packets, events = self.server.receive_untrusted(data, now)
        except Exception as exc:  # noqa: BLE001 - a test reads `errors`
            self.errors.append(exc)
            return
        self._emit(packets, events)

    def _emit(self, packets: list[bytes], events: list[ChannelEvent]) -> None:
        for packet in packets:
            self.wire.append((self.now(), "out", packet))
            if self.loss is not None and self.loss("out", packet):
                continue
            self._later(lambda p=packet: self._to_client(p))
        if events:
            self.events += events
            self.event_added.set()
        self._arm_timer()

    def _to_client(self, data: bytes) -> None:
        if self.dtls.receiver is not None:
            self.loop.create_task(self.dtls.receiver._handle_data(data))

    def _arm_timer(self) -> None:
        deadline = self.association.next_timeout()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_later(max(0.0, deadline - self.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._emit(*self.server.handle_timeout(self.now()))

    def flush(self) -> None:
        """Send what our side queued (after `server.send`)."""
        self._emit(self.server.flush(self.now()), [])

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.event_added.clear()
                try:
                    await asyncio.wait_for(self.event_added.wait(), 0.05)
                except TimeoutError:
                    pass

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.client.stop()
