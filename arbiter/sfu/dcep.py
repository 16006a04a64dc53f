"""WebRTC data channels on one SCTP association (RFC 8831), with DCEP (RFC 8832), sans-IO.

A channel is one SCTP stream id, the same both ways. *Negotiated* channels (both sides
created them with the same id out of band, like the deployed client's "chat" 100 and "features"
110) need no protocol: a stream carrying data without a DCEP open is one. *In-band* channels
start with DATA_CHANNEL_OPEN (PPID 50) from the opener, answered with DATA_CHANNEL_ACK; the
browser is the DTLS client, so it opens even stream ids (RFC 8832 6). The opener's channel
type gives the ordering and partial reliability we send with.

PPIDs (RFC 8831 8): 50 DCEP, 51 string, 53 binary, 56 / 57 empty string / binary (sent as one
zero byte, since an SCTP message cannot be empty); the deprecated 52 / 54 are dropped.
Bounds: at most `max_channels` channels; labels and protocols up to `MAX_LABEL` bytes of UTF-8.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass

from arbiter.errors import MalformedInput

from .sctp import Closed, Established, SctpAssociation, StreamsReset
from .sctp_rx import Message

PPID_DCEP = 50
PPID_STRING = 51
PPID_BINARY = 53
PPID_STRING_EMPTY = 56
PPID_BINARY_EMPTY = 57
DATA_CHANNEL_OPEN = 0x03
DATA_CHANNEL_ACK = 0x02
# Channel types (RFC 8832 5.1): the low bits say how partial, 0x80 says unordered.
RELIABLE, PARTIAL_REXMIT, PARTIAL_TIMED = 0x00, 0x01, 0x02
UNORDERED = 0x80
MAX_LABEL = 1024
MAX_CHANNELS = 64


@dataclass(frozen=True)
class Open:
    channel_type: int
    priority: int
    reliability: int
    label: str
    protocol: str


def parse_open_untrusted(data: bytes) -> Open:
    """DATA_CHANNEL_OPEN (RFC 8832 5.1)."""
    if len(data) < 12 or data[0] != DATA_CHANNEL_OPEN:
        raise MalformedInput("dcep: not a DATA_CHANNEL_OPEN")
    _, channel_type, priority, reliability, n_label, n_protocol = struct.unpack_from(
        "!BBHIHH", data)  # fmt: skip
    if channel_type & 0x7F not in (RELIABLE, PARTIAL_REXMIT, PARTIAL_TIMED):
        raise MalformedInput("dcep: unknown channel type")
    if n_label > MAX_LABEL or n_protocol > MAX_LABEL or len(data) != 12 + n_label + n_protocol:
        raise MalformedInput("dcep: bad label or protocol length")
    try:
        label = data[12 : 12 + n_label].decode()
        protocol = data[12 + n_label :].decode()
    except UnicodeDecodeError:
        raise MalformedInput("dcep: label or protocol is not UTF-8") from None
    return Open(channel_type, priority, reliability, label, protocol)


def build_open(o: Open) -> bytes:
    label, protocol = o.label.encode(), o.protocol.encode()
    head = struct.pack("!BBHIHH", DATA_CHANNEL_OPEN, o.channel_type, o.priority, o.reliability,
                       len(label), len(protocol))  # fmt: skip
    return head + label + protocol


@dataclass
class Channel:
    stream: int
    label: str = ""
    protocol: str = ""
    negotiated: bool = True
    ordered: bool = True
    max_retransmits: int | None = None
    max_lifetime: float | None = None  # seconds


@dataclass(frozen=True)
class ChannelOpened:
    channel: Channel


@dataclass(frozen=True)
class ChannelMessage:
    channel: Channel
    data: bytes
    binary: bool


@dataclass(frozen=True)
class ChannelClosed:
    channel: Channel


@dataclass(frozen=True)
class AssociationUp:
    pass


@dataclass(frozen=True)
class AssociationDown:
    reason: str


ChannelEvent = ChannelOpened | ChannelMessage | ChannelClosed | AssociationUp | AssociationDown


class DataChannels:
    """The channels of one association: turns its events into channel events and sends."""

    def __init__(self, association: SctpAssociation, *, max_channels: int = MAX_CHANNELS,
                 counters: Counter[str] | None = None) -> None:  # fmt: skip
        self.association = association
        self.max_channels = max_channels
        self.counters: Counter[str] = association.counters if counters is None else counters
        self.channels: dict[int, Channel] = {}

    def receive_untrusted(self, packet: bytes, now: float) -> tuple[list[bytes], list[ChannelEvent]]:
        """One SCTP packet in: (packets to send, channel events)."""
        out = self.association.receive_untrusted(packet, now)
        events = self._events(now)
        return out + self.association.flush(now), events

    def handle_timeout(self, now: float) -> tuple[list[bytes], list[ChannelEvent]]:
        out = self.association.handle_timeout(now)
        return out, self._events(now)

    def _events(self, now: float) -> list[ChannelEvent]:
        out: list[ChannelEvent] = []
        for event in self.association.take_events():
            if isinstance(event, Message):
                out += self._message(event, now)
            elif isinstance(event, StreamsReset):
                streams = event.streams or tuple(self.channels)
                for stream in streams:
                    channel = self.channels.pop(stream, None)
                    if channel is not None:
                        out.append(ChannelClosed(channel))
            elif isinstance(event, Established):
                out.append(AssociationUp())
            elif isinstance(event, Closed):
                out += [ChannelClosed(ch) for ch in self.channels.values()]
                self.channels.clear()
                out.append(AssociationDown(event.reason))
        return out

    def _message(self, m: Message, now: float) -> list[ChannelEvent]:
        channel = self.channels.get(m.stream)
        if m.ppid == PPID_DCEP:
            return self._dcep(m, channel, now)
        if m.ppid not in (PPID_STRING, PPID_BINARY, PPID_STRING_EMPTY, PPID_BINARY_EMPTY):
            self.counters["dc_bad_ppid"] += 1
            return []
        events: list[ChannelEvent] = []
        if channel is None:
            channel = self._add(Channel(m.stream))  # a negotiated channel announces itself
            if channel is None:
                return []
            events.append(ChannelOpened(channel))
        empty = m.ppid in (PPID_STRING_EMPTY, PPID_BINARY_EMPTY)
        binary = m.ppid in (PPID_BINARY, PPID_BINARY_EMPTY)
        events.append(ChannelMessage(channel, b"" if empty else m.data, binary))
        return events

    def _dcep(self, m: Message, channel: Channel | None, now: float) -> list[ChannelEvent]:
        if m.data[:1] == bytes([DATA_CHANNEL_ACK]):
            return []  # we open no channels ourselves
        try:
            request = parse_open_untrusted(m.data)
        except MalformedInput:
            self.counters["dc_malformed"] += 1
            return []
        if channel is not None:
            self.counters["dc_stream_in_use"] += 1  # RFC 8832 6: an error; keep the old one
            return []
        kind = request.channel_type & 0x7F
        channel = self._add(Channel(
            m.stream, request.label, request.protocol, negotiated=False,
            ordered=not request.channel_type & UNORDERED,
            max_retransmits=request.reliability if kind == PARTIAL_REXMIT else None,
            max_lifetime=request.reliability / 1000 if kind == PARTIAL_TIMED else None))  # fmt: skip
        if channel is None:
            return []
        # The ACK goes first on the stream, ordered and reliable (RFC 8832 6).
        self.association.send(m.stream, PPID_DCEP, bytes([DATA_CHANNEL_ACK]), now)
        return [ChannelOpened(channel)]

    def _add(self, channel: Channel) -> Channel | None:
        if len(self.channels) >= self.max_channels:
            self.counters["dc_too_many_channels"] += 1
            return None
        self.channels[channel.stream] = channel
        return channel

    def negotiated(self, stream: int) -> Channel | None:
        """The negotiated channel `stream` (made on first use: it needs no handshake), or None
        when an in-band channel holds that stream or the association has no such stream."""
        channel = self.channels.get(stream)
        if channel is None and 0 <= stream < self.association.outbound_streams:
            return self._add(Channel(stream))
        return channel if channel is not None and channel.negotiated else None

    def by_label(self, label: str) -> Channel | None:
        """The in-band channel the peer opened with this label (the first, if several)."""
        for channel in self.channels.values():
            if not channel.negotiated and channel.label == label:
                return channel
        return None

    def send(self, channel: Channel, data: bytes, binary: bool, now: float) -> bool:
        """Queue one message on `channel` with its ordering and reliability; then `flush`."""
        if data:
            ppid = PPID_BINARY if binary else PPID_STRING
        else:
            ppid, data = (PPID_BINARY_EMPTY if binary else PPID_STRING_EMPTY), b"\0"
        return self.association.send(channel.stream, ppid, data, now, ordered=channel.ordered,
                                     max_retransmits=channel.max_retransmits,
                                     max_lifetime=channel.max_lifetime)  # fmt: skip

    def flush(self, now: float) -> list[bytes]:
        return self.association.flush(now)
