"""Seeds, mutators and stateful receivers for the parser fuzzer (`arbiter.testing.fuzz`), the
dispatch fuzzer (`arbiter.testing.fuzz_dispatch`) and the UDP blast (`arbiter.testing.udp_blast`).

Seeds are recorded or real: Chrome's STUN checks (tests/data/stun_chrome.json), the recorded
Chrome and aiortc offers, an answer produced by the bench's subscriber from a real consumer
offer, RTP over recorded Opus/VP8 payloads (tests/data/media.bin), RTCP from arbiter.sfu.rtcp's
builders, DTLS records captured from an in-memory handshake between two `DtlsSession`s, and
SRTP/SRTCP protected with real keys. Mutators are seeded `random.Random`s: reproducible runs.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from random import Random

from aioice import stun as aioice_stun

from arbiter.bench import payloads, sdp_client
from arbiter.sfu import rtcp, rtp, sdp, stun
from arbiter.sfu.dtls import SRTP_PROFILES, Certificate, DtlsSession, SrtpKeys
from arbiter.sfu.srtp import SrtpSession

from . import rtcp_reader

DATA = payloads.DATA_FILE.parent  # tests/data
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING16 = (0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x0100, 0x00FF)

# -- generic byte mutations ------------------------------------------------------------------


def mutate_bytes(rng: Random, data: bytes, splice: list[bytes] | None = None) -> bytes:
    """1..4 havoc-style edits: flips, interesting values, 16-bit length fields, insertions,
    deletions, truncation, duplication and splicing with another seed."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        n = len(buf)
        if op == 0 and n:
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2 and n:
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 3 and n >= 2:
            i = rng.randrange(n - 1)
            buf[i:i + 2] = rng.choice(INTERESTING16).to_bytes(2, "big")
        elif op == 4:
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 16)) if rng.random() < 0.5 else bytes(
                [rng.choice(INTERESTING)]) * rng.randint(1, 64)  # fmt: skip
        elif op == 5 and n:
            i = rng.randrange(n)
            del buf[i:i + rng.randint(1, 16)]
        elif op == 6 and n:
            del buf[rng.randrange(n + 1):]
        elif op == 7 and n:
            i = rng.randrange(n)
            chunk = buf[i:i + rng.randint(1, 32)]
            j = rng.randrange(n + 1)
            buf[j:j] = chunk
        elif op == 8 and splice:
            other = rng.choice(splice)
            buf = buf[:rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1):]
        elif op == 9 and n >= 4:
            i = rng.randrange(n - 3)
            buf[i:i + 4] = rng.randrange(1 << 32).to_bytes(4, "big")
    return bytes(buf)


# -- STUN ------------------------------------------------------------------------------------


def sign_stun(body: bytes, pwd: str, fingerprint: bool = True) -> bytes:
    """Append MESSAGE-INTEGRITY (HMAC-SHA1 with the ice-pwd, RFC 5389 15.4) and FINGERPRINT
    (15.5) to a header + attributes body, fixing the header length as a sender would."""
    body = body[:20].ljust(20, b"\0") + body[20:]
    body += b"\0" * (-len(body) % 4)
    mi = aioice_stun.message_integrity(body, pwd.encode())
    data = body + b"\x00\x08\x00\x14" + mi
    if fingerprint:
        data += b"\x80\x28\x00\x04" + struct.pack("!I", aioice_stun.message_fingerprint(data))
    return aioice_stun.set_body_length(data, len(data) - 20)


def stun_from_parts(parts: tuple[bytes, bytes, list[bytes], bool]) -> bytes:
    """Hypothesis: message type, 12-byte transaction id, attribute TLVs, sign with the
    recorded password or leave unsigned."""
    msg_type, txid, tlvs, signed = parts
    attrs = b"".join(tlvs)
    body = msg_type + struct.pack("!H", len(attrs)) + b"\x21\x12\xa4\x42" + txid + attrs
    return sign_stun(body, Corpus.RECORDED_PWD) if signed else body


def _stun_body(message: bytes) -> bytes:
    """The message without its trailing MESSAGE-INTEGRITY + FINGERPRINT (24 + 8 bytes)."""
    return message[:-32] if len(message) > 52 and message[-8:-4] == b"\x80\x28\x00\x04" else message


# -- DTLS ------------------------------------------------------------------------------------


def dtls_handshake(server_cert: Certificate, client_cert: Certificate
                   ) -> tuple[DtlsSession, DtlsSession, list[bytes]]:  # fmt: skip
    """A complete in-memory DTLS-SRTP handshake; returns (server, client, client datagrams)."""
    server = DtlsSession(server_cert, role="server",
                         remote_fingerprints=[("sha-256", client_cert.fingerprint())])  # fmt: skip
    client = DtlsSession(client_cert, role="client",
                         remote_fingerprints=[("sha-256", server_cert.fingerprint())])  # fmt: skip
    sent: list[bytes] = []
    to_server = client.start(0.0)
    for _ in range(10):  # a DTLS 1.2 handshake is 4 flights
        sent += to_server
        to_client = [d for x in to_server for d in server.receive_untrusted(x, 0.0)]
        to_server = [d for x in to_client for d in client.receive_untrusted(x, 0.0)]
        if server.state == client.state == "connected" and not to_server:
            break
    if server.state != "connected" or client.state != "connected":
        raise RuntimeError(f"in-memory handshake failed: {server.state} {client.state}")
    return server, client, sent


@dataclass
class Corpus:
    RECORDED_PWD = json.loads((DATA / "stun_chrome.json").read_text())["local_pwd"]

    local_ufrag: str
    local_pwd: str
    remote_ufrag: str
    stun_requests: list[bytes]
    stun_responses: list[bytes]
    rtp_packets: list[bytes]
    rtcp_compounds: list[bytes]
    offers: list[str]
    answer: str
    local_params: sdp.LocalParams
    dtls_records: list[bytes]
    server_cert: Certificate
    client_cert: Certificate

    @classmethod
    def load(cls) -> Corpus:
        rec = json.loads((DATA / "stun_chrome.json").read_text())
        requests = [bytes.fromhex(r["hex"]) for r in rec["requests"]]
        for use_candidate in (False, True):
            requests.append(stun.build_binding_request(
                rec["local_ufrag"], rec["remote_ufrag"], rec["local_pwd"],
                use_candidate=use_candidate, controlling=True, priority=1 << 30,
                tie_breaker=12345)[1])  # fmt: skip
        responses = []
        for r in requests:
            request = stun.parse_binding_request_untrusted(r, rec["local_pwd"])
            responses.append(stun.binding_success(request, ("192.0.2.2", 37231), rec["local_pwd"]))
        server_cert, client_cert = Certificate.generate(), Certificate.generate()
        local = sdp.LocalParams("ArbiterFuzzUfrag", "ArbiterFuzzPassword0123456789+/ab",
                                server_cert.fingerprint(), [("127.0.0.1", 40000)])  # fmt: skip
        offers = [(DATA / "chrome_offer.sdp").read_text(), (DATA / "aiortc_offer.sdp").read_text()]
        _, tracks = sdp.build_producer_answer(sdp.parse_offer_untrusted(offers[0]), local)
        consumer_offer = sdp.build_consumer_offer(tracks, local, session_id=1, version=1)
        answer = sdp_client.build_subscriber_answer(
            consumer_offer, "FuzzUfrag", "FuzzPassword0123456789+/", client_cert.fingerprint(),
            candidate=("192.0.2.2", 40000))  # fmt: skip
        _, client, sent = dtls_handshake(server_cert, client_cert)
        client._ssl.send(b"\x13\x88\x13\x88 sctp-looking application data")  # epoch 1 data
        records = sent + client._drain() + client.close()
        return cls(rec["local_ufrag"], rec["local_pwd"], rec["remote_ufrag"], requests, responses,
                   _rtp_seeds(), _rtcp_seeds(), offers, answer, local, records, server_cert,
                   client_cert)  # fmt: skip

    # -- mutators ------------------------------------------------------------------------

    def stun_mutator(self, seeds: list[bytes], pwd: str = "", ufrag: str = ""
                     ) -> Callable[[Random], bytes]:  # fmt: skip
        """Mutations of `seeds`, most re-signed with `pwd` (default: the recorded one)."""
        bodies = [_stun_body(s) for s in seeds]
        pwd = pwd or self.local_pwd
        ufrag = ufrag or self.local_ufrag

        def mutate(rng: Random) -> bytes:
            i = rng.randrange(len(seeds))
            roll = rng.random()
            if roll < 0.35:
                return mutate_bytes(rng, seeds[i], seeds)
            if roll < 0.8:  # hostile attributes behind a valid MESSAGE-INTEGRITY
                body = mutate_bytes(rng, bodies[i], bodies)
                data = sign_stun(body, pwd if rng.random() < 0.9 else "wrong" + pwd)
                return mutate_bytes(rng, data) if rng.random() < 0.1 else data
            # A well-formed check with a random USERNAME, signed (unknown or odd ufrags).
            name = rng.choice([rng.randbytes(rng.randint(0, 40)).hex(), "a" * rng.randint(0, 600),
                               f"{ufrag}:", f"{ufrag}:{ufrag}", ":x", "\u00e9:\u00e9", "a:b:c"])  # fmt: skip
            value = name.encode()
            attr = struct.pack("!HH", 0x0006, len(value)) + value + b"\0" * (-len(value) % 4)
            head = bodies[i][:20]
            return sign_stun(head + attr + bodies[i][20:][rng.randrange(8) * 4:], pwd)

        return mutate

    def rtp_mutator(self) -> Callable[[Random], bytes]:
        seeds = self.rtp_packets

        def mutate(rng: Random) -> bytes:
            packet = bytearray(rng.choice(seeds))
            if rng.random() < 0.5:  # header surgery: V/P/X/CC, extension length, padding
                packet[0] = 0x80 | rng.randrange(64)
                if len(packet) > 15 and rng.random() < 0.5:
                    packet[14:16] = rng.choice(INTERESTING16 + (1, 2, 3)).to_bytes(2, "big")
                if rng.random() < 0.3:
                    packet[-1] = rng.choice(INTERESTING)
            return mutate_bytes(rng, bytes(packet), seeds) if rng.random() < 0.7 else bytes(packet)

        return mutate

    def rtcp_mutator(self) -> Callable[[Random], bytes]:
        seeds = self.rtcp_compounds

        def mutate(rng: Random) -> bytes:
            data = b"".join(rng.choice(seeds) for _ in range(rng.randint(1, 3)))
            data = mutate_bytes(rng, data, seeds)
            if rng.random() < 0.5 and len(data) >= 4:  # re-frame: length field matches again
                data = data[:2] + struct.pack("!H", (len(data) + 3) // 4 - 1) + data[4:]
                data += b"\0" * (-len(data) % 4)
            return data

        return mutate

    def sdp_mutator(self, seeds: list[str]) -> Callable[[Random], str]:
        seed_lines = [s.split("\r\n") for s in seeds]
        pool = sorted({line for lines in seed_lines for line in lines})
        junk = ["a=", "a=:", "m=", "a=rtpmap:", "a=fmtp:96 " + "x" * 600, "a=ssrc:4294967296 x",
                "a=extmap:256 u", "a=group:BUNDLE", "a=mid:" + "m" * 20, "m=video 70000 x 1",
                "a=fingerprint:sha-256 zz", "a=setup:passive", "a=ice-lite", "\x00", "é=é",
                "a=rtcp-fb:* nack", "a=ssrc-group:FID 1", "m=audio 9 UDP/TLS/RTP/SAVPF"]  # fmt: skip

        def mutate(rng: Random) -> str:
            lines = list(rng.choice(seed_lines))
            for _ in range(rng.randint(1, 4)):
                op = rng.randrange(7)
                i = rng.randrange(len(lines) + 1)
                if op == 0 and lines:
                    del lines[min(i, len(lines) - 1)]
                elif op == 1:
                    lines.insert(i, rng.choice(pool))
                elif op == 2:
                    lines.insert(i, rng.choice(junk))
                elif op == 3 and lines:
                    j = min(i, len(lines) - 1)
                    raw = mutate_bytes(rng, lines[j].encode())
                    lines[j] = raw.decode("utf-8", "replace")
                elif op == 4 and lines:
                    j = min(i, len(lines) - 1)
                    head, _, _ = lines[j].partition(":")
                    lines[j] = head + ":" + rng.choice(pool).partition(":")[2]
                elif op == 5 and lines:
                    lines = lines * rng.randint(2, 20)  # size limits and section counts
                elif op == 6 and len(lines) > 1:
                    j = rng.randrange(len(lines))
                    lines[i % len(lines)], lines[j] = lines[j], lines[i % len(lines)]
            sep = rng.choice(["\r\n", "\r\n", "\n", "\r"])
            return sep.join(lines) + sep

        return mutate

    def dtls_mutator(self) -> Callable[[Random], bytes]:
        seeds = self.dtls_records

        def mutate(rng: Random) -> bytes:
            data = mutate_bytes(rng, rng.choice(seeds), seeds)
            if rng.random() < 0.5 and len(data) >= 13:  # keep the record framing valid
                data = data[:11] + struct.pack("!H", len(data) - 13) + data[13:]
            return data

        return mutate

    # -- stateful receivers --------------------------------------------------------------

    def dtls_receiver(self) -> Callable[[bytes], object]:
        """DtlsSession.receive_untrusted in the state the record's epoch suggests: a
        ClientHello goes to a fresh server, other epoch-0 records to a server that processed
        the genuine ClientHello, epoch >= 1 to an established association. A session that
        failed is replaced; failing is an allowed outcome, raising is not."""
        hello = self.dtls_records[0]
        sessions: dict[str, DtlsSession] = {}

        def fresh_server() -> DtlsSession:
            return DtlsSession(self.server_cert, role="server",
                               remote_fingerprints=[("sha-256", self.client_cert.fingerprint())])

        def receive(data: bytes) -> object:
            epoch = data[3:5] if len(data) >= 5 else b"\0\0"
            if epoch != b"\0\0":
                s = sessions.get("connected")
                if s is None or s.state != "connected":
                    s = sessions["connected"] = dtls_handshake(self.server_cert,
                                                               self.client_cert)[0]
            elif len(data) > 13 and data[13] == 1:
                s = fresh_server()
            else:
                s = sessions.get("connecting")
                if s is None or s.state != "connecting":
                    s = sessions["connecting"] = fresh_server()
                    s.receive_untrusted(hello, 0.0)
            return s.receive_untrusted(data, 0.0)

        return receive

    def srtp_pair(self, profile_index: int) -> tuple[SrtpSession, SrtpSession]:
        """(sender, receiver) sharing fresh keys for SRTP_PROFILES[profile_index]."""
        profile = SRTP_PROFILES[profile_index]
        key = os.urandom(profile.key_length + profile.salt_length)
        other = os.urandom(len(key))
        return (SrtpSession(SrtpKeys(profile, tx_key=key, rx_key=other)),
                SrtpSession(SrtpKeys(profile, tx_key=other, rx_key=key)))  # fmt: skip

    def srtp_target(self, profile_index: int, rtcp_: bool
                    ) -> tuple[Callable[[bytes], object], Callable[[Random], bytes], list[bytes]]:  # fmt: skip
        """(unprotect call, mutator, seed packets) for one profile and RTP or RTCP."""
        sender, receiver = self.srtp_pair(profile_index)
        protect = sender.protect_rtcp if rtcp_ else sender.protect_rtp
        plain = self.rtcp_compounds if rtcp_ else self.rtp_packets
        seeds = [protect(p) for p in plain]
        unprotect = receiver.unprotect_rtcp_untrusted if rtcp_ else receiver.unprotect_rtp_untrusted
        plain_mutate = self.rtcp_mutator() if rtcp_ else self.rtp_mutator()
        counter = [0]

        def mutate(rng: Random) -> bytes:
            roll = rng.random()
            if roll < 0.4:  # tampered ciphertext or tag, bad headers, truncation
                return mutate_bytes(rng, rng.choice(seeds), seeds)
            if roll < 0.5:  # a replay of a captured packet
                return rng.choice(seeds)
            # Hostile plaintext protected with the right keys: authenticated, still untrusted.
            body = plain_mutate(rng)
            if not rtcp_ and len(body) >= 4 and rng.random() < 0.8:
                counter[0] += 1  # a fresh sequence number so the replay window lets it in
                body = body[:2] + struct.pack("!H", counter[0] & 0xFFFF) + body[4:]
            try:
                return protect(body)
            except (ValueError, TypeError, Exception):  # libsrtp refuses what it cannot frame
                return body

        return unprotect, mutate, seeds


def _rtp_seeds() -> list[bytes]:
    recording = payloads.load()
    out = []
    for i, packet in enumerate(recording.audio[:20]):
        out.append(rtp.build_rtp(111, i, i * 960, 0x1111, packet.payload,
                                 extensions={1: b"0", 2: bytes([0x80 | i])}))  # fmt: skip
    for i, frame in enumerate(recording.video[:4]):
        for j, packet in enumerate(frame[:4]):
            payload = packet.payload[:rtp_size(i, j)]
            out.append(rtp.build_rtp(96, i * 10 + j, i * 3000, 0x2222, payload,
                                     marker=packet.marker, extensions={1: b"1", 3: b"\1\2\3"}))
            out.append(rtp.build_rtp(97, j, i * 3000, 0x3333, struct.pack("!H", j) + payload))
    plain = rtp.build_rtp(96, 7, 0, 0x2222, b"payload")
    csrc = bytes([0x82]) + plain[1:12] + struct.pack("!II", 1, 2) + plain[12:]
    padded = bytes([0xA0]) + plain[1:] + b"\0\0\3"
    two_byte = bytes([0x90]) + plain[1:12] + struct.pack("!HH", 0x1000, 1) + b"\x05\x01\x07\0"
    return out + [plain, csrc, padded, two_byte]


def rtp_size(i: int, j: int) -> int:
    return 200 + 300 * ((i + j) % 4)


def _rtcp_seeds() -> list[bytes]:
    block = rtcp.ReportBlock(0x2222, 12, -3, 70000, 40, 0x12345678, 65536)
    twcc = (struct.pack("!BBHII", 0x8F, 205, 7, 1, 0x2222) + struct.pack("!HHI", 10, 9, 0x123401)
            + struct.pack("!H", 0x2009) + bytes([4] * 9) + b"\0")  # 9 small deltas, padded
    return [
        rtcp.build_sender_report(0x2222, rtcp.ntp_from_unix(1.7e9), 90000, 10, 1000, [block]),
        rtcp.build_receiver_report(0x9999, [block, block]),
        rtcp.build_receiver_report(0x9999, []) + rtcp.build_sdes(0x9999, "cname-fuzz"),
        rtcp_reader.build_bye([0x2222, 0x1111]),
        rtcp.build_pli(0x9999, 0x2222),
        rtcp_reader.build_fir(0x9999, 0x2222, 3),
        rtcp.build_nack(0x9999, 0x2222, [1, 2, 5, 17, 40, 65535]),
        rtcp.build_remb(0x9999, 1_500_000, [0x2222, 0x1111]),
        twcc,
    ]
