"""The ASGI app the integration tests run under real servers.

Plain ASGI (no framework) so that every server in the matrix runs the very same code. Each
path is one behaviour of the downstream app; the policies are chosen per route. Audit events
go to the JSON Lines file named by ``WSH_AUDIT_FILE``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from asgi_ws_handshake import (
    HandshakeMiddleware,
    HandshakePolicy,
    JSONLinesSink,
    get_handshake,
)
from asgi_ws_handshake.middleware import Receive, Scope, Send
from tests.apps import lifespan

ALLOWED_ORIGIN = "http://allowed.test"
SUBPROTOCOLS = ["chat.v2", "chat.v1"]


async def downstream(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] == "http":
        body = b"plain http\n"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    path = scope["path"]
    message = await receive()
    assert message["type"] == "websocket.connect"
    if path.startswith("/app-close"):
        await send({"type": "websocket.close", "code": 1000})
        return
    if path.startswith("/app-raise"):
        raise RuntimeError("the app fails before accepting")
    if path.startswith("/app-return"):
        return
    if path.startswith("/app-deny"):
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"login first"})
        return
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if path.startswith("/bad-subprotocol"):
        accept["subprotocol"] = "never-offered"
    if path.startswith("/reserved-headers"):
        accept["headers"] = [
            (b"sec-websocket-accept", b"bogus"),
            (b"Upgrade", b"h2c"),
            (b"x-app", b"kept"),
        ]
    await send(accept)
    info = get_handshake(scope)
    await send(
        {
            "type": "websocket.send",
            "text": json.dumps(
                {
                    "audit_id": info.audit_id if info else None,
                    "subprotocol": info.subprotocol if info else None,
                    "origin": info.origin if info else None,
                    "route": info.route if info else None,
                }
            ),
        }
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def build(audit_file: str | None = None) -> HandshakeMiddleware:
    sinks = []
    path = audit_file or os.environ.get("WSH_AUDIT_FILE")
    if path:
        sinks.append(JSONLinesSink(path))
    configured = HandshakePolicy(
        allow_origins=[ALLOWED_ORIGIN, "https://*.allowed.test"],
        subprotocols=SUBPROTOCOLS,
        key_reuse="reject",
    )
    return HandshakeMiddleware(
        downstream,
        policy=configured,
        routes={
            "/same*": HandshakePolicy(),
            "/required*": HandshakePolicy(
                allow_origins=[ALLOWED_ORIGIN], subprotocols=SUBPROTOCOLS, require_subprotocol=True
            ),
            "/flag*": HandshakePolicy(allow_origins=[ALLOWED_ORIGIN], key_reuse="flag"),
        },
        audit=sinks,
    )


app = build()
