"""Who is connecting, in the pure core: ``Identity`` and its values, credential sources, the
credentials view a hook reads (cookies, query, bearer tokens, subprotocol tokens, scrubbing),
the refusal challenge, the identity options and policy files. The authenticate step through
the middleware: tests/adapter/test_identity.py; under real servers: tests/servers/test_identity.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_handshake import HandshakePolicy, Reason
from asgi_ws_handshake.decision import RESPONSES
from asgi_ws_handshake.identity import (
    ANONYMOUS,
    AuthRefusal,
    AuthRequest,
    AuthScopes,
    Identity,
    parse_source,
)
from asgi_ws_handshake.request import CredentialFields, credential_fields
from tests.asgi import make_request, ws_scope


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
    scope = ws_scope(query_string=b"a=1", cookie="s=1", authorization="Bearer t")
    scope["headers"] += [(b"Cookie", b"t=2"), (b"x", b"y"), ("bad",), (1, b"v")]
    assert credential_fields(scope) == CredentialFields(("s=1", "t=2"), ("Bearer t",), "a=1")
    assert credential_fields({"headers": iter([(b"cookie", "k=v")])}) == CredentialFields(("k=v",))
    assert credential_fields({}) == CredentialFields()


def test_cookies_by_name_first_wins_and_quotes_are_dropped() -> None:
    auth = view(ws_scope(cookie='a=1; session="abc"; session=evil; flag; =x'))
    assert auth.cookie("session") == "abc"
    assert auth.cookie("a") == "1"
    assert auth.cookie("flag") is None
    assert auth.cookie("missing") is None
    assert auth.source == "cookie:session"


def test_query_parameters_are_percent_decoded_first_wins() -> None:
    auth = view(ws_scope(query_string=b"x=1&ticket=a%2Bb+c&ticket=second&&=v"))
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
    assert view(ws_scope(authorization=header)).bearer() == token


def test_repeated_authorization_is_ambiguous_and_never_used() -> None:
    scope = ws_scope(authorization="Bearer one")
    scope["headers"].append((b"authorization", b"Bearer two"))
    auth = view(scope)
    assert auth.bearer() is None
    assert auth.authorization is None
    assert view(ws_scope(authorization="Basic x")).authorization == "Basic x"


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
    auth = view(ws_scope(protocols=protocols))
    assert auth.subprotocol_token("access_token") == token
    assert auth.consumed == token


def test_overlong_credentials_are_not_credentials() -> None:
    auth = view(ws_scope(query_string=b"t=" + b"a" * 9000))
    assert auth.query("t") is None
    assert auth.source is None


def test_scrub_redacts_every_value_read() -> None:
    auth = view(ws_scope(query_string=b"t=s3cr3t-token&short=ab", cookie="c=cookievalue"))
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


def test_make_request_still_builds_requests() -> None:
    # (AuthRequest takes a HandshakeRequest built any way, with credential fields given.)
    auth = AuthRequest(make_request(), CredentialFields(query="a=b"))
    assert auth.query("a") == "b"


def test_policy_files_take_the_identity_options() -> None:
    from asgi_ws_handshake.config import describe_policy, parse_policy

    chosen = parse_policy(
        {
            "authenticate": "tests.core.test_identity:alice",
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
    assert describe_policy(chosen)["authenticate"] == "tests.core.test_identity:alice"
