"""Who is connecting: the authenticate step through the scripted ASGI harness (tests/asgi.py).
The identity's values and the credentials view alone: tests/core/test_identity.py.

Origin first, then who; refusals from the response table; hooks that fail fail closed; the
identity downstream (get_handshake, scope user/auth) and in the audit (the subject, never the
credential); per-identity limits; and nothing read or paid for on routes without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from asgi_ws_handshake import HandshakePolicy, MemoryStore, Reason, get_handshake
from asgi_ws_handshake.decision import Reject
from asgi_ws_handshake.identity import (
    ANONYMOUS,
    AuthRefusal,
    AuthRequest,
    Identity,
)
from asgi_ws_handshake.middleware import Receive, Scope, Send
from asgi_ws_handshake.stores import StoreError
from tests.asgi import run, ws_scope

NOW = 1_800_000_000.0


def policy(hook: Any, **options: Any) -> HandshakePolicy:
    return HandshakePolicy(authenticate=hook, **options)


def alice(_: AuthRequest) -> Identity:
    return Identity("alice", claims={"role": "admin"}, scopes=("chat",))


# -- the step, through the middleware


async def echo_identity(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    info = get_handshake(scope)
    assert info is not None
    await send({"type": "websocket.send", "text": json.dumps([info.subject, repr(info)])})


async def test_identity_reaches_the_app_the_audit_and_scope_user() -> None:
    result = await run(echo_identity, ws_scope(), policy=policy(alice))
    (child,) = result.app_scopes
    assert child["user"].subject == "alice"
    assert child["auth"].scopes == ["chat"]
    info = get_handshake(child)
    assert info is not None
    assert info.identity is not None
    assert info.identity.claims["role"] == "admin"
    (event,) = result.sink.events
    assert (event.outcome, event.subject, event.to_dict()["subject"]) == (
        "accepted",
        "alice",
        "alice",
    )
    assert "user" not in result.scope  # the server's scope is not given user/auth
    assert "auth" not in result.scope
    sent = json.loads(result.script.sent[1]["text"])
    assert sent[0] == "alice"
    assert "subject='alice'" in sent[1]


async def test_async_hooks_are_awaited() -> None:
    async def hook(request: AuthRequest) -> Identity:
        await asyncio.sleep(0)
        return Identity(request.query("user") or "nobody")

    result = await run(None, ws_scope(query_string=b"user=carol"), policy=policy(hook))
    (event,) = result.sink.events
    assert (event.outcome, event.subject, event.credential) == ("accepted", "carol", "query:user")


async def test_origin_is_judged_before_who() -> None:
    calls: list[AuthRequest] = []

    def hook(request: AuthRequest) -> Identity:
        calls.append(request)
        return Identity("x")

    result = await run(None, ws_scope(origin="https://evil.test"), policy=policy(hook))
    assert calls == []
    assert result.sink.events[0].reason == "origin_not_allowed"


class _Watched(dict[str, Any]):
    """A scope that records which keys were read."""

    def __init__(self, scope: Mapping[str, Any]) -> None:
        super().__init__(scope)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)


async def test_routes_without_authenticate_never_read_the_credentials() -> None:
    scope = _Watched(ws_scope(query_string=b"ticket=x"))
    result = await run(None, scope, policy=HandshakePolicy(max_connections=5))
    assert result.sink.events[0].outcome == "accepted"
    assert "query_string" not in scope.read
    (child,) = result.app_scopes
    assert "user" not in child
    assert "auth" not in child
    scope = _Watched(ws_scope(query_string=b"ticket=x"))
    await run(None, scope, policy=policy(alice))
    assert "query_string" in scope.read


@pytest.mark.parametrize(
    ("answer", "reason", "status"),
    [
        (None, "auth_missing", 401),
        (AuthRefusal.invalid("nope"), "auth_invalid", 401),
        (AuthRefusal.forbidden("banned"), "auth_forbidden", 403),
        (Reject.because(Reason.AUTH_FORBIDDEN, "by reject"), "auth_forbidden", 403),
        ("alice", "auth_error", 500),
        (Identity("old", expires_at=NOW - 1), "auth_expired", 401),
    ],
)
async def test_answers_that_refuse(answer: Any, reason: str, status: int) -> None:
    for is_async in (False, True):

        def sync_hook(request: AuthRequest) -> Any:
            return answer

        async def async_hook(request: AuthRequest) -> Any:
            return answer

        hook = async_hook if is_async else sync_hook
        result = await run(None, ws_scope(), policy=policy(hook), clock=lambda: NOW)
        (event,) = result.sink.events
        assert (event.outcome, event.reason, event.status) == ("rejected", reason, status)
        assert result.app_scopes == []
        start = result.script.sent[0]
        assert start["status"] == status


async def test_raised_refusals_carry_the_challenge_and_scrub_the_detail() -> None:
    def hook(request: AuthRequest) -> Identity:
        token = request.credential("header")
        raise AuthRefusal.invalid(
            f"token {token} is bad", 'Bearer realm="x", error="invalid_token"'
        )

    result = await run(None, ws_scope(authorization="Bearer SECRETTOKEN"), policy=policy(hook))
    (event,) = result.sink.events
    assert event.reason == "auth_invalid"
    assert "SECRETTOKEN" not in json.dumps(event.to_dict())
    assert event.detail == "token <redacted> is bad"
    headers = dict(result.script.sent[0]["headers"])
    assert headers[b"www-authenticate"] == b'Bearer realm="x", error="invalid_token"'


async def test_a_returned_reject_is_scrubbed_too() -> None:
    def hook(request: AuthRequest) -> Reject:
        return Reject.because(Reason.AUTH_FORBIDDEN, f"cookie {request.cookie('s')} banned")

    result = await run(None, ws_scope(cookie="s=SESSIONVALUE"), policy=policy(hook))
    (event,) = result.sink.events
    assert (event.reason, event.detail) == ("auth_forbidden", "cookie <redacted> banned")
    assert event.to_dict()["origin"] == "https://app.test"


@pytest.fixture
def auth_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="asgi_ws_handshake"):
        yield caplog


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_raising_hook_fails_closed_and_never_logs_the_message(
    is_async: bool, auth_log: pytest.LogCaptureFixture
) -> None:
    def sync_hook(request: AuthRequest) -> Identity:
        raise ValueError(f"bad token {request.bearer()}")

    async def async_hook(request: AuthRequest) -> Identity:
        return sync_hook(request)

    hook = async_hook if is_async else sync_hook
    scope = ws_scope(authorization="Bearer LEAKME")
    result = await run(None, scope, policy=policy(hook))
    (event,) = result.sink.events
    assert (event.reason, event.status, event.detail) == (
        "auth_error",
        500,
        "authenticate raised ValueError",
    )
    assert "LEAKME" not in auth_log.text
    assert "authenticate raised ValueError at" in auth_log.text


async def test_a_slow_hook_times_out_with_503() -> None:
    async def hook(request: AuthRequest) -> Identity:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    result = await run(None, ws_scope(), policy=policy(hook, authenticate_timeout=0.01))
    (event,) = result.sink.events
    assert (event.reason, event.status) == ("auth_timeout", 503)


async def test_a_store_failure_in_the_hook_is_store_unavailable() -> None:
    def hook(request: AuthRequest) -> Identity:
        raise StoreError("down")

    result = await run(None, ws_scope(), policy=policy(hook, on_store_error="open"))
    (event,) = result.sink.events
    assert (event.reason, event.status, event.store_error) == ("store_unavailable", 503, True)


async def test_anonymous_clients_when_allowed() -> None:
    def nobody(request: AuthRequest) -> None:
        return None

    result = await run(echo_none, ws_scope(), policy=policy(nobody, allow_anonymous=True))
    (child,) = result.app_scopes
    assert child["user"] is ANONYMOUS
    assert child["auth"].scopes == []
    (event,) = result.sink.events
    assert (event.outcome, event.subject) == ("accepted", None)


async def echo_none(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})


async def test_the_subprotocol_token_is_consumed_redacted_and_never_negotiated() -> None:
    def hook(request: AuthRequest) -> Identity:
        assert request.subprotocol_token("access_token") == "opaque42"
        return Identity("dave")

    scope = ws_scope(protocols="chat.v1, access_token, opaque42")
    result = await run(None, scope, policy=policy(hook, subprotocols=["chat.v1", "access_token"]))
    (event,) = result.sink.events
    assert event.outcome == "accepted"
    # ("access_token" matches the default redaction globs; the token itself matches none.)
    assert event.subprotocols == ("chat.v1", "<redacted>", "<redacted>")
    assert event.credential == "subprotocol:access_token"
    assert "opaque42" not in json.dumps(event.to_dict())
    assert result.script.sent[0]["subprotocol"] == "chat.v1"


async def test_a_negotiated_token_is_refused() -> None:
    def hook(request: AuthRequest) -> Identity:
        request.subprotocol_token("access_token")
        return Identity("dave")

    scope = ws_scope(protocols="access_token, opaque42")
    result = await run(None, scope, policy=policy(hook, subprotocols=["opaque42"]))
    (event,) = result.sink.events
    assert (event.reason, event.status) == ("internal_error", 500)
    assert event.subprotocols[1] == "<redacted>"


async def test_a_token_after_a_marker_is_redacted_even_when_refused_before_authenticate() -> None:
    scope = ws_scope(protocols="chat.v1, access_token, opaque42", origin="https://evil.test")
    result = await run(None, scope, policy=policy(alice))
    (event,) = result.sink.events
    assert event.reason == "origin_not_allowed"
    assert event.subprotocols == ("chat.v1", "<redacted>", "<redacted>")


# -- limits per identity


def named(subject: str) -> Any:
    def hook(request: AuthRequest) -> Identity:
        return Identity(request.query("u") or subject)

    return hook


async def test_connection_caps_per_subject_not_per_address() -> None:
    store = MemoryStore()
    limited = policy(named("x"), max_connections_per_client=1, limit_key="subject")
    # Two connections from one address: different subjects, both fit.
    first = await run(None, ws_scope(query_string=b"u=erin"), policy=limited, store=store)
    assert first.sink.events[0].outcome == "accepted"
    assert store.connections("default:subject:erin") == 0  # released when it ended

    async def hold(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        second = await run(None, ws_scope(query_string=b"u=erin"), policy=limited, store=store)
        other = await run(None, ws_scope(query_string=b"u=frank"), policy=limited, store=store)
        results.extend([second, other])

    results: list[Any] = []
    await run(hold, ws_scope(query_string=b"u=erin"), policy=limited, store=store)
    second, other = results
    assert second.sink.events[0].reason == "too_many_connections"
    assert other.sink.events[0].outcome == "accepted"


async def test_rates_per_key_function() -> None:
    pytest.importorskip("limits")
    store = MemoryStore()

    def by_team(request: Any, identity: Identity | None) -> str:
        assert identity is not None
        return str(identity.claims.get("team"))

    def hook(request: AuthRequest) -> Identity:
        return Identity(request.query("u") or "x", claims={"team": "blue"})

    limited = policy(hook, rate_limit="1/minute", limit_key=by_team)
    ok = await run(None, ws_scope(query_string=b"u=a"), policy=limited, store=store)
    again = await run(None, ws_scope(query_string=b"u=b"), policy=limited, store=store)
    assert ok.sink.events[0].outcome == "accepted"
    assert again.sink.events[0].reason == "rate_limited"


@pytest.mark.parametrize("bad", [lambda r, i: "", lambda r, i: 3, lambda r, i: 1 / 0])
async def test_a_bad_key_function_fails_closed(bad: Any) -> None:
    result = await run(None, ws_scope(), policy=policy(alice, limit_key=bad, max_connections=3))
    assert result.sink.events[0].reason == "auth_error"


async def test_anonymous_clients_count_under_their_address() -> None:
    store = MemoryStore()
    limited = policy(
        lambda r: None, allow_anonymous=True, limit_key="subject", max_connections_per_client=1
    )

    async def hold(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert store.connections("default:client:127.0.0.1") == 1
        results.append(await run(None, ws_scope(), policy=limited, store=store))

    results: list[Any] = []
    await run(hold, ws_scope(), policy=limited, store=store)
    assert results[0].sink.events[0].reason == "too_many_connections"
