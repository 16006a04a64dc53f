"""The few exceptions Arbiter raises, each carrying an HTTP status hint.

`PeerError` and its subclasses are the remote peer's fault (4xx): bad input, missing rights,
unknown names. `ServerFault` is ours (500). `Unavailable` is a transient condition on our side
(503). Every function that parses network input (its name ends in `_untrusted`) raises only
`MalformedInput`, so the I/O edge can drop and count bad packets with one `except`.
"""

from __future__ import annotations


class ArbiterError(Exception):
    """Base of every error Arbiter raises on purpose."""

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class PeerError(ArbiterError):
    """The remote peer sent something we refuse (4xx)."""

    status = 400


class BadRequest(PeerError):
    status = 400


class Unauthorized(PeerError):
    """A credential is needed (a password-protected room)."""

    status = 401


class Forbidden(PeerError):
    status = 403


class NotFound(PeerError):
    status = 404


class Conflict(PeerError):
    status = 409


class TooManyRequests(PeerError):
    status = 429


class MalformedInput(PeerError):
    """Raised by every `*_untrusted` parser: the bytes are not what the protocol allows."""

    status = 400


class Unavailable(ArbiterError):
    """A transient condition on our side: try again later (503)."""

    status = 503


class ServerFault(ArbiterError):
    """Our fault (500): a bug or a resource we could not get."""

    status = 500
