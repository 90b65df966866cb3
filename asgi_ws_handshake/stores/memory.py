"""The in-memory store: one process, bounded in entries and in time.

Keys live in two generations of plain dicts: new keys go into the current one; when it holds
half of ``max_keys``, or when everything in the old one has expired, the old generation is
dropped whole and the current one becomes the old. Every call is O(1) with no per-key
bookkeeping, a flood of distinct keys costs at most ``max_keys`` entries, and the most
recent ``max_keys // 2`` keys are always remembered (for their TTL). Rates go through the
``limits`` library's in-memory storage and moving window (the ``limits`` extra), whose
windows expire by themselves. Leases need no expiry here: they live and die with this
process, and the middleware releases each one however its connection ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from .errors import StoreError
from .rates import RateLimiter, require_limits

__all__ = ["MemoryStore"]


class MemoryStore:
    """Remember keys, count handshake rates and hold connection leases, in this process only.

    Args:
        max_keys: the most keys held at once; at least the latest half are remembered.
        clock: a monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"invalid max_keys {max_keys!r}: must be >= 1")
        self.max_keys = max_keys
        self._half = max(1, max_keys // 2)
        self._clock = clock
        # key -> expiry (monotonic seconds), in two generations (see the module docstring).
        self._current: dict[str, float] = {}
        self._old: dict[str, float] = {}
        self._current_expires = -math.inf  # the latest expiry in each generation
        self._old_expires = -math.inf
        self._rates: RateLimiter | None = None  # built on the first rate-limited handshake
        self._counts: dict[str, int] = {}  # lease name -> live leases
        self._leases: dict[str, tuple[str, ...]] = {}  # lease -> the names it counts under
        self._tickets: dict[str, float] = {}  # redeemed one-time ticket -> expiry

    def __len__(self) -> int:
        return len(self._current) + len(self._old)

    def remember_key(self, key: str, ttl: float) -> bool:
        """Remember ``key`` for ``ttl`` seconds; True when it was already remembered.

        Answers at once (no awaitable): the in-process store never waits.
        """
        now = self._clock()
        current = self._current
        if len(current) >= self._half or now >= self._old_expires:
            # Rotate: the old generation is full of expired keys, or the current one is full.
            self._old, self._old_expires = current, self._current_expires
            self._current = current = {}
            self._current_expires = -math.inf
        expiry = current.get(key)
        if expiry is None:
            expiry = self._old.get(key)
        if expiry is not None and expiry > now:
            return True
        expires = current[key] = now + ttl
        if expires > self._current_expires:
            self._current_expires = expires
        return False

    async def hit(self, name: str, limit: int, window: int) -> int:
        rates = self._rates
        if rates is None:
            require_limits("rate limiting")
            from limits.aio.storage import MemoryStorage

            rates = self._rates = RateLimiter(MemoryStorage())
        return await rates.hit(name, limit, window)

    def acquire(self, lease: str, caps: Mapping[str, int]) -> str | None:
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

    def release(self, lease: str) -> None:
        counts = self._counts
        for name in self._leases.pop(lease, ()):
            left = counts[name] - 1
            if left:
                counts[name] = left
            else:
                del counts[name]

    def redeem(self, ticket: str, ttl: float) -> bool:
        """Use ``ticket`` up; True the first time (answers at once).

        Kept apart from the handshake keys, so a flood of handshakes cannot evict a redeemed
        ticket before it expires. Bounded by ``max_keys``: when that many unexpired tickets
        are held, redemption fails (``StoreError``) rather than forget one.
        """
        now = self._clock()
        tickets = self._tickets
        expiry = tickets.get(ticket)
        if expiry is not None and expiry > now:
            return False
        if len(tickets) >= self.max_keys:
            for name in [name for name, until in tickets.items() if until <= now]:
                del tickets[name]
            if len(tickets) >= self.max_keys:
                raise StoreError(f"redeem: {len(tickets)} unexpired tickets held (max_keys)")
        tickets[ticket] = now + ttl
        return True

    def connections(self, name: str) -> int:
        """The live leases counted under ``name`` (for tests and metrics)."""
        return self._counts.get(name, 0)
