"""A token bucket: the pure rate limiter the gateway, the HTTP API and the SFU share."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second up to `burst`; each admitted event takes one.

    Pure: the caller passes a monotonic `now`, so tests drive it without a clock. Starts full,
    so a client's first burst (identify, offers, answers) is never refused.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_time(self, now: float) -> float:
        """Seconds until `take` would succeed (0 when it would now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst
