"""An app for the shutdown test: every handshake's event goes to a slow threaded sink and a
slow async sink, each writing JSON lines, so that events are still in flight at SIGINT.

``WSH_AUDIT_FILE`` names the threaded sink's file (``.async`` is appended for the other);
``WSH_DRAIN`` is the middleware's ``drain_timeout``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from asgi_ws_handshake import AuditEvent, HandshakeMiddleware, HandshakePolicy, ThreadedSink
from asgi_ws_handshake.middleware import Receive, Scope, Send
from tests.apps import lifespan

_PATH = Path(os.environ["WSH_AUDIT_FILE"])


def _write(path: Path, event: AuditEvent) -> None:
    with path.open("a") as file:
        file.write(json.dumps(event.to_dict()) + "\n")


def slow_threaded(event: AuditEvent) -> None:
    time.sleep(0.004)  # a sink that cannot keep up with a burst
    _write(_PATH, event)


async def slow_async(event: AuditEvent) -> None:
    await asyncio.sleep(0.5)
    _write(_PATH.with_suffix(".async"), event)


async def accepting(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 1000})


app = HandshakeMiddleware(
    accepting,
    policy=HandshakePolicy(allow_any_origin=True, key_reuse="ignore"),
    audit=[ThreadedSink(slow_threaded), slow_async],
    drain_timeout=float(os.environ.get("WSH_DRAIN", "5")),
)
