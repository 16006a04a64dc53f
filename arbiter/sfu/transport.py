"""WebRtcTransport: one browser RTCPeerConnection as the SFU sees it (ICE-lite + DTLS + SRTP).

A transport composes the sans-IO protocol objects (IceLiteResponder, DtlsSession, SrtpSession)
for one remote peer connection. It never touches a socket: datagrams leave through the injected
`send(datagram, addr)` (the endpoint binds it to a non-blocking `sendto`, tests to a list) and
the clock arrives as `now`.

Roles follow docs/PROTOCOL.md section 4: a *producer* transport carries one participant's tracks to the
SFU (the browser offered); a *consumer* transport carries one remote participant's tracks to a
subscriber (the SFU offered). The SFU is always the DTLS server.

Before the remote description is known (a consumer transport between our offer and the
browser's answer), the browser may already run ICE and send its ClientHello: those DTLS
datagrams are held (a few) and fed to the DTLS session once the answer gives us the
fingerprints, so the race costs no retransmission timeout.

A transport knows nothing of Producers, Consumers or Routers: it reports what happened to it to
its `listener` (a `TransportListener`: the Router that made it, `Router.create_transport`), and
the endpoint hands it each datagram that is its own.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Protocol

from ..errors import MalformedInput
from .dcep import Channel, ChannelEvent, DataChannels
from .dtls import Certificate, DtlsSession, DtlsState
from .ice import SWITCHED, IceLiteResponder
from .srtp import SrtpSession

log = logging.getLogger(__name__)

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]

PENDING_DTLS = 8  # datagrams held while the remote fingerprints are unknown

class Role(StrEnum):
    """Which side of the producer/consumer model a transport is (docs/PROTOCOL.md section 4)."""

    PRODUCER = "producer"  # a participant's microphone and camera, to the SFU
    CONSUMER = "consumer"  # one publisher's tracks, to one subscriber


class CloseReason(StrEnum):
    """Why a transport closed (what the MediaRoom reacts to; counted by the endpoint)."""

    OPEN = ""  # not closed
    CLOSED = "closed"  # closed by its owner (departure, room closed)
    CONSENT = "consent"  # no valid binding request for media.consent_timeout (RFC 7675)
    DTLS = "dtls"  # the DTLS handshake failed (or the fingerprint did not match)
    PEER_CLOSED = "peer_closed"  # the browser sent close_notify
    REPLACED = "replaced"  # a rebuilt peer connection's transport took over


PRODUCER = Role.PRODUCER
CONSUMER = Role.CONSUMER


class TransportListener(Protocol):
    """What a transport reports (its Router implements it). Called synchronously, from inside
    the transport's own methods; `on_rtp`/`on_rtcp` get authenticated, decrypted packets."""

    def on_transport_connected(self, transport: WebRtcTransport) -> None: ...

    def on_transport_address_change(
        self, transport: WebRtcTransport, old: Address | None
    ) -> None: ...

    def on_transport_closed(self, transport: WebRtcTransport) -> None: ...

    def on_rtp(self, transport: WebRtcTransport, packet: bytes, now: float) -> None: ...

    def on_rtcp(self, transport: WebRtcTransport, packet: bytes, now: float) -> None: ...


class WebRtcTransport:
    """ICE-lite + DTLS server + SRTP for one peer connection. `close()` is idempotent."""

    def __init__(
        self,
        *,
        role: Role,
        owner: str,
        certificate: Certificate,
        send: Send,
        now: float,
        consent_timeout: float = 30.0,
        publisher: str | None = None,
        ice_ufrag: str | None = None,
        ice_pwd: str | None = None,
    ) -> None:
        self.role = role
        self.owner = owner  # the participant whose browser holds this peer connection
        self.publisher = publisher  # consumer transports: whose tracks they carry
        self.certificate = certificate
        self.send = send
        # Our ICE credentials: fresh, or given (a peer connection rebuilt by the browser
        # answers the offer that carried them, docs/PROTOCOL.md section 4).
        self.ice = IceLiteResponder(
            ufrag=ice_ufrag, pwd=ice_pwd, consent_timeout=consent_timeout, created_at=now
        )
        self.dtls: DtlsSession | None = None
        # The remote SDP's DTLS fingerprints (RFC 8122): the same ones in a later offer or
        # answer mean the same peer connection, hence the same DTLS association.
        self.remote_fingerprints: list[tuple[str, str]] = []
        self.srtp: SrtpSession | None = None
        self.remote_addr: Address | None = None
        # A nominated address media does not follow until it proves itself (`ice.pending`,
        # mirrored here so the endpoint's per-packet check is one attribute load).
        self.pending_addr: Address | None = None
        # When authenticated SRTP/SRTCP last arrived (the endpoint sets it): an address in
        # active use is not handed to another transport on the strength of a STUN check.
        self.last_rx = float("-inf")
        self.connected = False
        self.closed = False
        self.close_reason = CloseReason.OPEN
        # Our SSRC as an RTCP sender (RR, REMB, PLI) on this transport: random (RFC 3550 8.1).
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self.listener: TransportListener | None = None  # the Router that made it
        self.protect_rtp: Callable[[bytes], bytes] = _not_ready
        self.protect_rtcp: Callable[[bytes], bytes] = _not_ready
        self._pending_dtls: list[bytes] = []
        # Data channels (SCTP over this DTLS association), when the SDP accepted m=application.
        self.datachannels: DataChannels | None = None
        self.on_datachannel: Callable[[WebRtcTransport, list[ChannelEvent]], None] | None = None
        # Called on close after the listener (the endpoint forgets it, data channels too).
        self.on_close: list[Callable[[WebRtcTransport], None]] = []

    def __repr__(self) -> str:
        return f"<WebRtcTransport {self.role} owner={self.owner} publisher={self.publisher}>"

    @property
    def ufrag(self) -> str:
        return self.ice.ufrag

    # -- remote description --------------------------------------------------------------------

    def set_remote(
        self, ice_ufrag: str, ice_pwd: str, fingerprints: Sequence[tuple[str, str]], now: float
    ) -> None:
        """Apply the remote SDP's ICE credentials and DTLS fingerprints (RFC 8122)."""
        if self.closed or self.dtls is not None:
            return
        self.ice.set_remote(ice_ufrag, ice_pwd)
        self.remote_fingerprints = list(fingerprints)
        self.dtls = DtlsSession(self.certificate, role="server", remote_fingerprints=fingerprints)
        pending, self._pending_dtls = self._pending_dtls, []
        for datagram in pending:
            try:
                self._receive_dtls_untrusted(datagram, now)
            except MalformedInput:
                pass

    def restart_ice(
        self,
        now: float,
        *,
        ufrag: str | None = None,
        pwd: str | None = None,
        remote_ufrag: str | None = None,
        remote_pwd: str | None = None,
    ) -> str:
        """ICE restart on this transport (RFC 8445 section 9, docs/PROTOCOL.md section 4):
        new local credentials (`ufrag`/`pwd`, fresh when None), the remote's new ones (None
        until its SDP says). DTLS and the SRTP keys are kept, and media keeps going to the
        current address until the new ICE session nominates one. Returns the old local ufrag:
        the endpoint finds STUN by ufrag and must be told (`MediaEndpoint.rekey`)."""
        old = self.ice.ufrag
        self.ice.restart(
            now, ufrag=ufrag, pwd=pwd, remote_ufrag=remote_ufrag, remote_pwd=remote_pwd
        )
        self.pending_addr = None
        return old

    # -- datagrams from the endpoint -----------------------------------------------------------

    def receive_stun_untrusted(self, data: bytes, addr: Address, now: float) -> str:
        """A binding request for our ufrag: answer it (to its source, RFC 5389 7.3.1).

        Returns "selected" when it was the first nomination, "pending" when it nominated a new
        address that media will follow only once `authenticated_from` confirms it, else "".
        """
        ice = self.ice
        was_pending = ice.pending
        response, changed = ice.handle_request_untrusted(data, addr, now)
        self.send(response, addr)
        self.pending_addr = ice.pending
        if self.remote_addr is None or changed:
            # Until a nomination, answer DTLS where the first valid check came from; the first
            # nomination (USE-CANDIDATE, RFC 8445 7.3.1.5) fixes the address.
            self._move(ice.selected or addr)
        if changed:
            return "selected"
        return "pending" if ice.pending is not None and ice.pending != was_pending else ""

    def authenticated_from(self, addr: Address, now: float) -> str:
        """Authenticated SRTP/SRTCP came from `addr` (the endpoint calls this only while an
        address is pending): the pending nomination takes effect, rate-limited (ice.confirm)."""
        # recvfrom gives IPv6 sources as (host, port, flowinfo, scope_id); ICE keeps (host, port).
        source = (addr[0], addr[1])
        result = self.ice.confirm(source, now)
        self.pending_addr = self.ice.pending
        if result == SWITCHED:
            self._move(source)
        return result

    def _move(self, addr: Address) -> None:
        old = self.remote_addr
        self.remote_addr = addr
        if old != addr:
            self._update_connected()
            if self.listener is not None:
                self.listener.on_transport_address_change(self, old)

    def receive_dtls_untrusted(
        self, data: bytes, now: float, addr: Address | None = None
    ) -> str:
        """A DTLS datagram from `addr`. Returns the address confirmation result ("" mostly).

        Before the handshake gives us SRTP keys nothing but handshake flights follow the
        remote address, so DTLS from the pending address confirms it (the browser renominated
        and moved its handshake there); afterwards only authenticated SRTP/SRTCP does, since
        pyOpenSSL does not tell us whether a record authenticated.
        """
        moved = ""
        if addr is not None and self.srtp is None and self.pending_addr is not None:
            moved = self.authenticated_from(addr, now)
        self._receive_dtls_untrusted(data, now)
        return moved

    def _receive_dtls_untrusted(self, data: bytes, now: float) -> None:
        dtls = self.dtls
        if dtls is None:
            if len(self._pending_dtls) < PENDING_DTLS:
                self._pending_dtls.append(data)
            return
        was_connected = dtls.state == DtlsState.CONNECTED
        datagrams = dtls.receive_untrusted(data, now)
        self._flush(datagrams)
        if not was_connected and dtls.state == DtlsState.CONNECTED:
            self._dtls_connected()
        if dtls.state == DtlsState.CONNECTED:
            self._receive_sctp(dtls.take_application_data(), now)
        elif dtls.state == DtlsState.FAILED:
            log.info("%r: DTLS failed: %s", self, dtls.failure_reason)
            self.close(CloseReason.DTLS)
        elif dtls.state == DtlsState.CLOSED:
            # The browser closed this peer connection: its close_notify (RFC 5246 7.2.1) is a
            # goodbye, so stop sending at once instead of until consent runs out.
            self.close(CloseReason.PEER_CLOSED)

    def handle_timeout(self, now: float) -> None:
        """DTLS retransmissions (RFC 6347 4.2.4): call when `next_timeout()` has passed."""
        dtls = self.dtls
        if dtls is not None and dtls.state in (DtlsState.NEW, DtlsState.CONNECTING):
            deadline = dtls.next_timeout()
            if deadline is not None and now >= deadline:
                self._flush(dtls.handle_timeout(now))
        channels = self.datachannels
        if channels is not None and dtls is not None and dtls.state == DtlsState.CONNECTED:
            deadline = channels.association.next_timeout()
            if deadline is not None and now >= deadline:  # SACK delay, T3-rtx, stream reset
                packets, events = channels.handle_timeout(now)
                self._send_sctp(packets)
                if events and self.on_datachannel is not None:
                    self.on_datachannel(self, events)

    # -- data channels -------------------------------------------------------------------------

    def _receive_sctp(self, records: list[bytes], now: float) -> None:
        channels = self.datachannels
        if channels is None or not records:
            return  # no m=application was accepted: nothing to say to SCTP
        events: list[ChannelEvent] = []
        for record in records:
            try:
                packets, new = channels.receive_untrusted(record, now)
            except MalformedInput:
                channels.counters["sctp_malformed"] += 1
                continue
            self._send_sctp(packets)
            events += new
        if events and self.on_datachannel is not None:
            self.on_datachannel(self, events)

    def _send_sctp(self, packets: list[bytes]) -> None:
        dtls = self.dtls
        if packets and dtls is not None and not self.closed:
            self._flush(dtls.send_application_data(packets))

    def send_datachannel(self, channel: Channel, data: bytes, binary: bool, now: float) -> bool:
        """Queue one message on one of this transport's channels and send what fits."""
        channels = self.datachannels
        if channels is None or self.closed:
            return False
        ok = channels.send(channel, data, binary, now)
        self._send_sctp(channels.flush(now))
        return ok

    def consent_expired(self, now: float) -> bool:
        return self.ice.consent_expired(now)

    def receive_rtp_untrusted(self, data: bytes, addr: Address, now: float) -> str:
        """SRTP from `addr` (the endpoint found this transport by it). Authenticated, it proves
        the address live (`last_rx`; a pending nomination is confirmed) and its plaintext goes
        to the listener's `on_rtp`. Returns the confirmation's result (`authenticated_from`),
        "" mostly. Raises MalformedInput ("srtp ...") when it does not authenticate."""
        srtp = self.srtp
        if srtp is None:
            raise MalformedInput("srtp not ready")
        plain = srtp.unprotect_rtp_untrusted(data)
        self.last_rx = now
        moved = self.authenticated_from(addr, now) if self.pending_addr is not None else ""
        listener = self.listener
        if listener is not None:
            listener.on_rtp(self, plain, now)
        return moved

    def receive_rtcp_untrusted(self, data: bytes, addr: Address, now: float) -> str:
        """SRTCP from `addr`: as `receive_rtp_untrusted`, to the listener's `on_rtcp`."""
        srtp = self.srtp
        if srtp is None:
            raise MalformedInput("srtp not ready")
        plain = srtp.unprotect_rtcp_untrusted(data)
        self.last_rx = now
        moved = self.authenticated_from(addr, now) if self.pending_addr is not None else ""
        listener = self.listener
        if listener is not None:
            listener.on_rtcp(self, plain, now)
        return moved

    # -- internals -----------------------------------------------------------------------------

    def _flush(self, datagrams: list[bytes]) -> None:
        addr = self.remote_addr
        if addr is None:
            return
        for datagram in datagrams:
            self.send(datagram, addr)

    def _dtls_connected(self) -> None:
        assert self.dtls is not None and self.dtls.srtp_keys is not None
        self.srtp = SrtpSession(self.dtls.srtp_keys)
        self.protect_rtp = self.srtp.protect_rtp
        self.protect_rtcp = self.srtp.protect_rtcp
        self._update_connected()

    def _update_connected(self) -> None:
        was = self.connected
        self.connected = self.srtp is not None and self.remote_addr is not None
        if self.connected and not was and self.listener is not None:
            self.listener.on_transport_connected(self)

    def close(self, reason: CloseReason = CloseReason.CLOSED) -> None:
        """Idempotent. Says goodbye (SCTP ABORT, DTLS close_notify), then tells the listener
        (which closes this transport's producers and consumers), then the `on_close` hooks."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.connected = False
        if self.datachannels is not None and self.dtls is not None:
            try:  # ABORT first, so the browser's channels close at once (RFC 9260 9.1)
                self._flush(self.dtls.send_application_data(self.datachannels.association.abort()))
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.debug("%r: SCTP abort failed", self, exc_info=True)
        if self.dtls is not None:
            try:
                self._flush(self.dtls.close())
            except Exception:  # a close_notify we could not build is not worth more
                log.debug("%r: DTLS close failed", self, exc_info=True)
        self.ice.close()
        if self.listener is not None:
            self.listener.on_transport_closed(self)
        hooks, self.on_close = self.on_close, []
        for hook in hooks:
            hook(self)


def _not_ready(packet: bytes) -> bytes:
    raise MalformedInput("srtp not ready")
