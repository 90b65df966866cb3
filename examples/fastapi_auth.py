"""FastAPI: who is connecting, checked at the handshake with one-time tickets.

Run: uvicorn examples.fastapi_auth:app --port 8000. ``GET /ws-ticket`` (here: for whoever
sends ``X-User``; your app uses its own login) issues a ticket; ``/ws?ticket=...`` opens the
socket once, as that user, counted per user, and closed when the session ends. Set
``WSH_REDIS_URL`` to share tickets and limits between workers.
"""

from __future__ import annotations

import os
import secrets
import time

from fastapi import FastAPI, Header, HTTPException, WebSocket, WebSocketDisconnect

from asgi_ws_handshake import (
    HandshakeMiddleware,
    HandshakePolicy,
    HandshakeStore,
    MemoryStore,
    Tickets,
    get_handshake,
)

SESSION_SECONDS = 3600.0
tickets = Tickets(os.environ.get("WSH_TICKET_SECRET") or secrets.token_bytes(32))


def store() -> HandshakeStore:
    url = os.environ.get("WSH_REDIS_URL")
    if url:
        from asgi_ws_handshake.stores.redis import RedisStore

        return RedisStore(url)
    return MemoryStore()


app = FastAPI()
app.add_middleware(
    HandshakeMiddleware,
    policy=HandshakePolicy(
        allow_origins=["http://localhost:3000"],
        authenticate=tickets,
        limit_key="subject",
        max_connections_per_client=3,
        max_connection_age=2 * 3600,
    ),
    store=store(),
)


@app.get("/ws-ticket")
async def ws_ticket(x_user: str | None = Header(default=None)) -> dict[str, str]:
    if not x_user:
        raise HTTPException(401, "sign in first")
    return {"ticket": tickets.issue(x_user, expires_at=time.time() + SESSION_SECONDS)}


@app.websocket("/ws")
async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    info = get_handshake(websocket)
    await websocket.send_json({"hello": websocket.user.display_name, "id": info and info.audit_id})
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass
