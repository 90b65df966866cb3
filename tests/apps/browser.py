"""The apps the browser test runs under uvicorn: a page that opens a WebSocket, and a
WebSocket endpoint with and without the middleware.

``app`` serves the page at ``/`` and two WebSocket paths: ``/ws`` behind the middleware, which
allows only the origin named by ``WSH_ALLOWED_ORIGIN``, and ``/open`` with no middleware at
all (the control that shows a foreign page really can connect; Chromium fails a socket
whose offer of subprotocols gets no answer, so it takes the first one offered).
``pages`` serves only the page. Audit events go to the JSON Lines file named by ``WSH_AUDIT_FILE``.
"""

from __future__ import annotations

import json
import os

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, JSONLinesSink
from asgi_ws_handshake.middleware import Receive, Scope, Send
from tests.apps.main import SUBPROTOCOLS, downstream

#: Opens a WebSocket to ``?ws=<url>`` offering both subprotocols; ``window.result`` resolves
#: to what the page saw: opened or not, the negotiated ``ws.protocol`` and the first message.
PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>ws probe</title>
<script>
const target = new URLSearchParams(location.search).get("ws");
window.result = new Promise((resolve) => {
  const seen = {opened: false, protocol: null, message: null, closeCode: null};
  const ws = new WebSocket(target, ["chat.v1", "chat.v2"]);
  ws.onopen = () => { seen.opened = true; seen.protocol = ws.protocol; };
  ws.onmessage = (event) => { seen.message = event.data; ws.close(1000); };
  ws.onclose = (event) => { seen.closeCode = event.code; resolve(seen); };
});
</script>
"""


async def pages(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        await downstream(scope, receive, send)  # lifespan
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", b"%d" % len(PAGE)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": PAGE})


def build() -> HandshakeMiddleware:
    sinks = []
    if path := os.environ.get("WSH_AUDIT_FILE"):
        sinks.append(JSONLinesSink(path))
    allowed = os.environ.get("WSH_ALLOWED_ORIGIN", "http://allowed.test")
    policy = HandshakePolicy(allow_origins=[allowed], subprotocols=SUBPROTOCOLS)
    return HandshakeMiddleware(downstream, policy=policy, audit=sinks)


protected = build()


async def unprotected(scope: Scope, receive: Receive, send: Send) -> None:
    """A typical app without the middleware: takes the first offered subprotocol."""
    await receive()  # websocket.connect
    offered = scope.get("subprotocols") or []
    chosen = offered[0] if offered else None
    await send({"type": "websocket.accept", "subprotocol": chosen})
    await send(
        {"type": "websocket.send", "text": json.dumps({"audit_id": None, "subprotocol": chosen})}
    )
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        if scope["path"] == "/open":
            await unprotected(scope, receive, send)  # any page may connect
        else:
            await protected(scope, receive, send)
        return
    await pages(scope, receive, send)
