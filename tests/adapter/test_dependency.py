"""``HandshakeGuard`` (one route, no middleware) and ``HandshakeTestClient``, in process.

FastAPI's ``Depends`` and Starlette's ``async with guard.connect(ws)`` run the middleware's own
path; refusals are raised the framework's way (a denial response, or close 1008 where the
server lacks the extension). Through real uvicorn: tests/servers/test_identity.py.

(No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
run time, and they name a guard local to ``build``.)
"""

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from asgi_ws_handshake import HandshakePolicy, MemorySink, get_handshake
from asgi_ws_handshake.authenticators import Tickets
from asgi_ws_handshake.dependency import HandshakeGuard
from asgi_ws_handshake.identity import AuthRequest, Identity
from asgi_ws_handshake.testing import HandshakeTestClient
from tests.asgi import Script, ws_scope

TICKETS = Tickets(b"d" * 32)


def build(**options: Any) -> tuple[FastAPI, MemorySink]:
    sink = MemorySink(closes=True)
    policy = HandshakePolicy(authenticate=TICKETS, subprotocols=["chat.v1"], **options)
    guard = HandshakeGuard(policy, audit=sink)
    app = FastAPI()

    @app.websocket("/ws")
    async def chat(websocket: Annotated[WebSocket, Depends(guard)]) -> None:
        await websocket.accept()
        info = get_handshake(websocket)
        assert info is not None
        await websocket.send_json(
            {
                "subject": info.subject,
                "user": websocket.user.display_name,
                "scopes": websocket.auth.scopes,
                "subprotocol": info.subprotocol,
            }
        )
        try:
            text = await websocket.receive_text()
        except WebSocketDisconnect:
            return
        if text == "raise":
            raise LookupError("the endpoint fails")
        await websocket.close()

    @app.websocket("/bad-subprotocol")
    async def bad(websocket: Annotated[WebSocket, Depends(guard)]) -> None:
        await websocket.accept(subprotocol="never-offered")

    return app, sink


@pytest.fixture
def app() -> FastAPI:
    return build()[0]


def test_the_fastapi_dependency_accepts_with_the_identity() -> None:
    app, sink = build()
    client = HandshakeTestClient(app)
    ticket = TICKETS.issue("alice", scopes=["chat"])
    with client.connect("/ws", query={"ticket": ticket}, subprotocols=["chat.v1"]) as ws:
        assert ws.receive_json() == {
            "subject": "alice",
            "user": "alice",
            "scopes": ["chat"],
            "subprotocol": "chat.v1",
        }
        assert ws.accepted_subprotocol == "chat.v1"
        ws.send_text("bye")
    (event,) = sink.events
    assert (event.outcome, event.subject, event.credential) == ("accepted", "alice", "query:ticket")
    assert [c.closed_by for c in sink.closes] == ["app"]


def test_refusals_are_denial_responses(handshake_client: HandshakeTestClient) -> None:
    denial = handshake_client.refused("/ws", status=401, reason="auth_missing")
    assert denial.json() == {"detail": "auth_missing"}
    handshake_client.refused("/ws", status=403, reason="origin_not_allowed", origin="http://evil")
    ticket = TICKETS.issue("bob")
    with handshake_client.connect("/ws", query={"ticket": ticket}) as ws:
        ws.receive_json()
    handshake_client.refused("/ws", status=401, reason="auth_replayed", query={"ticket": ticket})


def test_headers_of_the_refusal_reach_the_client() -> None:
    app, _ = build(rate_limit="1/minute")
    client = HandshakeTestClient(app)
    with client.connect("/ws", query={"ticket": TICKETS.issue("a")}) as ws:
        ws.receive_json()
    denial = client.refused("/ws", status=429, query={"ticket": TICKETS.issue("a")})
    assert denial.headers["retry-after"].isdigit()


def test_an_endpoint_error_still_reaches_the_server() -> None:
    app, sink = build()
    client = HandshakeTestClient(app)

    def talk() -> None:
        with client.connect("/ws", query={"ticket": TICKETS.issue("a")}) as ws:
            ws.receive_json()
            ws.send_text("raise")
            ws.receive_json()

    with pytest.raises(LookupError):
        talk()
    assert [c.closed_by for c in sink.closes] == ["error"]


def test_the_guard_of_the_answer_works_through_the_dependency() -> None:
    app, sink = build()
    client = HandshakeTestClient(app)
    # The app picked a subprotocol never offered: refused (500), and the endpoint's
    # HandshakeDenied is the guard's own, kept from the server.
    client.refused("/bad-subprotocol", status=500, query={"ticket": TICKETS.issue("a")})
    assert sink.events[-1].reason == "app_subprotocol_not_offered"


def test_the_starlette_context_manager() -> None:
    def hook(request: AuthRequest) -> Identity:
        return Identity(request.query("u") or "anon")

    guard = HandshakeGuard(HandshakePolicy(authenticate=hook), audit=[])

    async def chat(websocket: Any) -> None:
        async with guard.connect(websocket) as guarded:
            await guarded.accept()
            await guarded.send_text(guarded.user.display_name)

    client = HandshakeTestClient(Starlette(routes=[WebSocketRoute("/ws", chat)]))
    with client.connect("/ws", query={"u": "erin"}) as ws:
        assert ws.receive_text() == "erin"
    client.refused("/ws", status=403, origin="http://elsewhere.test")


async def test_without_the_denial_extension_the_refusal_is_a_close_1008() -> None:
    guard = HandshakeGuard(HandshakePolicy(authenticate=TICKETS), audit=(sink := MemorySink()))

    async def chat(websocket: Any) -> None:
        async with guard.connect(websocket) as guarded:
            await guarded.accept()

    app = Starlette(routes=[WebSocketRoute("/ws", chat)])
    script = Script()
    scope = ws_scope(extensions=None)
    scope["app"] = app
    await app(scope, script.receive, script.send)
    assert script.sent == [{"type": "websocket.close", "code": 1008, "reason": "handshake refused"}]
    (event,) = sink.events
    assert (event.reason, event.status, event.denial) == ("auth_missing", 403, "close")


def test_the_test_client_sends_what_it_is_given() -> None:
    seen: list[Any] = []

    async def echo(websocket: Any) -> None:
        seen.append(dict(websocket.headers))
        seen.append(dict(websocket.query_params))
        await websocket.accept()

    client = HandshakeTestClient(Starlette(routes=[WebSocketRoute("/ws", echo)]), origin=None)
    with client.connect(
        "/ws",
        cookies={"sid": "1", "b": "2"},
        bearer="tok",
        token_subprotocol=("access_token", "t2"),
        query={"x": "y"},
        headers={"x-extra": "1"},
    ):
        pass
    headers, query = seen
    assert "origin" not in headers
    assert (headers["cookie"], headers["authorization"]) == ("sid=1; b=2", "Bearer tok")
    assert headers["sec-websocket-protocol"] == "access_token, t2"
    assert len(headers["sec-websocket-key"]) == 24
    assert (query, headers["x-extra"]) == ({"x": "y"}, "1")
