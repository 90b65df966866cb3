"""A Starlette chat echo WITHOUT the middleware: the app ``asgi-ws-handshake serve`` guards.

Run: asgi-ws-handshake serve examples.unguarded_app:app --policy examples/policy.toml, then
open http://127.0.0.1:8000/ and watch the audit lines in the terminal. (``serve`` refuses an
app that already has a HandshakeMiddleware, such as examples/starlette_app.py: two guards would
judge every handshake twice.)
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from asgi_ws_handshake import get_handshake

PAGE = """<!doctype html><title>chat</title><pre id=log></pre><script>
const ws = new WebSocket(`ws://${location.host}/ws`, ["chat.v1"]);
const log = (text) => { document.getElementById("log").textContent += text + "\\n"; };
ws.onopen = () => { log(`open (${ws.protocol})`); ws.send("hello"); };
ws.onmessage = (e) => log(e.data);
ws.onclose = (e) => log(`closed (${e.code})`);
</script>"""


async def homepage(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()  # the negotiated subprotocol is filled in by the guard
    info = get_handshake(websocket)  # served by `serve`, the guard's record is here too
    await websocket.send_text(f"welcome; audit id {info.audit_id if info else '?'}")
    try:
        while True:
            await websocket.send_text(f"echo: {await websocket.receive_text()}")
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[Route("/", homepage), WebSocketRoute("/ws", chat)])
