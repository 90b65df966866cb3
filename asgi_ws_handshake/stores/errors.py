"""The one exception stores raise (kept apart so that every store module can import it)."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(Exception):
    """A store could not answer (unreachable, timed out)."""
