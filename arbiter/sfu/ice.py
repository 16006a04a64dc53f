"""ICE-lite responder for one WebRTC transport, sans-IO (RFC 8445 section 2.5, RFC 7675).

The SFU never sends connectivity checks: it has one host candidate per announced IP, the
browser (a full agent, always controlling against a lite peer, RFC 8445 section 6.1.1) sends
Binding requests, and we answer them. The first authenticated request carrying USE-CANDIDATE
nominates the address it came from; from then on, authenticated requests from that address are
consent refreshes (RFC 7675 section 5.1). A transport that hears none for `consent_timeout`
seconds has lost consent and is closed by its owner (RFC 7675 section 5.1: 30 s).

A later USE-CANDIDATE from a different address does not move the media by itself (docs/PROTOCOL.md
section 4, ICE-lite): it only makes that address `pending`. A STUN request proves knowledge of
the ice-pwd, not that the source address is the sender's own: anyone holding the credentials
(the participant itself, or whoever captured a check) can spoof the source and point a whole
subscription at a third party, and a lite agent never sends checks of its own that would
notice (RFC 7675 section 1 names exactly this attack on a sender without consent checks).
The owner calls `confirm(addr, now)` once authenticated SRTP/SRTCP (or, before any keys exist,
DTLS) arrives from the pending address; only then is it selected, at most once per
`switch_interval` seconds.

Time comes in as `now` (any monotonic clock, seconds); this module reads no clock.
"""

from __future__ import annotations

import secrets
import string

from arbiter.errors import MalformedInput
from arbiter.sfu.stun import (
    ROLE_CONFLICT,
    binding_error,
    binding_success,
    parse_binding_request_untrusted,
)

# ice-char = ALPHA / DIGIT / "+" / "/" (RFC 8445 section 5.3).
_ICE_CHARS = string.ascii_letters + string.digits + "+/"
# RFC 8445 section 5.3: ufrag >= 4 chars (24 bits), pwd >= 22 chars (128 bits). The ufrag is
# also how a datagram from an unknown address finds its transport, so make collisions between
# concurrent transports negligible (96 bits); the pwd is the HMAC key (192 bits).
UFRAG_LENGTH = 16
PWD_LENGTH = 32
# Transaction IDs remembered per transport: browsers check every few seconds and retransmit
# within half a second, so 64 covers every retransmission and minutes of history.
SEEN_TRANSACTIONS = 64
# At most one move of the selected address per second: a browser changes networks far less
# often, and an attacker who could confirm spoofed addresses can bounce the media at most that
# fast (docs/PROTOCOL.md section 4: switches are rate-limited and counted).
SWITCH_INTERVAL = 1.0

# `confirm` results.
SWITCHED = "switched"
DEFERRED = "deferred"  # the pending address is proven but the rate limit holds it back


def _random_ice_chars(length: int) -> str:
    # One byte per character, masked to 6 bits: uniform over the 64 ice-chars. A single
    # urandom read instead of one per character (every transport needs a ufrag and a pwd).
    return "".join(_ICE_CHARS[b & 63] for b in secrets.token_bytes(length))


def random_ufrag() -> str:
    """A fresh ice-ufrag (RFC 8445 section 5.3)."""
    return _random_ice_chars(UFRAG_LENGTH)


def random_pwd() -> str:
    """A fresh ice-pwd (RFC 8445 section 5.3), from `secrets` because it keys the HMAC."""
    return _random_ice_chars(PWD_LENGTH)


class IceLiteResponder:
    """Answers a browser's connectivity checks and tracks the nominated address and consent."""

    __slots__ = (
        "ufrag",
        "pwd",
        "remote_ufrag",
        "remote_pwd",
        "selected",
        "pending",
        "pending_consent",
        "last_switch",
        "switch_interval",
        "switches",
        "_deferred_reported",
        "last_consent",
        "consent_timeout",
        "created_at",
        "closed",
        "_seen",
    )

    def __init__(
        self,
        *,
        ufrag: str | None = None,
        pwd: str | None = None,
        consent_timeout: float = 30.0,
        created_at: float = 0.0,
        switch_interval: float = SWITCH_INTERVAL,
    ) -> None:
        self.ufrag: str = ufrag if ufrag is not None else random_ufrag()
        self.pwd: str = pwd if pwd is not None else random_pwd()
        # Learned from the remote SDP. Checks may arrive before it (we offered, the answer is
        # still in flight on the signaling channel), so an unknown remote ufrag is accepted.
        self.remote_ufrag: str | None = None
        # Kept for completeness: a lite agent never sends requests, so it never signs with it.
        self.remote_pwd: str | None = None
        self.selected: tuple[str, int] | None = None
        # A nominated address media does not follow yet (module docstring), and when its last
        # authenticated check came: consent for it once it is confirmed.
        self.pending: tuple[str, int] | None = None
        self.pending_consent = 0.0
        self.last_switch = float("-inf")
        self.switch_interval = switch_interval
        self.switches = 0
        self._deferred_reported = False
        self.last_consent: float | None = None
        self.consent_timeout = consent_timeout
        self.created_at = created_at
        self.closed = False
        # Recent transaction IDs and where they came from. A request is authenticated but not
        # fresh: anyone who captured one could replay it from their own address and, with
        # USE-CANDIDATE, steer the media there. A repeat from the same address is a
        # retransmission (RFC 5389 7.2.1: answer it again); from another address, a replay.
        self._seen: dict[bytes, tuple[str, int]] = {}

    def set_remote(self, ufrag: str, pwd: str) -> None:
        """The remote ice-ufrag/ice-pwd from its SDP (RFC 8839 section 5.4)."""
        self.remote_ufrag = ufrag
        self.remote_pwd = pwd

    def restart(
        self,
        now: float,
        *,
        ufrag: str | None = None,
        pwd: str | None = None,
        remote_ufrag: str | None = None,
        remote_pwd: str | None = None,
    ) -> None:
        """An ICE restart (RFC 8445 section 9): a new ICE session on the same transport.

        Our credentials become `ufrag`/`pwd` (fresh ones unless given: the answerer of a
        restart-less offer keeps its own), the remote's those of its new SDP (None until known,
        like a first offer). Checks of the old session no longer authenticate, nomination and
        consent start over (the consent clock from `now`), remembered transactions are
        forgotten. The owner keeps sending media to the old address until the new session
        nominates one (the first nomination is taken as it comes, as on a new transport), so a
        restart costs no media while it runs. Switch accounting (`last_switch`) is kept.
        """
        self.ufrag = ufrag if ufrag is not None else random_ufrag()
        self.pwd = pwd if pwd is not None else random_pwd()
        self.remote_ufrag = remote_ufrag
        self.remote_pwd = remote_pwd
        self.selected = None
        self.pending = None
        self.pending_consent = 0.0
        self._deferred_reported = False
        self.last_consent = None
        self.created_at = now
        self._seen.clear()

    def handle_request_untrusted(
        self, data: bytes, addr: tuple[str, int], now: float
    ) -> tuple[bytes, bool]:
        """Verify a Binding request from `addr`: (response datagram, selected address changed).

        Raises MalformedInput (drop the datagram, send nothing) when the request fails
        authentication, is not for this transport, or the transport is closed.
        """
        if self.closed:
            raise MalformedInput("ICE transport closed")
        request = parse_binding_request_untrusted(data, self.pwd)
        # RFC 8445 section 7.3: USERNAME must be "OURS:THEIRS". The HMAC already proves the
        # sender knows our pwd; the ufrag check keeps a stale session's checks (after an ICE
        # restart, RFC 8445 section 9) from refreshing this one.
        if request.local_ufrag != self.ufrag:
            raise MalformedInput("USERNAME is not for this ICE transport")
        if self.remote_ufrag is not None and request.remote_ufrag != self.remote_ufrag:
            raise MalformedInput("USERNAME remote ufrag does not match the remote SDP")
        host, port = addr[0], addr[1]
        source = (host, port)
        first_from = self._seen.get(request.transaction_id)
        if first_from is not None:
            if first_from != source:
                raise MalformedInput("replayed STUN transaction from another address")
            # A retransmission: same answer, no second nomination or consent refresh.
            return binding_success(request, source, self.pwd), False
        if len(self._seen) >= SEEN_TRANSACTIONS:
            del self._seen[next(iter(self._seen))]  # oldest first (dicts keep order)
        self._seen[request.transaction_id] = source
        if request.controlling is False:
            # The peer claims the controlled role too. A lite agent cannot switch to
            # controlling (RFC 8445 section 6.1.1), so it answers 487 Role Conflict
            # (RFC 8445 section 7.3.1.1) and neither selects nor refreshes on it.
            return binding_error(request, ROLE_CONFLICT, "Role Conflict", self.pwd), False
        changed = False
        if request.use_candidate:
            if self.selected is None:
                # RFC 8445 section 7.3.1.5 (regular nomination): the controlling agent picks
                # the pair; the first nomination is taken as it comes (nothing is flowing yet).
                self.selected = source
                changed = True
            elif source != self.selected:
                # The browser's network changed or it renominated, or someone holding the
                # credentials spoofs the source: pending until its media proves it.
                if source != self.pending:
                    self.pending = source
                    self._deferred_reported = False
                self.pending_consent = now
            else:
                self.pending = None  # renominated the selected pair: nothing to move
        elif source == self.pending:
            self.pending_consent = now
        if source == self.selected:
            # RFC 7675 section 5.1: an authenticated check on the selected pair is consent.
            self.last_consent = now
        # Requests from other addresses without USE-CANDIDATE are plain connectivity checks
        # (RFC 8445 section 7.3.1.4): answered so the browser can validate the pair, no more.
        return binding_success(request, source, self.pwd), changed

    def confirm(self, addr: tuple[str, int], now: float) -> str:
        """Authenticated SRTP/SRTCP (or pre-keys DTLS) came from `addr`: select it if pending.

        Returns SWITCHED when the selection moved; DEFERRED, once per pending address, when
        the rate limit holds the move back (later calls switch once it allows); "" otherwise.
        """
        if addr != self.pending or self.closed:
            return ""
        if now - self.last_switch < self.switch_interval:
            if self._deferred_reported:
                return ""
            self._deferred_reported = True
            return DEFERRED
        self.selected, self.pending = addr, None
        self.last_switch = now
        self.switches += 1
        # RFC 7675 section 5.1: the authenticated check that nominated it is consent for it.
        self.last_consent = max(self.last_consent or 0.0, self.pending_consent)
        return SWITCHED

    def consent_expired(self, now: float) -> bool:
        """RFC 7675 section 5.1: no consent for `consent_timeout` seconds (or closed).

        Before any nomination the clock runs from creation, so a transport the browser never
        reaches is reaped too.
        """
        if self.closed:
            return True
        if self.selected is None or self.last_consent is None:
            return now - self.created_at > self.consent_timeout
        return now - self.last_consent > self.consent_timeout

    def close(self) -> None:
        """Stop answering; idempotent. `selected` stays readable so the owner can drop its
        routing entries for it and for `ufrag`."""
        self.closed = True
