"""Origins and hosts in the pure core: parsing and normalisation (RFC 6454), allowlist
patterns, same-origin, the Host allowlist against DNS rebinding, IDNA as browsers encode it."""

from __future__ import annotations

import builtins
import re
from typing import Any

import pytest

from asgi_ws_handshake import Accept, HandshakePolicy, HandshakeRequest, Reason, parse_origin
from asgi_ws_handshake.origin import OriginMatcher, parse_host_pattern
from tests.asgi import make_request, reason_of, ws_scope

SAME = HandshakePolicy()
LISTED = HandshakePolicy(allow_origins=["https://app.example.com", "https://*.example.org"])


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


# -- pattern validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern", ["https://*.[::1]", "https://*.*.example.com", "https://*example.com", "null", "*"]
)
def test_bad_origin_patterns_raise(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid origin pattern"):
        OriginMatcher([pattern], None)


def test_origin_matcher_rejects_non_str_and_bad_regex() -> None:
    with pytest.raises(TypeError):
        OriginMatcher([b"https://a.test"], None)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="allow_origin_regex"):
        OriginMatcher([], "(")


def test_host_parsing_edges() -> None:
    assert parse_origin("https://") is None
    assert parse_origin("http://[::1") is None
    assert parse_host_pattern("*.Example.com") == (".example.com", True)
    with pytest.raises(ValueError, match="invalid host pattern"):
        parse_host_pattern("example.com:80")


# -- Unicode patterns as browsers encode them (UTS #46, non-transitional; review item 3) --


def test_unicode_origin_patterns_are_encoded_as_browsers_do() -> None:
    pytest.importorskip("idna")
    policy = HandshakePolicy(allow_origins=["https://straße.de"], allow_hosts=["straße.de"])

    def decide(origin: str, host: str) -> str:
        request = HandshakeRequest.from_scope(ws_scope(origin=origin, host=host))
        decision = policy.evaluate(request)
        return getattr(decision, "reason", "accepted")

    # What browsers send for straße.de (IDNA 2008): accepted.
    assert decide("https://xn--strae-oqa.de", "xn--strae-oqa.de") == "accepted"
    # strasse.de is another domain (IDNA 2003 would have mapped ß to ss): refused.
    assert decide("https://strasse.de", "xn--strae-oqa.de") == "origin_not_allowed"
    assert decide("https://xn--strae-oqa.de", "strasse.de") == "host_not_allowed"


def test_without_the_idna_extra_a_unicode_pattern_names_its_ascii_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_idna(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "idna":
            raise ImportError("No module named 'idna'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_idna)
    with pytest.raises(ValueError, match=r"xn--strae-oqa\.de") as caught:
        HandshakePolicy(allow_origins=["https://straße.de"])
    assert "idna extra" in str(caught.value)
    with pytest.raises(ValueError, match=r"xn--bcher-kva\.example"):
        HandshakePolicy(allow_hosts=["bücher.example"])
