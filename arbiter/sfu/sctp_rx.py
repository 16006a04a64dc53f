"""The receiving half of an SCTP association (RFC 9260 6.2, 6.5, 6.9; RFC 3758 3.6), sans-IO.

Tracks which TSNs arrived (the cumulative TSN and, above it, a bounded set that becomes gap
blocks), reassembles fragmented messages, ordered per stream by SSN or unordered, and skips
what a FORWARD-TSN abandons. Delivered messages are appended to the association's event list.

Bounds: at most `MAX_TSN_AHEAD` TSNs past the cumulative one and `buffer` bytes of fragments and
out-of-order messages; DATA beyond either is dropped unacknowledged (the peer resends it later).
A message over `max_message_size` is dropped and counted; its stream moves past it. Walking a
message's fragments stops after `MAX_FRAGMENTS`, so no chunk costs more than that.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from . import sctp_chunks as c

MAX_TSN_AHEAD = 4096
MAX_FRAGMENTS = 2048  # per message: a longer message cannot complete
_MOD = 1 << 32


def after(a: int, b: int) -> bool:
    """TSN a comes after b (serial number arithmetic, RFC 1982)."""
    return 0 < (a - b) % _MOD < 1 << 31


@dataclass(frozen=True)
class Message:
    stream: int
    ppid: int
    data: bytes
    unordered: bool


@dataclass
class _Inbound:
    """Reassembly of one stream (ordered) or of all unordered data (key -1)."""

    next_ssn: int = 0
    fragments: dict[int, c.Data] = field(default_factory=dict)  # TSN -> chunk
    ready: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # SSN -> (ppid, data)


class Receiver:
    def __init__(self, *, initial_tsn: int, streams: int, buffer: int, max_message_size: int,
                 events: list[object], counters: Counter[str]) -> None:  # fmt: skip
        self.cumulative = (initial_tsn - 1) % _MOD
        self.streams = streams
        self.buffer = buffer
        self.max_message_size = max_message_size
        self.events = events
        self.counters = counters
        self.above: set[int] = set()  # received TSNs past `cumulative`
        self.duplicates: list[int] = []
        self.buffered = 0
        self._inbound: dict[int, _Inbound] = {}

    def on_data(self, d: c.Data) -> bool:
        """Take one DATA chunk; True when the SACK should go at once: a duplicate, a gap, or
        a chunk that filled one (RFC 9260 6.7)."""
        offset = (d.tsn - self.cumulative) % _MOD
        if offset == 0 or offset >= 1 << 31 or d.tsn in self.above:
            if len(self.duplicates) < c.MAX_DUPS:
                self.duplicates.append(d.tsn)
            return True  # 6.2: report duplicates at once
        if offset > MAX_TSN_AHEAD or self.buffered + len(d.payload) > self.buffer:
            self.counters["sctp_rwnd_drop"] += 1  # not acknowledged: the peer resends later
            return False
        gap = bool(self.above)
        self.above.add(d.tsn)
        self._advance()
        gap = gap or bool(self.above) or bool(d.flags & c.FLAG_IMMEDIATE)
        if d.stream >= self.streams:
            self.counters["sctp_bad_stream"] += 1  # acknowledged, not delivered
            return gap
        unordered = bool(d.flags & c.FLAG_UNORDERED)
        inbound = self._inbound.setdefault(-1 if unordered else d.stream, _Inbound())
        if not unordered and (d.ssn - inbound.next_ssn) % 65536 >= 32768:
            return gap  # a message FORWARD-TSN skipped
        inbound.fragments[d.tsn] = d
        self.buffered += len(d.payload)
        self._assemble(inbound, d, unordered)
        return gap

    def _advance(self) -> None:
        while (self.cumulative + 1) % _MOD in self.above:
            self.cumulative = (self.cumulative + 1) % _MOD
            self.above.discard(self.cumulative)

    def _assemble(self, inbound: _Inbound, d: c.Data, unordered: bool) -> None:
        """Collect the message `d` belongs to if all its fragments are here (3.3.1)."""
        frags = inbound.fragments

        def same(tsn: int) -> c.Data | None:
            other = frags.get(tsn % _MOD)
            if other is None or other.stream != d.stream or (not unordered and other.ssn != d.ssn):
                return None
            return other

        first = last = d
        steps = 0
        while not last.flags & c.FLAG_END:
            nxt = same(last.tsn + 1)
            steps += 1
            if nxt is None or nxt.flags & c.FLAG_BEGIN or steps > MAX_FRAGMENTS:
                return
            last = nxt
        while not first.flags & c.FLAG_BEGIN:
            prev = same(first.tsn - 1)
            steps += 1
            if prev is None or prev.flags & c.FLAG_END or steps > MAX_FRAGMENTS:
                return
            first = prev
        count = (last.tsn - first.tsn) % _MOD + 1
        payload = b"".join(frags.pop((first.tsn + i) % _MOD).payload for i in range(count))
        self.buffered -= len(payload)
        if len(payload) > self.max_message_size:
            self.counters["sctp_message_too_big"] += 1
            payload = b""  # an ordered stream still moves past it
            if unordered:
                return
        if unordered:
            self.events.append(Message(d.stream, first.ppid, payload, True))
            return
        if d.ssn in inbound.ready:
            self.counters["sctp_duplicate_ssn"] += 1
            return
        inbound.ready[d.ssn] = (first.ppid if payload else -1, payload)
        self.buffered += len(payload)
        self._deliver(d.stream, inbound)

    def _deliver(self, stream: int, inbound: _Inbound) -> None:
        while inbound.next_ssn in inbound.ready:
            ppid, payload = inbound.ready.pop(inbound.next_ssn)
            self.buffered -= len(payload)
            inbound.next_ssn = (inbound.next_ssn + 1) % 65536
            if ppid >= 0:
                self.events.append(Message(stream, ppid, payload, False))

    def on_forward_tsn(self, new_cum: int, pairs: list[tuple[int, int]]) -> None:
        """RFC 3758 3.6: skip to `new_cum`, dropping fragments and messages it abandons."""
        if not after(new_cum, self.cumulative) or (new_cum - self.cumulative) % _MOD > MAX_TSN_AHEAD:
            return
        self.cumulative = new_cum
        self.above = {t for t in self.above if after(t, new_cum)}
        self._advance()
        for inbound in self._inbound.values():
            for tsn in [t for t in inbound.fragments if not after(t, new_cum)]:
                self.buffered -= len(inbound.fragments.pop(tsn).payload)
        for stream, ssn in pairs:
            inbound = self._inbound.get(stream)
            if inbound is None or (ssn - inbound.next_ssn) % 65536 >= 32768:
                continue
            # Complete messages up to `ssn` are delivered in order, the missing ones skipped.
            for skipped in sorted((s for s in inbound.ready if (ssn - s) % 65536 < 32768),
                                  key=lambda s, n=inbound.next_ssn: (s - n) % 65536):  # fmt: skip
                inbound.next_ssn = skipped
                self._deliver(stream, inbound)
            inbound.next_ssn = (ssn + 1) % 65536
            self._deliver(stream, inbound)

    def reset(self, streams: tuple[int, ...]) -> None:
        """RFC 6525 5.2.2: the peer reset these outgoing streams (empty: all); SSNs restart."""
        for stream in streams or [s for s in self._inbound if s >= 0]:
            inbound = self._inbound.pop(stream, None)
            if inbound is not None:
                self.buffered -= sum(len(f.payload) for f in inbound.fragments.values())
                self.buffered -= sum(len(r[1]) for r in inbound.ready.values())

    def sack(self) -> bytes:
        gaps: list[tuple[int, int]] = []
        for offset in sorted((t - self.cumulative) % _MOD for t in self.above):
            if gaps and offset == gaps[-1][1] + 1:
                gaps[-1] = (gaps[-1][0], offset)
            elif len(gaps) < c.MAX_GAP_BLOCKS and offset < 65536:
                gaps.append((offset, offset))
        rwnd = max(0, self.buffer - self.buffered)
        sack = c.Sack(self.cumulative, rwnd, gaps, self.duplicates)
        self.duplicates = []
        return c.build_sack(sack)
