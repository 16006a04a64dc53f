"""MediaEndpoint: the ONE UDP socket every room's media flows through (docs/PROTOCOL.md section 4).

This is the only module of the media plane that does I/O. Datagrams are demultiplexed per
RFC 7983 (`mux`): STUN is matched to a transport by the local ufrag in USERNAME (RFC 8445
7.2.2), everything else by the remote address a valid STUN request proved. The forwarding loop
follows the measured performance rules: a raw non-blocking stdlib socket drained in bounded
batches until `BlockingIOError`, then `trio.lowlevel.wait_readable`; plain `sendto`, queueing
and `wait_writable` only when the kernel buffer is full; a checkpoint between batches so
signaling stays responsive. Nothing per packet awaits, logs or touches the database.

A packet's path (issue 12), in the order the code runs it. `_receive_loop` reads a batch and
calls `dispatch(data, addr, now)` per datagram. `dispatch` checks the size and asks `mux` what
the first byte says (RFC 7983). STUN goes to `_stun`: the local ufrag in USERNAME finds the
transport (`by_ufrag`), `WebRtcTransport.receive_stun_untrusted` answers it, and a valid check
lets `addr` reach that transport (`by_addr`). DTLS goes to `by_addr[addr].receive_dtls_untrusted`.
SRTP and SRTCP go to `by_addr[addr].receive_rtp_untrusted` (`receive_rtcp_untrusted`): one
`unprotect` (a failure raises and is counted here by reason), the address noted as live
(`last_rx`, a pending nomination confirmed), and the plaintext handed to `transport.listener`,
the Router that made the transport (`Router.create_transport`). `Router.on_rtp` checks the
size, finds the Producer by SSRC in its own tables for that transport, caches the
packet for NACK and walks `producer.targets`: one `(protect, addr)` per connected consumer,
kept current by the Router whenever a consumer transport connects or moves or a consumer comes
or goes. Each target is `self.send(protect(packet), addr)`, a plain `sendto` here (queued only
while the kernel buffer is full). `Router.on_rtcp` answers NACKs from that cache, sends PLIs
upstream and forwards SRs the same way. Timers (DTLS retransmissions, consent, RTCP reports,
deferred PLIs) are not here: the MediaWorker (media_worker.py) runs them. So the endpoint owns
the socket, the demux tables (`by_ufrag`, `by_addr`) and the send backlog, and nothing else.

Every bad datagram is dropped and counted by reason in `counters` (a `collections.Counter`,
exported to Prometheus at scrape time); nothing a remote peer sends raises out of the loop, and
an unexpected error is logged at most once per 10 s per kind (`ratelog`).

Addresses (docs/PROTOCOL.md section 4, ICE-lite). A valid STUN check is answered to its source and lets
that address reach its transport (`by_addr`), but outgoing media follows a new nomination only
once authenticated SRTP/SRTCP comes from it (`WebRtcTransport.authenticated_from`), and an
address another transport is actively receiving authenticated media from is not handed over on
the strength of a check: a check replayed from a participant's address must not cost that
participant its packets.

Answering from the arrival address (issue 11). Bound to a wildcard (`media.listen = 0.0.0.0` or
`::`), a reply leaves from whatever source the kernel's routing prefers, which on a multi-homed
host (a second address, an announced address that is not the primary one) is not the address
the browser sent to, and browsers drop answers from an unexpected address. So a wildcard socket
asks for IP_PKTINFO / IPV6_PKTINFO and is read with `recvmsg`: a STUN check's arrival address
is where its answer leaves from (`sendmsg` with that address as the source), and the last
authenticated check from a remote address sets where everything sent to that address leaves
from (`_via`; answers to an `stun_address_in_use` check change nothing). Where the kernel's
own choice of source for that remote address already is the arrival address (a single-homed
host: the usual case), nothing is recorded and the plain `sendto` stays: a route lookup on a
connected probe socket per check decides, not per packet. A socket bound to one address needs
none of it: plain `recvfrom`/`sendto`, as before.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import sys
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
    from .transport import WebRtcTransport

log = logging.getLogger(__name__)

Address = tuple[str, int]

BATCH = 256  # datagrams per drain before a checkpoint
MAX_DATAGRAM = 1500  # larger than any Ethernet-MTU SRTP packet; libsrtp refuses more
RECV_SIZE = 2048
SEND_BACKLOG = 4096  # datagrams queued while the kernel buffer is full; beyond: dropped
SOCKET_BUFFER = 4 * 1024 * 1024
MAX_ADDRS_PER_TRANSPORT = 8  # candidate pairs a browser may validate; caps memory per peer
# Refresh `now` every this many datagrams of a batch: a batch of expensive RTCP (NACK floods)
# can take long enough that the batch's start time would skew the 100 ms NACK repeat limit.
CLOCK_EVERY = 16
# An address that delivered authenticated SRTP/SRTCP to its transport this recently stays with
# it, whatever valid STUN arrives from it for another transport. Browsers send RTCP at least
# every second or so; a transport silent this long has been closed or moved.
ADDRESS_HOLD = 5.0
# Linux's IP_PKTINFO (Python 3.11's socket module lacks the IPv4 constant) and the ancillary
# buffer recvmsg needs for it or for IPV6_PKTINFO (struct in_pktinfo: 12 bytes, in6_pktinfo: 20).
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
ANCILLARY = socket.CMSG_SPACE(20)
WILDCARDS = ("0.0.0.0", "::", "")
_NO_IFINDEX = bytes(4)

Ancillary = list[tuple[int, int, bytes]]


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
    if listen not in WILDCARDS:
        return listen
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): a route lookup only
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def _is_local(ip: str, family: socket.AddressFamily) -> bool:
    """Whether `ip` is an address of this host: binding a throwaway socket to it succeeds."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.bind((ip, 0))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def unreachable_announced(listen: str, announced: list[str]) -> list[str]:
    """The announced addresses a browser's packets cannot reach this socket on, each with why.

    Reachable: the listen address itself; with a wildcard listen, any address of this host of
    a family the socket receives; any global (public) address, taken to be forwarded here by a
    NAT. Anything else (another host's private address, a typo, an address the interface lost,
    an IPv6 address on an IPv4 socket) gets an ICE check that never arrives: no call connects.
    """
    problems = []
    try:
        listen_ip = ipaddress.ip_address(listen) if listen else ipaddress.ip_address("0.0.0.0")
    except ValueError:
        listen_ip = None
    for text in announced:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            problems.append(f"{text!r} is not an IP address")
            continue
        if listen_ip is not None and ip == listen_ip:
            continue
        if ip.is_global:
            continue  # a public address: presumably forwarded here (1:1 NAT)
        wildcard = listen in WILDCARDS
        # An IPv6 wildcard socket also receives IPv4 (dual stack); an IPv4 one only IPv4.
        same_family = ip.version == 4 or (listen_ip is not None and listen_ip.version == 6)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if wildcard and same_family and _is_local(text, family):
            continue
        if _is_local(text, family):
            problems.append(f"{text} is an address of this host but the socket listens on {listen}")
        else:
            problems.append(f"{text} is neither an address of this host nor a public address")
    return problems


def _answer_from(arrival: Ancillary) -> Ancillary | None:
    """The ancillary data that makes `sendmsg` use the arrival address of a datagram as its
    source, from what `recvmsg` returned with it (IP_PKTINFO / IPV6_PKTINFO); None without."""
    for level, kind, data in arrival:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            # struct in_pktinfo {ifindex; spec_dst; addr}: spec_dst is the local address the
            # datagram was for (a local unicast) or the one to answer a broadcast from. Send
            # with ifindex 0: the route decides the interface, the source is fixed.
            return [(level, kind, _NO_IFINDEX + data[4:8] + _NO_IFINDEX)]
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            # struct in6_pktinfo {addr; ifindex} (IPv4-mapped for IPv4 on a dual-stack socket).
            # The interface only matters, and is only kept, for a link-local address.
            link_local = data[0] == 0xFE and data[1] & 0xC0 == 0x80
            return [(level, kind, data[:16] + (data[16:20] if link_local else _NO_IFINDEX))]
    return None


def _ask_arrival_address(sock: socket.socket, family: socket.AddressFamily) -> bool:
    """Ask the kernel to report each datagram's local (arrival) address; False if it cannot."""
    if not sys.platform.startswith("linux"):  # IP_PKTINFO's value and layout are Linux's here
        log.warning("media.listen is a wildcard: replies leave from the kernel's preferred "
                    "source address on this platform; set media.listen to the announced address "
                    "on a multi-homed host")  # fmt: skip
        return False
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    except OSError as exc:  # pragma: no cover - every Linux has it
        log.warning("media endpoint: no IP_PKTINFO (%s); replies leave from the kernel's "
                    "preferred source address", exc)  # fmt: skip
        return False
    return True


class MediaEndpoint:
    """Owns the UDP socket, the tables that find a datagram's transport, and the send backlog.
    Rooms, Routers and timers are the MediaWorker's (media_worker.py)."""

    def __init__(self, config: MediaConfig, certificate: Certificate | None = None) -> None:
        self.config = config
        self.certificate = certificate or Certificate.generate()
        self.counters: Counter[str] = Counter()
        # UDP payload bytes received and sent (/metrics: arbiter_media_bytes_total).
        self.bytes_in = 0
        self.bytes_out = 0
        self.by_ufrag: dict[str, WebRtcTransport] = {}
        self.by_addr: dict[Address, WebRtcTransport] = {}
        self._addrs: dict[WebRtcTransport, list[Address]] = {}
        self.port = 0
        self.sock: socket.socket | None = None
        self._backlog: deque[tuple[bytes, Address]] = deque()
        self._wake_writer = trio.Event()
        self._sendto: Callable[[bytes, Address], int] | None = None
        self._sendmsg: Callable[..., int] | None = None
        # Wildcard listen: where datagrams to a remote address leave from when that is not the
        # kernel's own choice (module docstring), as sendmsg's ancillary data; its keys are
        # addresses in `by_addr`. `_sources` shares one such list per local address; `_probe`
        # asks the kernel which source it would pick.
        self.answers_from_arrival = self.config.listen in WILDCARDS
        self._via: dict[Address, Ancillary] = {}
        self._sources: dict[bytes, tuple[Ancillary, bytes]] = {}
        self._probe: socket.socket | None = None
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

    def rekey(self, transport: WebRtcTransport, old_ufrag: str) -> None:
        """`transport` restarted ICE (`WebRtcTransport.restart_ice`): STUN finds it by its new
        local ufrag only; the addresses it proved keep working (media continues meanwhile)."""
        if self.by_ufrag.get(old_ufrag) is transport:
            del self.by_ufrag[old_ufrag]
        if not transport.closed:
            self.by_ufrag[transport.ufrag] = transport

    def unregister(self, transport: WebRtcTransport) -> None:
        """Idempotent: forget the transport's ufrag and every address it proved."""
        if self.by_ufrag.get(transport.ufrag) is transport:
            del self.by_ufrag[transport.ufrag]
        for addr in self._addrs.pop(transport, ()):
            if self.by_addr.get(addr) is transport:
                del self.by_addr[addr]
                self._set_via(addr, None)

    def send(self, datagram: bytes, addr: Address) -> None:
        """Non-blocking send; queued (bounded) only while the kernel buffer is full."""
        if self._backlog:
            self._queue(datagram, addr)
            return
        try:
            via = self._via.get(addr)
            if via is None:
                self._sendto(datagram, addr)  # type: ignore[misc]
            else:
                self._sendmsg((datagram,), via, 0, addr)  # type: ignore[misc]
            self.bytes_out += len(datagram)  # sent (a queued one counts when it leaves)
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

    def transports(self) -> list[WebRtcTransport]:
        """The registered transports (a copy: the caller may close some)."""
        return list(self._addrs)

    def reply_source(self, addr: Address) -> str | None:
        """The local address datagrams to `addr` leave from; None: the kernel's choice."""
        via = self._via.get(addr)
        if via is None:
            return None
        level, _, data = via[0]
        if level == socket.IPPROTO_IP:
            return socket.inet_ntop(socket.AF_INET, data[4:8])
        packed = data[:16]
        if packed[:12] == b"\0" * 10 + b"\xff\xff":  # IPv4-mapped, on a dual-stack socket
            return socket.inet_ntop(socket.AF_INET, packed[12:])
        return socket.inet_ntop(socket.AF_INET6, packed)

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
            if self.answers_from_arrival:
                self.answers_from_arrival = _ask_arrival_address(sock, family)
            if self.answers_from_arrival:
                self._probe = socket.socket(family, socket.SOCK_DGRAM)
            self.sock = sock
            self.port = sock.getsockname()[1]
            self._sendto = sock.sendto
            self._sendmsg = sock.sendmsg
            log.info("media endpoint on udp %s:%d%s", self.config.listen, self.port,
                     ", answering from each datagram's arrival address"
                     if self.answers_from_arrival else "")  # fmt: skip
            problems = unreachable_announced(self.config.listen, self.config.announced_ip)
            if problems:
                log.warning(
                    "media.announced_ip: %s; browsers will send media there and it will not "
                    "arrive (announce this host's own address, or its public address behind a "
                    "NAT that forwards udp port %d here)", "; ".join(problems), self.port,
                )  # fmt: skip
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop, sock)
                nursery.start_soon(self._write_backlog, sock)
                task_status.started(self)
        finally:
            self._sendto = self._sendmsg = None
            sock.close()
            if self._probe is not None:
                self._probe.close()
                self._probe = None

    async def _receive_loop(self, sock: socket.socket) -> None:
        recvfrom, recvmsg = sock.recvfrom, sock.recvmsg
        pktinfo = self.answers_from_arrival
        dispatch = self.dispatch
        current_time = trio.current_time
        now = current_time()
        arrival: Ancillary | None = None
        while True:
            for i in range(BATCH):
                if not i % CLOCK_EVERY:
                    now = current_time()
                try:
                    if pktinfo:
                        data, arrival, _, addr = recvmsg(RECV_SIZE, ANCILLARY)
                    else:
                        data, addr = recvfrom(RECV_SIZE)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        continue  # ICMP error from an earlier send: nothing to read
                    raise
                dispatch(data, addr, now, arrival)
            else:
                # A full batch: more may be waiting. Let signaling run, then drain again.
                await trio.lowlevel.checkpoint()
                continue
            await trio.lowlevel.wait_readable(sock)

    def dispatch(
        self, data: bytes, addr: Address, now: float, arrival: Ancillary | None = None
    ) -> None:
        """Handle one datagram. Never raises: bad input is dropped and counted.

        `arrival`: what `recvmsg` returned with it on a wildcard socket (its IP_PKTINFO).
        """
        counters = self.counters
        n = len(data)
        self.bytes_in += n  # arbiter_media_bytes_total{direction="in"}
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
                # Authenticated, it goes on to the transport's Router (module docstring).
                if 192 <= data[1] <= 223:  # RTCP packet types (RFC 5761 section 4)
                    moved = transport.receive_rtcp_untrusted(data, addr, now)
                else:
                    moved = transport.receive_rtp_untrusted(data, addr, now)
                if moved:
                    self._moved(transport, addr, moved)
            elif kind == mux.STUN:
                self._stun(data, addr, now, arrival)
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

    def _moved(self, transport: WebRtcTransport, addr: Address, moved: str) -> None:
        """Authenticated media from a pending address confirmed it (`authenticated_from`)."""
        if moved == ice.SWITCHED:
            self.counters["ice_switch"] += 1
            log.info("%r: media moved to %s", transport, addr)
        elif moved == ice.DEFERRED:
            self.counters["ice_switch_deferred"] += 1

    def _stun(
        self, data: bytes, addr: Address, now: float, arrival: Ancillary | None = None
    ) -> None:
        local_ufrag, _ = stun.read_username_untrusted(data)
        transport = self.by_ufrag.get(local_ufrag)
        if transport is None:
            self.counters["stun_unknown_ufrag"] += 1
            return
        previous = self._via.get(addr)
        if arrival:
            # The answer (sent while handling) leaves from the arrival address.
            self._set_via(addr, self._source(addr, arrival))
        try:
            event = transport.receive_stun_untrusted(data, addr, now)
        except BaseException:
            self._set_via(addr, previous)  # not authenticated: changes nothing
            raise
        if event == "pending":
            self.counters["ice_nomination_pending"] += 1
        # The request carried a valid MESSAGE-INTEGRITY: this address knows the ice-pwd, which
        # does not make it the sender's own address (it may be spoofed or replayed).
        owner = self.by_addr.get(addr)
        if owner is not transport:
            addrs = self._addrs.get(transport)
            if addrs is None:  # closed while handling (e.g. DTLS failure)
                self._set_via(addr, previous)
                return
            if owner is not None and not owner.closed and now - owner.last_rx < ADDRESS_HOLD:
                # Its owner is receiving authenticated media from it right now: a browser never
                # shares a live socket between two peer connections, so this check is a replay
                # or a spoof. Answered (above), but the owner keeps its packets, and the
                # address they leave from.
                self.counters["stun_address_in_use"] += 1
                self._set_via(addr, previous)
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
                    self._set_via(stale, None)
            addrs.append(addr)
            self.by_addr[addr] = transport

    def _source(self, addr: Address, arrival: Ancillary) -> Ancillary | None:
        """`_answer_from(arrival)` (one shared list per local address), or None when the kernel
        would pick the arrival address as the source for `addr` anyway."""
        key = arrival[0][2]
        known = self._sources.get(key)
        if known is None:
            source = _answer_from(arrival)
            if source is None:
                return None
            level, _, data = source[0]
            known = (source, data[4:8] if level == socket.IPPROTO_IP else data[:16])
            if len(self._sources) < 256:  # local addresses and interfaces: a handful
                self._sources[key] = known
        source, local = known
        probe = self._probe
        if probe is not None:
            try:
                probe.connect(addr)  # a route lookup: nothing is sent
                if socket.inet_pton(probe.family, probe.getsockname()[0]) == local:
                    return None
            except OSError:
                pass  # no route, or a scoped address: say the source explicitly
        return source

    def _set_via(self, addr: Address, source: Ancillary | None) -> None:
        """Datagrams to `addr` leave from `source` (None: the kernel's choice). An IPv6 socket
        reports sources as (host, port, flowinfo, scope_id) but transports keep (host, port)
        and send there: both keys, so the send path needs no conversion."""
        via = self._via
        keys = (addr,) if len(addr) == 2 else (addr, (addr[0], addr[1]))
        for key in keys:
            if source is None:
                via.pop(key, None)
            else:
                via[key] = source

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
                        via = self._via.get(addr)
                        if via is None:
                            sock.sendto(datagram, addr)
                        else:
                            sock.sendmsg((datagram,), via, 0, addr)
                        self.bytes_out += len(datagram)
                    except BlockingIOError:
                        break
                    except OSError:
                        self.counters["send_error"] += 1
                    backlog.popleft()
