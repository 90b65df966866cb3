"""The ready-made authenticators, through the middleware (scripted harness) and alone.

Each through real uvicorn and a real client: tests/servers/test_identity.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from asgi_ws_handshake import HandshakePolicy, MemoryStore
from asgi_ws_handshake.authenticators import BearerToken, SessionCookie, Tickets, jwt_verifier
from asgi_ws_handshake.identity import AuthRefusal, AuthRequest, Identity
from asgi_ws_handshake.request import CredentialFields
from asgi_ws_handshake.stores import StoreError
from tests.asgi import make_request, run, ws_scope

SECRET = b"k" * 32
NOW = 1_800_000_000.0


async def outcome(hook: Any, scope: dict[str, Any], **kwargs: Any) -> tuple[Any, ...]:
    result = await run(None, scope, policy=HandshakePolicy(authenticate=hook), **kwargs)
    (event,) = result.sink.events
    headers = {}
    if result.script.sent and result.script.sent[0]["type"] == "websocket.http.response.start":
        headers = {
            bytes(k).decode(): bytes(v).decode() for k, v in result.script.sent[0]["headers"]
        }
    return event.reason, event.status, event.subject, headers.get("www-authenticate")


# -- Tickets


def test_ticket_options_are_validated() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Tickets(b"short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Tickets([SECRET, "short"])
    with pytest.raises(ValueError, match="invalid ttl 0"):
        Tickets(SECRET, ttl=0)
    with pytest.raises(ValueError, match="invalid credential source"):
        Tickets(SECRET, source="body:x")
    assert repr(Tickets("s" * 32)) == "Tickets(ttl=30.0, source='query:ticket')"


async def test_a_ticket_is_accepted_once() -> None:
    tickets = Tickets(SECRET)
    ticket = tickets.issue("alice", claims={"room": 7}, scopes=["chat"], expires_at=4e9)
    store = MemoryStore()
    first = await run(None, ws_scope(query_string=f"ticket={ticket}".encode()),
                      policy=HandshakePolicy(authenticate=tickets), store=store)  # fmt: skip
    (event,) = first.sink.events
    assert (event.outcome, event.subject, event.credential) == ("accepted", "alice", "query:ticket")
    who = first.app_scopes[0]["user"]
    assert (who.claims["room"], who.scopes, who.expires_at) == (7, ("chat",), 4e9)
    assert ticket not in json.dumps(event.to_dict())
    again = await outcome(tickets, ws_scope(query_string=f"ticket={ticket}".encode()), store=store)
    assert again[:2] == ("auth_replayed", 401)


def tamper(ticket: str) -> str:
    version, body, mac = ticket.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{version}.{forged}.{mac}"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda t: "", "auth_missing"),
        (lambda t: t.issue("a", ttl=-1), "auth_expired"),
        (lambda t: tamper(t.issue("a")), "auth_invalid"),
        (lambda t: Tickets(b"o" * 32).issue("a"), "auth_invalid"),
        (lambda t: "v2." + t.issue("a")[3:], "auth_invalid"),
        (lambda t: "v1.nodot", "auth_invalid"),
        (lambda t: t.issue("a") + "x" * 5000, "auth_invalid"),
    ],
)
async def test_bad_tickets_are_refused(make: Any, reason: str) -> None:
    tickets = Tickets(SECRET)
    got = await outcome(tickets, ws_scope(query_string=f"ticket={make(tickets)}".encode()))
    assert got[:2] == (reason, 401)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1]",
        b'{"sub": 1, "jti": "x", "exp": 9e9}',
        b'{"sub": "", "jti": "x", "exp": 9e9}',
    ],
)
async def test_well_signed_garbage_is_invalid(payload: bytes) -> None:
    tickets = Tickets(SECRET)
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    signed = f"v1.{body}"
    ticket = f"{signed}.{tickets._mac(SECRET, signed)}"
    got = await outcome(tickets, ws_scope(query_string=f"ticket={ticket}".encode()))
    assert got[:2] == ("auth_invalid", 401)


async def test_rotated_secrets_verify_old_tickets() -> None:
    old = Tickets(b"o" * 32).issue("alice")
    rotated = Tickets([SECRET, b"o" * 32])
    assert (await outcome(rotated, ws_scope(query_string=f"ticket={old}".encode())))[2] == "alice"


async def test_tickets_in_a_subprotocol() -> None:
    tickets = Tickets(SECRET, source="subprotocol:ticket")
    ticket = tickets.issue("alice")
    result = await run(
        None,
        ws_scope(protocols=f"chat.v1, ticket, {ticket}"),
        policy=HandshakePolicy(authenticate=tickets, subprotocols=["chat.v1"]),
    )
    (event,) = result.sink.events
    assert event.outcome == "accepted"
    assert event.subprotocols == ("chat.v1", "ticket", "<redacted>")


async def test_a_store_that_cannot_redeem_refuses_with_503() -> None:
    class Down(MemoryStore):
        def redeem(self, ticket: str, ttl: float) -> bool:
            raise StoreError("down")

    tickets = Tickets(SECRET)
    got = await outcome(
        tickets, ws_scope(query_string=f"ticket={tickets.issue('a')}".encode()), store=Down()
    )
    assert got[:2] == ("store_unavailable", 503)


async def test_a_ticket_without_a_store_is_refused() -> None:
    tickets = Tickets(SECRET)
    request = AuthRequest(make_request(), CredentialFields(query=f"ticket={tickets.issue('a')}"))
    with pytest.raises(AuthRefusal, match="no store"):
        await tickets(request)


# -- BearerToken


def verify(token: str) -> Identity | None:
    return Identity("bob") if token == "good" else None


def test_bearer_options_are_validated() -> None:
    with pytest.raises(TypeError, match="not a str"):
        BearerToken(verify, sources="header")
    with pytest.raises(ValueError, match="at least one"):
        BearerToken(verify, sources=())
    with pytest.raises(ValueError, match="invalid credential source"):
        BearerToken(verify, sources=("form:x",))
    with pytest.raises(ValueError, match="invalid realm"):
        BearerToken(verify, realm='a"b')


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (ws_scope(authorization="Bearer good"), ("subject", "bob")),
        (ws_scope(protocols="access_token, good"), ("subject", "bob")),
        (ws_scope(query_string=b"access_token=good"), ("subject", "bob")),
        (ws_scope(), ("auth_missing", 'Bearer realm="chat"')),
        (
            ws_scope(authorization="Bearer bad"),
            ("auth_invalid", 'Bearer realm="chat", error="invalid_token"'),
        ),
    ],
)
async def test_bearer_tokens_from_each_source(scope: dict[str, Any], expected: Any) -> None:
    hook = BearerToken(
        verify, sources=("header", "subprotocol:access_token", "query:access_token"), realm="chat"
    )
    reason, status, subject, challenge = await outcome(hook, scope)
    if expected[0] == "subject":
        assert subject == expected[1]
    else:
        assert (reason, status, challenge) == (expected[0], 401, expected[1])


async def test_an_async_verify_and_its_refusal_get_the_challenge() -> None:
    async def expired(token: str) -> Identity | None:
        raise AuthRefusal.expired()

    got = await outcome(BearerToken(expired), ws_scope(authorization="Bearer x"))
    assert got == ("auth_expired", 401, None, 'Bearer realm="websocket", error="invalid_token"')


async def test_a_verify_returning_garbage_is_an_auth_error() -> None:
    got = await outcome(BearerToken(lambda t: "bob"), ws_scope(authorization="Bearer x"))
    assert got[:2] == ("auth_error", 500)


# -- SessionCookie


async def test_session_cookies() -> None:
    sessions = {"s1": Identity("carol")}

    async def lookup(value: str) -> Identity | None:
        return sessions.get(value)

    hook = SessionCookie("sid", lookup)
    assert (await outcome(hook, ws_scope(cookie="sid=s1")))[2] == "carol"
    assert (await outcome(hook, ws_scope(cookie="sid=nope")))[:2] == ("auth_invalid", 401)
    assert (await outcome(hook, ws_scope(cookie="other=s1")))[:2] == ("auth_missing", 401)
    with pytest.raises(ValueError, match="invalid credential source"):
        SessionCookie("", lookup)


# -- JWT through PyJWT


def test_jwt_verifier() -> None:
    verify_jwt = jwt_verifier("k" * 32, algorithms=["HS256"], audience="chat")
    good = jwt.encode(
        {"sub": "dan", "exp": 4e9, "aud": "chat", "scope": "chat:read chat:write"},
        "k" * 32,
        algorithm="HS256",
    )
    who = verify_jwt(good)
    assert who is not None
    assert (who.subject, who.expires_at, who.scopes) == (
        "dan",
        4e9,
        ("chat:read", "chat:write"),
    )
    assert verify_jwt(jwt.encode({"sub": "x", "exp": 4e9, "aud": "chat"}, "o" * 32)) is None
    assert verify_jwt(jwt.encode({"sub": "x", "aud": "chat"}, "k" * 32)) is None  # no exp
    assert verify_jwt("not.a.jwt") is None
    none_alg = jwt.encode({"sub": "x", "exp": 4e9, "aud": "chat"}, "", algorithm="none")
    assert verify_jwt(none_alg) is None
    with pytest.raises(AuthRefusal) as refused:
        verify_jwt(jwt.encode({"sub": "x", "exp": 1, "aud": "chat"}, "k" * 32))
    assert refused.value.reason == "auth_expired"
    with pytest.raises(ValueError, match="algorithms"):
        jwt_verifier("k", algorithms=[])
