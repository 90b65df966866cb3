"""The examples: a Starlette app and a FastAPI app, through their test clients and uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from examples.fastapi_app import app as fastapi_app
from examples.starlette_app import app as starlette_app
from tests.support import GOOD_KEY, Server, running, uvicorn_argv

# Starlette's TestClient sends an invalid default key ("testserver=="): pass a real one.
KEY = {"sec-websocket-key": GOOD_KEY}


def test_starlette_same_origin_through_test_client() -> None:
    client = TestClient(starlette_app)
    headers = {**KEY, "origin": "http://testserver"}
    with client.websocket_connect("/ws", headers=headers, subprotocols=["chat.v1"]) as ws:
        assert ws.accepted_subprotocol == "chat.v1"  # filled in by the middleware
        assert ws.receive_text().startswith("welcome; audit id ")
        ws.send_text("hi")
        assert ws.receive_text() == "echo: hi"


def test_starlette_cross_origin_refused_through_test_client() -> None:
    client = TestClient(starlette_app)
    headers = {**KEY, "origin": "https://evil.test"}
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/ws", headers=headers),
    ):
        pass
    assert denied.value.status_code == 403
    assert denied.value.text == "origin_not_allowed\n"
    assert client.get("/").status_code == 200  # http passes through


def test_fastapi_negotiates_graphql_transport_ws() -> None:
    client = TestClient(fastapi_app)
    headers = {**KEY, "origin": "https://app.example.com"}
    with client.websocket_connect(
        "/graphql", headers=headers, subprotocols=["graphql-ws", "graphql-transport-ws"]
    ) as ws:
        assert ws.accepted_subprotocol == "graphql-transport-ws"  # server preference
        ws.send_json({"type": "connection_init"})
        ack = ws.receive_json()
        assert ack == {"type": "connection_ack", "payload": {"subprotocol": "graphql-transport-ws"}}


@pytest.mark.parametrize(
    ("origin", "protocols", "status", "body"),
    [
        ("https://evil.test", ["graphql-transport-ws"], 403, "origin_not_allowed\n"),
        ("https://example.com", ["graphql-transport-ws"], 403, "origin_not_allowed\n"),
        ("https://app.example.com", ["mqtt"], 400, "subprotocol_required\n"),
    ],
)
def test_fastapi_refusals(origin: str, protocols: list[str], status: int, body: str) -> None:
    client = TestClient(fastapi_app)
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect(
            "/graphql", headers={**KEY, "origin": origin}, subprotocols=protocols
        ),
    ):
        pass
    assert (denied.value.status_code, denied.value.text) == (status, body)


@pytest.fixture(scope="module")
def example_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    tmp: Path = tmp_path_factory.mktemp("examples")
    with (
        running(
            "starlette", uvicorn_argv("websockets-sansio", "examples.starlette_app:app"), tmp
        ) as s,
        running("fastapi", uvicorn_argv("websockets-sansio", "examples.fastapi_app:app"), tmp) as f,
    ):
        yield {"starlette": s, "fastapi": f}


async def test_examples_under_uvicorn(example_servers: dict[str, Server]) -> None:
    starlette, fastapi = example_servers["starlette"], example_servers["fastapi"]
    own = Origin(f"http://{starlette.host}")
    async with connect(
        starlette.url("/ws"), origin=own, subprotocols=[Subprotocol("chat.v1")]
    ) as ws:
        assert ws.subprotocol == "chat.v1"
        assert str(await ws.recv()).startswith("welcome")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(starlette.url("/ws"), origin=Origin("http://evil.test")):
            pass
    assert refused.value.response.status_code == 403

    async with connect(
        fastapi.url("/graphql"),
        origin=Origin("https://api.example.com"),
        subprotocols=[Subprotocol("graphql-transport-ws")],
    ) as ws:
        assert ws.subprotocol == "graphql-transport-ws"
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"


def test_starlette_endpoint_choosing_unoffered_subprotocol() -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, MemorySink

    async def endpoint(websocket: WebSocket) -> None:
        # Starlette turns our HandshakeDenied (an OSError) into WebSocketDisconnect, which
        # escapes the endpoint: the guard recognises its own refusal and raises nothing.
        await websocket.accept(subprotocol="never-offered")

    sink = MemorySink()
    app = HandshakeMiddleware(
        Starlette(routes=[WebSocketRoute("/ws", endpoint)]),
        policy=HandshakePolicy(allow_any_origin=True),
        audit=sink,
    )
    client = TestClient(app)  # re-raises any exception that escapes the app
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/ws", headers=KEY, subprotocols=["chat"]),
    ):
        pass
    assert (denied.value.status_code, denied.value.text) == (500, "app_subprotocol_not_offered\n")
    assert [e.reason for e in sink.events] == ["app_subprotocol_not_offered"]


def test_the_fastapi_auth_example() -> None:
    from asgi_ws_handshake.testing import HandshakeTestClient
    from examples.fastapi_auth import app as auth_app

    client = HandshakeTestClient(auth_app, origin="http://localhost:3000")
    ticket = client.client.get("/ws-ticket", headers={"x-user": "alice"}).json()["ticket"]
    with client.connect("/ws", query={"ticket": ticket}) as ws:
        assert ws.receive_json()["hello"] == "alice"
        ws.send_text("echo")
        assert ws.receive_text() == "echo"
    client.refused("/ws", status=401, reason="auth_replayed", query={"ticket": ticket})
    client.refused("/ws", status=401, reason="auth_missing")
    assert client.client.get("/ws-ticket").status_code == 401
