"""Slow credential checks, done before a frame reaches the (synchronous) gateway.

Room passwords and moderator keys are stored as scrypt hashes (`arbiter.credentials`): checking
one takes ~30 ms of CPU. The gateway handles every frame synchronously, so it cannot wait for
that; instead the WebSocket session calls `prepare(peer, action, data)` on each decoded frame
before the gateway handles it, which, for an identify
carrying a password or moderator key and for a moderator setting a password, does the slow
part in a worker thread and leaves the result on the peer (`peer.verified`,
`peer.prepared_hash`). The gateway then only looks the result up (`matches`, `hashed`).

Work is bounded before it starts: frames reach `prepare` only after the connection's message
budget admitted them, an identify from an address out of failed-identify budget or a secret
longer than `MAX_SECRET_CHARS` costs no hashing, and at most `HASH_THREADS` hashes run at once.
A result `prepare` did not compute counts as "no match" (fail closed), so nothing a peer sends
can make the event loop hash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from . import protocol as p
from .credentials import MAX_SECRET_CHARS, fingerprint, hash_secret, verify_secret
from .errors import MalformedInput
from .limits import AddressLimiter
from .peer import Peer, RoomHooks

HASH_THREADS = 2


class AccessChecker:
    def __init__(
        self,
        hooks: RoomHooks,
        failed_identifies: AddressLimiter,
        monotonic: Callable[[], float],
    ) -> None:
        self.hooks = hooks
        self.failed_identifies = failed_identifies
        self.monotonic = monotonic
        self.limiter = trio.CapacityLimiter(HASH_THREADS)

    async def prepare(self, peer: Peer, action: str, data: dict[str, Any]) -> None:
        """Do the slow checks this decoded frame will need; never raises for bad input (the
        gateway answers that when it handles the frame)."""
        if action == "identify" and data.get("type") == "client":
            await self._prepare_identify(peer, data, self.monotonic())
        elif action == "moderate" and data.get("op") == "password" and peer.moderator:
            password = data.get("password")
            if _usable(password):
                assert isinstance(password, str)
                hashed = await self._run(hash_secret, password)
                peer.prepared_hash = (fingerprint(password), hashed)

    async def _prepare_identify(self, peer: Peer, data: dict[str, Any], now: float) -> None:
        peer.verified = {}
        if self.failed_identifies.exhausted(peer.client_key, now):
            return
        try:
            room_id = p.parse_room_id_untrusted(data.get("roomId"))
        except MalformedInput:
            return
        room = self.hooks.room(room_id)
        if room is None:
            return
        key = data.get("moderatorKey")
        if room.moderator_key_hash and _usable(key):
            assert isinstance(key, str)
            if await self._check(peer, "key", room.moderator_key_hash, key):
                return  # a moderator needs no password
        password = data.get("password")
        if room.password_hash and _usable(password):
            assert isinstance(password, str)
            await self._check(peer, "password", room.password_hash, password)

    async def _check(self, peer: Peer, kind: str, stored: str, secret: str) -> bool:
        ok = bool(await self._run(verify_secret, secret, stored))
        peer.verified[(kind, stored, fingerprint(secret))] = ok
        return ok

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)


def matches(peer: Peer, kind: str, stored: str, secret: Any) -> bool:
    """Did `prepare` find `secret` to match `stored`? Not checked: no (fail closed)."""
    if not _usable(secret):
        return False
    assert isinstance(secret, str)
    return peer.verified.get((kind, stored, fingerprint(secret)), False)


def hashed(peer: Peer, password: str) -> str:
    """The hash `prepare` computed for this password, or (callers that skip `prepare`: tests
    and in-process tools) one computed now."""
    prepared, peer.prepared_hash = peer.prepared_hash, None
    if prepared is not None and prepared[0] == fingerprint(password):
        return prepared[1]
    return hash_secret(password)


def _usable(secret: Any) -> bool:
    return isinstance(secret, str) and 0 < len(secret) <= MAX_SECRET_CHARS
