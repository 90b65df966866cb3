"""Handshake rates through the ``limits`` library's moving window, for every store.

The stores differ only in the ``limits`` storage they hand over (memory or Redis). ``limits``
is imported when the first rate limiter is built, never at import time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Rate", "RateLimiter", "parse_rate", "require_limits"]

_INSTALL = "pip install 'asgi-ws-handshake[limits]'"


def require_limits(what: str) -> Any:
    """Import ``limits`` or raise an ``ImportError`` saying which extra to install."""
    try:
        import limits
    except ImportError as exc:
        raise ImportError(f"{what} needs the limits package: {_INSTALL}") from exc
    return limits


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` handshakes per ``window`` seconds."""

    limit: int
    window: int


def parse_rate(value: str, option: str = "rate") -> Rate:
    """Parse one rate in the ``limits`` notation (``"30/minute"``, ``"5 per 10 seconds"``).

    Raises:
        ValueError: naming the value when it is not a rate, or allows nothing.
        ImportError: when the ``limits`` package (the ``limits`` extra) is missing.
    """
    limits = require_limits(option)
    try:
        item = limits.parse(value) if isinstance(value, str) else None
    except ValueError:
        item = None
    if item is None:
        raise ValueError(f"invalid {option} {value!r}: expected a rate such as '30/minute'")
    rate = Rate(int(item.amount), int(item.get_expiry()))
    if rate.limit < 1 or rate.window < 1:
        raise ValueError(f"invalid {option} {value!r}: needs a count and a window of at least 1")
    return rate


class RateLimiter:
    """``hit(name, limit, window)`` over a ``limits`` async storage, moving window strategy."""

    def __init__(self, storage: Any) -> None:
        from limits.aio.strategies import MovingWindowRateLimiter

        self._limiter = MovingWindowRateLimiter(storage)
        self._items: dict[tuple[int, int], Any] = {}

    async def hit(self, name: str, limit: int, window: int) -> int:
        """Count a hit; 0 when it fits, else the Retry-After seconds (the hit is not counted)."""
        item = self._items.get((limit, window))
        if item is None:
            from limits import RateLimitItemPerSecond

            item = self._items[(limit, window)] = RateLimitItemPerSecond(limit, window)
        if await self._limiter.hit(item, name):
            return 0
        stats = await self._limiter.get_window_stats(item, name)
        # RFC 9110 10.2.3: Retry-After is a whole number of seconds, at least 1.
        return max(1, math.ceil(float(stats.reset_time) - time.time()))
