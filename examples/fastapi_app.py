"""A FastAPI GraphQL-over-WebSocket endpoint negotiating ``graphql-transport-ws``.

Run: uvicorn examples.fastapi_app:app --port 8000. Only pages from the listed origins may
open the socket; clients that offer no supported subprotocol are refused with 400.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, get_handshake

app = FastAPI()
app.add_middleware(
    HandshakeMiddleware,
    policy=HandshakePolicy(
        allow_origins=["http://localhost:3000", "https://*.example.com"],
        subprotocols=["graphql-transport-ws", "graphql-ws"],
        require_subprotocol=True,
    ),
)


@app.websocket("/graphql")
async def graphql(websocket: WebSocket) -> None:
    await websocket.accept()  # subprotocol filled in: graphql-transport-ws when offered
    info = get_handshake(websocket)
    try:
        message = await websocket.receive_json()
        if message.get("type") == "connection_init":
            await websocket.send_json(
                {"type": "connection_ack", "payload": {"subprotocol": info and info.subprotocol}}
            )
        while True:
            await websocket.receive_json()
    except WebSocketDisconnect:
        pass
