"""Who is connecting, through real uvicorn processes and real clients (``websockets``, raw sockets).

Each authenticator and each refusal; a socket closed at its deadline (short real deadlines:
the age limit and an expiring credential) and the app closing at the same moment; a ticket's
single use across two workers sharing a real Redis (and Valkey); limits per identity there;
the FastAPI dependency under uvicorn and daphne (no denial extension: close, 403).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.apps.identity import (
    AGE,
    EXPIRING_TOKEN,
    GOOD_TOKEN,
    SESSION,
)
from tests.redis_server import RedisServer
from tests.support import (
    RawResponse,
    Server,
    daphne_argv,
    handshake_lines,
    new_key,
    raw_handshake,
    running,
    start_server,
    uvicorn_argv,
)

APP = "tests.apps.identity:app"
DEP_APP = "tests.apps.identity:dep_app"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(
        "identity", uvicorn_argv("websockets-sansio", APP), tmp_path_factory.mktemp("identity")
    ) as found:
        yield found


def ticket(server: Server, **query: Any) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    url = f"http://127.0.0.1:{server.port}/issue?{params}"
    with urllib.request.urlopen(url, timeout=5) as answer:  # 127.0.0.1 only
        data: dict[str, str] = json.loads(answer.read())
    return data["ticket"]


def handshake(server: Server, path: str, **kwargs: Any) -> RawResponse:
    return raw_handshake(
        server.port, handshake_lines(server.host, path=path, key=new_key(), **kwargs)
    )


def our_log(server: Server) -> str:
    """The server's log without uvicorn's own request lines (which show the query string:
    one reason tickets are single-use and short-lived)."""
    return "\n".join(line for line in server.log().splitlines() if '"WebSocket /' not in line)


def welcome(ws: ClientConnection) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return data


def open_ws(server: Server, path: str, **kwargs: Any) -> ClientConnection:
    client: ClientConnection = connect(server.url(path), open_timeout=5, close_timeout=2, **kwargs)
    return client


# -- each authenticator, accepting


def test_a_ticket_from_the_http_endpoint_opens_the_socket_once(server: Server) -> None:
    issued = ticket(server, sub="alice")
    with open_ws(server, f"/ticket?ticket={issued}") as ws:
        data = welcome(ws)
        assert (data["subject"], data["user"]) == ("alice", "alice")
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
    replay = handshake(server, f"/ticket?ticket={issued}")
    assert (replay.status, replay.body) == (401, b"auth_replayed\n")
    events = [e for e in server.wait_events(2) if e.get("id") == data["id"]]
    assert events[0]["subject"] == "alice"
    assert events[0]["credential"] == "query:ticket"
    assert issued not in server.audit_path.read_text() + our_log(server)


def test_a_bearer_token_in_the_header_or_the_subprotocol(server: Server) -> None:
    with open_ws(
        server, "/bearer", additional_headers={"Authorization": f"Bearer {GOOD_TOKEN}"}
    ) as ws:
        assert welcome(ws)["subject"] == "alice"
    with open_ws(server, "/bearer", subprotocols=["access_token", GOOD_TOKEN]) as ws:
        assert welcome(ws)["subject"] == "alice"
        assert ws.subprotocol == "access_token"  # the marker: the token is never echoed
    raw = handshake(server, "/bearer", protocols=f"access_token, {GOOD_TOKEN}")
    assert raw.status == 101
    assert raw.all("sec-websocket-protocol") == ["access_token"]
    with open_ws(server, f"/bearer-query?access_token={GOOD_TOKEN}") as ws:
        assert welcome(ws)["subject"] == "alice"
    audit = server.audit_path.read_text()
    assert GOOD_TOKEN not in audit
    assert '"credential":"subprotocol:access_token"' in audit


def test_a_session_cookie(server: Server) -> None:
    with open_ws(server, "/cookie", additional_headers={"Cookie": f"a=b; sid={SESSION}"}) as ws:
        assert welcome(ws)["subject"] == "carol"
    assert SESSION not in server.audit_path.read_text()


# -- each refusal, as the client sees it


@pytest.mark.parametrize(
    ("path", "extra", "status", "reason", "challenge"),
    [
        ("/ticket", (), 401, "auth_missing", None),
        ("/ticket?ticket=v1.forged.mac", (), 401, "auth_invalid", None),
        ("/bearer", (), 401, "auth_missing", 'Bearer realm="chat"'),
        (
            "/bearer",
            (("Authorization", "Bearer wrong"),),
            401,
            "auth_invalid",
            'Bearer realm="chat", error="invalid_token"',
        ),
        ("/cookie", (("Cookie", "sid=unknown"),), 401, "auth_invalid", None),
        ("/forbidden", (), 403, "auth_forbidden", None),
        ("/raises?token=SECRETQUERY", (), 500, "auth_error", None),
        ("/slow", (), 503, "auth_timeout", None),
    ],
)
def test_refusals(
    server: Server,
    path: str,
    extra: tuple[tuple[str, str], ...],
    status: int,
    reason: str,
    challenge: str | None,
) -> None:
    response = handshake(server, path, extra=extra)
    assert (response.status, response.body) == (status, f"{reason}\n".encode())
    assert response.header("www-authenticate") == challenge
    with pytest.raises(InvalidStatus) as refused:
        open_ws(server, path, additional_headers=dict(extra))
    assert refused.value.response.status_code == status
    assert "SECRETQUERY" not in server.audit_path.read_text() + our_log(server)


def test_an_expired_ticket_is_refused(server: Server) -> None:
    stale = ticket(server, ttl=-1)
    response = handshake(server, f"/ticket?ticket={stale}")
    assert (response.status, response.body) == (401, b"auth_expired\n")


# -- sockets that end when they must


def closed_by_server(ws: ClientConnection) -> ConnectionClosed:
    for _ in range(100):  # bounded: the server closes within its deadline
        try:
            ws.recv(timeout=10)
        except ConnectionClosed as closed:
            return closed
    raise AssertionError("the server never closed the socket")


def close_event(server: Server, audit_id: str) -> dict[str, Any]:
    for _ in range(100):
        found = [
            e for e in server.wait_events(1) if e.get("event") == "closed" and e["id"] == audit_id
        ]
        if found:
            return found[0]
        server.wait_events(len(server.events()) + 1, timeout=0.05)
    raise AssertionError(f"no close event for {audit_id}")


def test_the_age_limit_closes_a_real_socket(server: Server) -> None:
    with open_ws(server, "/aged?user=dora") as ws:
        data = welcome(ws)  # open before the deadline
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "connection age limit reached")
    event = close_event(server, data["id"])
    assert (event["closed_by"], event["code"], event["subject"]) == ("guard", 1008, "dora")
    assert event["lifetime"] >= AGE - 0.01
    with open_ws(server, "/aged-4001") as ws:
        welcome(ws)
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4001


def test_an_expiring_credential_closes_the_socket_at_its_expiry(server: Server) -> None:
    with open_ws(
        server, "/bearer", additional_headers={"Authorization": f"Bearer {EXPIRING_TOKEN}"}
    ) as ws:
        data = welcome(ws)
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "credential expired")
    event = close_event(server, data["id"])
    assert (event["closed_by"], event["subject"]) == ("guard", "erin")


def test_the_app_closing_at_the_deadline_sends_one_close_and_raises_nothing(server: Server) -> None:
    for _ in range(4):
        with open_ws(server, "/race") as ws:
            closed = closed_by_server(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code in (1000, 1008)  # whichever came first; exactly one close
    log = server.log()
    assert "Exception in ASGI application" not in log
    assert "Traceback" not in log


# -- one ticket, two workers, one Redis; limits per identity there


@pytest.fixture(scope="module")
def workers(
    redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    tmp = tmp_path_factory.mktemp("identity-fleet")
    env = {"WSH_REDIS_URL": redis.url, "WSH_REDIS_PREFIX": f"id-{redis.kind}:"}
    argv = uvicorn_argv("websockets-sansio", APP)
    a = start_server("identity-a", argv, tmp, env=env)
    try:
        b = start_server("identity-b", argv, tmp, env=env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


def test_a_ticket_is_used_once_across_workers(workers: tuple[Server, Server]) -> None:
    a, b = workers
    issued = ticket(a, sub="frank")
    with open_ws(b, f"/ticket?ticket={issued}") as ws:
        assert welcome(ws)["subject"] == "frank"
    for worker in (a, b):
        replay = handshake(worker, f"/ticket?ticket={issued}")
        assert (replay.status, replay.body) == (401, b"auth_replayed\n")


def test_connection_caps_per_subject_across_workers(workers: tuple[Server, Server]) -> None:
    a, b = workers
    with open_ws(a, f"/ticket-limited?ticket={ticket(a, sub='gus')}") as held:
        welcome(held)
        second = handshake(b, f"/ticket-limited?ticket={ticket(a, sub='gus')}")
        assert (second.status, second.body) == (503, b"too_many_connections\n")
        with open_ws(b, f"/ticket-limited?ticket={ticket(a, sub='hana')}") as other:
            assert welcome(other)["subject"] == "hana"  # same address, another identity


# -- the FastAPI dependency under real servers


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
def test_the_dependency_under_real_servers(
    kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    argv = uvicorn_argv("websockets-sansio", DEP_APP) if kind == "uvicorn" else daphne_argv(DEP_APP)
    with running(f"dep-{kind}", argv, tmp_path_factory.mktemp(f"dep-{kind}")) as server:
        with open_ws(server, f"/ticket?ticket={ticket(server, sub='ivy')}") as ws:
            assert welcome(ws)["subject"] == "ivy"
        refused = handshake(server, "/ticket")
        if kind == "uvicorn":  # the denial extension: FastAPI's response, our status
            assert (refused.status, json.loads(refused.body)) == (401, {"detail": "auth_missing"})
        else:  # daphne has none: a close before accept, which it sends as 403
            assert refused.status == 403
        events = server.wait_events(2)
        assert [e["reason"] for e in events if "outcome" in e][-1] == "auth_missing"
        assert "Exception in ASGI application" not in server.log()


def test_audit_files_hold_no_credential(server: Server, tmp_path: Path) -> None:
    text = server.audit_path.read_text()
    for secret in (GOOD_TOKEN, EXPIRING_TOKEN, SESSION, "SECRETQUERY"):
        assert secret not in text
