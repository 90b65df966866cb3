"""Table-driven tests of the pure core: request parsing, every reason code, origin rules."""

from __future__ import annotations

import re
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
    parse_origin,
)
from asgi_ws_handshake.decision import RESPONSES
from tests.asgi import make_request
from tests.support import GOOD_KEY


def make_scope(headers: list[tuple[bytes, bytes]], **extra: Any) -> dict[str, Any]:
    return {"type": "websocket", "path": "/ws", "headers": headers, **extra}


def reason_of(policy: HandshakePolicy, request: HandshakeRequest) -> Reason | None:
    decision = policy.evaluate(request)
    return decision.reason if isinstance(decision, Reject) else None


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


# -- request parsing ----------------------------------------------------------------------


def test_from_scope_keeps_duplicates_and_decodes_latin1() -> None:
    request = HandshakeRequest.from_scope(
        make_scope(
            [
                (b"host", b"a.test"),
                (b"origin", b"https://a.test"),
                (b"origin", b"https://b.test"),
                (b"sec-websocket-key", b"  " + GOOD_KEY.encode() + b"\t"),
                (b"sec-websocket-version", b"13"),
                (b"sec-websocket-protocol", b"chat, , \xff"),
                (b"cookie", b"secret=1"),
            ]
        )
    )
    assert request.origins == ("https://a.test", "https://b.test")
    assert request.keys == (GOOD_KEY,)  # RFC 9110 5.5: surrounding whitespace is not the value
    assert request.subprotocols == ("chat", "\xff")  # empty item dropped, latin-1 kept
    assert request.hosts == ("a.test",)


def test_from_scope_daphne_joined_lines_equal_separate_lines() -> None:
    joined = HandshakeRequest.from_scope(
        make_scope(
            [(b"origin", b"https://a.test, https://b.test"), (b"sec-websocket-key", b"k1, k2")]
        )
    )
    separate = HandshakeRequest.from_scope(
        make_scope(
            [
                (b"origin", b"https://a.test"),
                (b"origin", b"https://b.test"),
                (b"sec-websocket-key", b"k1"),
                (b"sec-websocket-key", b"k2"),
            ]
        )
    )
    assert joined.origins == separate.origins == ("https://a.test", "https://b.test")
    assert joined.keys == separate.keys == ("k1", "k2")


def test_from_scope_falls_back_to_scope_subprotocols() -> None:
    # uvicorn's wsproto backend removes the header and keeps scope["subprotocols"].
    request = HandshakeRequest.from_scope(make_scope([], subprotocols=["a", "b", ""]))
    assert request.subprotocols == ("a", "b")
    # The header wins when present (hypercorn's list keeps only the last line).
    request = HandshakeRequest.from_scope(
        make_scope(
            [(b"sec-websocket-protocol", b"x"), (b"sec-websocket-protocol", b"y")],
            subprotocols=["y"],
        )
    )
    assert request.subprotocols == ("x", "y")


def test_from_scope_optional_keys_and_odd_shapes() -> None:
    request = HandshakeRequest.from_scope({"type": "websocket", "headers": [(b"ORIGIN", b"x")]})
    assert request.origins == ("x",)  # a server that forgot to lowercase is still read
    assert request.path == "/"
    assert request.http_version == "1.1"
    assert request.client is None
    assert request.denial_response is False
    request = HandshakeRequest.from_scope(
        make_scope(
            [],
            client=["127.0.0.1", "5000"],  # granian: port as a string
            extensions={"websocket.http.response": {}},
            http_version="2",
        )
    )
    assert request.client == ("127.0.0.1", 5000)
    assert request.denial_response is True
    assert request.http_version == "2"
    assert HandshakeRequest.from_scope(make_scope([], client=object())).client is None


def test_from_scope_missing_version_is_empty() -> None:
    assert HandshakeRequest.from_scope(make_scope([])).versions == ()


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


# -- origins ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example.org", True),
        ("https://deep.a.example.org", True),
        ("https://A.Example.ORG", True),  # hosts compare lowercase
        ("https://a.example.org:443", True),  # explicit default port
        ("https://example.org", False),  # the wildcard never matches the bare domain
        ("https://www.example.org.evil.com", False),
        ("https://evilexample.org", False),
        ("https://a.example.org:8443", False),  # another port
        ("http://a.example.org", False),  # another scheme
        ("https://app.example.com", True),
        ("HTTPS://APP.EXAMPLE.COM:443", True),
        ("https://app.example.com.", False),  # a trailing dot is another origin
        ("https://app.example.com:444", False),
    ],
)
def test_origin_patterns(origin: str, allowed: bool) -> None:
    assert (reason_of(LISTED, make_request(origins=(origin,))) is None) is allowed


def test_idna_patterns_and_origins() -> None:
    policy = HandshakePolicy(allow_origins=["https://bücher.example", "https://*.münchen.test"])
    assert reason_of(policy, make_request(origins=("https://xn--bcher-kva.example",))) is None
    assert reason_of(policy, make_request(origins=("https://a.xn--mnchen-3ya.test",))) is None
    # Header values are ASCII serialisations (RFC 6454 6.2): a raw Unicode host, such as a
    # Cyrillic look-alike of "a" or a byte IDNA would map to "a", is malformed, not guessed.
    for raw in ("https://\u0430pp.example.com", "https://\xaapp.example.com"):
        assert reason_of(LISTED, make_request(origins=(raw,))) is Reason.ORIGIN_MALFORMED
    assert reason_of(SAME, make_request(hosts=("\xaapp.example.com",))) is Reason.HOST_MALFORMED


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("https://app.example.com", "app.example.com", True),
        ("http://app.example.com", "app.example.com", True),
        ("https://app.example.com", "APP.example.com", True),
        ("https://app.example.com", "app.example.com:443", True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),  # differs only by port
        ("http://127.0.0.1", "127.0.0.1:8000", False),
        ("https://app.example.com", "app.example.com:80", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://[0:0::1]:8000", "[::1]:8000", True),
        ("https://evil.test", "app.example.com", False),
        ("chrome-extension://app.example.com", "app.example.com", False),
    ],
)
def test_same_origin_default(origin: str, host: str, allowed: bool) -> None:
    request = make_request(origins=(origin,), hosts=(host,))
    assert (reason_of(SAME, request) is None) is allowed


def test_dns_rebinding_needs_allow_hosts() -> None:
    # The attacker's page and Host are both evil.test: same-origin alone lets it through...
    rebound = make_request(origins=("http://evil.test",), hosts=("evil.test",))
    assert reason_of(SAME, rebound) is None
    # ... a Host allowlist stops it.
    guarded = HandshakePolicy(allow_hosts=["app.example.com", "*.app.example.com"])
    assert reason_of(guarded, rebound) is Reason.HOST_NOT_ALLOWED
    ok = make_request(origins=("https://x.app.example.com",), hosts=("x.app.example.com",))
    assert reason_of(guarded, ok) is None


def test_regex_origin_full_match() -> None:
    policy = HandshakePolicy(allow_origin_regex=r"https://pr-\d+\.preview\.test")
    assert reason_of(policy, make_request(origins=("https://pr-12.preview.test",))) is None
    for origin in ("https://pr-12.preview.test.evil.com", "https://xpr-1.preview.test"):
        assert reason_of(policy, make_request(origins=(origin,))) is Reason.ORIGIN_NOT_ALLOWED
    compiled = HandshakePolicy(allow_origin_regex=re.compile(r"https://[a-z]+\.test"))
    assert reason_of(compiled, make_request(origins=("https://abc.test",))) is None


def test_allow_any_origin_and_null() -> None:
    anyone = HandshakePolicy(allow_any_origin=True)
    assert reason_of(anyone, make_request(origins=("https://evil.test",))) is None
    assert reason_of(anyone, make_request(origins=("null",))) is None
    assert reason_of(anyone, make_request(origins=("https://a/b",))) is Reason.ORIGIN_MALFORMED
    assert reason_of(anyone, make_request(origins=("https://a", "https://b"))) is (
        Reason.ORIGIN_MULTIPLE
    )
    nulls = HandshakePolicy(allow_null_origin=True)
    assert nulls.evaluate(make_request(origins=("null",))) == Accept(None, "null")


def test_missing_origin_by_choice() -> None:
    assert reason_of(SAME, make_request(origins=())) is None  # default: non-browser clients
    no_missing = HandshakePolicy(allow_missing_origin=False)
    assert reason_of(no_missing, make_request(origins=())) is Reason.ORIGIN_MISSING


@pytest.mark.parametrize(
    "value",
    [
        "https://user@app.example.com",
        "https://app.example.com/path",
        "https://app.example.com?q",
        "https://app.example.com#f",
        "https://app.example.com:99999",
        "https://app.example.com:",
        "https://app.example.com:0443",
        "https://app.example.com:x",
        "https://app%2eexample.com",
        "https://app example.com",
        "https://app.example.com\x00",
        "https://",
        "app.example.com",
        "://app.example.com",
        "1https://app.example.com",
        "https://[::1",
        "https://[zz::1]",
        "https://a..b",
    ],
)
def test_malformed_origins(value: str) -> None:
    assert parse_origin(value) is None


def test_origin_normalisation() -> None:
    origin = parse_origin("HTTPS://App.Example.COM:443")
    assert origin is not None
    assert origin.serialized == "https://app.example.com"
    assert origin.port == 443
    custom = parse_origin("app://local")  # unknown scheme: no default port
    assert custom is not None
    assert custom.port is None
    assert custom.serialized == "app://local"


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
