"""The in-memory store: one process, bounded in entries and in time.

Keys are remembered in insertion order; expired ones are dropped from the old end as new ones
arrive, and when ``max_keys`` is reached the oldest is evicted, so a flood of distinct keys
costs at most ``max_keys`` entries. Rates go through the ``limits`` library's in-memory
storage and moving window (the ``limits`` extra), whose windows expire by themselves. Leases
need no expiry here: they live and die with this process, and the middleware releases each
one however its connection ends.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Mapping

from .rates import RateLimiter, require_limits

__all__ = ["MemoryStore"]


class MemoryStore:
    """Remember keys, count handshake rates and hold connection leases, in this process only.

    Args:
        max_keys: the most keys held at once (the oldest is forgotten first).
        clock: a monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"invalid max_keys {max_keys!r}: must be >= 1")
        self.max_keys = max_keys
        self._clock = clock
        # key -> expiry. Keys are stored as the 16 decoded bytes' text form; see remember_key.
        self._keys: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._sweep_at = -math.inf  # when the oldest key expires: no sweep before then
        self._rates: RateLimiter | None = None  # built on the first rate-limited handshake
        self._counts: dict[str, int] = {}  # lease name -> live leases
        self._leases: dict[str, tuple[str, ...]] = {}  # lease -> the names it counts under

    def __len__(self) -> int:
        return len(self._keys)

    async def remember_key(self, key: str, ttl: float) -> bool:
        return self.remember(key, ttl)

    def remember(self, key: str, ttl: float) -> bool:
        """``remember_key`` without the coroutine: the middleware calls it inline."""
        now = self._clock()
        keys = self._keys
        if now >= self._sweep_at:
            # Expire from the old end: with one TTL, insertion order is expiry order (with
            # several, a later key may outlive its TTL here, but the lookup below checks it).
            while keys:
                oldest, oldest_expiry = next(iter(keys.items()))
                if oldest_expiry > now:
                    self._sweep_at = oldest_expiry
                    break
                del keys[oldest]
            else:
                self._sweep_at = now
        expiry = keys.get(key)
        if expiry is not None:
            if expiry > now:
                return True
            del keys[key]
        keys[key] = now + ttl
        if len(keys) > self.max_keys:
            keys.popitem(last=False)
        return False

    async def hit(self, name: str, limit: int, window: int) -> int:
        rates = self._rates
        if rates is None:
            require_limits("rate limiting")
            from limits.aio.storage import MemoryStorage

            rates = self._rates = RateLimiter(MemoryStorage())
        return await rates.hit(name, limit, window)

    async def acquire(self, lease: str, caps: Mapping[str, int]) -> str | None:
        counts = self._counts
        for name, cap in caps.items():
            if counts.get(name, 0) >= cap:
                return name
        if lease in self._leases:  # the same lease twice would count twice
            raise ValueError(f"lease {lease!r} is already held")
        self._leases[lease] = names = tuple(caps)
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        return None

    async def release(self, lease: str) -> None:
        counts = self._counts
        for name in self._leases.pop(lease, ()):
            left = counts[name] - 1
            if left:
                counts[name] = left
            else:
                del counts[name]

    def connections(self, name: str) -> int:
        """The live leases counted under ``name`` (for tests and metrics)."""
        return self._counts.get(name, 0)
