"""``tests.app`` with a window on the plain lane, for ``tests/test_lane_servers.py``.

``GET /__lane`` answers a JSON list with one entry per websocket scope the middleware saw:
whether the plain lane decided it. Counted by wrapping ``HandshakeMiddleware._plain`` in
this server process only.
"""

from __future__ import annotations

import json
from typing import Any

from asgi_ws_handshake import HandshakeMiddleware
from asgi_ws_handshake.middleware import Receive, Scope, Send, _Handshake
from tests.app import build

decided: list[bool] = []
_original = HandshakeMiddleware._plain


def _watched(self: HandshakeMiddleware, handshake: _Handshake, scope: Scope) -> None:
    _original(self, handshake, scope)
    decided.append(handshake.decision is not None)


HandshakeMiddleware._plain = _watched  # type: ignore[method-assign]
guarded = build()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == "/__lane":
        body = json.dumps(decided).encode()
        headers: list[Any] = [(b"content-type", b"application/json")]
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await guarded(scope, receive, send)
