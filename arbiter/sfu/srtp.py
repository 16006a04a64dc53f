"""SRTP/SRTCP protection for one transport (RFC 3711, RFC 7714 AES-GCM), via pylibsrtp.

One libsrtp session unprotects everything the peer sends (any SSRC, streams created from the
SSRC_ANY_INBOUND template on the first authentic packet), one protects everything we send.

Hot path (docs/PROTOCOL.md section 4, "The forwarding loop"): `protect_rtp` / `protect_rtcp` are the bound
pylibsrtp methods themselves, no Python frame of ours in between. The unprotect path adds one
try/except and, only while some SSRC has pending replay failures, one dict truthiness check.

Replay-window reset. libsrtp estimates each packet's rollover counter (ROC) from its sequence
number relative to the highest index seen (RFC 3711 3.3.1 / appendix A). A packet whose estimated
index is more than the replay window behind is rejected "index too old", and so is every later
packet of that stream if the sender's sequence number moved so far that the estimate stays
behind. What we measured with libsrtp here:

- The sender restarts the stream (same SSRC and keys, new sequence number, ROC 0) more than the
  replay window below the highest index seen: every packet is "index too old" forever. Removing
  the stream makes libsrtp re-create it from the template and the restarted stream is accepted.
  This is the case the reset fixes.
- A stream that lost more than 32768 consecutive packets *and crossed a rollover* (the receiver's
  index was above 32768, the sender's is now in the next ROC) is also rejected "index too old";
  a reset turns that into "authentication failure" because a fresh libsrtp stream assumes ROC 0
  and the ROC is part of the authenticated data / IV. pylibsrtp exposes no srtp_set_stream_roc,
  so this case is not recoverable here (the burst still triggers a reset, which is harmless).
- A stream at ROC 0 that jumps forward any distance is accepted (libsrtp takes the sequence
  number as the index while the index is below 2^15), so loss alone below the first rollover
  never needs a reset.

A burst is `REPLAY_RESET_THRESHOLD` "index too old" failures in a row on one SSRC with no success
on that SSRC (RTP or RTCP) in between, so replaying a few old captured packets while the genuine
stream flows never resets it. Duplicates ("bad index") never count: resetting on those would let a
replayer through.

Only *authentic* "index too old" packets count. libsrtp checks the replay window before the
authentication tag, so without this anyone who can send from a participant's address (source
spoofing) could forge 64 packets with an old sequence number and a random tag, force a reset, and
after the stream's first rollover the fresh ROC-0 stream rejects every later genuine packet: the
publisher's stream would be dead for good (found by scripts/udp_blast.py's spoofing category). So
a packet that failed "index too old" is first authenticated on a probe session with the same keys
and no replay history (its per-SSRC state is removed after each probe): a restarted sender's
packets (ROC 0, the case the reset is for) authenticate there, forged ones do not.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pylibsrtp
from pylibsrtp import Policy, Session

from arbiter.errors import MalformedInput
from arbiter.sfu.dtls import SrtpKeys

# libsrtp's default replay window is 128 packets; video bursts reordered by a few hundred packets
# are legitimate, 1024 is what aiortc and browsers use.
REPLAY_WINDOW = 1024
# The outbound window must cover the router's whole retransmission cache (docs/PROTOCOL.md section 4): a
# NACK retransmission re-protects a packet up to a cache's length behind the newest (the router
# serves nothing further back: 1023 at most), and with allow_repeat_tx libsrtp still refuses
# anything older than the window ("index too old"; issue 9: with the default 128 a NACK for
# seq-200 raised out of the RTCP handler). Exactly the cache, no more: libsrtp allows up to
# 2^15 - 1, but the window is a bit vector shifted on every protect, so a larger one costs
# every forwarded packet (measured here, per 1200-byte protect: 2.12 us at 128, 2.19 at 1024,
# 2.23 at 2048, 3.87 at 32767).
TX_REPLAY_WINDOW = 1024
# What a bound `protect`/`protect_rtcp` raises: libsrtp's refusal, pylibsrtp's size limit.
PROTECT_ERRORS = (pylibsrtp.Error, ValueError, TypeError)
REPLAY_RESET_THRESHOLD = 64

# pylibsrtp.Error carries libsrtp's srtp_err_status_t text; map it to a countable reason.
_REASONS = {
    "authentication failure": "srtp auth",
    "replay check failed (bad index)": "srtp replay",
    "replay check failed (index too old)": "srtp replay old",
    "packet index is too old to consider": "srtp replay old",
}
_INDEX_TOO_OLD = "replay check failed (index too old)"

_SSRC = struct.Struct("!I")


def _error(exc: Exception) -> MalformedInput:
    text = str(exc)
    if isinstance(exc, ValueError):  # pylibsrtp: "packet is too long" (buffer is 1500 bytes)
        return MalformedInput(f"srtp oversize: {text}")
    reason = _REASONS.get(text, "srtp error")
    return MalformedInput(f"{reason}: {text}")


class SrtpSession:
    """SRTP for one DTLS-SRTP association: `keys.rx_key` inbound, `keys.tx_key` outbound."""

    protect_rtp: Callable[[bytes], bytes]
    protect_rtcp: Callable[[bytes], bytes]

    def __init__(self, keys: SrtpKeys) -> None:
        profile = keys.profile.libsrtp_profile
        rx_policy = Policy(key=keys.rx_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        rx_policy.window_size = REPLAY_WINDOW
        tx_policy = Policy(
            key=keys.tx_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
        # NACK retransmissions (RFC 4585) resend a packet with its original sequence number;
        # without this libsrtp refuses to protect the same index twice.
        tx_policy.allow_repeat_tx = True
        tx_policy.window_size = TX_REPLAY_WINDOW
        self.profile = keys.profile
        self._rx = Session(rx_policy)
        # Same keys, never keeps a stream: authenticates "index too old" packets (see above).
        self._probe = Session(rx_policy)
        self._tx = Session(tx_policy)
        # Bound methods, looked up once: the per-destination hot path is one C call.
        self.protect_rtp = self._tx.protect
        self.protect_rtcp = self._tx.protect_rtcp
        self._unprotect = self._rx.unprotect
        self._unprotect_rtcp = self._rx.unprotect_rtcp
        # SSRC -> consecutive "index too old" failures; only non-empty while a burst is pending.
        self._old_failures: dict[int, int] = {}
        self.replay_resets = 0

    def unprotect_rtp_untrusted(self, packet: bytes) -> bytes:
        """Verify and decrypt one SRTP packet; raises MalformedInput("srtp <reason>: ...")."""
        try:
            plain = self._unprotect(packet)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            return self._failed(packet, 8, self._unprotect, exc)
        if self._old_failures:
            self._old_failures.pop(_SSRC.unpack_from(packet, 8)[0], None)
        return plain

    def unprotect_rtcp_untrusted(self, packet: bytes) -> bytes:
        """Verify and decrypt one SRTCP compound packet; raises MalformedInput like above."""
        try:
            plain = self._unprotect_rtcp(packet)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            return self._failed(packet, 4, self._unprotect_rtcp, exc)
        if self._old_failures:
            self._old_failures.pop(_SSRC.unpack_from(packet, 4)[0], None)
        return plain

    def _failed(
        self, packet: bytes, ssrc_offset: int, unprotect: Callable[[bytes], bytes], exc: Exception
    ) -> bytes:
        if str(exc) != _INDEX_TOO_OLD or len(packet) < ssrc_offset + 4:
            raise _error(exc) from None
        ssrc = _SSRC.unpack_from(packet, ssrc_offset)[0]
        if not self._authentic(packet, ssrc, ssrc_offset == 4):
            raise _error(exc) from None  # forged: must not push the stream towards a reset
        count = self._old_failures.get(ssrc, 0) + 1
        if count < REPLAY_RESET_THRESHOLD:
            self._old_failures[ssrc] = count
            raise _error(exc) from None
        # The stream is stuck behind its own replay window: forget it, libsrtp re-creates it
        # from the SSRC_ANY_INBOUND template on the next authentic packet, and retry once.
        del self._old_failures[ssrc]
        self.replay_resets += 1
        try:
            self._rx.remove_stream(ssrc)
        except pylibsrtp.Error:
            pass  # no such stream: nothing to forget
        try:
            plain = unprotect(packet)
        except (pylibsrtp.Error, ValueError, TypeError) as exc2:
            raise _error(exc2) from None
        return plain

    def _authentic(self, packet: bytes, ssrc: int, is_rtcp: bool) -> bool:
        """Does `packet` carry a valid tag for our keys, replay history aside (ROC 0)?"""
        probe = self._probe
        try:
            (probe.unprotect_rtcp if is_rtcp else probe.unprotect)(packet)
            return True
        except (pylibsrtp.Error, ValueError, TypeError):
            return False
        finally:
            try:
                probe.remove_stream(ssrc)
            except pylibsrtp.Error:
                pass  # the probe created no stream (authentication failed before)
