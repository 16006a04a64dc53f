"""RoomDataChannels: a room's data channel relay (docs/PROTOCOL.md section 4, "Data channels").

Each participant's producer transport may carry an SCTP association (the SDP accepted its
`m=application`); this object attaches one, hears its channel events (on the endpoint's task,
synchronously) and the gateway's `chat` / `features` / `clientJoin` frames (on the room's task),
and sends through the participants' transports. A message a participant sends on a channel goes
to every other participant of the room on the channel with the same id (negotiated) or label
(in-band), with two exceptions for the deployed client's negotiated channels:

- **chat, id 100.** Only `content` is read from the sender's JSON; the SFU reports it to the
  gateway as `room {"type":"chat","sender":P,"content":C}`, under the same per-participant
  budget as WebSocket chat (limits.chat_per_second / chat_burst). The gateway stores it and
  broadcasts it to every client and back to the SFU, which sends it on channel 100 to every
  data channel participant but the sender as `{"id": P, "sender": <name>, "content": C}`. One
  path only, so web-client users and data-channel users see the same messages, once.
- **features, id 110.** A participant's own state (`{"features": {"audio", "video"}}`, or the
  two fields bare) is reported as `room {"type":"features","id":P,"features":{...}}`, with P
  the transport's owner whatever the message says. Each participant's channel 110 hears
  `{"id", "features": {"audio", "video"}}` for every other participant: all of them when its
  association comes up, then on every gateway `features` frame, on `clientJoin`, and when one
  of its consumer connections connects (the deployed client shows a remote video only once it
  has seen `video: true` for that id). Unknown state is audio and video on.

Every other message is relayed as is, within a per-sender budget of messages and bytes per
second; what a receiver's association cannot queue is dropped and counted there.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio

from . import sdp
from .bucket import TokenBucket
from .dcep import (
    AssociationDown,
    AssociationUp,
    Channel,
    ChannelEvent,
    ChannelMessage,
    DataChannels,
)
from .link import MAX_CHAT_CHARS
from .sctp import SctpAssociation

if TYPE_CHECKING:
    from .media import MediaRoom
    from .transport import WebRtcTransport

log = logging.getLogger(__name__)

CHAT_CHANNEL = 100
FEATURES_CHANNEL = 110
RELAY_MESSAGES_PER_SECOND, RELAY_MESSAGE_BURST = 100.0, 200
RELAY_BYTES_PER_SECOND, RELAY_BYTE_BURST = 1_000_000.0, 2_000_000
MAX_CONTROL_BYTES = 4096  # a chat or features message longer than this is not read


class ByteBudget:
    """`rate` bytes per second up to `burst`: a token bucket whose events have sizes."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, size: int, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)
        if self.tokens < size:
            return False
        self.tokens -= size
        return True


def _json_object(data: bytes) -> dict[str, Any] | None:
    if len(data) > MAX_CONTROL_BYTES:
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class RoomDataChannels:
    def __init__(self, room: MediaRoom) -> None:
        self.room = room
        self.counters = room.endpoint.counters
        self.limits = room.config.limits
        # Participants whose association is up, by id: only these hear anything.
        self.transports: dict[str, WebRtcTransport] = {}
        self._chat: dict[str, TokenBucket] = {}
        self._relay: dict[str, tuple[TokenBucket, ByteBudget]] = {}

    # -- wiring (MediaRoom) ---------------------------------------------------------------------

    def attach(self, transport: WebRtcTransport, section: sdp.MediaSection) -> None:
        """Give a producer transport whose SDP accepted `m=application` its SCTP association."""
        if transport.datachannels is not None:
            return  # a renegotiation of the same transport keeps its association
        remote_max = section.max_message_size
        if remote_max is None:
            remote_max = sdp.DEFAULT_MAX_MESSAGE_SIZE
        elif remote_max == 0:  # RFC 8841 6: "any size"
            remote_max = sdp.MAX_MESSAGE_SIZE
        association = SctpAssociation(
            port=sdp.SCTP_PORT, remote_port=section.sctp_port or sdp.SCTP_PORT,
            max_message_size=sdp.MAX_MESSAGE_SIZE,
            remote_max_message_size=min(remote_max, sdp.MAX_MESSAGE_SIZE),
            counters=self.counters)  # fmt: skip
        transport.datachannels = DataChannels(association)
        transport.on_datachannel = self._on_events
        transport.on_close.append(self._closed)

    def _closed(self, transport: WebRtcTransport) -> None:
        if self.transports.get(transport.owner) is transport:
            del self.transports[transport.owner]

    def _on_events(self, transport: WebRtcTransport, events: list[ChannelEvent]) -> None:
        owner = transport.owner
        now = trio.current_time()
        for event in events:
            if isinstance(event, AssociationUp):
                self.transports[owner] = transport
                for other in list(self.room.sfu.participants):
                    if other != owner:
                        self._send_features(owner, other, now)
            elif isinstance(event, AssociationDown):
                self._closed(transport)
            elif isinstance(event, ChannelMessage) and self.transports.get(owner) is transport:
                self._message(owner, event, now)

    # -- from participants ----------------------------------------------------------------------

    def _message(self, owner: str, event: ChannelMessage, now: float) -> None:
        channel = event.channel
        if channel.negotiated and channel.stream == CHAT_CHANNEL:
            self._chat_from(owner, event.data, now)
        elif channel.negotiated and channel.stream == FEATURES_CHANNEL:
            self._features_from(owner, event.data)
        else:
            self._relay_from(owner, event, now)

    def _chat_from(self, owner: str, data: bytes, now: float) -> None:
        message = _json_object(data)
        content = message.get("content") if message is not None else None
        if not isinstance(content, str) or not content.strip():
            self.counters["dc_chat_invalid"] += 1
            return
        budget = self._chat.get(owner)
        if budget is None:
            budget = self._chat[owner] = TokenBucket(
                self.limits.chat_per_second, self.limits.chat_burst, now)  # fmt: skip
        if not budget.take(now):
            self.counters["dc_chat_throttled"] += 1
            return
        # Identity is the transport's owner; nothing else in the message is trusted.
        self.room.sfu.notify(
            "room", {"type": "chat", "sender": owner, "content": content[:MAX_CHAT_CHARS]})

    def _features_from(self, owner: str, data: bytes) -> None:
        message = _json_object(data)
        if message is not None and isinstance(message.get("features"), dict):
            message = message["features"]
        current = self._features_of(owner)
        if message is None or not any(k in message for k in ("audio", "video")):
            self.counters["dc_features_invalid"] += 1
            return
        state = {k: message.get(k, current[k]) for k in ("audio", "video")}
        if not all(isinstance(v, bool) for v in state.values()):
            self.counters["dc_features_invalid"] += 1
            return
        self.room.sfu.notify("room", {"type": "features", "id": owner, "features": state})

    def _relay_from(self, owner: str, event: ChannelMessage, now: float) -> None:
        budgets = self._relay.get(owner)
        if budgets is None:
            budgets = self._relay[owner] = (
                TokenBucket(RELAY_MESSAGES_PER_SECOND, RELAY_MESSAGE_BURST, now),
                ByteBudget(RELAY_BYTES_PER_SECOND, RELAY_BYTE_BURST, now))  # fmt: skip
        if not budgets[0].take(now) or not budgets[1].take(len(event.data), now):
            self.counters["dc_relay_throttled"] += 1
            return
        source = event.channel
        for other, transport in list(self.transports.items()):
            if other == owner or transport.datachannels is None:
                continue
            if source.negotiated:
                target = transport.datachannels.negotiated(source.stream)
            else:
                target = transport.datachannels.by_label(source.label)
            if target is not None:
                transport.send_datachannel(target, event.data, event.binary, now)

    # -- from the gateway (MediaRoom forwards them) --------------------------------------------

    def on_chat(self, message: dict[str, Any]) -> None:
        """A gateway `chat` frame (any client's, or a data channel chat the SFU reported)."""
        sender, content = message.get("sender"), message.get("content")
        if not isinstance(sender, str) or not isinstance(content, str):
            return
        name = message.get("name") if isinstance(message.get("name"), str) else sender
        payload = json.dumps({"id": sender, "sender": name, "content": content}).encode()
        now = trio.current_time()
        for other in list(self.transports):
            if other != sender:
                self._send(other, CHAT_CHANNEL, payload, now)

    def on_features(self, client_id: str) -> None:
        """`client_id`'s state changed (gateway `features`) or it joined: tell the others."""
        now = trio.current_time()
        for other in list(self.transports):
            if other != client_id:
                self._send_features(other, client_id, now)

    def on_consumer_connected(self, subscriber: str, publisher: str) -> None:
        if subscriber in self.transports:
            self._send_features(subscriber, publisher, trio.current_time())

    def _features_of(self, client_id: str) -> dict[str, bool]:
        participant = self.room.sfu.participants.get(client_id)
        features = participant.features if participant is not None else {}
        return {k: features.get(k) is not False for k in ("audio", "video")}

    def _send_features(self, receiver: str, about: str, now: float) -> None:
        payload = json.dumps({"id": about, "features": self._features_of(about)}).encode()
        self._send(receiver, FEATURES_CHANNEL, payload, now)

    def _send(self, receiver: str, stream: int, payload: bytes, now: float) -> None:
        transport = self.transports.get(receiver)
        if transport is None or transport.datachannels is None:
            return
        channel: Channel | None = transport.datachannels.negotiated(stream)
        if channel is not None and not transport.send_datachannel(channel, payload, False, now):
            self.counters["dc_send_dropped"] += 1
