"""Error logging at a bounded rate for the media plane.

A remote peer can make the same unexpected error happen once per datagram (issue 9: a NACK for
a packet older than the SRTP window wrote a 1,148-byte traceback per 44-byte datagram). The
error is always counted by the caller; the log gets at most one line per `interval` seconds per
kind, carrying how many were suppressed since the previous one, so a flood costs a few lines a
minute while a real bug still shows its traceback.

Sans-IO like the rest of the media core: the caller passes `now`.
"""

from __future__ import annotations

import logging

LOG_INTERVAL = 10.0  # seconds between two log lines of one kind
MAX_KINDS = 256  # kinds are our own strings; the cap only guards against a bug of ours


class RateLimitedLog:
    """`exception(kind, now, message, *args)`: log with traceback, at most once per interval."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def exception(self, kind: str, now: float, message: str, *args: object) -> bool:
        """Call from an `except` block. Returns whether a line was written."""
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        if last is None and len(self._last) >= MAX_KINDS:
            self._last.clear()
            self._suppressed.clear()
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d more like it since the last one)"
            args = (*args, suppressed)
        self.logger.exception(message, *args)
        return True
