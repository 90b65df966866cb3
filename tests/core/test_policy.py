"""Table-driven tests of the pure core's decision: the key, every reason code and the response
table, subprotocol negotiation, the policy's options (errors name the option)."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_handshake import (
    Accept,
    HandshakePolicy,
    HandshakeRequest,
    Reason,
    Reject,
    accept_key,
    is_valid_key,
)
from asgi_ws_handshake.decision import RESPONSES
from tests.asgi import make_request, reason_of
from tests.support import GOOD_KEY

# -- key ----------------------------------------------------------------------------------


def test_rfc6455_accept_vector() -> None:
    # RFC 6455 1.3
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        (GOOD_KEY, True),
        ("AAAAAAAAAAAAAAAAAAAAAA==", True),
        ("/////////////////////w==", True),
        ("dGhlIHNhbXBsZSBub25jZQ", False),  # padding missing
        ("dGhlIHNhbXBsZSBub25jZQ=", False),  # padding short
        ("dGhlIHNhbXBsZSBub25jZR==", False),  # non-canonical trailing bits
        ("dGhlIHNhbXBsZSBub25jZQ===", False),  # too long
        ("dGhlIHNhbXBsZSBub25j", False),  # 15 bytes... not 16
        ("AAAAAAAAAAAAAAAAAAAAAAA=", False),  # 17 bytes
        ("_-__________________w==", False),  # URL-safe alphabet
        ("dGhlIHNhb XBsZSBub25jZQ==", False),  # embedded space
        ("", False),
        ("not base64 at all!!!!!==", False),
    ],
)
def test_key_validation(key: str, valid: bool) -> None:
    assert is_valid_key(key) is valid


# -- every reason code --------------------------------------------------------------------

SAME = HandshakePolicy()
LISTED = HandshakePolicy(allow_origins=["https://app.example.com", "https://*.example.org"])
STRICT = HandshakePolicy(
    allow_origins=["https://app.example.com"],
    allow_missing_origin=False,
    subprotocols=["graphql-transport-ws"],
    require_subprotocol=True,
    allow_hosts=["app.example.com"],
)


@pytest.mark.parametrize(
    ("policy", "overrides", "reason"),
    [
        (SAME, {}, None),
        (SAME, {"origins": ("https://evil.example.com",)}, Reason.ORIGIN_NOT_ALLOWED),
        (STRICT, {"origins": ()}, Reason.ORIGIN_MISSING),
        (SAME, {"origins": ("null",)}, Reason.ORIGIN_NULL),
        (SAME, {"origins": ("https://app.example.com/",)}, Reason.ORIGIN_MALFORMED),
        (SAME, {"origins": ("",)}, Reason.ORIGIN_MALFORMED),
        (SAME, {"origins": ("https://app.example.com",) * 2}, Reason.ORIGIN_MULTIPLE),
        (STRICT, {"hosts": ("evil.test",)}, Reason.HOST_NOT_ALLOWED),
        (SAME, {"hosts": ()}, Reason.HOST_MALFORMED),
        (SAME, {"hosts": ("a.test", "b.test")}, Reason.HOST_MALFORMED),
        (SAME, {"hosts": ("bad host",)}, Reason.HOST_MALFORMED),
        (SAME, {"versions": ()}, Reason.VERSION_MISSING),
        (SAME, {"versions": ("8",)}, Reason.VERSION_UNSUPPORTED),
        (SAME, {"versions": ("13", "13")}, Reason.VERSION_UNSUPPORTED),
        (SAME, {"versions": ("013",)}, Reason.VERSION_UNSUPPORTED),
        (SAME, {"keys": ()}, Reason.KEY_MISSING),
        (SAME, {"keys": ("c2hvcnQ=",)}, Reason.KEY_MALFORMED),
        (SAME, {"keys": ("!" * 24,)}, Reason.KEY_MALFORMED),
        (SAME, {"keys": (GOOD_KEY, GOOD_KEY)}, Reason.KEY_MULTIPLE),
        (SAME, {"subprotocols": ("chat", "bad token")}, Reason.SUBPROTOCOL_MALFORMED),
        (SAME, {"subprotocols": ("chat", "chat")}, Reason.SUBPROTOCOL_MALFORMED),
        (SAME, {"subprotocols": ("a/b",)}, Reason.SUBPROTOCOL_MALFORMED),
        (STRICT, {"subprotocols": ("graphql-ws",)}, Reason.SUBPROTOCOL_REQUIRED),
        (STRICT, {"subprotocols": ("graphql-ws", "graphql-transport-ws")}, None),
    ],
)
def test_reason_codes(
    policy: HandshakePolicy, overrides: dict[str, Any], reason: Reason | None
) -> None:
    decision = policy.evaluate(make_request(**overrides))
    if reason is None:
        assert isinstance(decision, Accept), decision
    else:
        assert isinstance(decision, Reject), decision
        assert decision.reason is reason
        status, headers = RESPONSES[reason]
        assert decision.status == status
        assert decision.headers == headers
        assert decision.detail  # every refusal says why


@pytest.mark.parametrize(
    ("reason", "status", "headers"),
    [
        (Reason.VERSION_MISSING, 400, (("sec-websocket-version", "13"),)),
        (Reason.VERSION_UNSUPPORTED, 426, (("sec-websocket-version", "13"),)),
        (Reason.ORIGIN_NOT_ALLOWED, 403, ()),
        (Reason.KEY_MALFORMED, 400, ()),
        (Reason.RATE_LIMITED, 429, ()),
        (Reason.TOO_MANY_CONNECTIONS, 503, ()),
        (Reason.APP_SUBPROTOCOL_NOT_OFFERED, 500, ()),
    ],
)
def test_response_table(reason: Reason, status: int, headers: tuple[tuple[str, str], ...]) -> None:
    # DESIGN.md response table; RFC 6455 4.4 for the version rows.
    assert RESPONSES[reason] == (status, headers)


def test_every_reason_has_a_response() -> None:
    assert set(RESPONSES) == set(Reason)


def test_accept_carries_the_subprotocol_and_the_normalised_origin() -> None:
    decision = SAME.evaluate(make_request(origins=("HTTPS://App.Example.COM:443",)))
    assert decision == Accept(None, "https://app.example.com")


def test_a_refusal_after_the_origin_check_keeps_the_origin() -> None:
    policy = HandshakePolicy(require_subprotocol=True, subprotocols=["chat"])
    decision = policy.evaluate(make_request(subprotocols=("other",)))
    assert isinstance(decision, Reject)
    assert (decision.reason, decision.origin) == (
        Reason.SUBPROTOCOL_REQUIRED,
        "https://app.example.com",
    )


@pytest.mark.parametrize("http_version", ["2", "3"])
def test_http2_and_http3_skip_key_checks(http_version: str) -> None:
    # RFC 8441 5 / RFC 9220 3: no Sec-WebSocket-Key or Accept over extended CONNECT.
    decision = SAME.evaluate(make_request(keys=(), http_version=http_version))
    assert decision == Accept(None, "https://app.example.com")
    # ... but the version and origin rules still apply.
    decision = SAME.evaluate(make_request(keys=(), http_version=http_version, versions=("8",)))
    assert isinstance(decision, Reject)
    assert decision.reason is Reason.VERSION_UNSUPPORTED


def test_check_order_version_then_key_then_origin() -> None:
    bad_everything = make_request(versions=("8",), keys=(), origins=("https://evil.test",))
    assert reason_of(SAME, bad_everything) is Reason.VERSION_UNSUPPORTED
    assert (
        reason_of(SAME, make_request(keys=(), origins=("https://evil.test",))) is Reason.KEY_MISSING
    )


# -- subprotocols -------------------------------------------------------------------------


def test_server_and_client_preference() -> None:
    offered = ("graphql-ws", "graphql-transport-ws")
    server = HandshakePolicy(subprotocols=["graphql-transport-ws", "graphql-ws"])
    client = HandshakePolicy(
        subprotocols=["graphql-transport-ws", "graphql-ws"], subprotocol_preference="client"
    )
    request = make_request(subprotocols=offered)
    assert server.evaluate(request) == Accept("graphql-transport-ws", "https://app.example.com")
    assert client.evaluate(request) == Accept("graphql-ws", "https://app.example.com")
    no_overlap = server.evaluate(make_request(subprotocols=("mqtt",)))
    assert isinstance(no_overlap, Accept)
    assert no_overlap.subprotocol is None


def test_custom_selector_for_token_carrying_subprotocols() -> None:
    seen: list[tuple[str, ...]] = []

    def pick(request: HandshakeRequest, offered: tuple[str, ...]) -> str | None:
        seen.append(offered)
        return "v4.channel.k8s.io" if "v4.channel.k8s.io" in offered else None

    policy = HandshakePolicy(select_subprotocol=pick, require_subprotocol=True)
    offered = ("base64url.bearer.authorization.k8s.io.c2VjcmV0", "v4.channel.k8s.io")
    decision = policy.evaluate(make_request(subprotocols=offered))
    assert isinstance(decision, Accept)
    assert decision.subprotocol == "v4.channel.k8s.io"
    assert seen == [offered]
    assert reason_of(policy, make_request(subprotocols=("x",))) is Reason.SUBPROTOCOL_REQUIRED


def test_selector_choosing_unoffered_is_refused() -> None:
    policy = HandshakePolicy(select_subprotocol=lambda request, offered: "sneaky")
    assert reason_of(policy, make_request(subprotocols=("a",))) is Reason.INTERNAL_ERROR


# -- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"allow_origins": ["https://*example.com"]},
            "invalid origin pattern 'https://\\*example.com'",
        ),
        ({"allow_origins": ["example.com"]}, "invalid origin pattern 'example.com'"),
        ({"allow_origins": ["https://a.test/path"]}, "invalid origin pattern"),
        ({"allow_origins": ["https://a.*.test"]}, "invalid origin pattern"),
        ({"allow_origins": ["*"]}, "allow_any_origin"),
        ({"allow_origins": ["null"]}, "allow_null_origin"),
        ({"allow_origin_regex": "("}, "invalid allow_origin_regex"),
        ({"allow_any_origin": True, "allow_origins": ["https://a.test"]}, "conflicts"),
        ({"allow_hosts": ["a.test:80"]}, "invalid host pattern"),
        ({"allow_hosts": ["*"]}, "invalid host pattern"),
        ({"subprotocols": ["bad token"]}, "invalid subprotocol 'bad token'"),
        ({"subprotocols": ["a", "a"]}, "repeat"),
        ({"require_subprotocol": True}, "require_subprotocol"),
        ({"subprotocol_preference": "random"}, "invalid subprotocol_preference"),
        ({"key_reuse": "maybe"}, "invalid key_reuse 'maybe'"),
        ({"key_reuse_ttl": 0}, "invalid key_reuse_ttl"),
    ],
)
def test_bad_configuration_names_the_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HandshakePolicy(**kwargs)


@pytest.mark.parametrize("option", ["allow_origins", "allow_hosts", "subprotocols"])
def test_bare_string_lists_are_type_errors(option: str) -> None:
    kwargs: dict[str, Any] = {option: "https://a.test"}
    with pytest.raises(TypeError, match=option):
        HandshakePolicy(**kwargs)


def test_policy_is_frozen_and_normalised() -> None:
    policy = HandshakePolicy(allow_origins=["https://a.test"], subprotocols=["x"])
    assert policy.allow_origins == ("https://a.test",)
    assert policy.subprotocols == ("x",)
    with pytest.raises(AttributeError):
        policy.allow_any_origin = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate_limit": "30/fortnight"}, "invalid rate_limit '30/fortnight'"),
        ({"rate_limit_total": "many"}, "invalid rate_limit_total 'many'"),
        ({"rate_limit": "0/minute"}, "invalid rate_limit '0/minute'"),
        ({"max_connections": 0}, "invalid max_connections 0"),
        ({"max_connections_per_client": 2.5}, "invalid max_connections_per_client 2.5"),
        ({"max_connections": True}, "invalid max_connections True"),
        ({"connections_retry_after": -1}, "invalid connections_retry_after -1"),
        ({"on_store_error": "ignore"}, "invalid on_store_error 'ignore'"),
    ],
)
def test_policy_validates_limit_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HandshakePolicy(**options)


@pytest.mark.parametrize(
    ("value", "limit", "window"),
    [
        ("30/minute", 30, 60),
        ("30 per minute", 30, 60),
        ("100/5 seconds", 100, 5),
        ("2 per 3 hours", 2, 10800),
        ("10/day", 10, 86400),
    ],
)
def test_rates_use_the_limits_notation(value: str, limit: int, window: int) -> None:
    rate = HandshakePolicy(rate_limit=value).client_rate
    assert rate is not None
    assert (rate.limit, rate.window) == (limit, window)
