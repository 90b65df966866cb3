"""Apps for the route and log tests under real servers.

``app``: a guarded app whose default policy allows any origin and whose ``/admin/*`` route
allows only ``https://admin.test`` — the route policy must hold under uvicorn's
``--root-path``. ``mounted``: the same guarded app inside Starlette's ``Mount("/v1", ...)``.
Audit events go to JSON Lines (``WSH_AUDIT_FILE``) and to a ``LoggingSink`` on stderr.
"""

from __future__ import annotations

import logging
import os
import sys

from starlette.applications import Starlette
from starlette.routing import Mount

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, JSONLinesSink, LoggingSink
from asgi_ws_handshake.middleware import Receive, Scope, Send

handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter("AUDIT %(message)s"))
audit_logger = logging.getLogger("asgi_ws_handshake.audit")
audit_logger.addHandler(handler)
audit_logger.setLevel(logging.INFO)


async def accepting(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 1000})


app = HandshakeMiddleware(
    accepting,
    policy=HandshakePolicy(allow_any_origin=True),
    routes={"/admin/*": HandshakePolicy(allow_origins=["https://admin.test"])},
    audit=[JSONLinesSink(os.environ["WSH_AUDIT_FILE"]), LoggingSink()],
)
mounted = Starlette(routes=[Mount("/v1", app=app)])
