"""MediaEndpoint: the ONE UDP socket every room's media flows through (docs/PROTOCOL.md section 4).

This is the only module of the media plane that does I/O. Datagrams are demultiplexed per
RFC 7983 (`mux`): STUN is matched to a transport by the local ufrag in USERNAME (RFC 8445
7.2.2), everything else by the remote address a valid STUN request proved. The forwarding loop
follows the measured performance rules: a raw non-blocking stdlib socket drained in bounded
batches until `BlockingIOError`, then `trio.lowlevel.wait_readable`; plain `sendto`, queueing
and `wait_writable` only when the kernel buffer is full; a checkpoint between batches so
signaling stays responsive. Nothing per packet awaits, logs or touches the database.

Every bad datagram is dropped and counted by reason in `counters` (a `collections.Counter`,
exported to Prometheus at scrape time); nothing a remote peer sends raises out of the loop, and
an unexpected error is logged at most once per 10 s per kind (`ratelog`).

Addresses (docs/PROTOCOL.md section 4, ICE-lite). A valid STUN check is answered to its source and lets
that address reach its transport (`by_addr`), but outgoing media follows a new nomination only
once authenticated SRTP/SRTCP comes from it (`WebRtcTransport.authenticated_from`), and an
address another transport is actively receiving authenticated media from is not handed over on
the strength of a check: a check replayed from a participant's address must not cost that
participant its packets.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..config import MediaConfig
from ..errors import MalformedInput
from . import ice, mux, stun
from .dtls import Certificate
from .ratelog import RateLimitedLog

if TYPE_CHECKING:
    from .media import MediaRoom
    from .router import Router
    from .transport import WebRtcTransport

log = logging.getLogger(__name__)

Address = tuple[str, int]

BATCH = 256  # datagrams per drain before a checkpoint
MAX_DATAGRAM = 1500  # larger than any Ethernet-MTU SRTP packet; libsrtp refuses more
# pylibsrtp's protect refuses RTP longer than its 1500-byte buffer minus the largest trailer
# (144): 1356 bytes, both profiles. A publisher's libsrtp has no such limit, so a longer
# authentic packet must be dropped here, before the router fails to re-protect it per
# subscriber (found by scripts/fuzz_parsers.py: ValueError in Router.on_rtp, logged per packet).
MAX_FORWARD_RTP = 1356
RECV_SIZE = 2048
SEND_BACKLOG = 4096  # datagrams queued while the kernel buffer is full; beyond: dropped
SOCKET_BUFFER = 4 * 1024 * 1024
MAX_ADDRS_PER_TRANSPORT = 8  # candidate pairs a browser may validate; caps memory per peer
TIMER_INTERVAL = 0.05  # DTLS retransmission granularity (its timeouts start at 1 s)
# Refresh `now` every this many datagrams of a batch: a batch of expensive RTCP (NACK floods)
# can take long enough that the batch's start time would skew the 100 ms NACK repeat limit.
CLOCK_EVERY = 16
# An address that delivered authenticated SRTP/SRTCP to its transport this recently stays with
# it, whatever valid STUN arrives from it for another transport. Browsers send RTCP at least
# every second or so; a transport silent this long has been closed or moved.
ADDRESS_HOLD = 5.0
REPORT_INTERVAL = 1.0  # consent checks and RTCP reports to publishers (RFC 3550 6.2)


def _srtp_reason(message: str) -> str:
    for prefix, reason in (
        ("srtp auth", "srtp_auth"),
        ("srtp replay", "srtp_replay"),
        ("srtp not ready", "srtp_not_ready"),
        ("srtp oversize", "oversize"),
    ):
        if message.startswith(prefix):
            return reason
    return "srtp_error"


def default_announced_ip(listen: str) -> str:
    """The listen address, or for a wildcard the address of this host's default route.

    A UDP `connect` only asks the kernel for a route: no packet is sent.
    """
    if listen not in ("0.0.0.0", "::", ""):
        return listen
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): a route lookup only
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


class MediaEndpoint:
    """Owns the UDP socket, the transport lookup tables, the send backlog and the timers."""

    def __init__(self, config: MediaConfig, certificate: Certificate | None = None) -> None:
        self.config = config
        self.certificate = certificate or Certificate.generate()
        self.counters: Counter[str] = Counter()
        self.by_ufrag: dict[str, WebRtcTransport] = {}
        self.by_addr: dict[Address, WebRtcTransport] = {}
        self._addrs: dict[WebRtcTransport, list[Address]] = {}
        self.routers: set[Router] = set()
        self.rooms: dict[int, MediaRoom] = {}  # live media rooms by room id (metrics, tests)
        self.port = 0
        self.sock: socket.socket | None = None
        self._backlog: deque[tuple[bytes, Address]] = deque()
        self._wake_writer = trio.Event()
        self._sendto: Callable[[bytes, Address], int] | None = None
        self._log = RateLimitedLog(log)

    # -- public API for rooms ------------------------------------------------------------------

    def candidates(self) -> list[tuple[str, int]]:
        """The host candidates put in every SDP: one per announced address."""
        ips = self.config.announced_ip or [default_announced_ip(self.config.listen)]
        return [(ip, self.port) for ip in ips]

    def register(self, transport: WebRtcTransport) -> None:
        self.by_ufrag[transport.ufrag] = transport
        self._addrs[transport] = []
        transport.on_close.append(self.unregister)

    def unregister(self, transport: WebRtcTransport) -> None:
        """Idempotent: forget the transport's ufrag and every address it proved."""
        if self.by_ufrag.get(transport.ufrag) is transport:
            del self.by_ufrag[transport.ufrag]
        for addr in self._addrs.pop(transport, ()):
            if self.by_addr.get(addr) is transport:
                del self.by_addr[addr]

    def send(self, datagram: bytes, addr: Address) -> None:
        """Non-blocking send; queued (bounded) only while the kernel buffer is full."""
        if self._backlog:
            self._queue(datagram, addr)
            return
        try:
            self._sendto(datagram, addr)  # type: ignore[misc]
        except BlockingIOError:
            self._queue(datagram, addr)
        except OSError as exc:
            # ICMP errors surface on later sends of an unconnected socket; a peer's problem.
            self.counters["send_error"] += 1
            log.debug("sendto %s failed: %s", addr, exc)
        except TypeError:  # not started: no socket yet
            self.counters["send_error"] += 1

    def transport_count(self) -> int:
        return len(self._addrs)

    # -- running -------------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[MediaEndpoint] = trio.TASK_STATUS_IGNORED
    ) -> None:
        family = socket.AF_INET6 if ":" in self.config.listen else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                except OSError:  # pragma: no cover - capped by the kernel, not fatal
                    pass
            sock.bind((self.config.listen, self.config.port))
            self.sock = sock
            self.port = sock.getsockname()[1]
            self._sendto = sock.sendto
            log.info("media endpoint on udp %s:%d", self.config.listen, self.port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop, sock)
                nursery.start_soon(self._write_backlog, sock)
                nursery.start_soon(self._timers)
                task_status.started(self)
        finally:
            self._sendto = None
            sock.close()

    async def _receive_loop(self, sock: socket.socket) -> None:
        recvfrom = sock.recvfrom
        dispatch = self.dispatch
        current_time = trio.current_time
        now = current_time()
        while True:
            for i in range(BATCH):
                if not i % CLOCK_EVERY:
                    now = current_time()
                try:
                    data, addr = recvfrom(RECV_SIZE)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        continue  # ICMP error from an earlier send: nothing to read
                    raise
                dispatch(data, addr, now)
            else:
                # A full batch: more may be waiting. Let signaling run, then drain again.
                await trio.lowlevel.checkpoint()
                continue
            await trio.lowlevel.wait_readable(sock)

    def dispatch(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one datagram. Never raises: bad input is dropped and counted."""
        counters = self.counters
        n = len(data)
        if n > MAX_DATAGRAM:
            counters["oversize"] += 1
            return
        kind = mux.classify(data)
        try:
            if kind == mux.RTP:
                transport = self.by_addr.get(addr)
                if transport is None:
                    counters["unknown_address"] += 1
                    return
                router = transport.router
                if 192 <= data[1] <= 223:  # RTCP packet types (RFC 5761 section 4)
                    plain = transport.unprotect_rtcp_untrusted(data)
                    counters["rtcp_in"] += 1
                    transport.last_rx = now
                    if transport.pending_addr is not None:
                        self._confirm(transport, addr, now)
                    if router is not None:
                        router.on_rtcp(transport, plain, now)
                else:
                    plain = transport.unprotect_rtp_untrusted(data)
                    # Authenticated: this address holds the transport's keys (module docstring).
                    transport.last_rx = now
                    if transport.pending_addr is not None:
                        self._confirm(transport, addr, now)
                    if len(plain) < 12:
                        counters["rtp_parse"] += 1
                        return
                    if len(plain) > MAX_FORWARD_RTP:
                        counters["oversize"] += 1
                        return
                    counters["rtp_in"] += 1
                    if router is not None:
                        router.on_rtp(transport, plain)
            elif kind == mux.STUN:
                self._stun(data, addr, now)
            elif kind == mux.DTLS:
                transport = self.by_addr.get(addr)
                if transport is None:
                    counters["unknown_address"] += 1
                    return
                moved = transport.receive_dtls_untrusted(data, now, addr)
                if moved:
                    counters["ice_switch" if moved == ice.SWITCHED else "ice_switch_deferred"] += 1
                if transport.closed:
                    # "dtls": a handshake error or a certificate that does not match the SDP
                    # fingerprint (RFC 8122 5), closed without keys; "peer_closed": the
                    # browser's close_notify.
                    counters["dtls_peer_closed" if transport.close_reason == "peer_closed"
                             else "dtls_failed"] += 1  # fmt: skip
            else:
                counters["unknown_protocol"] += 1
        except MalformedInput as exc:
            if kind == mux.RTP:
                counters[_srtp_reason(exc.message) if exc.message.startswith("srtp")
                         else "rtcp_parse" if 192 <= data[1] <= 223 else "rtp_parse"] += 1  # fmt: skip
            elif kind == mux.STUN:
                counters["stun_bad"] += 1
            else:
                counters["dtls_malformed"] += 1
        except Exception as exc:
            # A bug of ours must not take every room's media down: count it, log it (bounded:
            # a peer may trigger it once per datagram), go on.
            counters["internal_error"] += 1
            self._log.exception(
                f"dispatch:{type(exc).__name__}", now,
                "media endpoint: error handling a datagram from %s", addr,
            )  # fmt: skip

    def _confirm(self, transport: WebRtcTransport, addr: Address, now: float) -> None:
        moved = transport.authenticated_from(addr, now)
        if moved == ice.SWITCHED:
            self.counters["ice_switch"] += 1
            log.info("%r: media moved to %s", transport, addr)
        elif moved == ice.DEFERRED:
            self.counters["ice_switch_deferred"] += 1

    def _stun(self, data: bytes, addr: Address, now: float) -> None:
        local_ufrag, _ = stun.read_username_untrusted(data)
        transport = self.by_ufrag.get(local_ufrag)
        if transport is None:
            self.counters["stun_unknown_ufrag"] += 1
            return
        event = transport.receive_stun_untrusted(data, addr, now)
        if event == "pending":
            self.counters["ice_nomination_pending"] += 1
        # The request carried a valid MESSAGE-INTEGRITY: this address knows the ice-pwd, which
        # does not make it the sender's own address (it may be spoofed or replayed).
        owner = self.by_addr.get(addr)
        if owner is not transport:
            addrs = self._addrs.get(transport)
            if addrs is None:  # closed while handling (e.g. DTLS failure)
                return
            if owner is not None and not owner.closed and now - owner.last_rx < ADDRESS_HOLD:
                # Its owner is receiving authenticated media from it right now: a browser never
                # shares a live socket between two peer connections, so this check is a replay
                # or a spoof. Answered (above), but the owner keeps its packets.
                self.counters["stun_address_in_use"] += 1
                return
            if owner is not None:
                # The address moved to another transport (a browser reusing a port after
                # closing a peer connection): the old one no longer receives from it.
                old = self._addrs.get(owner)
                if old is not None and addr in old:
                    old.remove(addr)
            if len(addrs) >= MAX_ADDRS_PER_TRANSPORT:
                stale = addrs.pop(0)
                if self.by_addr.get(stale) is transport and stale != transport.remote_addr:
                    del self.by_addr[stale]
            addrs.append(addr)
            self.by_addr[addr] = transport

    def _queue(self, datagram: bytes, addr: Address) -> None:
        if len(self._backlog) >= SEND_BACKLOG:
            self.counters["send_dropped"] += 1
            return
        self._backlog.append((datagram, addr))
        self._wake_writer.set()

    async def _write_backlog(self, sock: socket.socket) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            backlog = self._backlog
            while backlog:
                await trio.lowlevel.wait_writable(sock)
                while backlog:
                    datagram, addr = backlog[0]
                    try:
                        sock.sendto(datagram, addr)
                    except BlockingIOError:
                        break
                    except OSError:
                        self.counters["send_error"] += 1
                    backlog.popleft()

    async def _timers(self) -> None:
        next_report = trio.current_time() + REPORT_INTERVAL
        while True:
            await trio.sleep(TIMER_INTERVAL)
            now = trio.current_time()
            for transport in list(self._addrs):
                if not transport.connected:
                    try:
                        transport.handle_timeout(now)
                    except Exception:
                        self.counters["internal_error"] += 1
                        self._log.exception("dtls_timer", now, "DTLS timer of %r", transport)
            for router in list(self.routers):
                try:
                    router.tick(now)
                except Exception:
                    self.counters["internal_error"] += 1
                    self._log.exception("router_tick", now, "router timer failed")
            if now < next_report:
                continue
            next_report = now + REPORT_INTERVAL
            for transport in list(self._addrs):
                if transport.consent_expired(now):
                    # RFC 7675 section 5.1: no consent, no sending; the room hears of it.
                    log.info("%r: consent expired", transport)
                    self.counters["consent_expired"] += 1
                    transport.close("consent")
            for router in list(self.routers):
                try:
                    router.send_reports(now)
                except Exception:
                    self.counters["internal_error"] += 1
                    self._log.exception("rtcp_reports", now, "RTCP reports failed")
