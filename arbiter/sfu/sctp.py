"""One SCTP association over a DTLS association (RFC 9260, RFC 8261), sans-IO.

The SFU is the DTLS server and the *passive* SCTP side: the browser sends INIT, we answer
INIT-ACK with a state cookie that carries everything the association needs, authenticated with
HMAC-SHA256 under a per-association secret, so nothing is kept until a valid COOKIE-ECHO comes
back (RFC 9260 5.1.3). Port 5000 on both sides (RFC 8841 `a=sctp-port`).

Calls take the received packet or the caller's clock `now` and return the packets to send;
what happened for the layer above (`Message`, `Established`, `StreamsReset`, `Closed`) queues
in `events` until `take_events()`. Receiving: cumulative TSN plus gap blocks, ordered and
unordered reassembly, FORWARD-TSN (RFC 3758), delayed SACK (RFC 9260 6.2: every second
packet, 200 ms at most, at once on a gap, duplicate or the I bit), incoming stream resets
(RFC 6525) answered with our own reset of the same streams so the browser's channel closes.
Sending: TSNs and SSNs at queue time, T3-rtx with RTO from RTT samples (6.3, Karn's rule),
slow start / congestion avoidance on a byte cwnd (7.2), partial reliability by retransmission
count or lifetime. Not done: fast retransmit, multi-homing, AUTH, I-DATA, initiating an
association, answering an INIT collision (the browser is always the initiator here).

Bounds: messages over `max_message_size` are dropped (counted), the receive buffer is two of
them and DATA past it is dropped unacknowledged (the peer retransmits), at most `MAX_TSN_AHEAD`
TSNs beyond the cumulative one are tracked, and `send` refuses (returns False) past
`max_buffered` queued bytes. Malformed packets raise `MalformedInput` before any state changes;
malformed chunks inside a valid packet are dropped and counted in `counters`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections import Counter, deque
from dataclasses import dataclass
from enum import StrEnum
from random import Random

from arbiter.errors import MalformedInput

from . import sctp_chunks as c
from .sctp_rx import Message, Receiver, after

PORT = 5000
MTU = 1150  # SCTP packet bytes: + DTLS record overhead (<= 37) stays within 1200
MAX_PAYLOAD = (MTU - c.HEADER - c.DATA_HEADER) & ~3  # whole DATA chunks, padding included
MAX_MESSAGE_SIZE = 262144  # what we advertise in a=max-message-size (RFC 8841 6)
MAX_BUFFERED = 1 << 20  # queued outbound bytes per association
MAX_STREAMS = 256  # streams each way, so data channel ids 0..255
COOKIE_LIFETIME = 60.0  # RFC 9260 15: Valid.Cookie.Life
RTO_INITIAL, RTO_MIN, RTO_MAX = 1.0, 0.2, 10.0
MAX_RETRANSMISSIONS = 10  # Association.Max.Retrans
SACK_DELAY = 0.2
_COOKIE = struct.Struct("!dIIIIIHH??")  # time, tags, tsns, a_rwnd, streams, extensions
_MOD = 1 << 32
MAX_QUEUED_CHUNKS = 4096  # per association, whatever their size
_KNOWN = frozenset({c.DATA, c.INIT, c.INIT_ACK, c.SACK, c.HEARTBEAT, c.HEARTBEAT_ACK, c.ABORT,
                    c.SHUTDOWN, c.SHUTDOWN_ACK, c.ERROR, c.COOKIE_ECHO, c.COOKIE_ACK,
                    c.SHUTDOWN_COMPLETE, c.RECONFIG, c.FORWARD_TSN})  # fmt: skip


class AssociationState(StrEnum):
    """RFC 9260 section 4, the passive side: listen -> established -> shutdown-* -> closed."""

    LISTEN = "listen"
    ESTABLISHED = "established"
    SHUTDOWN_PENDING = "shutdown-pending"
    SHUTDOWN_SENT = "shutdown-sent"
    SHUTDOWN_RECEIVED = "shutdown-received"
    SHUTDOWN_ACK_SENT = "shutdown-ack-sent"
    CLOSED = "closed"


_RECEIVING = (
    AssociationState.ESTABLISHED, AssociationState.SHUTDOWN_PENDING, AssociationState.SHUTDOWN_SENT,
)


@dataclass(frozen=True)
class Established:
    pass


@dataclass(frozen=True)
class StreamsReset:
    streams: tuple[int, ...]  # the peer closed these (empty: all)


@dataclass(frozen=True)
class Closed:
    reason: str


Event = Message | Established | StreamsReset | Closed


@dataclass
class _Out:
    """One DATA chunk we queued: TSN and SSN are fixed when queued."""

    data: c.Data
    message: int  # fragments of one message share this number
    max_retransmits: int | None
    expires: float | None
    sent_at: float | None = None
    transmissions: int = 0
    acked: bool = False  # gap-acknowledged
    abandoned: bool = False
    retransmit: bool = False


class SctpAssociation:
    def __init__(
        self,
        *,
        port: int = PORT,
        remote_port: int = PORT,
        max_message_size: int = MAX_MESSAGE_SIZE,
        remote_max_message_size: int = 65536,
        max_buffered: int = MAX_BUFFERED,
        max_streams: int = MAX_STREAMS,
        secret: bytes | None = None,
        rng: Random | None = None,
        counters: Counter[str] | None = None,
    ) -> None:
        self.port, self.remote_port = port, remote_port
        self.max_message_size = max_message_size
        self.remote_max_message_size = remote_max_message_size
        self.max_buffered = max_buffered
        self.max_streams = max_streams
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._secret = secret or secrets.token_bytes(32)
        self._rng = rng
        self.state = AssociationState.LISTEN
        self.events: list[Event] = []
        self.local_tag = self.remote_tag = 0
        self.inbound_streams = self.outbound_streams = 0
        self.peer_forward_tsn = self.peer_reconfig = False
        self._out: list[bytes] = []  # chunks waiting for `_flush`
        self._tag_for_flush: int | None = None  # INIT-ACK goes out with the INIT's tag
        # Receiving (the Receiver exists once established).
        self.rx_buffer = 2 * max_message_size
        self._rx: Receiver | None = None
        self._rx_unacked = 0
        self._sack_now = False
        self._sack_deadline: float | None = None
        self._peer_reset_seq = 0
        self._last_reset_result = c.RESULT_PERFORMED
        # Sending.
        self._next_tsn = self._acked_tsn = 0
        self._queue: deque[_Out] = deque()  # never sent, TSN order
        self._outstanding: deque[_Out] = deque()  # sent (or abandoned), from _acked_tsn + 1
        self._lifetimes = 0  # queued chunks with an expiry time
        self._buffered = 0
        self._flight = 0
        self._ssn: dict[int, int] = {}
        self._messages = 0
        self._peer_rwnd = 0
        self._cwnd = self._ssthresh = 0
        self._partial_acked = 0
        self._rto = RTO_INITIAL
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._t3: float | None = None
        self._errors = 0
        self._forward_tsn: int | None = None  # advanced peer ack point not yet acknowledged
        self._reset_seq = 0
        self._reset_pending: list[int] = []  # our outgoing streams to reset
        self._reset_inflight: c.ResetRequest | None = None
        self._reset_deadline: float | None = None

    def _random32(self) -> int:
        value = self._rng.getrandbits(32) if self._rng else secrets.randbits(32)
        return value or 1

    def take_events(self) -> list[Event]:
        events = self.events[:]
        self.events.clear()  # in place: the Receiver appends to the same list
        return events

    # -- receiving ----------------------------------------------------------------------------

    def receive_untrusted(self, data: bytes, now: float) -> list[bytes]:
        """One SCTP packet (a DTLS application data record); returns the packets to send."""
        packet = c.parse_packet_untrusted(data)
        if packet.dst_port != self.port or packet.src_port != self.remote_port:
            raise MalformedInput("sctp: wrong port")
        first = packet.chunks[0] if packet.chunks else None
        if first is not None and first.type == c.INIT:
            if packet.tag != 0 or len(packet.chunks) != 1:
                raise MalformedInput("sctp: INIT must be alone with tag 0")  # 8.5.1
            self._on_init(c.parse_init_untrusted(first.body), now)
            return self._flush()
        if self.state == AssociationState.CLOSED:
            return []
        if first is not None and first.type == c.COOKIE_ECHO:
            self._on_cookie_echo(first.body, packet.tag, now)
        elif self.state == AssociationState.LISTEN:
            self.counters["sctp_out_of_the_blue"] += 1
            return []
        data_packet = False
        for ch in packet.chunks:
            peers_tag = ch.type in (c.ABORT, c.SHUTDOWN_COMPLETE) and ch.flags & c.FLAG_T
            if packet.tag != (self.remote_tag if peers_tag else self.local_tag):
                self.counters["sctp_bad_tag"] += 1  # 8.5: discard the packet
                return self._flush()
            try:
                if ch.type == c.DATA:
                    data_packet = True
                    d = c.parse_data_untrusted(ch.flags, ch.body)
                    if self._rx is not None and self.state in _RECEIVING:
                        self._sack_now |= self._rx.on_data(d)
                else:
                    self._on_control(ch, now)
            except MalformedInput:
                self.counters["sctp_malformed_chunk"] += 1
            if self.state == AssociationState.CLOSED:
                return self._flush()
            if ch.type not in _KNOWN and ch.type >> 6 in (0, 1):
                break  # RFC 9260 3.2: unknown types 00 and 01 stop processing the packet
        if data_packet:
            self._rx_unacked += 1
            if self._rx_unacked >= 2:
                self._sack_now = True
            elif self._sack_deadline is None:
                self._sack_deadline = now + SACK_DELAY
        return self._transmit(now)

    def _on_control(self, ch: c.Chunk, now: float) -> None:
        t = ch.type
        if t == c.SACK:
            self._on_sack(c.parse_sack_untrusted(ch.body), now)
        elif t == c.HEARTBEAT:
            self._out.append(c.chunk(c.HEARTBEAT_ACK, 0, ch.body))  # 8.3: echo the info
        elif t == c.FORWARD_TSN:
            new_cum, pairs = c.parse_forward_tsn_untrusted(ch.body)
            if self._rx is not None:
                self._rx.on_forward_tsn(new_cum, pairs)
                self._sack_now = True
        elif t == c.RECONFIG:
            self._on_reconfig(c.parse_reconfig_untrusted(ch.body), now)
        elif t == c.ABORT:
            self._close("abort", send_abort=False)
        elif t == c.SHUTDOWN:
            self._on_sack(c.Sack(c.parse_tsn_untrusted(ch.body), self._peer_rwnd, [], []), now)
            if self.state in (AssociationState.ESTABLISHED, AssociationState.SHUTDOWN_RECEIVED, AssociationState.SHUTDOWN_SENT):
                self.state = AssociationState.SHUTDOWN_RECEIVED
                self._maybe_shutdown_ack()
        elif t == c.SHUTDOWN_ACK:
            self._out.append(c.chunk(c.SHUTDOWN_COMPLETE, 0, b""))
            self._close("shutdown", send_abort=False)
        elif t == c.SHUTDOWN_COMPLETE:
            if self.state == AssociationState.SHUTDOWN_ACK_SENT:
                self._close("shutdown", send_abort=False)
        elif t not in _KNOWN:
            self.counters["sctp_unknown_chunk"] += 1
        # HEARTBEAT-ACK, COOKIE-ACK, INIT-ACK: we send no heartbeats or INITs; ERROR: advisory.

    def _on_init(self, init: c.Init, now: float) -> None:
        """Answer with INIT-ACK and a cookie; no state is kept (RFC 9260 5.1.3)."""
        if self.state not in (AssociationState.LISTEN, AssociationState.ESTABLISHED):
            return
        local_tag, local_tsn = self._random32(), self._random32()
        if self.state == AssociationState.ESTABLISHED:
            # 5.2.2: an INIT for an established association (the peer restarted): answer with
            # our current tags; a COOKIE-ECHO with other tags is refused below.
            local_tag, local_tsn = self.local_tag, self._next_tsn
        fields = _COOKIE.pack(now, local_tag, init.initiate_tag, local_tsn, init.initial_tsn,
                              init.a_rwnd, init.outbound_streams, init.inbound_streams,
                              init.forward_tsn, init.reconfig)  # fmt: skip
        cookie = fields + hmac.new(self._secret, fields, hashlib.sha256).digest()[:16]
        ack = c.Init(local_tag, self.rx_buffer, self.max_streams, self.max_streams, local_tsn,
                     cookie=cookie)  # fmt: skip
        self._out.append(c.build_init(c.INIT_ACK, ack))
        self._tag_for_flush = init.initiate_tag

    def _on_cookie_echo(self, cookie: bytes, tag: int, now: float) -> None:
        if len(cookie) != _COOKIE.size + 16:
            raise MalformedInput("sctp: bad cookie size")
        fields, mac = cookie[: _COOKIE.size], cookie[_COOKIE.size :]
        if not hmac.compare_digest(hmac.new(self._secret, fields, hashlib.sha256).digest()[:16],
                                   mac):  # fmt: skip
            raise MalformedInput("sctp: cookie fails its HMAC")
        (born, local_tag, remote_tag, local_tsn, remote_tsn, a_rwnd, outbound, inbound,
         forward_tsn, reconfig) = _COOKIE.unpack(fields)  # fmt: skip
        if tag != local_tag:
            raise MalformedInput("sctp: COOKIE-ECHO with the wrong tag")
        if not 0 <= now - born <= COOKIE_LIFETIME:
            raise MalformedInput("sctp: stale cookie")  # 5.1.5 (we answer nothing)
        if self.state != AssociationState.LISTEN:
            if (local_tag, remote_tag) != (self.local_tag, self.remote_tag):
                raise MalformedInput("sctp: cookie of another association")
            self._out.append(c.chunk(c.COOKIE_ACK, 0, b""))  # our COOKIE-ACK was lost
            return
        self.state = AssociationState.ESTABLISHED
        self.local_tag, self.remote_tag = local_tag, remote_tag
        self.outbound_streams = min(self.max_streams, inbound)
        self.inbound_streams = min(self.max_streams, outbound)
        self.peer_forward_tsn, self.peer_reconfig = forward_tsn, reconfig
        self._rx = Receiver(initial_tsn=remote_tsn, streams=self.inbound_streams,
                            buffer=self.rx_buffer, max_message_size=self.max_message_size,
                            events=self.events, counters=self.counters)  # fmt: skip
        self._peer_reset_seq = remote_tsn  # RFC 6525 5.1.1
        self._next_tsn = self._reset_seq = local_tsn
        self._acked_tsn = (local_tsn - 1) % _MOD
        self._peer_rwnd = self._ssthresh = a_rwnd
        self._cwnd = min(4 * MTU, max(2 * MTU, 4380))  # 7.2.1
        self._out.append(c.chunk(c.COOKIE_ACK, 0, b""))
        self.events.append(Established())

    # -- stream resets (RFC 6525) ----------------------------------------------------------------

    def _on_reconfig(self, params: list[c.ResetRequest | c.ReconfigResponse | int],
                     now: float) -> None:  # fmt: skip
        for p in params:
            if isinstance(p, c.ResetRequest):
                if self._rx is not None:
                    self._on_reset_request(p)
            elif isinstance(p, c.ReconfigResponse):
                pending = self._reset_inflight
                if pending is not None and p.response_seq == pending.request_seq:
                    if p.result == c.RESULT_IN_PROGRESS:
                        self._reset_deadline = now + self._rto
                        continue
                    for stream in pending.streams:
                        self._ssn.pop(stream, None)
                    self._reset_inflight = self._reset_deadline = None
            else:
                self.counters["sctp_reconfig_unsupported"] += 1

    def _on_reset_request(self, req: c.ResetRequest) -> None:
        rx = self._rx
        assert rx is not None
        if req.request_seq == (self._peer_reset_seq - 1) % _MOD:
            result = self._last_reset_result  # a retransmission (5.2.2)
        elif req.request_seq != self._peer_reset_seq:
            result = c.RESULT_BAD_SEQUENCE
        elif after(req.last_tsn, rx.cumulative):
            result = c.RESULT_IN_PROGRESS  # data up to last_tsn still missing: it will resend
        else:
            result = self._last_reset_result = c.RESULT_PERFORMED
            self._peer_reset_seq = (self._peer_reset_seq + 1) % _MOD
            rx.reset(req.streams)
            self.events.append(StreamsReset(req.streams))
            # RFC 8831 6.7: close our side of those streams too.
            streams = req.streams or tuple(self._ssn)
            self._reset_pending += [s for s in streams if s not in self._reset_pending]
        body = c.build_reconfig_response(req.request_seq, result)
        self._out.append(c.chunk(c.RECONFIG, 0, body))

    def _send_reset(self, now: float) -> None:
        if self._reset_inflight is None and self._reset_pending and self.peer_reconfig:
            streams, self._reset_pending = self._reset_pending[:c.MAX_RESET_STREAMS], []
            self._reset_inflight = c.ResetRequest(
                self._reset_seq, (self._peer_reset_seq - 1) % _MOD,
                (self._next_tsn - 1) % _MOD, tuple(streams))  # fmt: skip
            self._reset_seq = (self._reset_seq + 1) % _MOD
            self._reset_deadline = now
        if self._reset_inflight is not None and self._reset_deadline is not None:
            if now >= self._reset_deadline:
                body = c.build_reset_request(self._reset_inflight)
                self._out.append(c.chunk(c.RECONFIG, 0, body))
                self._reset_deadline = now + self._rto

    # -- sending ---------------------------------------------------------------------------------

    def send(self, stream: int, ppid: int, data: bytes, now: float, *, ordered: bool = True,
             max_retransmits: int | None = None, max_lifetime: float | None = None
             ) -> bool:  # fmt: skip
        """Queue one message; False (dropped, counted) when it cannot be sent or the queue is
        full. Call `flush(now)` (or any other method) afterwards to get the packets."""
        if self.state != AssociationState.ESTABLISHED or not 0 <= stream < self.outbound_streams or not data:
            self.counters["sctp_send_refused"] += 1
            return False
        pieces = [data[i : i + MAX_PAYLOAD] for i in range(0, len(data), MAX_PAYLOAD)]
        if (len(data) > self.remote_max_message_size
                or self._buffered + len(data) > self.max_buffered
                or len(self._queue) + len(self._outstanding) + len(pieces) > MAX_QUEUED_CHUNKS):
            self.counters["sctp_send_dropped"] += 1  # fmt: skip
            return False
        if not self.peer_forward_tsn:
            max_retransmits = max_lifetime = None
        ssn = 0
        if ordered:
            ssn = self._ssn.get(stream, 0)
            self._ssn[stream] = (ssn + 1) % 65536
        self._messages += 1
        expires = None if max_lifetime is None else now + max_lifetime
        for index, piece in enumerate(pieces):
            flags = 0 if ordered else c.FLAG_UNORDERED
            flags |= c.FLAG_BEGIN if index == 0 else 0
            flags |= c.FLAG_END if index == len(pieces) - 1 else 0
            chunk = c.Data(flags, self._next_tsn, stream, ssn, ppid, piece)
            self._next_tsn = (self._next_tsn + 1) % _MOD
            self._queue.append(_Out(chunk, self._messages, max_retransmits, expires))
            self._buffered += len(piece)
            self._lifetimes += expires is not None
        return True

    def flush(self, now: float) -> list[bytes]:
        return self._transmit(now)

    @property
    def buffered_amount(self) -> int:
        return self._buffered

    def _on_sack(self, sack: c.Sack, now: float) -> None:
        if after(self._acked_tsn, sack.cumulative_tsn):
            return  # an old SACK (6.2.1)
        highest = self._outstanding[-1].data.tsn if self._outstanding else self._acked_tsn
        if after(sack.cumulative_tsn, highest):
            raise MalformedInput("sctp: SACK for a TSN never sent")
        acked_bytes = 0
        rtt: float | None = None
        outstanding = self._outstanding
        while outstanding and not after(outstanding[0].data.tsn, sack.cumulative_tsn):
            out = outstanding.popleft()
            self._buffered -= len(out.data.payload)
            if self._in_flight(out):
                self._flight -= len(out.data.payload)
                acked_bytes += len(out.data.payload)
            if out.transmissions == 1 and out.sent_at is not None:
                rtt = now - out.sent_at  # Karn: never from a retransmitted chunk
        advanced = sack.cumulative_tsn != self._acked_tsn
        self._acked_tsn = sack.cumulative_tsn
        for start, end in sack.gaps:
            for out in outstanding:
                offset = (out.data.tsn - sack.cumulative_tsn) % _MOD
                if offset > end:
                    break
                if offset >= start and not out.acked:
                    if self._in_flight(out):
                        self._flight -= len(out.data.payload)
                    out.acked, out.retransmit = True, False
        self._peer_rwnd = max(0, sack.a_rwnd - self._flight)
        if rtt is not None:
            self._rtt_sample(rtt)
        if advanced:
            self._errors = 0
            if self._cwnd <= self._ssthresh:  # 7.2.1 slow start
                self._cwnd += min(acked_bytes, MTU)
            else:  # 7.2.2 congestion avoidance
                self._partial_acked += acked_bytes
                if self._partial_acked >= self._cwnd:
                    self._partial_acked -= self._cwnd
                    self._cwnd += MTU
            self._t3 = now + self._rto if self._flight > 0 else None
        if self._forward_tsn is not None and not after(self._forward_tsn, sack.cumulative_tsn):
            self._forward_tsn = None
        self._maybe_shutdown_ack()

    @staticmethod
    def _in_flight(out: _Out) -> bool:
        return out.sent_at is not None and not (out.acked or out.abandoned or out.retransmit)

    def _rtt_sample(self, r: float) -> None:
        """RFC 9260 6.3.1."""
        if self._srtt is None:
            self._srtt, self._rttvar = r, r / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - r)
            self._srtt = 0.875 * self._srtt + 0.125 * r
        self._rto = min(RTO_MAX, max(RTO_MIN, self._srtt + 4 * self._rttvar))

    def _abandon(self, message: int) -> None:
        """RFC 3758 3.5: give up on every chunk of one message; queued ones become sent."""
        for out in self._outstanding:
            if out.message == message and not out.abandoned and not out.acked:
                if self._in_flight(out):
                    self._flight -= len(out.data.payload)
                out.abandoned, out.retransmit = True, False
        while self._queue and self._queue[0].message == message:
            out = self._queue.popleft()
            out.abandoned = True
            self._lifetimes -= out.expires is not None
            self._outstanding.append(out)

    def _advance_peer_ack_point(self, now: float) -> None:
        """RFC 3758 3.5 C1-C3: skip abandoned chunks at the head with FORWARD-TSN."""
        point, skipped = self._acked_tsn, {}
        for out in self._outstanding:
            if not out.abandoned:
                break
            point = out.data.tsn
            if not out.data.flags & c.FLAG_UNORDERED:
                skipped[out.data.stream] = out.data.ssn
        if point == self._acked_tsn:
            return
        if self._forward_tsn is None or after(point, self._forward_tsn):
            self._forward_tsn = point
            self._out.append(c.build_forward_tsn(point, skipped))
            if self._t3 is None:
                self._t3 = now + self._rto  # resent on T3 until acknowledged

    def _transmit(self, now: float) -> list[bytes]:
        if self.state in (AssociationState.ESTABLISHED, AssociationState.SHUTDOWN_PENDING, AssociationState.SHUTDOWN_RECEIVED):
            self._advance_peer_ack_point(now)
            self._send_reset(now)
        chunks: list[bytes] = []
        for out in self._outstanding:  # T3 marked these; they fit in cwnd first
            if out.retransmit:
                if not self._may_send(len(out.data.payload)):
                    break
                chunks.append(self._send_chunk(out, now))
        queue = self._queue
        while queue and self._may_send(len(queue[0].data.payload)):
            out = queue[0]
            if out.expires is not None and now > out.expires:
                self._abandon(out.message)  # 3.5 A3: never sent, lifetime over
                self._advance_peer_ack_point(now)
                continue
            queue.popleft()
            self._lifetimes -= out.expires is not None
            self._outstanding.append(out)
            chunks.append(self._send_chunk(out, now))
        # A delayed SACK rides along with our DATA (6.2: bundle it rather than wait).
        due = self._sack_deadline is not None and (now >= self._sack_deadline or chunks)
        if self._sack_now or due:
            first = self._out[0][0] if self._out else None
            if self._rx is not None:
                sack = self._rx.sack()
                self._out.insert(1 if first == c.COOKIE_ACK else 0, sack)  # 5.1: COOKIE-ACK first
            self._rx_unacked, self._sack_now, self._sack_deadline = 0, False, None
        self._out += chunks
        return self._flush()

    def _may_send(self, size: int) -> bool:
        """RFC 9260 6.1 A and B: the peer's window and cwnd, or one chunk when nothing flies."""
        if self.state == AssociationState.CLOSED:
            return False
        return self._flight == 0 or (self._flight + size <= self._cwnd and size <= self._peer_rwnd)

    def _send_chunk(self, out: _Out, now: float) -> bytes:
        size = len(out.data.payload)
        self._flight += size
        self._peer_rwnd = max(0, self._peer_rwnd - size)
        out.sent_at, out.retransmit = now, False
        out.transmissions += 1
        if self._t3 is None:
            self._t3 = now + self._rto
        return c.build_data(out.data)

    def _flush(self) -> list[bytes]:
        tag = self._tag_for_flush or self.remote_tag
        self._tag_for_flush = None
        packets, current, size = [], [], c.HEADER
        for ch in self._out:
            if current and size + len(ch) > MTU:
                packets.append(c.build_packet(self.port, self.remote_port, tag, current))
                current, size = [], c.HEADER
            current.append(ch)
            size += len(ch)
        if current:
            packets.append(c.build_packet(self.port, self.remote_port, tag, current))
        self._out = []
        return packets

    # -- timers and closing ----------------------------------------------------------------------

    def next_timeout(self) -> float | None:
        times = [t for t in (self._t3, self._sack_deadline, self._reset_deadline) if t is not None]
        return min(times) if times else None

    def handle_timeout(self, now: float) -> list[bytes]:
        if self.state == AssociationState.CLOSED:
            return []
        if self._t3 is not None and now >= self._t3:
            self._on_t3(now)
        return self._transmit(now)

    def _on_t3(self, now: float) -> None:
        """RFC 9260 6.3.3: back off, collapse cwnd, resend what is still unacknowledged."""
        self._t3 = None
        self._errors += 1
        if self._errors > MAX_RETRANSMISSIONS:
            self._close("timeout", send_abort=True)
            return
        self._rto = min(RTO_MAX, self._rto * 2)
        self._ssthresh = max(self._cwnd // 2, 4 * MTU)
        self._cwnd, self._partial_acked = MTU, 0
        for out in list(self._outstanding):
            if not self._in_flight(out):
                continue
            if out.max_retransmits is not None and out.transmissions > out.max_retransmits:
                self._abandon(out.message)
                continue
            self._flight -= len(out.data.payload)
            out.retransmit = True
        self._forward_tsn = None  # resent by _transmit if still needed
        if any(o.retransmit for o in self._outstanding):
            self._t3 = now + self._rto

    def _maybe_shutdown_ack(self) -> None:
        if self.state == AssociationState.SHUTDOWN_RECEIVED and not self._outstanding and not self._queue:
            self.state = AssociationState.SHUTDOWN_ACK_SENT
            self._out.append(c.chunk(c.SHUTDOWN_ACK, 0, b""))
        elif self.state == AssociationState.SHUTDOWN_PENDING and not self._outstanding and not self._queue:
            self.state = AssociationState.SHUTDOWN_SENT
            cumulative = self._rx.cumulative if self._rx is not None else 0
            self._out.append(c.chunk(c.SHUTDOWN, 0, struct.pack("!I", cumulative)))

    def shutdown(self, now: float) -> list[bytes]:
        """Graceful close (9.2): SHUTDOWN once everything queued is acknowledged."""
        if self.state == AssociationState.ESTABLISHED:
            self.state = AssociationState.SHUTDOWN_PENDING
            self._maybe_shutdown_ack()
        return self._transmit(now)

    def abort(self) -> list[bytes]:
        """ABORT at once (9.1), e.g. before the DTLS association closes."""
        if self.state not in (AssociationState.LISTEN, AssociationState.CLOSED):
            self._close("closed", send_abort=True)
        return self._flush()

    def _close(self, reason: str, *, send_abort: bool) -> None:
        if send_abort:
            self._out.append(c.chunk(c.ABORT, 0, b""))
        self.state = AssociationState.CLOSED
        self._outstanding.clear()
        self._queue.clear()
        self._rx = None
        self._t3 = self._sack_deadline = self._reset_deadline = None
        self._buffered = self._flight = 0
        self.events.append(Closed(reason))
