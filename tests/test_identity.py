"""Who is connecting: the authenticate step through the scripted ASGI harness (tests/asgi.py).

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
from asgi_ws_handshake.decision import RESPONSES, Reject
from asgi_ws_handshake.identity import (
    ANONYMOUS,
    AuthRefusal,
    AuthRequest,
    AuthScopes,
    Identity,
    parse_source,
)
from asgi_ws_handshake.middleware import Receive, Scope, Send
from asgi_ws_handshake.request import CredentialFields, credential_fields
from asgi_ws_handshake.stores import StoreError
from tests.asgi import make_request, run, ws_scope

NOW = 1_800_000_000.0


def auth_scope(
    *,
    query: bytes = b"",
    cookie: str | None = None,
    authorization: str | None = None,
    protocols: str | None = None,
    origin: str | None = "https://app.test",
) -> dict[str, Any]:
    extra: list[tuple[bytes, bytes]] = []
    if cookie is not None:
        extra.append((b"cookie", cookie.encode()))
    if authorization is not None:
        extra.append((b"authorization", authorization.encode()))
    scope = ws_scope(origin=origin, protocols=protocols, extra=extra)
    scope["query_string"] = query
    return scope


def policy(hook: Any, **options: Any) -> HandshakePolicy:
    return HandshakePolicy(authenticate=hook, **options)


def alice(_: AuthRequest) -> Identity:
    return Identity("alice", claims={"role": "admin"}, scopes=("chat",))


# -- Identity and its values


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subject": ""}, "invalid subject ''"),
        ({"subject": "x" * 257}, "invalid subject"),
        ({"subject": 7}, "invalid subject 7"),
        ({"subject": "bob\nforged line"}, "control characters"),
        ({"subject": "bob\x85"}, "control characters"),
        ({"subject": "a", "expires_at": "soon"}, "invalid expires_at 'soon'"),
        ({"subject": "a", "expires_at": float("nan")}, "invalid expires_at nan"),
        ({"subject": "a", "expires_at": True}, "invalid expires_at True"),
        ({"subject": "a", "claims": ["x"]}, "invalid claims"),
        ({"subject": "a", "scopes": "chat"}, "invalid scopes 'chat'"),
        ({"subject": "a", "scopes": [1]}, "invalid scopes"),
    ],
)
def test_identity_refuses_bad_values_naming_them(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Identity(**kwargs)


def test_identity_is_what_starlette_expects_in_scope_user() -> None:
    who = Identity("alice", 5.0, {"a": 1}, ["chat"])  # type: ignore[arg-type]
    assert (who.is_authenticated, who.display_name, who.identity) == (True, "alice", "alice")
    assert who.scopes == ("chat",)
    with pytest.raises(TypeError):
        who.claims["b"] = 2  # type: ignore[index]
    assert (ANONYMOUS.is_authenticated, ANONYMOUS.display_name, repr(ANONYMOUS)) == (
        False,
        "",
        "ANONYMOUS",
    )
    assert repr(AuthScopes(("a",))) == "AuthScopes(['a'])"


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        ("header", ("header", "")),
        ("query:ticket", ("query", "ticket")),
        ("cookie:session", ("cookie", "session")),
        ("subprotocol:access_token", ("subprotocol", "access_token")),
    ],
)
def test_parse_source(source: str, parsed: tuple[str, str]) -> None:
    assert parse_source(source) == parsed


@pytest.mark.parametrize("source", ["", "query", "query:", "body:x", "header:x", 3])
def test_parse_source_refuses_naming_the_source(source: Any) -> None:
    with pytest.raises(ValueError, match="invalid credential source"):
        parse_source(source)


# -- the credentials view


def view(scope: dict[str, Any]) -> AuthRequest:
    from asgi_ws_handshake import HandshakeRequest

    return AuthRequest(HandshakeRequest.from_scope(scope), scope)


def test_credential_fields_read_cookie_and_authorization_lines_and_the_query() -> None:
    scope = auth_scope(query=b"a=1", cookie="s=1", authorization="Bearer t")
    scope["headers"] += [(b"Cookie", b"t=2"), (b"x", b"y"), ("bad",), (1, b"v")]
    assert credential_fields(scope) == CredentialFields(("s=1", "t=2"), ("Bearer t",), "a=1")
    assert credential_fields({"headers": iter([(b"cookie", "k=v")])}) == CredentialFields(("k=v",))
    assert credential_fields({}) == CredentialFields()


def test_cookies_by_name_first_wins_and_quotes_are_dropped() -> None:
    auth = view(auth_scope(cookie='a=1; session="abc"; session=evil; flag; =x'))
    assert auth.cookie("session") == "abc"
    assert auth.cookie("a") == "1"
    assert auth.cookie("flag") is None
    assert auth.cookie("missing") is None
    assert auth.source == "cookie:session"


def test_query_parameters_are_percent_decoded_first_wins() -> None:
    auth = view(auth_scope(query=b"x=1&ticket=a%2Bb+c&ticket=second&&=v"))
    assert auth.query("ticket") == "a+b c"
    assert auth.query("x") == "1"
    assert auth.query("nope") is None
    assert auth.credential("query:x") == "1"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer   abc", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer a b", None),
    ],
)
def test_bearer_tokens_rfc_6750(header: str, token: str | None) -> None:
    assert view(auth_scope(authorization=header)).bearer() == token


def test_repeated_authorization_is_ambiguous_and_never_used() -> None:
    scope = auth_scope(authorization="Bearer one")
    scope["headers"].append((b"authorization", b"Bearer two"))
    auth = view(scope)
    assert auth.bearer() is None
    assert auth.authorization is None
    assert view(auth_scope(authorization="Basic x")).authorization == "Basic x"


@pytest.mark.parametrize(
    ("protocols", "token"),
    [
        ("chat.v1, access_token, eyJhbGciOi.x.y", "eyJhbGciOi.x.y"),
        ("access_token", None),  # the marker last: no token
        ("access_token, a, access_token, b", None),  # repeated: ambiguous
        ("chat.v1", None),
    ],
)
def test_subprotocol_token_follows_its_marker(protocols: str, token: str | None) -> None:
    auth = view(auth_scope(protocols=protocols))
    assert auth.subprotocol_token("access_token") == token
    assert auth.consumed == token


def test_overlong_credentials_are_not_credentials() -> None:
    auth = view(auth_scope(query=b"t=" + b"a" * 9000))
    assert auth.query("t") is None
    assert auth.source is None


def test_scrub_redacts_every_value_read() -> None:
    auth = view(auth_scope(query=b"t=s3cr3t-token&short=ab", cookie="c=cookievalue"))
    auth.query("t"), auth.query("short"), auth.cookie("c")
    assert auth.scrub("bad s3cr3t-token and cookievalue, ab") == (
        "bad <redacted> and <redacted>, ab"
    )


def test_refusal_challenge_only_with_a_401_and_only_printable_ascii() -> None:
    missing = AuthRefusal.missing(challenge='Bearer realm="x"').reject("https://a.test")
    assert missing.status == 401
    assert ("www-authenticate", 'Bearer realm="x"') in missing.headers
    assert missing.origin == "https://a.test"
    forbidden = AuthRefusal(Reason.AUTH_FORBIDDEN, challenge="Bearer").reject(None)
    assert forbidden.status == 403
    assert forbidden.headers == ()
    bad = AuthRefusal.invalid(challenge="Bearer\r\nx: y").reject(None)
    assert bad.headers == ()
    assert AuthRefusal.invalid("x" * 500).reject(None).detail == "x" * 200


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (Reason.AUTH_MISSING, 401),
        (Reason.AUTH_INVALID, 401),
        (Reason.AUTH_EXPIRED, 401),
        (Reason.AUTH_REPLAYED, 401),
        (Reason.AUTH_FORBIDDEN, 403),
        (Reason.AUTH_ERROR, 500),
        (Reason.AUTH_TIMEOUT, 503),
    ],
)
def test_auth_reasons_in_the_response_table(reason: Reason, status: int) -> None:
    assert RESPONSES[reason] == (status, ())


# -- policy options


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"authenticate": "nope"}, "invalid authenticate 'nope'"),
        ({"authenticate": alice, "authenticate_timeout": 0}, "invalid authenticate_timeout 0"),
        ({"authenticate": alice, "authenticate_timeout": True}, "invalid authenticate_timeout"),
        ({"authenticate": alice, "limit_key": "ip"}, "invalid limit_key 'ip'"),
        ({"limit_key": "subject"}, "limit_key='subject' needs authenticate"),
        ({"allow_anonymous": True}, "allow_anonymous=True needs authenticate"),
        ({"max_connection_age": 0}, "invalid max_connection_age 0"),
        ({"max_connection_age": "1h"}, "invalid max_connection_age '1h'"),
        ({"expiry_close_code": 1000}, "invalid expiry_close_code 1000"),
        ({"expiry_close_code": 5000}, "invalid expiry_close_code 5000"),
    ],
)
def test_identity_options_are_validated_naming_them(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HandshakePolicy(**kwargs)


def test_sessions_and_stateful_follow_the_options() -> None:
    plain = HandshakePolicy(key_reuse="ignore")
    assert (plain.stateful, plain.sessions) == (False, False)
    aged = HandshakePolicy(key_reuse="ignore", max_connection_age=5)
    assert (aged.stateful, aged.sessions) == (True, True)
    authed = HandshakePolicy(key_reuse="ignore", authenticate=alice, expiry_close_code=4001)
    assert (authed.stateful, authed.sessions, authed.store_checks) == (True, True, ())


# -- the step, through the middleware


async def echo_identity(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    info = get_handshake(scope)
    assert info is not None
    await send({"type": "websocket.send", "text": json.dumps([info.subject, repr(info)])})


async def test_identity_reaches_the_app_the_audit_and_scope_user() -> None:
    result = await run(echo_identity, auth_scope(), policy=policy(alice))
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

    result = await run(None, auth_scope(query=b"user=carol"), policy=policy(hook))
    (event,) = result.sink.events
    assert (event.outcome, event.subject, event.credential) == ("accepted", "carol", "query:user")


async def test_origin_is_judged_before_who() -> None:
    calls: list[AuthRequest] = []

    def hook(request: AuthRequest) -> Identity:
        calls.append(request)
        return Identity("x")

    result = await run(None, auth_scope(origin="https://evil.test"), policy=policy(hook))
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
    scope = _Watched(auth_scope(query=b"ticket=x"))
    result = await run(None, scope, policy=HandshakePolicy(max_connections=5))
    assert result.sink.events[0].outcome == "accepted"
    assert "query_string" not in scope.read
    (child,) = result.app_scopes
    assert "user" not in child
    assert "auth" not in child
    scope = _Watched(auth_scope(query=b"ticket=x"))
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
        result = await run(None, auth_scope(), policy=policy(hook), clock=lambda: NOW)
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

    result = await run(None, auth_scope(authorization="Bearer SECRETTOKEN"), policy=policy(hook))
    (event,) = result.sink.events
    assert event.reason == "auth_invalid"
    assert "SECRETTOKEN" not in json.dumps(event.to_dict())
    assert event.detail == "token <redacted> is bad"
    headers = dict(result.script.sent[0]["headers"])
    assert headers[b"www-authenticate"] == b'Bearer realm="x", error="invalid_token"'


async def test_a_returned_reject_is_scrubbed_too() -> None:
    def hook(request: AuthRequest) -> Reject:
        return Reject.because(Reason.AUTH_FORBIDDEN, f"cookie {request.cookie('s')} banned")

    result = await run(None, auth_scope(cookie="s=SESSIONVALUE"), policy=policy(hook))
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
    scope = auth_scope(authorization="Bearer LEAKME")
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

    result = await run(None, auth_scope(), policy=policy(hook, authenticate_timeout=0.01))
    (event,) = result.sink.events
    assert (event.reason, event.status) == ("auth_timeout", 503)


async def test_a_store_failure_in_the_hook_is_store_unavailable() -> None:
    def hook(request: AuthRequest) -> Identity:
        raise StoreError("down")

    result = await run(None, auth_scope(), policy=policy(hook, on_store_error="open"))
    (event,) = result.sink.events
    assert (event.reason, event.status, event.store_error) == ("store_unavailable", 503, True)


async def test_anonymous_clients_when_allowed() -> None:
    def nobody(request: AuthRequest) -> None:
        return None

    result = await run(echo_none, auth_scope(), policy=policy(nobody, allow_anonymous=True))
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

    scope = auth_scope(protocols="chat.v1, access_token, opaque42")
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

    scope = auth_scope(protocols="access_token, opaque42")
    result = await run(None, scope, policy=policy(hook, subprotocols=["opaque42"]))
    (event,) = result.sink.events
    assert (event.reason, event.status) == ("internal_error", 500)
    assert event.subprotocols[1] == "<redacted>"


async def test_a_token_after_a_marker_is_redacted_even_when_refused_before_authenticate() -> None:
    scope = auth_scope(protocols="chat.v1, access_token, opaque42", origin="https://evil.test")
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
    first = await run(None, auth_scope(query=b"u=erin"), policy=limited, store=store)
    assert first.sink.events[0].outcome == "accepted"
    assert store.connections("default:subject:erin") == 0  # released when it ended

    async def hold(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        second = await run(None, auth_scope(query=b"u=erin"), policy=limited, store=store)
        other = await run(None, auth_scope(query=b"u=frank"), policy=limited, store=store)
        results.extend([second, other])

    results: list[Any] = []
    await run(hold, auth_scope(query=b"u=erin"), policy=limited, store=store)
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
    ok = await run(None, auth_scope(query=b"u=a"), policy=limited, store=store)
    again = await run(None, auth_scope(query=b"u=b"), policy=limited, store=store)
    assert ok.sink.events[0].outcome == "accepted"
    assert again.sink.events[0].reason == "rate_limited"


@pytest.mark.parametrize("bad", [lambda r, i: "", lambda r, i: 3, lambda r, i: 1 / 0])
async def test_a_bad_key_function_fails_closed(bad: Any) -> None:
    result = await run(None, auth_scope(), policy=policy(alice, limit_key=bad, max_connections=3))
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
        results.append(await run(None, auth_scope(), policy=limited, store=store))

    results: list[Any] = []
    await run(hold, auth_scope(), policy=limited, store=store)
    assert results[0].sink.events[0].reason == "too_many_connections"


def test_make_request_still_builds_requests() -> None:
    # (AuthRequest takes a HandshakeRequest built any way, with credential fields given.)
    auth = AuthRequest(make_request(), CredentialFields(query="a=b"))
    assert auth.query("a") == "b"


def test_policy_files_take_the_identity_options() -> None:
    from asgi_ws_handshake.config import describe_policy, parse_policy

    chosen = parse_policy(
        {
            "authenticate": "tests.test_identity:alice",
            "authenticate_timeout": 2,
            "limit_key": "subject",
            "max_connection_age": 3600,
            "expiry_close_code": 4001,
        }
    )
    assert chosen.authenticate is alice
    assert (chosen.limit_key, chosen.max_connection_age, chosen.expiry_close_code) == (
        "subject",
        3600,
        4001,
    )
    assert describe_policy(chosen)["authenticate"] == "tests.test_identity:alice"
