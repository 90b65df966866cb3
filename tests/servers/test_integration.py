"""The middleware under a real uvicorn (each --ws backend) with real clients.

Valid handshakes use the `websockets` client; malformed ones a raw socket. Where uvicorn's
backend answers a malformed handshake itself before the app runs, the expectation says so
(SERVER below) and the test asserts that no audit event exists for that handshake.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from asgi_ws_handshake import accept_key
from tests.support import (
    GOOD_KEY,
    Server,
    handshake_lines,
    new_key,
    raw_handshake,
    read_response,
)

ALLOWED = "http://allowed.test"
SERVER = "server"  # the server answered before our middleware ran

# case -> request overrides, our (status, reason), and per-backend exceptions.
CASES: dict[str, tuple[dict[str, Any], tuple[int, str], dict[str, tuple[int, str]]]] = {
    "cross origin": ({"origin": "http://evil.test"}, (403, "origin_not_allowed"), {}),
    "null origin": ({"origin": "null"}, (403, "origin_null"), {}),
    "two origins": (
        {"origin": [ALLOWED, ALLOWED]},
        (403, "origin_multiple"),
        # websockets' sans-I/O server refuses a repeated Origin itself.
        {"websockets-sansio": (400, SERVER)},
    ),
    "short key": (
        {"key": "c2hvcnQ="},
        (400, "key_malformed"),
        # Both websockets backends validate the key before calling the app.
        {"websockets-sansio": (400, SERVER), "websockets": (400, SERVER)},
    ),
    "non-base64 key": (
        {"key": "!!!!!!!!!!!!!!!!!!!!!!=="},
        (400, "key_malformed"),
        {"websockets-sansio": (400, SERVER), "websockets": (400, SERVER)},
    ),
    "two keys": (
        {"key": [GOOD_KEY, "AAAAAAAAAAAAAAAAAAAAAA=="]},
        (400, "key_multiple"),
        {"websockets-sansio": (400, SERVER), "websockets": (400, SERVER)},
    ),
    "version 8": (
        {"version": "8"},
        (426, "version_unsupported"),
        # Every uvicorn backend refuses version 8 itself; only wsproto adds the
        # Sec-WebSocket-Version header RFC 6455 4.4 asks for.
        {"websockets-sansio": (400, SERVER), "websockets": (400, SERVER), "wsproto": (426, SERVER)},
    ),
    "two versions": (
        {"version": ["13", "13"]},
        (426, "version_unsupported"),
        {"websockets-sansio": (400, SERVER), "websockets": (400, SERVER)},
    ),
    "bad token": (
        {"protocols": "chat v1"},
        (400, "subprotocol_malformed"),
        {"websockets-sansio": (400, SERVER)},
    ),
    "duplicate token": ({"protocols": "chat.v1, chat.v1"}, (400, "subprotocol_malformed"), {}),
}


def ws_backend(server: Server) -> str:
    return server.name.removeprefix("uvicorn-")


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_handshakes(uvicorn_server: Server, case: str) -> None:
    overrides, ours, per_server = CASES[case]
    status, reason = per_server.get(ws_backend(uvicorn_server), ours)
    kwargs: dict[str, Any] = {"origin": ALLOWED, "key": new_key(), **overrides}
    response = raw_handshake(uvicorn_server.port, handshake_lines(uvicorn_server.host, **kwargs))
    assert response.status == status
    keys = kwargs["key"] if isinstance(kwargs["key"], list) else [kwargs["key"]]
    if reason == SERVER:
        # Nothing reached the middleware: no audit event may claim otherwise.
        assert not [e for e in uvicorn_server.events() if e["key"] in keys]
        if ws_backend(uvicorn_server) == "wsproto" and status == 426:
            assert response.header("sec-websocket-version") == "13"
        return
    assert response.body == f"{reason}\n".encode()
    assert response.header("content-type") == "text/plain; charset=utf-8"
    if reason.startswith("version"):
        assert response.header("sec-websocket-version") == "13"  # RFC 6455 4.4
    event = uvicorn_server.event_for_key(keys[0])
    assert (event["outcome"], event["reason"], event["status"], event["denial"]) == (
        "rejected",
        reason,
        status,
        "http_response",
    )


def test_accept_matches_audited_expected_accept(uvicorn_server: Server) -> None:
    key = new_key()
    with socket.create_connection(("127.0.0.1", uvicorn_server.port), timeout=5) as sock:
        sock.sendall(
            handshake_lines(uvicorn_server.host, origin=ALLOWED, key=key, protocols="chat.v1")
        )
        response = read_response(sock)
    assert response.status == 101
    event = uvicorn_server.event_for_key(key)
    assert response.header("sec-websocket-accept") == event["expected_accept"] == accept_key(key)
    assert response.header("sec-websocket-protocol") == event["subprotocol"] == "chat.v1"
    assert (event["outcome"], event["status"]) == ("accepted", 101)


async def test_real_client_negotiates_and_sees_the_decision(uvicorn_server: Server) -> None:
    async with connect(
        uvicorn_server.url("/ws"),
        origin=Origin(ALLOWED),
        subprotocols=[Subprotocol("chat.v1"), Subprotocol("chat.v2")],
        open_timeout=5,
    ) as ws:
        assert ws.subprotocol == "chat.v2"  # server preference
        hello = json.loads(await ws.recv())
        assert hello["subprotocol"] == "chat.v2"
        assert hello["origin"] == ALLOWED
        assert hello["route"] == "default"
        await ws.send("ping")
        assert await ws.recv() == "ping"
    (event,) = [e for e in uvicorn_server.wait_events(1) if e["id"] == hello["audit_id"]]
    assert event["outcome"] == "accepted"


async def test_real_client_refused_cross_origin(uvicorn_server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            uvicorn_server.url("/ws"), origin=Origin("http://evil.test"), open_timeout=5
        ):
            pass
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"origin_not_allowed\n"


async def test_same_origin_route(uvicorn_server: Server) -> None:
    own = f"http://{uvicorn_server.host}"
    async with connect(uvicorn_server.url("/same"), origin=Origin(own), open_timeout=5) as ws:
        assert json.loads(await ws.recv())["route"] == "/same*"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(uvicorn_server.url("/same"), origin=Origin(ALLOWED), open_timeout=5):
            pass
    assert refused.value.response.status_code == 403


def test_required_subprotocol_route(uvicorn_server: Server) -> None:
    response = raw_handshake(
        uvicorn_server.port,
        handshake_lines(
            uvicorn_server.host, path="/required", origin=ALLOWED, key=new_key(), protocols="mqtt"
        ),
    )
    assert (response.status, response.body) == (400, b"subprotocol_required\n")


def test_app_choosing_unoffered_subprotocol(uvicorn_server: Server) -> None:
    key = new_key()
    response = raw_handshake(
        uvicorn_server.port,
        handshake_lines(
            uvicorn_server.host,
            path="/bad-subprotocol",
            origin=ALLOWED,
            key=key,
            protocols="chat.v1",
        ),
    )
    assert (response.status, response.body) == (500, b"app_subprotocol_not_offered\n")
    event = uvicorn_server.event_for_key(key)
    assert (event["outcome"], event["status"]) == ("app_error", 500)
    assert "HandshakeDenied" not in uvicorn_server.log()  # our refusal never reaches the server


def test_app_reserved_accept_headers_are_stripped(uvicorn_server: Server) -> None:
    key = new_key()
    response = raw_handshake(
        uvicorn_server.port,
        handshake_lines(uvicorn_server.host, path="/reserved-headers", origin=ALLOWED, key=key),
    )
    assert response.status == 101
    assert response.all("sec-websocket-accept") == [accept_key(key)]  # exactly one, correct
    assert response.all("upgrade") == ["websocket"]
    assert response.header("x-app") == "kept"


@pytest.mark.parametrize(
    ("path", "status", "outcome"),
    [
        ("/app-close", 403, "app_rejected"),
        ("/app-deny", 401, "app_rejected"),
        ("/app-raise", 500, "app_error"),
        ("/app-return", 500, "app_error"),
    ],
)
def test_app_answers_before_accept(
    uvicorn_server: Server, path: str, status: int, outcome: str
) -> None:
    key = new_key()
    response = raw_handshake(
        uvicorn_server.port,
        handshake_lines(uvicorn_server.host, path=path, origin=ALLOWED, key=key),
    )
    assert response.status == status
    event = uvicorn_server.event_for_key(key)
    assert (event["outcome"], event["status"]) == (outcome, status)


def test_http_passes_through(uvicorn_server: Server) -> None:
    request = (
        f"GET / HTTP/1.1\r\nHost: {uvicorn_server.host}\r\n"
        "Origin: http://evil.test\r\nConnection: close\r\n\r\n"
    )
    response = raw_handshake(uvicorn_server.port, request.encode())
    assert (response.status, response.body) == (200, b"plain http\n")


def test_reused_key_is_refused(uvicorn_server: Server) -> None:
    key = new_key()
    first = raw_handshake(
        uvicorn_server.port, handshake_lines(uvicorn_server.host, origin=ALLOWED, key=key)
    )
    second = raw_handshake(
        uvicorn_server.port, handshake_lines(uvicorn_server.host, origin=ALLOWED, key=key)
    )
    assert (first.status, second.status, second.body) == (101, 400, b"key_reused\n")


async def test_mixed_run_audits_every_handshake_exactly_once(uvicorn_server: Server) -> None:
    """Hundreds of good and bad handshakes (on each backend), partly concurrent: one event each."""
    plan: list[tuple[str, dict[str, Any], int, str | None]] = []
    for i in range(150):
        key = new_key()
        kind = i % 5
        if kind == 0:
            plan.append((key, {"origin": ALLOWED}, 101, None))
        elif kind == 1:
            plan.append((key, {"origin": "http://evil.test"}, 403, "origin_not_allowed"))
        elif kind == 2:
            plan.append((key, {"origin": "null"}, 403, "origin_null"))
        elif kind == 3:
            plan.append(
                (key, {"origin": ALLOWED, "protocols": "a, a"}, 400, "subprotocol_malformed")
            )
        else:
            plan.append((key, {"origin": ALLOWED, "path": "/app-close"}, 403, "app_rejected"))
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(20)

    async def one(key: str, kwargs: dict[str, Any]) -> int:
        async with semaphore:
            request = handshake_lines(uvicorn_server.host, key=key, **kwargs)
            response = await loop.run_in_executor(None, raw_handshake, uvicorn_server.port, request)
            return response.status

    statuses = await asyncio.gather(*(one(key, kwargs) for key, kwargs, _, _ in plan))
    assert statuses == [status for _, _, status, _ in plan]
    keys = {key for key, _, _, _ in plan}
    # Events are written as each handshake ends, a moment after the client has its answer.
    deadline = loop.time() + 10
    while True:
        events = [e for e in uvicorn_server.events() if e["key"] in keys]
        if len(events) >= len(plan) or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # a late duplicate would show up here
    events = [e for e in uvicorn_server.events() if e["key"] in keys]
    assert len(events) == len(plan)  # none lost, none duplicated
    by_key = {e["key"]: e for e in events}
    assert len(by_key) == len(plan)
    assert len({e["id"] for e in events}) == len(plan)
    for key, _, status, reason in plan:
        assert (by_key[key]["status"], by_key[key]["reason"]) == (status, reason)
