"""Per-address budgets (docs/PROTOCOL.md sections 2 and 3): who a request counts against, and
buckets.

Every per-address budget (createRoom and new urlPath bindings, getRoomId misses, refused
identifies) is keyed by `client_key_untrusted`, and applies to loopback clients too: only
`limits.trusted_proxies` changes which address counts.
"""

from __future__ import annotations

import ipaddress
import math

from .protocol import TokenBucket

# Per-address buckets kept at most before idle (full) ones are forgotten.
MAX_TRACKED_ADDRESSES = 10_000


def client_key_untrusted(
    remote_addr: str | None, forwarded_for: str | None, trusted_proxies: list[str]
) -> str:
    """The address a per-client limit is keyed by.

    Behind a trusted proxy, the last X-Forwarded-For entry (the one the proxy itself appended;
    earlier entries are whatever the client claimed). IPv6 addresses are keyed by their /64: one
    host commonly owns a whole /64, so per-address keys would let it mint fresh budgets.
    """
    addr = (remote_addr or "").strip()
    if forwarded_for and in_networks(addr, trusted_proxies):
        addr = forwarded_for.split(",")[-1].strip()
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr[:64]  # not an IP (a unix socket, a proxy's garbage): key it as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class AddressLimiter:
    """One TokenBucket per client key, with a bounded table (full buckets are forgotten)."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = per_minute
        self.buckets: dict[str, TokenBucket] = {}

    def retry_after(self, key: str, now: float) -> int:
        """0 if the request may go ahead (a token is taken), else whole seconds to wait."""
        if self.burst <= 0:
            return 0
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_TRACKED_ADDRESSES:
                # A full bucket is the same as no bucket: dropping those loses nothing.
                self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now)}
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        if bucket.take(now):
            return 0
        return max(1, math.ceil(bucket.wait_time(now)))

    def exhausted(self, key: str, now: float) -> bool:
        """True when `key` has no token left (nothing is taken)."""
        if self.burst <= 0:
            return False
        bucket = self.buckets.get(key)
        return bucket is not None and bucket.wait_time(now) > 0

    def wait(self, key: str, now: float) -> int:
        """Whole seconds until `key` has a token again (at least 1)."""
        bucket = self.buckets.get(key)
        return max(1, math.ceil(bucket.wait_time(now))) if bucket else 1


def in_networks(addr: str | None, networks: list[str]) -> bool:
    """Is the socket address `addr` inside one of `networks` (config-checked CIDRs)."""
    try:
        ip = ipaddress.ip_address((addr or "").strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)
