"""Room passwords and moderator keys: generated, hashed slowly, compared in constant time.

Only scrypt hashes are stored (RFC 7914; N=2^14, r=8, p=1: about 30 ms and 16 MiB here), each
with its own random 16-byte salt, so one room's hashes say nothing about another's and a stolen
database costs an attacker 30 ms per guess per room. Hashing runs in a worker thread
(`trio.to_thread`) so a join never stalls the event loop; the caller bounds how many run at
once. A moderator key is 192 random bits: a slow hash is more than it needs, but one rule for
every secret we keep is easier to get right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_MAXMEM = 64 * 1024 * 1024
_PREFIX = "scrypt"

# Longest password accepted anywhere (HTTP, WebSocket, admin): bounded work per attempt.
MAX_SECRET_CHARS = 128


def new_moderator_key() -> str:
    """A moderator key: 192 random bits, URL-safe (it travels in a #mod= fragment)."""
    return secrets.token_urlsafe(24)


def hash_secret(secret: str, *, n: int = SCRYPT_N) -> str:
    """`scrypt$N$r$p$salt$digest` (base64) for `secret`, with a fresh random salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=_MAXMEM, dklen=32
    )
    return "$".join([_PREFIX, str(n), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_secret(secret: str, stored: str) -> bool:
    """Does `secret` match the stored hash? Constant-time comparison; False on a bad record."""
    try:
        prefix, n, r, p, salt, digest = stored.split("$")
        if prefix != _PREFIX:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def fingerprint(secret: str) -> str:
    """A fast digest naming a secret in memory (never stored): keys a verification result."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
