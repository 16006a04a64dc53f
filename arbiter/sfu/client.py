"""PeerClient: the browser's side of one SFU transport, sans-IO (tests and `arbiter bench`).

A synthetic participant needs what a browser does against our ICE-lite DTLS-server
transports: send connectivity checks with USE-CANDIDATE as the controlling agent (RFC 8445
7.2.2; an ICE-lite peer never checks, so the full agent must), be the DTLS client
(`a=setup:active`, RFC 5763 5), and protect/unprotect SRTP with the exported keys. It is built
from the same sans-IO pieces the SFU uses, in the client role, and never touches a socket:
`receive_untrusted` takes a datagram and `now`, and returns the datagrams to send.
"""

from __future__ import annotations

import secrets

from ..errors import MalformedInput
from . import mux, stun
from .dtls import Certificate, DtlsSession
from .ice import random_pwd, random_ufrag
from .sdp import HOST_PRIORITY
from .srtp import SrtpSession

# A host candidate's priority as a browser computes it (RFC 8445 5.1.2.1): type preference 126.


class PeerClient:
    """Controlling full-ICE agent + DTLS (client by default) + SRTP for one SFU transport."""

    def __init__(
        self,
        certificate: Certificate,
        *,
        remote_ufrag: str,
        remote_pwd: str,
        remote_fingerprint: str,
        dtls_role: str = "client",
    ) -> None:
        self.certificate = certificate
        self.ufrag = random_ufrag()
        self.pwd = random_pwd()
        self.remote_ufrag = remote_ufrag
        self.remote_pwd = remote_pwd
        # The browser's usual role is the DTLS client (it answers `setup:active`); against a
        # server that answers our offer with `setup:active` (RFC 5763 5) we are the server.
        self.dtls = DtlsSession(
            certificate, role=dtls_role, remote_fingerprints=[("sha-256", remote_fingerprint)]
        )
        self.srtp: SrtpSession | None = None
        self.mapped_address: tuple[str, int] | None = None
        self._tie_breaker = secrets.randbits(64)

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint("sha-256")

    @property
    def connected(self) -> bool:
        return self.srtp is not None

    def binding_request(self, *, use_candidate: bool = True) -> bytes:
        _, datagram = stun.build_binding_request(
            self.remote_ufrag,
            self.ufrag,
            self.remote_pwd,
            use_candidate=use_candidate,
            controlling=True,
            priority=HOST_PRIORITY,
            tie_breaker=self._tie_breaker,
        )
        return datagram

    def start_dtls(self, now: float) -> list[bytes]:
        return self.dtls.start(now)

    def receive_untrusted(
        self, data: bytes, now: float, addr: tuple[str, int] | None = None
    ) -> list[bytes]:
        """A datagram from the SFU. STUN and DTLS flights; SRTP goes to `srtp`.

        A full agent answers the peer's checks too (RFC 8445 7.3): some servers (libnice, even
        in lite mode) send a triggered check and nominate only once it is answered.
        """
        kind = mux.classify(data)
        if kind == mux.STUN:
            if data[:2] == b"\x00\x01":  # a Binding request (RFC 5389 6)
                request = stun.parse_binding_request_untrusted(data, self.pwd)
                if request.local_ufrag != self.ufrag or addr is None:
                    raise MalformedInput("check for another agent")
                return [stun.binding_success(request, addr, self.pwd)]
            _, self.mapped_address = stun.parse_binding_response_untrusted(data, self.remote_pwd)
            return []
        if kind == mux.DTLS:
            out = self.dtls.receive_untrusted(data, now)
            if self.dtls.just_connected and self.dtls.srtp_keys is not None:
                self.srtp = SrtpSession(self.dtls.srtp_keys)
            return out
        raise MalformedInput("not STUN or DTLS")

    def handle_timeout(self, now: float) -> list[bytes]:
        deadline = self.dtls.next_timeout()
        if deadline is not None and now >= deadline:
            return self.dtls.handle_timeout(now)
        return []
