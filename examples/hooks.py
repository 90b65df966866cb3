"""Callables a policy file names (``module:attribute``), for the README's policy file reference.

``select_subprotocol = "examples.hooks:choose_subprotocol"`` and ``[[audit]] type = "callable"``
with ``target = "examples.hooks:AuditCounter"``.
"""

from __future__ import annotations

import collections

from asgi_ws_handshake import AuditEvent, HandshakeRequest


def choose_subprotocol(request: HandshakeRequest, offered: tuple[str, ...]) -> str | None:
    """Prefer a versioned chat protocol, newest first; else nothing."""
    versions = sorted((p for p in offered if p.startswith("chat.v")), reverse=True)
    return versions[0] if versions else None


class AuditCounter:
    """A sink counting handshakes by outcome and reason (``target(**kwargs)`` builds it)."""

    def __init__(self, name: str = "handshakes") -> None:
        self.name = name
        self.counts: collections.Counter[tuple[str, str | None]] = collections.Counter()

    def __call__(self, event: AuditEvent) -> None:
        self.counts[(str(event.outcome), event.reason)] += 1
