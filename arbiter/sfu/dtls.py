"""DTLS-SRTP key agreement, sans-IO (RFC 6347 DTLS 1.2, RFC 5764 DTLS-SRTP).

pyOpenSSL does the cryptography over memory BIOs: datagrams go in with `bio_write`, the records
OpenSSL wants to send come out of `bio_read`. This module only frames them, tracks state, checks
the peer certificate against the SDP fingerprints (RFC 8122) and derives the SRTP master keys
(RFC 5764 section 4.2 via the RFC 5705 exporter).

Time: the caller passes `now` (any monotonic clock, seconds). OpenSSL keeps its own retransmission
timer on the real clock and pyOpenSSL exposes no way to replace it, so `next_timeout()` maps the
remaining time OpenSSL reports onto the caller's clock, and `handle_timeout()` called before
OpenSSL's timer really expired is a harmless no-op (OpenSSL checks the expiry itself).
"""

from __future__ import annotations

import binascii
import datetime
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import pylibsrtp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from arbiter.errors import MalformedInput

# RFC 8122 section 5 hash names -> cryptography hashes. MD5/MD2 are listed there too but are too
# weak to authenticate a peer, so a fingerprint using them never matches.
_DIGESTS: dict[str, hashes.HashAlgorithm] = {
    "sha-1": hashes.SHA1(),
    "sha-224": hashes.SHA224(),
    "sha-256": hashes.SHA256(),
    "sha-384": hashes.SHA384(),
    "sha-512": hashes.SHA512(),
}

# ECDSA suites only: our certificate is P-256 like the browsers'. AEAD first.
_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
)

# RFC 6347 4.1: the record framing we accept is DTLS 1.2; OpenSSL would negotiate DTLS 1.3
# (RFC 9147, a different record header) if it could, so cap it.
_DTLS1_2_VERSION = 0xFEFD
_RECORD_HEADER = 13  # type(1) version(2) epoch(2) sequence_number(6) length(2)
# RFC 6347 4.1 / RFC 5246 6.2.3: a record fragment is at most 2^14 + 2048 bytes.
_MAX_RECORD_BODY = 2**14 + 2048
# Outgoing datagrams: pack whole records up to this size (fits any path with IPv6 + UDP + TURN).
_MAX_DATAGRAM = 1200
MAX_PENDING_RECORDS = 64  # application data records kept until the transport takes them


@dataclass(frozen=True)
class SrtpProfile:
    """One DTLS-SRTP protection profile (RFC 5764 4.1.2, RFC 7714 14.2)."""

    name: str
    openssl_name: bytes
    libsrtp_profile: int
    key_length: int
    salt_length: int


AEAD_AES_128_GCM = SrtpProfile(
    "AEAD_AES_128_GCM",
    b"SRTP_AEAD_AES_128_GCM",
    pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    16,
    12,
)
AES_CM_128_HMAC_SHA1_80 = SrtpProfile(
    "AES_CM_128_HMAC_SHA1_80",
    b"SRTP_AES128_CM_SHA1_80",
    pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    16,
    14,
)
# Our preference order: GCM authenticates and encrypts in one pass (about 1.5x cheaper per packet
# than AES-CM + HMAC-SHA1 here, docs/PROTOCOL.md section 4); every browser offers both.
SRTP_PROFILES: tuple[SrtpProfile, ...] = (AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80)
_PROFILES_BY_OPENSSL_NAME = {p.openssl_name: p for p in SRTP_PROFILES}


class SrtpKeys(NamedTuple):
    """SRTP master key+salt for each direction, concatenated as pylibsrtp's Policy(key=) wants."""

    profile: SrtpProfile
    tx_key: bytes  # we protect with this
    rx_key: bytes  # we unprotect with this


def _format_fingerprint(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


class Certificate:
    """The process's DTLS identity: an ECDSA P-256 self-signed certificate (as browsers use).

    One per process, shared by every transport; its SSL.Context is built once and shared too.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self._context: SSL.Context | None = None
        self._fingerprints: dict[str, str] = {}  # every SDP we write carries one: compute once

    @classmethod
    def generate(cls) -> Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        # A random CN like the browsers: the name carries no meaning, the fingerprint does.
        name = x509.Name(
            [
                x509.NameAttribute(
                    x509.NameOID.COMMON_NAME, binascii.hexlify(os.urandom(16)).decode()
                )
            ]
        )
        # Validity is never checked by WebRTC peers (identity is the SDP fingerprint), but keep
        # it sane for tools that do look. Reading the wall clock here is not protocol processing.
        now = datetime.datetime.now(tz=datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        """RFC 8122 fingerprint, uppercase colon-separated hex as in `a=fingerprint:`."""
        cached = self._fingerprints.get(algorithm)
        if cached is not None:
            return cached
        digest = _DIGESTS.get(algorithm.lower())
        if digest is None:
            raise ValueError(f"unsupported fingerprint algorithm {algorithm!r}")
        value = self._fingerprints[algorithm] = _format_fingerprint(self.cert.fingerprint(digest))
        return value

    def ssl_context(self) -> SSL.Context:
        """The shared DTLS context for both roles (built on first use)."""
        if self._context is None:
            ctx = SSL.Context(SSL.DTLS_METHOD)
            ctx.set_max_proto_version(_DTLS1_2_VERSION)
            ctx.set_options(SSL.OP_NO_TICKET)
            # Require the peer's certificate but accept any: the identity check is the SDP
            # fingerprint comparison done after the handshake (RFC 8122 section 5).
            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_args: True)
            ctx.use_certificate(self.cert)
            ctx.use_privatekey(self.key)
            ctx.set_cipher_list(_CIPHERS)
            # RFC 5764 4.1.1 use_srtp extension, in our preference order.
            ctx.set_tlsext_use_srtp(b":".join(p.openssl_name for p in SRTP_PROFILES))
            # No cookie exchange (RFC 6347 4.2.1): ICE connectivity checks already prove the
            # peer owns its address, as in browsers and mediasoup.
            self._context = ctx
        return self._context


def _records_untrusted(data: bytes) -> None:
    """Check that a datagram is a sequence of whole DTLS 1.x records (RFC 6347 4.1)."""
    if len(data) < _RECORD_HEADER:
        raise MalformedInput("dtls: datagram shorter than a record header")
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < _RECORD_HEADER:
            raise MalformedInput("dtls: trailing bytes after the last record")
        content_type, major = data[pos], data[pos + 1]
        # 20 change_cipher_spec .. 25 tls12_cid (RFC 9146); version major is 254 for all DTLS.
        if not 20 <= content_type <= 25:
            raise MalformedInput(f"dtls: bad record content type {content_type}")
        if major != 0xFE:
            raise MalformedInput("dtls: bad record version")
        (length,) = struct.unpack_from("!H", data, pos + 11)
        if length > _MAX_RECORD_BODY:
            raise MalformedInput("dtls: record too long")
        pos += _RECORD_HEADER + length
        if pos > end:
            raise MalformedInput("dtls: record length exceeds the datagram")


def _pack_records(blob: bytes) -> list[bytes]:
    """Split what OpenSSL wrote into whole records and pack them into datagrams.

    A memory BIO is a byte stream: a whole flight comes out as one blob. Several records per
    datagram are fine (RFC 6347 4.1.1) but a record must never be split across datagrams.
    """
    out: list[bytes] = []
    start = pos = 0
    end = len(blob)
    while pos < end:
        if end - pos < _RECORD_HEADER:  # cannot happen with OpenSSL output; keep it whole
            pos = end
            break
        (length,) = struct.unpack_from("!H", blob, pos + 11)
        nxt = pos + _RECORD_HEADER + length
        if nxt - start > _MAX_DATAGRAM and pos > start:
            out.append(blob[start:pos])
            start = pos
        pos = nxt
    if start < end:
        out.append(blob[start:end])
    return out


class DtlsState(StrEnum):
    """A DTLS session's life: new -> connecting -> connected -> closed, or failed."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


class DtlsSession:
    """One DTLS association over one ICE transport, sans-IO.

    States: "new" -> "connecting" -> "connected" -> "closed", or "failed" (with
    `failure_reason`) from any of the first three. Every method returns the datagrams to send.

    Telling the caller it just connected: `just_connected` is True right after the
    `receive_untrusted` / `handle_timeout` call during which the handshake completed and the peer
    fingerprint matched (so `srtp_keys` is now set); every such call resets it first. Read it
    after each call.
    """

    def __init__(
        self,
        certificate: Certificate,
        *,
        role: str,
        remote_fingerprints: Sequence[tuple[str, str]] = (),
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        self.role = role
        self.remote_fingerprints = [(alg.lower(), val.upper()) for alg, val in remote_fingerprints]
        self.state = DtlsState.NEW
        self.failure_reason: str | None = None
        self.srtp_keys: SrtpKeys | None = None
        self.just_connected = False
        self._ssl = SSL.Connection(certificate.ssl_context(), None)
        self._now = 0.0
        # Decrypted application data records (SCTP packets, RFC 8261), for `take_application_data`.
        self._app_data: list[bytes] = []

    # -- driving -------------------------------------------------------------------------

    def start(self, now: float) -> list[bytes]:
        """Begin the handshake: the client returns its first flight (ClientHello)."""
        self._now = now
        if self.state != DtlsState.NEW:
            return []
        self.state = DtlsState.CONNECTING
        if self.role == "server":
            self._ssl.set_accept_state()
            return []
        self._ssl.set_connect_state()
        self._handshake()
        return self._drain()

    def receive_untrusted(self, data: bytes, now: float) -> list[bytes]:
        """Feed one received datagram; raises MalformedInput if it is not DTLS record framing."""
        _records_untrusted(data)
        self._now = now
        self.just_connected = False
        if self.state == DtlsState.NEW:
            self.start(now)  # a server may hear the ClientHello before the caller starts it
        if self.state == DtlsState.CONNECTING:
            self._ssl.bio_write(data)
            self._handshake()
            return self._drain() if self.state in (DtlsState.CONNECTING, DtlsState.CONNECTED) else []
        if self.state == DtlsState.CONNECTED:
            self._ssl.bio_write(data)
            self._read_application_data()
            return self._drain()
        return []  # failed or closed: ignore

    def next_timeout(self) -> float | None:
        """Absolute time (caller's clock) when `handle_timeout` should run, or None."""
        if self.state not in (DtlsState.CONNECTING, DtlsState.CONNECTED):
            return None
        remaining = self._ssl.DTLSv1_get_timeout()
        if remaining is None:
            return None
        return self._now + remaining

    def handle_timeout(self, now: float) -> list[bytes]:
        """Retransmit the last flight if OpenSSL's timer expired (RFC 6347 4.2.4)."""
        self._now = now
        self.just_connected = False
        if self.state not in (DtlsState.CONNECTING, DtlsState.CONNECTED):
            return []
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:  # e.g. too many retransmissions
            self._fail(f"dtls timeout: {exc}")
            return []
        return self._drain()

    def close(self) -> list[bytes]:
        """Send close_notify (RFC 5246 7.2.1) if there is an association; idempotent."""
        if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            return []
        was_started = self.state != DtlsState.NEW
        self.state = DtlsState.CLOSED
        if not was_started:
            return []
        try:
            self._ssl.shutdown()
        except SSL.Error:
            pass  # mid-handshake shutdown may fail; there is nothing more to say to the peer
        return self._drain()

    # -- internals -----------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        self.state = DtlsState.FAILED
        self.failure_reason = reason

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as exc:
            self._fail(f"dtls handshake: {exc}")
            return
        self._on_handshake_done()

    def _on_handshake_done(self) -> None:
        if not self._peer_fingerprint_matches():
            # No keys for an impostor; do not even send our final flight.
            self._fail("fingerprint mismatch")
            return
        profile = _PROFILES_BY_OPENSSL_NAME.get(self._ssl.get_selected_srtp_profile())
        if profile is None:
            self._fail("no srtp profile negotiated")
            return
        self.srtp_keys = self._derive_keys(profile)
        self.state = DtlsState.CONNECTED
        self.just_connected = True
        # Anything that arrived with the last flight (unlikely) is application data.
        self._read_application_data()

    def _peer_fingerprint_matches(self) -> bool:
        cert = self._ssl.get_peer_certificate(as_cryptography=True)
        if cert is None:
            return False
        # RFC 8122 section 5: the certificate must match a fingerprint the peer signalled; any
        # algorithm we support will do (browsers send one sha-256 line).
        for algorithm, value in self.remote_fingerprints:
            digest = _DIGESTS.get(algorithm)
            if digest is not None and _format_fingerprint(cert.fingerprint(digest)) == value:
                return True
        return False

    def _derive_keys(self, profile: SrtpProfile) -> SrtpKeys:
        # RFC 5764 4.2: the RFC 5705 exporter output is
        # client_write_key | server_write_key | client_write_salt | server_write_salt.
        k, s = profile.key_length, profile.salt_length
        material = self._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (k + s))
        client = material[0:k] + material[2 * k : 2 * k + s]
        server = material[k : 2 * k] + material[2 * k + s : 2 * k + 2 * s]
        if self.role == "server":
            return SrtpKeys(profile, tx_key=server, rx_key=client)
        return SrtpKeys(profile, tx_key=client, rx_key=server)

    def take_application_data(self) -> list[bytes]:
        """The application data records received since the last call (one SCTP packet each)."""
        data, self._app_data = self._app_data, []
        return data

    def send_application_data(self, records: list[bytes]) -> list[bytes]:
        """Encrypt one record per item (an SCTP packet); returns the datagrams to send."""
        if self.state != DtlsState.CONNECTED:
            return []
        for record in records:
            try:
                self._ssl.send(record)
            except SSL.Error as exc:
                self._fail(f"dtls send: {exc}")
                return []
        return self._drain()

    def _read_application_data(self) -> None:
        # SCTP over DTLS (data channels, RFC 8261): one record is one SCTP packet. A datagram
        # holds at most ~1500 bytes, so this collects a handful of records per call.
        while True:
            try:
                record = self._ssl.recv(65536)
                if len(self._app_data) < MAX_PENDING_RECORDS:
                    self._app_data.append(record)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:  # close_notify from the peer
                self.state = DtlsState.CLOSED
                return
            except SSL.Error as exc:  # a fatal alert (authenticated: records are encrypted)
                self._fail(f"dtls: {exc}")
                return

    def _drain(self) -> list[bytes]:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return []
        return _pack_records(b"".join(chunks))
