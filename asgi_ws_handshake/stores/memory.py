"""The in-memory store: one process, bounded in entries and in time.

Keys are remembered in insertion order; expired ones are dropped from the old end as new ones
arrive, and when ``max_keys`` is reached the oldest is evicted, so a flood of distinct keys
costs at most ``max_keys`` entries.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

__all__ = ["MemoryStore"]


class MemoryStore:
    """Remember Sec-WebSocket-Key values for reuse detection, in this process only.

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

    def __len__(self) -> int:
        return len(self._keys)

    async def remember_key(self, key: str, ttl: float) -> bool:
        now = self._clock()
        keys = self._keys
        # Expire from the old end: with one TTL, insertion order is expiry order.
        while keys:
            oldest, oldest_expiry = next(iter(keys.items()))
            if oldest_expiry > now:
                break
            del keys[oldest]
        if key in keys:
            return True
        keys[key] = now + ttl
        keys.move_to_end(key)
        if len(keys) > self.max_keys:
            keys.popitem(last=False)
        return False
