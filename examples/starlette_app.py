"""A Starlette chat echo protected by HandshakeMiddleware.

Run: uvicorn examples.starlette_app:app --port 8000, then open a WebSocket to
ws://127.0.0.1:8000/ws from a page served by http://127.0.0.1:8000 (same origin).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, LoggingSink, get_handshake

PAGE = """<!doctype html><title>chat</title><pre id=log></pre><script>
const ws = new WebSocket(`ws://${location.host}/ws`, ["chat.v1"]);
ws.onopen = () => { document.getElementById("log").textContent += `open (${ws.protocol})\\n`;
                    ws.send("hello"); };
ws.onmessage = (e) => { document.getElementById("log").textContent += e.data + "\\n"; };
</script>"""


async def homepage(request: object) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()  # the negotiated subprotocol is filled in by the middleware
    info = get_handshake(websocket)
    await websocket.send_text(f"welcome; audit id {info.audit_id if info else '?'}")
    try:
        while True:
            await websocket.send_text(f"echo: {await websocket.receive_text()}")
    except WebSocketDisconnect:
        pass


policy = HandshakePolicy(subprotocols=["chat.v1"])  # same-origin by default
app = Starlette(
    routes=[Route("/", homepage), WebSocketRoute("/ws", chat)],
    middleware=[Middleware(HandshakeMiddleware, policy=policy, audit=[LoggingSink()])],
)
