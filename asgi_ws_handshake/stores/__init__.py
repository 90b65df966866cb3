"""State shared between handshakes: reused keys (and, with issue-level extensions, rates).

The interface is small and async so that a Redis store can implement it; every call bounds
its own time. The in-memory store is the single-process default.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .memory import MemoryStore

__all__ = ["HandshakeStore", "MemoryStore", "StoreError"]


class StoreError(Exception):
    """A store could not answer (unreachable, timed out)."""


@runtime_checkable
class HandshakeStore(Protocol):
    """What the middleware needs from a store."""

    async def remember_key(self, key: str, ttl: float) -> bool:
        """Remember ``key`` for ``ttl`` seconds; return True when it was already remembered."""
        ...
