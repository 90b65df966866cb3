"""State shared between handshakes: reused keys, handshake rates and connection leases.

The interface is small and async so that a Redis store can implement it; every call bounds
its own time and raises ``StoreError`` when it cannot answer. The in-memory store is the
single-process default; ``stores.redis.RedisStore`` (the ``redis`` extra) serves a fleet.
What to do when a store fails is the policy's choice (``on_store_error``), not the store's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Protocol, runtime_checkable

from .errors import StoreError
from .memory import MemoryStore
from .redis import RedisStore  # imports redis and limits only when a RedisStore is built

__all__ = ["HandshakeStore", "MemoryStore", "RedisStore", "StoreError"]


@runtime_checkable
class HandshakeStore(Protocol):
    """What the middleware needs from a store.

    Each method may answer at once (the in-process store does) or return an awaitable of
    the answer (``async def``, as the Redis store does); the middleware accepts either.
    Names (``name`` and the keys of ``caps``) are strings built by the middleware, such as
    ``"default:client:203.0.113.7"``: ``<route>:...``. A store needs to keep them apart; a
    clustered one also keeps the names of one route, which one ``acquire`` counts under
    together, in one place (the part before the first ':').
    """

    def remember_key(self, key: str, ttl: float) -> bool | Awaitable[bool]:
        """Remember ``key`` for ``ttl`` seconds; return True when it was already remembered."""
        ...

    def hit(self, name: str, limit: int, window: int) -> int | Awaitable[int]:
        """Count one handshake against ``limit`` per ``window`` seconds (a moving window).

        Returns:
            0 when the hit was counted; otherwise the seconds until the next one would be
            (at least 1), and the refused hit is not counted.
        """
        ...

    def acquire(self, lease: str, caps: Mapping[str, int]) -> str | Awaitable[str | None] | None:
        """Take a connection lease counted under every name in ``caps``.

        All or nothing: the lease is taken only when each name holds fewer than its cap.
        A store that can lose its holder (another process, another machine) lets the lease
        expire unless this process keeps refreshing it, which the store does itself while
        the lease is held.

        Returns:
            None when the lease was taken, else the first name whose cap is reached.
        """
        ...

    def release(self, lease: str) -> Awaitable[None] | None:
        """Give back a lease taken by ``acquire`` (unknown leases are ignored)."""
        ...

    def redeem(self, ticket: str, ttl: float) -> bool | Awaitable[bool]:
        """Use the one-time ``ticket`` (an id) up, remembering it for ``ttl`` seconds.

        Returns:
            True for the first use, False when it was used before (a replay), across every
            process sharing the store.
        """
        ...
