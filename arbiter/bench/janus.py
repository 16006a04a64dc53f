"""Janus as a comparison target for `arbiter bench` (issue 5): the server and its signaling.

`JanusServer` runs Debian's `janus` (1.1.2) as a subprocess with a minimal configuration written
to a temp dir: only the VideoRoom plugin and the WebSocket transport (WebSocket on 127.0.0.1),
ICE in lite mode, one host candidate. `JanusSignaling` speaks the Janus API over one WebSocket and
one Janus session to create rooms, publish and subscribe, returning SDP for the bench's synthetic
participants (`arbiter.bench.sdp_client` builds and reads that SDP).

What the bench must know about Janus (measured against 1.1.2 with libnice 0.1.21):

- Media address: Janus never gathers candidates on a loopback interface (ice.c skips
  IFF_LOOPBACK; with nothing left libnice gathers on every address, IPv6 included). So Janus's
  one host candidate is a local address of another interface (`JanusServer.media_ip`, enforced
  with `ice_enforce_list`); the kernel still delivers it inside the host. libnice answers no
  checks that come from 127.0.0.1 towards that candidate: participant sockets for Janus must be
  bound to `media_ip` too.
- ICE: even with `ice_lite = true`, libnice answers our USE-CANDIDATE check, sends one triggered
  check back and nominates the pair only when that is answered (PeerClient answers it).
  No consent freshness and no keepalive checks afterwards (Janus's defaults).
- DTLS roles: Janus answers a publisher's `a=setup:actpass` with `a=setup:active` (Janus is the
  DTLS client, the participant the DTLS server) and offers subscribers `a=setup:actpass` (we
  answer `active`). `sdp_client.peer_client_for` picks the role from the SDP.
- Candidates and `a=ice-lite` are in every SDP Janus sends (half-trickle): nothing to collect.
- A feed can be subscribed to only once its publisher's PeerConnection is up (`webrtcup`);
  before that the VideoRoom answers 428 "No such feed".
- Towards subscribers Janus rewrites SSRCs, sequence numbers and timestamps (keeping their
  spacing); subscribers learn the SSRCs from Janus's offer. Payload bytes (VP8 and Opus) are
  forwarded unchanged.
- Threads: one GLib loop thread ("hloop <handle id>") per attached handle unless `event_loops`
  is set; incoming RTP is handled on the publisher handle's thread and queued to each
  subscriber handle's thread, which protects and sends. Janus therefore spreads over cores,
  where an Arbiter room is one Python thread: compare CPU-seconds, not wall-clock saturation.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import trio
import trio_websocket

JANUS_BINARY = "/usr/bin/janus"
# Debian's janus package (multiarch path); the .so files carry the full version suffix.
JANUS_LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
VIDEOROOM = "janus.plugin.videoroom"
# Janus closes a session after 60 s without any request; keepalive well within that.
KEEPALIVE_INTERVAL = 25.0
# Requests that Janus answers synchronously vs. plugin messages that answer with an event.
_SYNC_REPLIES = frozenset({"success", "error"})
_ASYNC_REPLIES = frozenset({"success", "event", "error"})
_ACK_REPLIES = frozenset({"ack", "error"})


class JanusError(Exception):
    """Janus refused a request, or the process/connection failed."""


def _find_library(kind: str, name: str) -> Path:
    """The installed `lib<name>.so*` under JANUS_LIB_DIR/kind (Debian ships only versioned names)."""
    matches = sorted((JANUS_LIB_DIR / kind).glob(f"{name}.so*"))
    if not matches:
        raise JanusError(f"{name}.so not found in {JANUS_LIB_DIR / kind}; is janus installed?")
    return matches[0]


def local_media_ip() -> str:
    """The first global-scope IPv4 address of an interface that is up (what Janus can gather).

    Janus skips loopback interfaces when gathering ICE candidates, so its media cannot be bound
    to 127.0.0.1; a local address of another interface is the closest: the kernel delivers
    traffic between two local addresses through lo, nothing leaves the machine.
    """
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "up", "scope", "global"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    raise JanusError("no non-loopback IPv4 address: Janus cannot gather a host candidate")


def _free_tcp_port(host: str) -> int:
    # Janus cannot bind port 0 and report it back, so pick one the kernel considers free now.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class JanusServer:
    """Debian's `janus` as a child process, bound to loopback, configured from scratch.

    Usage (trio)::

        server = JanusServer()
        ws_url = await nursery.start(server.run)
        ... server.pid (for /proc/<pid>/stat CPU seconds and /proc/<pid>/status RSS)

    `event_loops=None` keeps Janus's default of one GLib loop thread per handle (per
    PeerConnection); an int makes handles share that many loop threads (Janus's
    `general.event_loops`), which Janus's documentation advises under load and which the
    benchmark uses (one loop per core Janus is given, `JanusTarget`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        ws_port: int | None = None,
        rtp_port_range: tuple[int, int] = (20000, 24999),
        debug_level: int = 3,
        event_loops: int | None = None,
        binary: str = JANUS_BINARY,
        start_timeout: float = 10.0,
        media_ip: str | None = None,
    ) -> None:
        self.host = host
        self.ws_port = ws_port
        # Below Linux's ephemeral range (32768+), so Janus's media ports never collide with the
        # bench's own port-0 sockets; libnice skips ports in use inside the range.
        self.rtp_port_range = rtp_port_range
        self.debug_level = debug_level
        self.event_loops = event_loops
        self.binary = binary
        self.start_timeout = start_timeout
        self.media_ip = media_ip or local_media_ip()
        self.workdir: Path | None = None
        self._process: trio.Process | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise JanusError("janus is not running")
        return self._process.pid

    @property
    def ws_url(self) -> str:
        if self.ws_port is None:
            raise JanusError("janus is not running")
        return f"ws://{self.host}:{self.ws_port}/"

    @property
    def log_path(self) -> Path | None:
        return None if self.workdir is None else self.workdir / "janus.log"

    def log_tail(self, limit: int = 4000) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")[-limit:]

    def write_config(self, workdir: Path) -> Path:
        """Write janus.jcfg and the two plugin configs into `workdir`; return janus.jcfg."""
        plugins = workdir / "plugins"
        transports = workdir / "transports"
        empty = workdir / "none"
        for d in (plugins, transports, empty):
            d.mkdir()
        # A folder of symlinks loads exactly these two and nothing else (Janus loads every *.so*
        # in its folders; `disable` lists would need the versioned file names).
        (plugins / "libjanus_videoroom.so").symlink_to(
            _find_library("plugins", "libjanus_videoroom")
        )
        (transports / "libjanus_websockets.so").symlink_to(
            _find_library("transports", "libjanus_websockets")
        )
        lo, hi = self.rtp_port_range
        general = [
            f'configs_folder = "{workdir}"',
            f'plugins_folder = "{plugins}"',
            f'transports_folder = "{transports}"',
            f'events_folder = "{empty}"',
            f'loggers_folder = "{empty}"',
            "log_to_stdout = true",
            f"debug_level = {self.debug_level}",
            "debug_colors = false",
            # The address Janus writes into SDP c= lines.
            f'interface = "{self.host}"',
            "session_timeout = 60",
        ]
        if self.event_loops is not None:
            general.append(f"event_loops = {self.event_loops}")
        jcfg = workdir / "janus.jcfg"
        jcfg.write_text(
            "general: {\n  "
            + "\n  ".join(general)
            + "\n}\n"
            + "certificates: {}\n"
            # Defaults kept on purpose (a normal deployment): no_media_timer = 1 s ("media"
            # receiving:false events, cheap), slowlink_threshold = 0 (no slowlink events),
            # min_nack_queue = 200 ms per subscriber, nack_optimizations off, twcc_period unused
            # (our SDP offers no transport-wide-cc extension).
            + "media: {\n"
            + f'  rtp_port_range = "{lo}-{hi}"\n'
            + "  ipv6 = false\n"
            + "}\n"
            # Janus never gathers on loopback (ice.c skips IFF_LOOPBACK interfaces; with nothing
            # left libnice would gather on every address, IPv6 too). So enforce exactly one
            # local IPv4 address: packets to it are still delivered inside this host (the
            # kernel routes local addresses through lo), and Janus has one host candidate.
            + "nat: {\n"
            + "  ice_lite = true\n"
            + f'  ice_enforce_list = "{self.media_ip}"\n'
            + "  ignore_mdns = true\n"
            + "  nice_debug = false\n"
            + "}\n"
            + "plugins: {}\ntransports: {}\nloggers: {}\n"
            + "events: { broadcast = false }\n"
        )
        # No pre-made rooms: the bench creates them through the API.
        (workdir / "janus.plugin.videoroom.jcfg").write_text("general: {}\n")
        (workdir / "janus.transport.websockets.jcfg").write_text(
            "general: {\n"
            '  json = "plain"\n'
            "  ws = true\n"
            f"  ws_port = {self.ws_port}\n"
            f'  ws_ip = "{self.host}"\n'
            "  wss = false\n"
            "}\n"
            "admin: { admin_ws = false\n admin_wss = false }\n"
        )
        return jcfg

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Start janus, report its WebSocket URL once the port accepts, run until cancelled."""
        if not os.access(self.binary, os.X_OK):
            raise JanusError(f"{self.binary} not found (apt-get install janus)")
        self.workdir = Path(tempfile.mkdtemp(prefix="arbiter-janus-"))
        if self.ws_port is None:
            self.ws_port = _free_tcp_port(self.host)
        try:
            jcfg = self.write_config(self.workdir)
            with self._open_log() as log:
                # stdout to a file, not a pipe: nobody has to drain it, so Janus never blocks on
                # a full pipe mid-benchmark.
                self._process = await trio.lowlevel.open_process(
                    [self.binary, "-C", str(jcfg), "-F", str(self.workdir)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                await self._wait_ready()
                task_status.started(self.ws_url)
                await self._process.wait()
                raise JanusError(
                    f"janus exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            finally:
                await self._stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _open_log(self) -> BinaryIO:
        assert self.workdir is not None
        return (self.workdir / "janus.log").open("wb")

    async def _wait_ready(self) -> None:
        assert self._process is not None and self.ws_port is not None
        with trio.move_on_after(self.start_timeout):
            while True:
                if self._process.poll() is not None:
                    raise JanusError(
                        f"janus exited at start with {self._process.returncode}:\n"
                        + self.log_tail()
                    )
                try:
                    stream = await trio.open_tcp_stream(self.host, self.ws_port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                return
        raise JanusError(f"janus did not open {self.ws_url} in {self.start_timeout} s")

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        # Shielded: this runs on cancellation too; bounded so a stuck Janus cannot hang us.
        with trio.CancelScope(shield=True):
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(3.0):
                await process.wait()
                return
            process.kill()
            with trio.move_on_after(2.0):
                await process.wait()


@dataclass
class Subscription:
    """A subscriber handle of `JanusSignaling` (opaque to the bench)."""

    handle: int
    room: int
    feed: int


@dataclass
class _Pending:
    final: frozenset[str]
    done: trio.Event = field(default_factory=trio.Event)
    reply: dict[str, Any] | None = None


def _plugin_data(reply: dict[str, Any]) -> dict[str, Any]:
    data = reply.get("plugindata", {}).get("data", {})
    if not isinstance(data, dict):
        raise JanusError(f"bad plugindata in {reply!r}")
    if "error" in data or "error_code" in data:
        raise JanusError(f"videoroom error {data.get('error_code')}: {data.get('error')}")
    return data


class JanusSignaling:
    """One WebSocket and one Janus session, driving the VideoRoom plugin.

    Replies are matched by transaction; everything Janus sends without a transaction we are
    waiting for (webrtcup, media, slowlink, hangup, trickle, unsolicited videoroom events) is kept
    per handle in `events[handle]` and can be awaited with `wait_event`.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self._pending: dict[str, _Pending] = {}
        self._changed = trio.Event()
        self._scope = trio.CancelScope()
        self._closed = False
        self._failure: BaseException | None = None
        self.session_id: int | None = None
        self.events: dict[int, list[dict[str, Any]]] = {}
        self._publishers: dict[int, int] = {}  # feed id -> publisher handle
        self._control: int | None = None  # the handle used for room administration

    @classmethod
    async def connect(cls, ws_url: str, nursery: trio.Nursery) -> JanusSignaling:
        ws = await trio_websocket.connect_websocket_url(
            nursery, ws_url, subprotocols=["janus-protocol"], max_message_size=4 * 2**20
        )
        self = cls(ws)
        nursery.start_soon(self._background)
        reply = await self._request({"janus": "create"}, _SYNC_REPLIES)
        self.session_id = int(reply["data"]["id"])
        return self

    # -- plumbing --------------------------------------------------------------------------

    async def _background(self) -> None:
        with self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._keepalive)
                    await self._reader()
                    nursery.cancel_scope.cancel()
            except (trio_websocket.ConnectionClosed, JanusError) as exc:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        for pending in self._pending.values():
            pending.done.set()
        self._changed.set()

    async def _reader(self) -> None:
        while True:
            message = await self._ws.get_message()
            try:
                reply = json.loads(message)
            except ValueError as exc:
                raise JanusError(f"non-JSON from janus: {message!r:.200}") from exc
            # The WebSocket transport sends one JSON object per frame (no batching).
            kind = reply.get("janus")
            pending = self._pending.get(reply.get("transaction", ""))
            if pending is not None and kind in pending.final:
                pending.reply = reply
                pending.done.set()
                continue
            if kind == "ack":
                continue  # the ack before an async plugin event
            sender = reply.get("sender")
            if isinstance(sender, int):
                self.events.setdefault(sender, []).append(reply)
                self._changed.set()
                self._changed = trio.Event()

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL)
            if self.session_id is not None:
                await self._request({"janus": "keepalive"}, _ACK_REPLIES)

    async def _request(self, message: dict[str, Any], final: frozenset[str]) -> dict[str, Any]:
        if self._failure is not None or self._closed:
            raise JanusError(f"janus connection is gone: {self._failure!r}")
        transaction = secrets.token_hex(8)
        message = {**message, "transaction": transaction}
        if self.session_id is not None and "session_id" not in message:
            message["session_id"] = self.session_id
        pending = self._pending[transaction] = _Pending(final)
        try:
            await self._ws.send_message(json.dumps(message))
            await pending.done.wait()
        finally:
            del self._pending[transaction]
        reply = pending.reply
        if reply is None:
            raise JanusError(f"janus connection lost: {self._failure!r}")
        if reply.get("janus") == "error":
            error = reply.get("error", {})
            raise JanusError(f"janus error {error.get('code')}: {error.get('reason')}")
        return reply

    async def attach(self) -> int:
        reply = await self._request({"janus": "attach", "plugin": VIDEOROOM}, _SYNC_REPLIES)
        handle = int(reply["data"]["id"])
        self.events.setdefault(handle, [])
        return handle

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A VideoRoom request: (plugindata.data, jsep or None); raises JanusError on error."""
        request: dict[str, Any] = {"janus": "message", "handle_id": handle, "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        reply = await self._request(request, _ASYNC_REPLIES)
        return _plugin_data(reply), reply.get("jsep")

    async def trickle_completed(self, handle: int) -> None:
        """Tell Janus we have no more candidates (ours are all in the SDP)."""
        await self._request(
            {"janus": "trickle", "handle_id": handle, "candidate": {"completed": True}},
            _ACK_REPLIES,
        )

    async def wait_event(
        self, handle: int, predicate: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """The first event (past or future) of `handle` for which `predicate` holds."""
        seen = 0
        while True:
            events = self.events.get(handle, [])
            for event in events[seen:]:
                if predicate(event):
                    return event
            seen = len(events)
            if self._failure is not None:
                raise JanusError(f"janus connection lost: {self._failure!r}")
            await self._changed.wait()

    # -- VideoRoom -------------------------------------------------------------------------

    async def _control_handle(self) -> int:
        if self._control is None:
            self._control = await self.attach()
        return self._control

    async def create_room(self, room: int, *, publishers: int = 64) -> None:
        handle = await self._control_handle()
        await self.message(
            handle,
            {
                "request": "create",
                "room": room,
                "publishers": publishers,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "record": False,
                "bitrate": 2_000_000,
                "fir_freq": 10,
                "permanent": False,
            },
        )

    async def publish(self, room: int, display: str, offer_sdp: str) -> tuple[int, str]:
        """Join `room` as a publisher and publish the offer: (feed id, answer SDP)."""
        handle = await self.attach()
        data, _ = await self.message(
            handle, {"request": "join", "ptype": "publisher", "room": room, "display": display}
        )
        feed = int(data["id"])
        data, jsep = await self.message(
            handle,
            {"request": "configure", "audio": True, "video": True},
            {"type": "offer", "sdp": offer_sdp},
        )
        if jsep is None or jsep.get("type") != "answer":
            raise JanusError(f"no answer to the publisher offer: {data!r}")
        self._publishers[feed] = handle
        return feed, str(jsep["sdp"])

    async def subscribe(self, room: int, feed: int) -> tuple[Subscription, str]:
        """A new subscriber handle for `feed`: (subscription, Janus's offer SDP)."""
        handle = await self.attach()
        data, jsep = await self.message(
            handle,
            {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]},
        )
        if jsep is None or jsep.get("type") != "offer":
            raise JanusError(f"no offer for the subscriber: {data!r}")
        return Subscription(handle, room, feed), str(jsep["sdp"])

    async def start(self, subscription: Subscription, answer_sdp: str) -> None:
        await self.message(
            subscription.handle,
            {"request": "start", "room": subscription.room},
            {"type": "answer", "sdp": answer_sdp},
        )

    def publisher_handle(self, feed: int) -> int:
        return self._publishers[feed]

    async def leave(self, handle: Subscription | int) -> None:
        """Leave and detach: a Subscription, or a publisher's feed id as `publish` returned it."""
        if isinstance(handle, Subscription):
            handle_id = handle.handle
        else:
            handle_id = self._publishers.pop(handle)
        try:
            await self.message(handle_id, {"request": "leave"})
        except JanusError:
            pass  # already gone (hung up); detaching is what frees it
        await self._request({"janus": "detach", "handle_id": handle_id}, _SYNC_REPLIES)
        self.events.pop(handle_id, None)

    async def close(self) -> None:
        """Destroy the session (Janus hangs up all its handles) and close the WebSocket."""
        if self._closed:
            return
        try:
            if self._failure is None and self.session_id is not None:
                with trio.move_on_after(5):
                    await self._request({"janus": "destroy"}, _SYNC_REPLIES)
        finally:
            self._closed = True
            self._scope.cancel()
            with trio.move_on_after(2) as cs:
                cs.shield = True
                await self._ws.aclose()
