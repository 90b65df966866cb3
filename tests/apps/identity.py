"""The apps the identity tests run under real servers (tests/servers/test_identity.py).

``app``: a Starlette app behind ``HandshakeMiddleware``, one route per authenticator and per
refusal, an HTTP endpoint issuing tickets, and routes whose connections have deadlines.
``dep_app``: a FastAPI app guarding one route with ``HandshakeGuard`` instead.
Configured from the environment: ``WSH_REDIS_URL`` (a ``RedisStore`` shared by workers, else
a ``MemoryStore``), ``WSH_AUDIT_FILE`` (JSON Lines, close events included).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi import WebSocket as FastAPIWebSocket
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, JSONLinesSink, get_handshake
from asgi_ws_handshake.authenticators import BearerToken, SessionCookie, Tickets
from asgi_ws_handshake.dependency import HandshakeGuard
from asgi_ws_handshake.identity import AuthRefusal, AuthRequest, Identity
from asgi_ws_handshake.stores import HandshakeStore, MemoryStore, RedisStore

SECRET = b"integration-secret-of-32-bytes!!"
GOOD_TOKEN = "good-token-0123456789"
EXPIRING_TOKEN = "expiring-token-0123456789"
SESSION = "session-0123456789"
#: Seconds the short deadlines last.
AGE = 0.6
EXPIRES_IN = 0.8

TICKETS = Tickets(SECRET)


def verify(token: str) -> Identity | None:
    if token == GOOD_TOKEN:
        return Identity("alice", scopes=("chat",))
    if token == EXPIRING_TOKEN:
        return Identity("erin", expires_at=time.time() + EXPIRES_IN)
    return None


async def lookup(value: str) -> Identity | None:
    await asyncio.sleep(0)
    return Identity("carol") if value == SESSION else None


def forbidden(request: AuthRequest) -> Identity:
    raise AuthRefusal.forbidden("mallory may not chat")


def raises(request: AuthRequest) -> Identity:
    raise RuntimeError(f"bug while reading {request.query('token')}")


async def slow(request: AuthRequest) -> Identity:
    await asyncio.sleep(30)
    return Identity("never")


def by_query(request: AuthRequest) -> Identity:
    return Identity(request.query("user") or "nobody")


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    info = get_handshake(websocket)
    assert info is not None
    user = websocket.user.display_name if "user" in websocket.scope else None
    await websocket.send_text(
        json.dumps({"subject": info.subject, "user": user, "id": info.audit_id})
    )
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text)
    except WebSocketDisconnect:
        pass


async def close_at_deadline(websocket: WebSocket) -> None:
    """Closes by itself at the very moment the guard's age limit ends the connection."""
    await websocket.accept()
    await asyncio.sleep(AGE)
    await websocket.close(1000, "the app closes")


async def issue(request: Request) -> JSONResponse:
    """The HTTP endpoint that issues tickets (a real app would know the user from its login)."""
    query = request.query_params
    expires = query.get("expires_in")
    ticket = TICKETS.issue(
        query.get("sub", "alice"),
        expires_at=time.time() + float(expires) if expires else None,
        ttl=float(query["ttl"]) if "ttl" in query else None,
    )
    return JSONResponse({"ticket": ticket})


def store() -> HandshakeStore:
    url = os.environ.get("WSH_REDIS_URL")
    return (
        RedisStore(url, prefix=os.environ.get("WSH_REDIS_PREFIX", "id:")) if url else MemoryStore()
    )


def audit() -> list[Any]:
    path = os.environ.get("WSH_AUDIT_FILE")
    return [JSONLinesSink(path, closes=True)] if path else []


def policy(**options: Any) -> HandshakePolicy:
    return HandshakePolicy(allow_any_origin=True, **options)


ROUTES = {
    "/ticket": policy(authenticate=TICKETS),
    "/ticket-limited": policy(
        authenticate=TICKETS, limit_key="subject", max_connections_per_client=1
    ),
    "/bearer": policy(
        authenticate=BearerToken(verify, realm="chat"), subprotocols=["access_token"]
    ),
    "/bearer-query": policy(authenticate=BearerToken(verify, sources=["query:access_token"])),
    "/cookie": policy(authenticate=SessionCookie("sid", lookup)),
    "/forbidden": policy(authenticate=forbidden),
    "/raises": policy(authenticate=raises),
    "/slow": policy(authenticate=slow, authenticate_timeout=0.3),
    "/aged": policy(authenticate=by_query, max_connection_age=AGE),
    "/race": policy(max_connection_age=AGE),
    "/aged-4001": policy(max_connection_age=AGE, expiry_close_code=4001),
}

_starlette = Starlette(
    routes=[
        Route("/issue", issue),
        *(WebSocketRoute(path, close_at_deadline if path == "/race" else chat) for path in ROUTES),
    ]
)
app = HandshakeMiddleware(_starlette, policy=policy(), routes=ROUTES, store=store(), audit=audit())

# -- the same, one route, with the FastAPI dependency instead of the middleware

guard = HandshakeGuard(policy(authenticate=TICKETS), store=store(), audit=audit())
dep_app = FastAPI()
dep_app.add_route("/issue", issue)


@dep_app.websocket("/ticket")
async def guarded_chat(websocket: Annotated[FastAPIWebSocket, Depends(guard)]) -> None:
    await chat(websocket)
