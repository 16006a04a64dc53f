"""A reusable aiortc participant for end-to-end media tests, driven from trio.

aiortc is asyncio-only, so every `MediaPeer` owns one asyncio event loop running in a dedicated
daemon thread (`AsyncioThread`). The trio side talks to it with the two libraries' public APIs:
`asyncio.run_coroutine_threadsafe` to submit work and `trio.to_thread.run_sync(future.result)` to
wait for it. Frame counters are written by the asyncio thread under a lock and read by trio.

The signaling half speaks the Arbiter protocol (docs/PROTOCOL.md sections 3 and 4) over
trio-websocket:
one producer RTCPeerConnection carrying a synthetic audio and VP8 video track, and one consumer
RTCPeerConnection per remote publisher, answered whenever the SFU offers one.

Usage from a trio test::

    async with open_media_peer() as a:
        await a.join(srv.ws_url, room_id, "A", "Alice")
        await a.wait_for_media({"B", "C"})
        assert a.errors == []

Leaving the `async with` always closes the peer connections and the WebSocket and stops the
loop thread, even when the test failed or was cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import av
import trio
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from trio_websocket import ConnectionClosed

from .signaling import WsClient

T = TypeVar("T")

# Bound on any single aiortc operation (offer/answer/close); gathering host candidates without
# STUN servers takes milliseconds, so this only trips when something is really stuck.
RTC_TIMEOUT = 10.0


class AsyncioThread:
    """One asyncio event loop running forever in a daemon thread, usable from trio."""

    def __init__(self, name: str = "aiortc-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Cancel whatever is still pending (track readers, aiortc internals), then shut down
            # the default executor (aiortc encodes in it) so no thread outlives the loop.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if not self.alive or self.loop.is_closed():
            coro.close()
            raise RuntimeError("the asyncio loop thread is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T], timeout: float = RTC_TIMEOUT) -> T:
        """Run `coro` on the asyncio loop and wait for its result from trio."""
        future = self.submit(coro)
        try:
            return await trio.to_thread.run_sync(future.result, timeout, abandon_on_cancel=True)
        except BaseException:
            future.cancel()
            raise

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and join the thread (callable from a cancelled scope)."""
        if not self._started:
            self.loop.close()
            return
        if self.alive:
            self.loop.call_soon_threadsafe(self.loop.stop)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._thread.join, timeout)
        if self.alive:
            raise RuntimeError(
                f"asyncio loop thread {self._thread.name} did not stop in {timeout} s"
            )


class ToneTrack(AudioStreamTrack):
    """Synthetic microphone: a 400 Hz square wave at about -12 dBFS (aiortc's AudioStreamTrack
    is silence), so the RFC 6464 audio level aiortc sends says someone speaks."""

    _PERIOD = struct.pack("<10h", *[8000] * 10) + struct.pack("<10h", *[-8000] * 10)

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        for plane in frame.planes:
            size = plane.buffer_size
            plane.update((self._PERIOD * (size // len(self._PERIOD) + 1))[:size])
        return frame


class ColourBarsTrack(VideoStreamTrack):
    """Synthetic camera: a white bar sweeping across a background whose colour keeps changing.

    Built from raw yuv420p planes (no numpy), so every frame differs and VP8 emits real data.
    """

    def __init__(self, width: int = 320, height: int = 240, bar: int = 32) -> None:
        super().__init__()
        if width % 2 or height % 2:
            raise ValueError("yuv420p needs even dimensions")
        self.width = width
        self.height = height
        self.bar = min(bar, width)
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = self.make_frame(self.count)
        frame.pts = pts
        frame.time_base = time_base
        self.count += 1
        return frame

    def make_frame(self, n: int) -> av.VideoFrame:
        w, h = self.width, self.height
        x = (n * 8) % (w - self.bar + 1)
        row = b"\x20" * x + b"\xeb" * self.bar + b"\x20" * (w - x - self.bar)
        frame = av.VideoFrame(w, h, "yuv420p")
        planes = frame.planes
        luma = planes[0]
        if luma.line_size == w:
            luma.update(row * h)
        else:  # padded rows
            luma.update((row + b"\x00" * (luma.line_size - w)) * h)
        for plane, value in ((planes[1], (n * 5) % 256), (planes[2], 255 - (n * 3) % 256)):
            plane.update(bytes([value]) * (plane.line_size * plane.height))
        return frame


class MediaPeer:
    """One conference participant: a producer pc plus one consumer pc per remote publisher.

    Public state (read it from trio at any time):
      peer_id, room_id, name, sfu_id, connection_id
      messages: every frame received on the WebSocket, in order
      errors: the `{"type":"error",...}` frames received
      joins / disconnects: client ids from `clientJoin` / `clientDisconnect`
      sfu_disconnects: the `sfuDisconnect` frames
      producer_answered: the SFU's producer answer arrived and was applied
      producer_answers: how many producer answers were applied (first offer and re-offers)
      consumer_offers / consumer_pcs: per publisher, consumer offers received and consumer
        pcs created; a re-offer is applied to the existing pc (JSEP renegotiation, issue 11)
        unless `rebuild_consumers` (close it, answer on a new one: the older clients)
    """

    def __init__(
        self,
        *,
        video_size: tuple[int, int] = (320, 240),
        audio: bool = True,
        video: bool = True,
        rtc_timeout: float = RTC_TIMEOUT,
        channels: list[tuple[str, dict[str, Any]]] | None = None,
        tone: bool = False,
    ) -> None:
        self.video_size = video_size
        self.tone = tone  # the audio track is a tone (ToneTrack), not silence
        # Data channels on the producer pc: (label, createDataChannel keyword arguments).
        self.channel_specs = list(channels or [])
        # (label, message, loop time) of every data channel message received, in order.
        self.channel_messages: list[tuple[str, str | bytes, float]] = []
        self._channels: dict[str, Any] = {}
        self.send_audio = audio
        self.send_video = video
        self.rtc_timeout = rtc_timeout
        self.peer_id = ""
        self.room_id = 0
        self.name = ""
        self.sfu_id: str | None = None
        self.connection_id: str | None = None
        self.messages: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.joins: list[str] = []
        self.disconnects: list[str] = []
        self.sfu_disconnects: list[dict[str, Any]] = []
        self.producer_answered = False
        self.producer_answers = 0
        self.consumer_offers: dict[str, int] = {}
        self.consumer_pcs: dict[str, int] = {}
        self.rebuild_consumers = False
        self.left = False

        self.thread = AsyncioThread(name="aiortc-peer")
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        # Only touched from the asyncio thread.
        self._producer: RTCPeerConnection | None = None
        self._consumers: dict[str, RTCPeerConnection] = {}
        self._readers: set[asyncio.Task[None]] = set()
        # Snapshot of consumer states, updated from the asyncio thread.
        self._consumer_states: dict[str, str] = {}
        self._producer_state = "new"

        self._nursery: trio.Nursery | None = None
        self._reader_scope: trio.CancelScope | None = None
        self._ws: WsClient | None = None
        self._arrived = trio.Event()
        self._entered = False

    def __repr__(self) -> str:
        return f"<MediaPeer {self.peer_id or '?'} room={self.room_id}>"

    # ---------------------------------------------------------------- lifecycle (trio side)

    async def __aenter__(self) -> MediaPeer:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self.thread.start()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            with trio.CancelScope(shield=True):
                await self._shutdown()
        finally:
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()
            try:
                suppressed = await self._nursery_manager.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                # The nursery wraps the test body's own exception in a group: hand the test
                # its original exception (a harness task's crash still comes out as a group).
                if exc is not None and list(group.exceptions) == [exc]:
                    return False
                raise
            finally:
                await self.thread.stop()
        return suppressed

    async def _shutdown(self) -> None:
        if self._reader_scope is not None:
            self._reader_scope.cancel()
        with trio.move_on_after(self.rtc_timeout + 5):
            await self.leave()

    async def join(
        self,
        ws_url: str,
        room_id: int,
        peer_id: str,
        name: str,
        *,
        answer_timeout: float | None = 10.0,
    ) -> None:
        """Identify in the room, publish audio+video, and wait for the SFU's producer answer.

        `answer_timeout=None` returns right after sending the offer; then call
        `wait_for_producer_answer()` yourself.
        """
        if not self._entered or self._nursery is None:
            raise RuntimeError("use `async with MediaPeer()` (or open_media_peer()) first")
        self.peer_id, self.room_id, self.name = peer_id, room_id, name
        with trio.fail_after(10):
            self._ws = await WsClient.connect(self._nursery, ws_url)
            await self._ws.send_identify(room_id, peer_id, name)
            identified = await self._recv()
            if identified.get("type") != "identified":
                raise AssertionError(f"{peer_id}: identify failed: {identified}")
            self.connection_id = identified.get("connectionId")
            # roster then chatHistory; anything else that slips in is handled normally.
            while (message := await self._recv())["type"] != "chatHistory":
                await self._handle(message)
        await self._nursery.start(self._read_loop)
        offer = await self.create_producer_offer()
        await self._ws.send_handshake("producer", offer, room_id=room_id)
        if answer_timeout is not None:
            await self.wait_for_producer_answer(answer_timeout)

    async def wait_for_producer_answer(self, timeout: float = 10.0) -> None:
        try:
            await self.wait_until(lambda: self.producer_answered, timeout)
        except trio.TooSlowError:
            raise AssertionError(
                f"{self.peer_id}: producer answer never arrived within {timeout} s "
                f"(room {self.room_id}; errors={self.errors})"
            ) from None

    async def leave(self) -> None:
        """Send `disconnect`, close every peer connection and the WebSocket. Idempotent."""
        if self.left:
            return
        self.left = True
        if self._reader_scope is not None:
            self._reader_scope.cancel()
        if self._ws is not None:
            try:
                await self._ws.send("disconnect")
            except (ConnectionClosed, trio.ClosedResourceError, trio.BrokenResourceError):
                pass
        if self.thread.alive:
            await self.thread.run(self._close_all(), self.rtc_timeout)
        if self._ws is not None:
            await self._ws.aclose()

    # ---------------------------------------------------------------- results

    def stats(self) -> dict[str, dict[str, int]]:
        """Frames decoded so far: {publisher_id: {"video": n, "audio": n}}."""
        with self._lock:
            return {pub: dict(kinds) for pub, kinds in self._counts.items()}

    def video_sizes(self) -> dict[str, tuple[int, int]]:
        """Size (width, height) of the last decoded video frame per publisher."""
        with self._lock:
            return dict(self._sizes)

    def consumer_states(self) -> dict[str, str]:
        """aiortc connectionState of the consumer pc per publisher ("closed" once closed)."""
        with self._lock:
            return dict(self._consumer_states)

    def producer_state(self) -> str:
        with self._lock:
            return self._producer_state

    def describe(self) -> str:
        return (
            f"{self.peer_id}: producer_answered={self.producer_answered} "
            f"producer={self.producer_state()} consumers={self.consumer_states()} "
            f"stats={self.stats()} errors={self.errors}"
        )

    # ---------------------------------------------------------------- waiting (trio side)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Poll `predicate` (state changes in both threads) until true; TooSlowError after."""
        with trio.fail_after(timeout):
            while not predicate():
                with trio.move_on_after(0.05):
                    await self._arrived.wait()

    async def wait_for_media(
        self,
        publishers: set[str],
        *,
        video_frames: int = 5,
        audio_frames: int = 5,
        timeout: float = 20,
    ) -> None:
        """Wait until at least that many frames were decoded from every publisher."""

        def enough() -> bool:
            stats = self.stats()
            return all(
                stats.get(pub, {}).get("video", 0) >= video_frames
                and stats.get(pub, {}).get("audio", 0) >= audio_frames
                for pub in publishers
            )

        try:
            await self.wait_until(enough, timeout)
        except trio.TooSlowError:
            raise AssertionError(
                f"{self.peer_id}: no {video_frames} video + {audio_frames} audio frames from "
                f"{sorted(publishers)} within {timeout} s; {self.describe()}"
            ) from None

    async def wait_for_message(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5
    ) -> dict[str, Any]:
        """The first received frame (past or future) matching `predicate`."""
        seen = 0
        with trio.fail_after(timeout):
            while True:
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.messages)
                await self._arrived.wait()

    async def wait_for_disconnect(self, client_id: str, timeout: float = 5) -> None:
        """Until `clientDisconnect` for `client_id` arrived and its consumer pc is closed."""
        try:
            await self.wait_until(
                lambda: (
                    client_id in self.disconnects
                    and self.consumer_states().get(client_id, "closed") == "closed"
                ),
                timeout,
            )
        except trio.TooSlowError:
            raise AssertionError(
                f"{self.peer_id}: no clientDisconnect for {client_id} within {timeout} s; "
                f"disconnects={self.disconnects} {self.describe()}"
            ) from None

    # ---------------------------------------------------------------- signaling (trio side)

    async def _recv(self) -> dict[str, Any]:
        assert self._ws is not None
        message = await self._ws.recv(timeout=None)
        self.messages.append(message)
        self._wake()
        return message

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    async def _read_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            self._reader_scope = scope
            task_status.started()
            while True:
                try:
                    message = await self._recv()
                except ConnectionClosed:
                    return
                await self._handle(message)

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "error":
            self.errors.append(message)
        elif kind == "clientJoin":
            self.joins.append(message.get("clientId", ""))
        elif kind == "clientDisconnect":
            client_id = message.get("clientId", "")
            await self.close_consumer(client_id)
            self.disconnects.append(client_id)
        elif kind == "sfuDisconnect":
            self.sfu_disconnects.append(message)
        elif kind in ("producer", "consumer"):
            if "candidate" in message:
                return  # the SFU is ICE-lite: its one candidate is in the SDP
            description = message.get("description")
            if not isinstance(description, dict):
                return
            self.sfu_id = message.get("sender", self.sfu_id)
            if kind == "producer" and description.get("type") == "answer":
                await self.accept_producer_answer(description)
            elif kind == "consumer" and description.get("type") == "offer":
                publisher = message["remotePeerId"]
                self.consumer_offers[publisher] = self.consumer_offers.get(publisher, 0) + 1
                answer = await self.accept_consumer_offer(publisher, description)
                assert self._ws is not None
                await self._ws.send_handshake(
                    "consumer", answer, remote_peer_id=publisher, room_id=self.room_id
                )
        self._wake()

    # ---------------------------------------------------------------- WebRTC (usable without a server)

    async def create_producer_offer(self) -> dict[str, str]:
        """Create the producer pc with its tracks; returns the offer (candidates included)."""
        return await self.thread.run(self._create_producer_offer(), self.rtc_timeout)

    async def accept_producer_answer(self, description: dict[str, str]) -> None:
        await self.thread.run(self._accept_producer_answer(description), self.rtc_timeout)
        self.producer_answered = True
        self.producer_answers += 1
        self._wake()

    async def reoffer(self, timeout: float = 10.0, *, add_video: bool = False) -> None:
        """Offer again on the producer pc (what a browser does on negotiationneeded), with a
        second synthetic camera when `add_video`, and wait for the SFU's answer."""
        assert self._ws is not None
        answers = self.producer_answers
        offer = await self.thread.run(self._reoffer(add_video), self.rtc_timeout)
        await self._ws.send_handshake("producer", offer, room_id=self.room_id)
        try:
            await self.wait_until(lambda: self.producer_answers > answers, timeout)
        except trio.TooSlowError:
            raise AssertionError(
                f"{self.peer_id}: no answer to the re-offer within {timeout} s; {self.describe()}"
            ) from None

    async def accept_consumer_offer(
        self, publisher: str, description: dict[str, str]
    ) -> dict[str, str]:
        """Apply a consumer offer (on the existing pc for `publisher`, else a new one);
        returns the answer."""
        return await self.thread.run(
            self._accept_consumer_offer(publisher, description), self.rtc_timeout
        )

    def channel_state(self, label: str) -> str:
        channel = self._channels.get(label)
        return channel.readyState if channel is not None else "none"

    def received_on(self, label: str) -> list[str | bytes]:
        with self._lock:
            return [m for lbl, m, _ in self.channel_messages if lbl == label]

    async def send_on_channel(self, label: str, message: str | bytes) -> None:
        """Send on one of the producer pc's data channels (from the asyncio thread)."""

        async def send() -> None:
            self._channels[label].send(message)

        await self.thread.run(send(), self.rtc_timeout)

    async def wait_for_channel(self, label: str, timeout: float = 10.0) -> None:
        try:
            await self.wait_until(lambda: self.channel_state(label) == "open", timeout)
        except trio.TooSlowError:
            raise AssertionError(
                f"{self.peer_id}: channel {label!r} not open within {timeout} s "
                f"({self.channel_state(label)}); {self.describe()}"
            ) from None

    async def close_consumer(self, publisher: str) -> None:
        if self.thread.alive:
            await self.thread.run(self._close_consumer(publisher), self.rtc_timeout)

    # ---------------------------------------------------------------- asyncio side

    @staticmethod
    def _new_pc() -> RTCPeerConnection:
        # No STUN servers: aiortc's default is a public Google server, which would make every
        # gathering wait on the network. Host candidates are all a loopback SFU needs.
        return RTCPeerConnection(RTCConfiguration(iceServers=[]))

    async def _create_producer_offer(self) -> dict[str, str]:
        if self._producer is not None:
            raise RuntimeError(f"{self.peer_id}: already publishing")
        pc = self._producer = self._new_pc()

        @pc.on("connectionstatechange")
        def _state() -> None:
            with self._lock:
                self._producer_state = pc.connectionState

        loop = asyncio.get_running_loop()
        for label, options in self.channel_specs:
            channel = self._channels[label] = pc.createDataChannel(label, **options)

            def received(message: str | bytes, label: str = label) -> None:
                with self._lock:
                    self.channel_messages.append((label, message, loop.time()))

            channel.on("message", received)
        if self.send_audio:
            pc.addTrack(ToneTrack() if self.tone else AudioStreamTrack())
        if self.send_video:
            pc.addTrack(ColourBarsTrack(*self.video_size))
        await pc.setLocalDescription(await pc.createOffer())
        return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}

    async def _accept_producer_answer(self, description: dict[str, str]) -> None:
        if self._producer is None:
            raise RuntimeError(f"{self.peer_id}: producer answer without an offer")
        await self._producer.setRemoteDescription(
            RTCSessionDescription(sdp=description["sdp"], type=description["type"])
        )

    async def _reoffer(self, add_video: bool) -> dict[str, str]:
        pc = self._producer
        if pc is None:
            raise RuntimeError(f"{self.peer_id}: re-offer before publishing")
        if add_video:
            pc.addTrack(ColourBarsTrack(*self.video_size))
        await pc.setLocalDescription(await pc.createOffer())
        return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}

    async def _accept_consumer_offer(
        self, publisher: str, description: dict[str, str]
    ) -> dict[str, str]:
        current = self._consumers.get(publisher)
        if current is not None and current.signalingState != "closed":
            if not self.rebuild_consumers:
                # A re-offer on the connection we have: renegotiate it.
                await current.setRemoteDescription(
                    RTCSessionDescription(sdp=description["sdp"], type=description["type"])
                )
                await current.setLocalDescription(await current.createAnswer())
                return {"type": current.localDescription.type, "sdp": current.localDescription.sdp}
        await self._close_consumer(publisher)
        pc = self._consumers[publisher] = self._new_pc()
        with self._lock:
            self.consumer_pcs[publisher] = self.consumer_pcs.get(publisher, 0) + 1

        def record_state() -> None:
            with self._lock:
                if self._consumers.get(publisher) is pc:
                    self._consumer_states[publisher] = pc.connectionState

        pc.on("connectionstatechange", record_state)
        record_state()

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            task = asyncio.get_running_loop().create_task(self._read_track(publisher, track))
            self._readers.add(task)
            task.add_done_callback(self._readers.discard)

        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=description["sdp"], type=description["type"])
        )
        await pc.setLocalDescription(await pc.createAnswer())
        return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}

    async def _read_track(self, publisher: str, track: MediaStreamTrack) -> None:
        kind = track.kind
        with self._lock:
            self._counts.setdefault(publisher, {"video": 0, "audio": 0})
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            with self._lock:
                if isinstance(frame, av.VideoFrame) and kind == "video":
                    self._counts[publisher]["video"] += 1
                    self._sizes[publisher] = (frame.width, frame.height)
                elif isinstance(frame, av.AudioFrame) and kind == "audio":
                    self._counts[publisher]["audio"] += 1

    async def _close_consumer(self, publisher: str) -> None:
        pc = self._consumers.pop(publisher, None)
        if pc is not None:
            await pc.close()
            with self._lock:
                self._consumer_states[publisher] = "closed"

    async def _close_all(self) -> None:
        pcs = list(self._consumers.items())
        self._consumers.clear()
        producer, self._producer = self._producer, None
        await asyncio.gather(
            *(pc.close() for _, pc in pcs),
            *([producer.close()] if producer is not None else []),
            return_exceptions=True,
        )
        with self._lock:
            for publisher, _ in pcs:
                self._consumer_states[publisher] = "closed"
            if producer is not None:
                self._producer_state = "closed"
        for task in list(self._readers):
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


@asynccontextmanager
async def open_media_peer(
    *,
    video_size: tuple[int, int] = (320, 240),
    audio: bool = True,
    video: bool = True,
    rtc_timeout: float = RTC_TIMEOUT,
    channels: list[tuple[str, dict[str, Any]]] | None = None,
    tone: bool = False,
) -> AsyncIterator[MediaPeer]:
    """A MediaPeer whose pcs, WebSocket and loop thread are always cleaned up on exit."""
    async with MediaPeer(
        video_size=video_size, audio=audio, video=video, rtc_timeout=rtc_timeout,
        channels=channels, tone=tone,
    ) as peer:
        yield peer


async def gather_peers(*waits: Callable[[], Awaitable[None]]) -> None:
    """Run several waits concurrently (e.g. every participant's wait_for_media)."""
    async with trio.open_nursery() as nursery:
        for wait in waits:
            nursery.start_soon(wait)
