"""DTLS-SRTP: handshakes between in-memory sessions, SRTP round trips, replay reset, aiortc interop."""

from __future__ import annotations

import os
import struct
import time

import pylibsrtp
import pytest
from aiortc.rtcdtlstransport import SRTP_PROFILES as AIORTC_PROFILES
from aiortc.rtcdtlstransport import RTCCertificate
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from arbiter.errors import MalformedInput
from arbiter.sfu.dtls import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_80,
    SRTP_PROFILES,
    Certificate,
    DtlsSession,
    SrtpKeys,
)
from arbiter.sfu.srtp import REPLAY_RESET_THRESHOLD, SrtpSession

SERVER_CERT = Certificate.generate()
CLIENT_CERT = Certificate.generate()


def make_pair(
    server_fingerprints: list[tuple[str, str]] | None = None,
) -> tuple[DtlsSession, DtlsSession]:
    if server_fingerprints is None:
        server_fingerprints = [("sha-256", CLIENT_CERT.fingerprint())]
    server = DtlsSession(SERVER_CERT, role="server", remote_fingerprints=server_fingerprints)
    client = DtlsSession(
        CLIENT_CERT,
        role="client",
        remote_fingerprints=[("SHA-256", SERVER_CERT.fingerprint("sha-256").lower())],
    )
    return server, client


def pump(
    server: DtlsSession, client: DtlsSession, to_server: list[bytes], now: float
) -> tuple[bool, bool]:
    """Exchange datagrams until both sides are quiet; report whether each saw just_connected."""
    server_connected = client_connected = False
    to_client: list[bytes] = []
    for _ in range(20):
        if not to_server and not to_client:
            break
        for datagram in to_server:
            to_client += server.receive_untrusted(datagram, now)
            server_connected |= server.just_connected
        to_server = []
        for datagram in to_client:
            to_server += client.receive_untrusted(datagram, now)
            client_connected |= client.just_connected
        to_client = []
    return server_connected, client_connected


def handshake() -> tuple[DtlsSession, DtlsSession]:
    server, client = make_pair()
    assert server.start(0.0) == []
    first = client.start(0.0)
    assert server.state == client.state == "connecting"
    assert pump(server, client, first, 0.0) == (True, True)
    return server, client


def rtp(seq: int, ssrc: int = 0x11223344, size: int = 100) -> bytes:
    header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, (seq * 3000) & 0xFFFFFFFF, ssrc)
    return header + bytes((seq + i) & 0xFF for i in range(size))


def rtcp_sr(ssrc: int = 0x11223344) -> bytes:
    # RFC 3550 6.4.1 sender report without report blocks: 7 words.
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 1, 2, 3, 4, 5)


# -- certificate and profiles ---------------------------------------------------------------


def test_certificate_fingerprint_format() -> None:
    fp = SERVER_CERT.fingerprint()
    assert len(fp) == 32 * 3 - 1
    assert fp == fp.upper() and fp.count(":") == 31
    assert len(SERVER_CERT.fingerprint("SHA-1").split(":")) == 20
    assert SERVER_CERT.fingerprint() != CLIENT_CERT.fingerprint()


def test_profiles_prefer_gcm() -> None:
    assert [p.name for p in SRTP_PROFILES] == ["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"]
    assert (AEAD_AES_128_GCM.key_length, AEAD_AES_128_GCM.salt_length) == (16, 12)
    assert (AES_CM_128_HMAC_SHA1_80.key_length, AES_CM_128_HMAC_SHA1_80.salt_length) == (16, 14)


# -- DTLS ------------------------------------------------------------------------------------


def test_handshake_connects_with_crosswise_keys() -> None:
    server, client = handshake()
    assert server.state == client.state == "connected"
    assert server.failure_reason is None and client.failure_reason is None
    assert server.srtp_keys is not None and client.srtp_keys is not None
    assert server.srtp_keys.profile is client.srtp_keys.profile is AEAD_AES_128_GCM
    assert client.srtp_keys.tx_key == server.srtp_keys.rx_key
    assert server.srtp_keys.tx_key == client.srtp_keys.rx_key
    assert server.srtp_keys.tx_key != server.srtp_keys.rx_key
    assert len(server.srtp_keys.tx_key) == 16 + 12
    assert server.next_timeout() is None and client.next_timeout() is None


def test_wrong_fingerprint_fails_without_keys() -> None:
    wrong = Certificate.generate().fingerprint()
    server, client = make_pair([("sha-256", wrong)])
    server.start(0.0)
    assert pump(server, client, client.start(0.0), 0.0) == (False, False)
    assert server.state == "failed"
    assert server.failure_reason == "fingerprint mismatch"
    assert server.srtp_keys is None
    assert client.state == "connecting"  # it never gets our final flight


def test_no_fingerprints_fails() -> None:
    server, client = make_pair([])
    server.start(0.0)
    pump(server, client, client.start(0.0), 0.0)
    assert (server.state, server.failure_reason, server.srtp_keys) == (
        "failed",
        "fingerprint mismatch",
        None,
    )


def test_other_algorithm_fingerprint_matches() -> None:
    server, client = make_pair(
        [("md5", "00:11"), ("sha-512", CLIENT_CERT.fingerprint("sha-512").lower())]
    )
    server.start(0.0)
    assert pump(server, client, client.start(0.0), 0.0) == (True, True)
    assert server.state == "connected"


def test_lost_server_flight_is_retransmitted_on_timeout() -> None:
    server, client = make_pair()
    server.start(10.0)
    hello = client.start(10.0)
    flight = [d for h in hello for d in server.receive_untrusted(h, 10.0)]
    assert flight  # ... and it is lost
    deadline = server.next_timeout()
    assert deadline is not None and 10.0 < deadline <= 11.0
    assert server.handle_timeout(10.0) == []  # too early: nothing to resend
    # OpenSSL runs its retransmission timer on the real clock (see dtls.py docstring).
    time.sleep(deadline - 10.0 + 0.05)
    again = server.handle_timeout(deadline)
    # The flight again (RFC 6347 4.2.4): new record sequence numbers, and OpenSSL may
    # re-fragment it, so compare its shape: handshake records starting with the ServerHello.
    assert again and again[0][:3] == flight[0][:3] == b"\x16\xfe\xfd"
    assert again[0][13] == flight[0][13] == 2  # HandshakeType server_hello
    to_server: list[bytes] = []
    for datagram in again:
        to_server += client.receive_untrusted(datagram, deadline)
    pump(server, client, to_server, deadline)
    assert server.state == client.state == "connected"
    assert server.srtp_keys is not None and client.srtp_keys is not None
    assert client.srtp_keys.tx_key == server.srtp_keys.rx_key


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x16\xfe\xfd",  # shorter than a header
        b"\x10" + b"\xfe\xfd" + bytes(10),  # content type 16
        b"\x16\x03\x03" + bytes(10),  # TLS, not DTLS, version
        b"\x16\xfe\xfd" + bytes(8) + b"\x00\x05" + b"abc",  # length past the end
        b"\x16\xfe\xfd" + bytes(8) + b"\x00\x00" + b"xy",  # trailing bytes
        b"\x80\x60" + bytes(30),  # an RTP packet
    ],
)
def test_garbage_is_malformed(data: bytes) -> None:
    server, _ = make_pair()
    server.start(0.0)
    with pytest.raises(MalformedInput):
        server.receive_untrusted(data, 0.0)
    assert server.state == "connecting"


def test_well_framed_nonsense_fails_handshake_without_raising() -> None:
    server, _ = make_pair()
    server.start(0.0)
    record = b"\x16\xfe\xfd" + bytes(8) + b"\x00\x04" + b"\x01\x00\x00\x00"
    assert server.receive_untrusted(record, 0.0) == []
    assert server.state in ("connecting", "failed")


def test_close_notify_closes_peer_and_is_idempotent() -> None:
    server, client = handshake()
    notify = client.close()
    assert len(notify) == 1 and notify[0][0] == 21  # one alert record
    assert client.state == "closed" and client.close() == []
    assert server.receive_untrusted(notify[0], 1.0) == []
    assert server.state == "closed"
    assert server.close() == []


def test_application_data_is_collected_and_sent() -> None:
    """Application data records (SCTP packets, RFC 8261) come out one per record, both ways."""
    server, client = handshake()
    datagrams = client.send_application_data([b"sctp would be here", b"and a second packet"])
    assert len(datagrams) == 1 and datagrams[0][0] == 23  # both records in one datagram
    assert server.receive_untrusted(datagrams[0], 1.0) == []
    assert server.state == "connected" and not server.just_connected
    assert server.take_application_data() == [b"sctp would be here", b"and a second packet"]
    assert server.take_application_data() == []
    for datagram in server.send_application_data([b"x" * 1100, b"y" * 1100]):
        client.receive_untrusted(datagram, 1.0)
    assert client.take_application_data() == [b"x" * 1100, b"y" * 1100]


# -- SRTP ------------------------------------------------------------------------------------


def srtp_pair(profile_index: int = 0) -> tuple[SrtpSession, SrtpSession]:
    """(client side, server side) sessions with keys as a handshake would give them."""
    profile = SRTP_PROFILES[profile_index]
    size = profile.key_length + profile.salt_length
    a, b = os.urandom(size), os.urandom(size)
    return SrtpSession(SrtpKeys(profile, a, b)), SrtpSession(SrtpKeys(profile, b, a))


@pytest.mark.parametrize("profile_index", [0, 1])
def test_srtp_round_trip_after_handshake(profile_index: int) -> None:
    client, server = srtp_pair(profile_index)
    for seq in range(5):
        packet = rtp(seq, size=1200)
        protected = client.protect_rtp(packet)
        assert protected != packet and len(protected) == len(packet) + 16 - 6 * profile_index
        assert server.unprotect_rtp_untrusted(protected) == packet
    report = rtcp_sr()
    assert server.unprotect_rtcp_untrusted(client.protect_rtcp(report)) == report
    # and the other direction
    assert client.unprotect_rtp_untrusted(server.protect_rtp(rtp(7))) == rtp(7)


def test_srtp_with_handshake_keys() -> None:
    server_dtls, client_dtls = handshake()
    assert server_dtls.srtp_keys is not None and client_dtls.srtp_keys is not None
    client, server = SrtpSession(client_dtls.srtp_keys), SrtpSession(server_dtls.srtp_keys)
    assert server.unprotect_rtp_untrusted(client.protect_rtp(rtp(1))) == rtp(1)
    assert client.unprotect_rtcp_untrusted(server.protect_rtcp(rtcp_sr(5))) == rtcp_sr(5)


@pytest.mark.parametrize("profile_index", [0, 1])
def test_tampered_packet_is_auth_failure(profile_index: int) -> None:
    client, server = srtp_pair(profile_index)
    protected = bytearray(client.protect_rtp(rtp(1)))
    protected[40] ^= 0x01
    with pytest.raises(MalformedInput) as info:
        server.unprotect_rtp_untrusted(bytes(protected))
    assert info.value.message.startswith("srtp auth")
    report = bytearray(client.protect_rtcp(rtcp_sr()))
    report[10] ^= 0x80
    with pytest.raises(MalformedInput) as info:
        server.unprotect_rtcp_untrusted(bytes(report))
    assert info.value.message.startswith("srtp auth")


def test_replayed_packet_is_replay() -> None:
    client, server = srtp_pair()
    protected = client.protect_rtp(rtp(1))
    server.unprotect_rtp_untrusted(protected)
    with pytest.raises(MalformedInput) as info:
        server.unprotect_rtp_untrusted(protected)
    assert info.value.message.startswith("srtp replay")
    report = client.protect_rtcp(rtcp_sr())
    server.unprotect_rtcp_untrusted(report)
    with pytest.raises(MalformedInput) as info:
        server.unprotect_rtcp_untrusted(report)
    assert info.value.message.startswith("srtp replay")


def test_oversize_and_short_packets() -> None:
    _, server = srtp_pair()
    with pytest.raises(MalformedInput) as info:
        server.unprotect_rtp_untrusted(b"\x80" * 1600)
    assert info.value.message.startswith("srtp oversize")
    with pytest.raises(MalformedInput) as info:
        server.unprotect_rtp_untrusted(b"\x80\x60\x00")
    assert info.value.message.startswith("srtp error")


def test_nack_retransmission_reuses_sequence_number() -> None:
    client, server = srtp_pair()
    first = client.protect_rtp(rtp(42))
    again = client.protect_rtp(rtp(42))  # allow_repeat_tx: same index protects again
    assert again == first  # same key, same index, same plaintext -> same ciphertext
    assert server.unprotect_rtp_untrusted(first) == rtp(42)


def test_replay_window_reset_after_sender_restart() -> None:
    """A sender whose index moves more than the window behind is stuck until the reset.

    Sequence numbers 40000.. put libsrtp's index above 2^15; the sender then restarts the
    stream (fresh context, same keys and SSRC) at 10000: every packet estimates as
    "index too old". See srtp.py's docstring for what libsrtp does in the other cases.
    """
    profile = AEAD_AES_128_GCM
    a, b = os.urandom(28), os.urandom(28)
    sender, server = SrtpSession(SrtpKeys(profile, a, b)), SrtpSession(SrtpKeys(profile, b, a))
    other = 0x55667788
    for seq in range(40000, 40010):
        assert server.unprotect_rtp_untrusted(sender.protect_rtp(rtp(seq))) == rtp(seq)
    restarted = SrtpSession(SrtpKeys(profile, a, b))
    outcomes = []
    for seq in range(10000, 10000 + REPLAY_RESET_THRESHOLD + 3):
        try:
            outcomes.append(server.unprotect_rtp_untrusted(restarted.protect_rtp(rtp(seq))))
        except MalformedInput as exc:
            outcomes.append(exc.message.split(":")[0])
        if seq == 10010:  # another stream flowing meanwhile does not interrupt the burst
            server.unprotect_rtp_untrusted(sender.protect_rtp(rtp(7, ssrc=other)))
    assert outcomes[: REPLAY_RESET_THRESHOLD - 1] == ["srtp replay old"] * (
        REPLAY_RESET_THRESHOLD - 1
    )
    # the 64th failure resets the stream and the retry succeeds, as do the packets after it
    assert outcomes[REPLAY_RESET_THRESHOLD - 1 :] == [
        rtp(seq)
        for seq in range(10000 + REPLAY_RESET_THRESHOLD - 1, 10000 + REPLAY_RESET_THRESHOLD + 3)
    ]
    assert server.replay_resets == 1
    assert server._old_failures == {}  # noqa: SLF001


def test_old_replays_interleaved_with_live_stream_never_reset() -> None:
    client, server = srtp_pair()
    captured = [client.protect_rtp(rtp(seq)) for seq in range(40000, 40100)]
    for packet in captured:
        server.unprotect_rtp_untrusted(packet)
    for seq in range(40100, 41200):  # move the window past the captured packets
        server.unprotect_rtp_untrusted(client.protect_rtp(rtp(seq)))
    for seq in range(41200, 42000):
        server.unprotect_rtp_untrusted(client.protect_rtp(rtp(seq)))
        with pytest.raises(MalformedInput) as info:
            server.unprotect_rtp_untrusted(captured[seq % 100])  # older than the window
        assert info.value.message.startswith("srtp replay old")
    assert server.replay_resets == 0


def test_rtcp_replay_reset_after_sender_restart() -> None:
    profile = AES_CM_128_HMAC_SHA1_80
    a, b = os.urandom(30), os.urandom(30)
    sender, server = SrtpSession(SrtpKeys(profile, a, b)), SrtpSession(SrtpKeys(profile, b, a))
    for _ in range(300):  # SRTCP index 1..300, far beyond libsrtp's 128-entry RTCP window
        server.unprotect_rtcp_untrusted(sender.protect_rtcp(rtcp_sr()))
    restarted = SrtpSession(SrtpKeys(profile, a, b))
    failures = 0
    for _ in range(REPLAY_RESET_THRESHOLD - 1):
        with pytest.raises(MalformedInput) as info:
            server.unprotect_rtcp_untrusted(restarted.protect_rtcp(rtcp_sr()))
        assert info.value.message.startswith("srtp replay old")
        failures += 1
    assert server.unprotect_rtcp_untrusted(restarted.protect_rtcp(rtcp_sr())) == rtcp_sr()
    assert (failures, server.replay_resets) == (REPLAY_RESET_THRESHOLD - 1, 1)


# -- interop with aiortc ---------------------------------------------------------------------


def test_interop_with_aiortc_client() -> None:
    """aiortc's own SSL context as DTLS client, our DtlsSession as server; SRTP with its keys."""
    theirs = RTCCertificate.generateCertificate()
    their_fp = [(f.algorithm, f.value) for f in theirs.getFingerprints()]
    server = DtlsSession(SERVER_CERT, role="server", remote_fingerprints=their_fp)
    server.start(0.0)
    conn = SSL.Connection(theirs._create_ssl_context(AIORTC_PROFILES), None)  # noqa: SLF001
    conn.set_connect_state()

    def their_step(incoming: list[bytes]) -> list[bytes]:
        for datagram in incoming:
            conn.bio_write(datagram)
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            pass
        out = []
        while True:
            try:
                out.append(conn.bio_read(1500))
            except SSL.WantReadError:
                return out

    to_server = their_step([])
    for _ in range(10):
        to_client = [d for datagram in to_server for d in server.receive_untrusted(datagram, 0.0)]
        if not to_client:
            break
        to_server = their_step(to_client)
    assert server.state == "connected"
    assert server.srtp_keys is not None
    assert server.srtp_keys.profile is AEAD_AES_128_GCM  # aiortc offers AES-256-GCM first
    # The client side of aiortc's _setup_srtp.
    profile = next(
        p for p in AIORTC_PROFILES if p.openssl_profile == conn.get_selected_srtp_profile()
    )
    view = conn.export_keying_material(
        b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length)
    )
    tx_policy = pylibsrtp.Policy(
        key=profile.get_key_and_salt(view, 0),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=profile.libsrtp_profile,
    )
    rx_policy = pylibsrtp.Policy(
        key=profile.get_key_and_salt(view, 1),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=profile.libsrtp_profile,
    )
    their_tx, their_rx = pylibsrtp.Session(tx_policy), pylibsrtp.Session(rx_policy)
    ours = SrtpSession(server.srtp_keys)
    for seq in range(3):
        assert ours.unprotect_rtp_untrusted(their_tx.protect(rtp(seq, size=1000))) == rtp(
            seq, size=1000
        )
    assert ours.unprotect_rtcp_untrusted(their_tx.protect_rtcp(rtcp_sr())) == rtcp_sr()
    assert their_rx.unprotect(ours.protect_rtp(rtp(9))) == rtp(9)


# -- fuzz ------------------------------------------------------------------------------------

_FUZZ_SRTP = srtp_pair()[1]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_only_malformed_input_escapes(data: bytes) -> None:
    server = DtlsSession(SERVER_CERT, role="server", remote_fingerprints=[("sha-256", "00")])
    server.start(0.0)
    for blob in (data, b"\x16\xfe\xfd" + bytes(8) + len(data).to_bytes(2, "big") + data):
        try:
            server.receive_untrusted(blob, 0.0)
        except MalformedInput:
            pass
        assert server.state in ("connecting", "failed")
    for unprotect in (_FUZZ_SRTP.unprotect_rtp_untrusted, _FUZZ_SRTP.unprotect_rtcp_untrusted):
        try:
            unprotect(data)
        except MalformedInput:
            pass
