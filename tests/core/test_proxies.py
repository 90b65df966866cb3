"""Behind proxies, in the pure core: Forwarded / X-Forwarded-* parsing, trusted_proxies and
public_origins (``Deployment``), the public host, scheme and client; Sec-Fetch-Site; the
report-only selector. Through the middleware: tests/adapter/test_deployment.py; a real proxy
in front of uvicorn: tests/servers/test_proxy.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from asgi_ws_handshake import HandshakePolicy, HandshakeRequest, Reason
from asgi_ws_handshake.decision import Accept, Reject
from asgi_ws_handshake.proxies import Deployment, Site, parse_forwarded
from asgi_ws_handshake.request import RawValues
from tests.asgi import make_request, ws_scope

PROXY = "10.0.0.5"
SITE = "https://app.example.com"
BACKEND = "backend:8000"
PEER = (PROXY, 40000)
STRANGER = ("203.0.113.9", 40000)
#: ``ws_scope`` keywords for a handshake as a proxy forwards it: the internal Host, from the
#: proxy's address (the public host and scheme, when given, in the forwarding headers).
FORWARDED: dict[str, Any] = {"origin": SITE, "host": BACKEND, "client": PEER}
XF = [(b"x-forwarded-host", b"app.example.com"), (b"x-forwarded-proto", b"https")]


def request_for(scope: dict[str, Any], **options: Any) -> HandshakeRequest:
    return HandshakeRequest.from_scope(scope, Deployment(**options))


# -- parsing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("for=192.0.2.60;proto=http;by=203.0.113.43", [{"for": "192.0.2.60", "proto": "http",
                                                        "by": "203.0.113.43"}]),
        ('for="[2001:db8:cafe::17]:4711"', [{"for": "[2001:db8:cafe::17]:4711"}]),
        ("for=192.0.2.43, for=198.51.100.17", [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]),
        ('For="_gazonk";HOST=a.example', [{"for": "_gazonk", "host": "a.example"}]),
        ('host="a,b.example";proto=https', [{"host": "a,b.example", "proto": "https"}]),
        ('host="a\\"b"', [{"host": 'a"b'}]),
        ("for=1.2.3.4;for=5.6.7.8", [None]),  # RFC 7239 4: a parameter at most once
        ("for", [None]),
        ('for="unterminated', [None]),
        ("for=a b", [{"for": "a b"}]),
        ("x" * 9000, []),
    ],
)  # fmt: skip
def test_parse_forwarded(value: str, expected: list[dict[str, str] | None]) -> None:
    assert parse_forwarded(value) == expected


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"trusted_proxies": ["*"]}, "list the proxies' addresses"),
        ({"trusted_proxies": ["10.0.0.1/8"]}, "has host bits set"),
        ({"trusted_proxies": ["proxy.internal"]}, "expected an IP address"),
        ({"public_origins": ["https://app.example.com/"]}, "expected 'https://host[:port]'"),
        ({"public_origins": ["ftp://app.example.com"]}, "expected 'https://host[:port]'"),
        ({"proxy_headers": "x-real-ip"}, "expected 'x-forwarded' or 'forwarded'"),
    ],
)
def test_bad_deployment_options_name_the_entry(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match="invalid") as caught:
        Deployment(**options)
    assert problem in str(caught.value)


def test_a_str_is_not_a_list_of_proxies() -> None:
    with pytest.raises(TypeError, match="not a str"):
        Deployment(trusted_proxies="10.0.0.1")


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("10.0.0.5", True),
        ("10.9.9.9", False),
        ("192.168.7.1", True),
        ("::ffff:192.168.7.1", True),  # a dual-stack listener's IPv4 peer
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("not-an-address", False),
        (None, True),  # a Unix socket, listed as "unix:"
    ],
)
def test_trust_by_address_network_and_unix_socket(peer: str | None, trusted: bool) -> None:
    deployment = Deployment(
        trusted_proxies=["10.0.0.5", "192.168.7.0/24", "2001:db8::/32", "unix:"]
    )
    assert deployment.trusts(peer) is trusted
    assert deployment.trusts(peer) is trusted  # remembered
    assert Deployment(trusted_proxies=["10.0.0.5"]).trusts(None) is False


# -- the public host, scheme and client


def test_a_trusted_proxy_gives_the_public_host_scheme_and_client() -> None:
    headers = [*XF, (b"x-forwarded-for", b"203.0.113.7, 10.0.0.6")]
    request = request_for(ws_scope(**FORWARDED, extra=headers), trusted_proxies=["10.0.0.0/24"])
    assert request.site == Site("https", "app.example.com", None)
    assert request.client == ("203.0.113.7", 0)  # from the right, past the trusted hops
    assert request.hosts == ("backend:8000",)  # Host itself stays as it was sent
    assert HandshakePolicy().evaluate(request) == Accept(None, SITE)


def test_forwarded_headers_from_anyone_else_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scope = ws_scope(origin=SITE, host="app.example.com:8000", client=STRANGER, extra=XF)
    with caplog.at_level(logging.WARNING, "asgi_ws_handshake"):
        deployment = Deployment(trusted_proxies=[PROXY])
        request = HandshakeRequest.from_scope(scope, deployment)
        HandshakeRequest.from_scope(scope, deployment)
    assert request.site is None
    assert request.client == ("203.0.113.9", 40000)
    decision = HandshakePolicy().evaluate(request)
    assert type(decision) is Reject
    assert decision.reason is Reason.ORIGIN_NOT_ALLOWED  # port 8000 is not the origin's 443
    warnings = [r for r in caplog.records if "not in trusted_proxies" in r.getMessage()]
    assert len(warnings) == 1  # once per deployment


def test_a_forged_forwarded_host_cannot_make_a_foreign_origin_same_origin() -> None:
    forged = [(b"x-forwarded-host", b"evil.example")]
    for client in ("203.0.113.9", PROXY):
        scope = ws_scope(
            origin="https://evil.example", host=BACKEND, client=(client, 40000), extra=forged
        )
        request = request_for(scope, trusted_proxies=["10.0.0.6"])
        decision = HandshakePolicy().evaluate(request)
        assert type(decision) is Reject, client


def test_verdicts_differ_by_peer_though_the_headers_are_the_same() -> None:
    # The raw-value cache and the policy's memo are keyed on the site: a trusted peer's
    # verdict is never reused for an untrusted one with the same header bytes.
    policy = HandshakePolicy()
    deployment = Deployment(trusted_proxies=[PROXY])
    trusted = HandshakeRequest.from_scope(ws_scope(**FORWARDED, extra=XF), deployment)
    untrusted = HandshakeRequest.from_scope(
        ws_scope(origin=SITE, host=BACKEND, client=STRANGER, extra=XF), deployment
    )
    assert type(policy.evaluate(trusted)) is Accept
    assert type(policy.evaluate(untrusted)) is Reject
    assert type(policy.evaluate(trusted)) is Accept


def test_forwarded_rfc7239_walks_the_trusted_hops() -> None:
    value = (
        b"for=198.51.100.1;host=forged.example;proto=http, "
        b'for=203.0.113.7;host=app.example.com;proto=https, for="10.0.0.7";proto=http'
    )
    scope = ws_scope(**FORWARDED, extra=[(b"forwarded", value)])
    request = request_for(scope, trusted_proxies=["10.0.0.0/24"], proxy_headers="forwarded")
    # The last element is the peer's; its for= (10.0.0.7) is trusted too, so the element
    # before it is the outermost trusted proxy's: its host and proto are the client's.
    assert request.site == Site("https", "app.example.com", None)
    assert request.client == ("203.0.113.7", 0)


def test_only_the_chosen_kind_of_header_is_read() -> None:
    # The proxy sets X-Forwarded-*; a client's own Forwarded header passes through it.
    headers = [*XF, (b"forwarded", b"host=evil.example;proto=https")]
    request = request_for(ws_scope(**FORWARDED, extra=headers), trusted_proxies=[PROXY])
    assert request.site == Site("https", "app.example.com", None)
    request = request_for(
        ws_scope(**FORWARDED, extra=headers), trusted_proxies=[PROXY], proxy_headers="forwarded"
    )
    assert request.site == Site("https", "evil.example", None)


@pytest.mark.parametrize(
    ("proto", "origin", "accepted"),
    [
        (b"https", SITE, True),
        (b"https", "http://app.example.com", False),
        (b"wss", SITE, True),
        (b"http", "http://app.example.com", True),
        (b"http", SITE, False),
        (b"gopher", SITE, False),  # an unknown public scheme: no Origin matches it
    ],
)
def test_a_known_public_scheme_is_compared(proto: bytes, origin: str, accepted: bool) -> None:
    headers = [(b"x-forwarded-host", b"app.example.com"), (b"x-forwarded-proto", proto)]
    scope = ws_scope(origin=origin, host=BACKEND, client=PEER, extra=headers)
    decision = HandshakePolicy().evaluate(request_for(scope, trusted_proxies=[PROXY]))
    assert (type(decision) is Accept) is accepted


@pytest.mark.parametrize(
    ("scheme", "origin", "accepted"),
    [
        ("wss", "https://app.example.com", True),
        ("wss", "http://app.example.com", False),  # TLS ends here: an http page is foreign
        ("ws", "http://app.example.com", True),
        ("ws", "https://app.example.com", True),  # unknown: a proxy may have ended TLS
    ],
)
def test_a_wss_scope_compares_the_scheme_without_any_option(
    scheme: str, origin: str, accepted: bool
) -> None:
    scope = ws_scope(origin=origin, host="app.example.com", scheme=scheme)
    decision = HandshakePolicy().evaluate(HandshakeRequest.from_scope(scope))
    assert (type(decision) is Accept) is accepted
    if not accepted:
        assert decision.detail == "Origin's scheme is not the site's (https)"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("https://app.example.com", True),
        ("https://www.example.com", True),
        ("http://app.example.com", False),
        ("https://backend:8000", False),  # the Host sent is not what same-origin means now
        ("https://evil.example", False),
    ],
)
def test_public_origins_are_what_same_origin_means(origin: str, accepted: bool) -> None:
    scope = ws_scope(origin=origin, host=BACKEND, client=PEER)
    deployment = Deployment(public_origins=[SITE, "https://www.example.com"])
    decision = HandshakePolicy().evaluate(HandshakeRequest.from_scope(scope, deployment))
    assert (type(decision) is Accept) is accepted
    # An explicit allowlist is not touched by public_origins.
    listed = HandshakePolicy(allow_origins=["https://backend:8000"])
    assert (type(listed.evaluate(HandshakeRequest.from_scope(scope, deployment))) is Accept) is (
        origin == "https://backend:8000"
    )


def test_allow_hosts_judges_the_forwarded_host_behind_a_trusted_proxy() -> None:
    policy = HandshakePolicy(allow_hosts=["app.example.com"])
    request = request_for(ws_scope(**FORWARDED, extra=XF), trusted_proxies=[PROXY])
    assert type(policy.evaluate(request)) is Accept
    direct = request_for(
        ws_scope(origin=SITE, host=BACKEND, client=STRANGER, extra=XF), trusted_proxies=[PROXY]
    )
    decision = policy.evaluate(direct)
    assert type(decision) is Reject
    assert decision.reason is Reason.HOST_NOT_ALLOWED


def test_a_malformed_forwarded_host_fails_closed() -> None:
    headers = [(b"x-forwarded-host", b"app.example.com/evil"), (b"x-forwarded-proto", b"https")]
    request = request_for(ws_scope(**FORWARDED, extra=headers), trusted_proxies=[PROXY])
    decision = HandshakePolicy().evaluate(request)
    assert type(decision) is Reject
    assert decision.reason is Reason.HOST_MALFORMED


# -- Sec-Fetch-Site


@pytest.mark.parametrize(
    ("policy", "origins", "fetch_site", "reason"),
    [
        (HandshakePolicy(), (), "cross-site", Reason.FETCH_SITE_CROSS_SITE),
        (HandshakePolicy(), (), "same-site", None),
        (HandshakePolicy(), (), "same-origin", None),
        (HandshakePolicy(), (), "none", None),
        (HandshakePolicy(), (), "same-origin, cross-site", Reason.FETCH_SITE_CROSS_SITE),
        (HandshakePolicy(), (SITE,), "cross-site", Reason.FETCH_SITE_CROSS_SITE),
        (HandshakePolicy(allow_cross_site=True), (), "cross-site", None),
        (HandshakePolicy(allow_any_origin=True), (), "cross-site", None),
        (HandshakePolicy(allow_origins=[SITE]), (SITE,), "cross-site", None),
        (HandshakePolicy(allow_origins=[SITE]), (), "cross-site", Reason.FETCH_SITE_CROSS_SITE),
        (HandshakePolicy(allow_null_origin=True), ("null",), "cross-site", None),
    ],
)  # fmt: skip
def test_sec_fetch_site_cross_site_needs_an_origin_that_vouches(
    policy: HandshakePolicy, origins: tuple[str, ...], fetch_site: str, reason: Reason | None
) -> None:
    request = make_request(hosts=("app.example.com",), origins=origins)
    request = request._replace(
        raw=RawValues(request.hosts, origins, ("13",), (), fetch_site=fetch_site)
    )
    decision = policy.evaluate(request)
    if reason is None:
        assert type(decision) is Accept
    else:
        assert type(decision) is Reject
        assert (decision.reason, decision.status) == (reason, 403)


# -- report-only


def test_report_only_uses_the_selector_and_survives_its_errors() -> None:
    def choose(request: HandshakeRequest, offered: tuple[str, ...]) -> str | None:
        if "boom" in offered:
            raise RuntimeError("selector bug")
        return offered[-1]

    policy = HandshakePolicy(select_subprotocol=choose, enforce=False)
    reject = Reject.because(Reason.ORIGIN_NOT_ALLOWED)
    picked = policy.report_only(make_request(subprotocols=("a", "b")), reject)
    assert picked == Accept("b", None, reject)
    assert policy.report_only(make_request(subprotocols=("boom",)), reject).subprotocol is None


# -- edges of the proxy headers


def test_a_trusted_peer_without_host_or_proto_headers() -> None:
    only_for = [(b"x-forwarded-for", b"203.0.113.7")]
    request = request_for(ws_scope(**FORWARDED, extra=only_for), trusted_proxies=[PROXY])
    assert (request.site, request.client) == (None, ("203.0.113.7", 0))
    request = request_for(ws_scope(**FORWARDED, scheme="wss"), trusted_proxies=[PROXY])
    assert request.site == Site("https")
    listed = Deployment(trusted_proxies=[PROXY], public_origins=[SITE])
    untrusted = ws_scope(origin=SITE, host=BACKEND, client=STRANGER, scheme="wss", extra=XF)
    site = HandshakeRequest.from_scope(untrusted, listed).site
    assert site == Site("https", None, frozenset({SITE}))
    assert HandshakeRequest.from_scope(ws_scope(**FORWARDED), listed).site == Site(
        None, None, frozenset({SITE})
    )


@pytest.mark.parametrize(
    ("xff", "client"),
    [
        (b"203.0.113.7, [bad", ("10.0.0.5", 40000)),  # a malformed hop: nothing beyond it
        (b"10.0.0.9, 10.0.0.8", ("10.0.0.9", 0)),  # all trusted: the leftmost
        (b"[2001:db8::7]:4711", ("2001:db8::7", 4711)),
        (b"2001:db8::7", ("2001:db8::7", 0)),
        (b"203.0.113.7:8080", ("203.0.113.7", 8080)),
        (b"x" * 9000, ("10.0.0.5", 40000)),  # too long to believe
    ],
)
def test_x_forwarded_for_walk(xff: bytes, client: tuple[str, int]) -> None:
    scope = ws_scope(**FORWARDED, extra=[(b"x-forwarded-for", xff)])
    assert request_for(scope, trusted_proxies=["10.0.0.0/8"]).client == client


@pytest.mark.parametrize(
    ("value", "site", "client"),
    [
        (b"for=203.0.113.7;proto=https, for", None, ("10.0.0.5", 40000)),  # last malformed
        (b"proto=https", Site("https"), ("10.0.0.5", 40000)),  # no for=: the peer
        (b';;host=a.example;;for="[::1"', Site(None, "a.example"), ("10.0.0.5", 40000)),
        (b'for="a\\', None, ("10.0.0.5", 40000)),
        (b'for="a"b"', None, ("10.0.0.5", 40000)),
        (b"proto=, host=", None, ("10.0.0.5", 40000)),
    ],
)
def test_forwarded_edges(value: bytes, site: Site | None, client: tuple[str, int]) -> None:
    scope = ws_scope(**FORWARDED, extra=[(b"forwarded", value)])
    request = request_for(scope, trusted_proxies=[PROXY], proxy_headers="forwarded")
    assert (request.site, request.client) == (site, client)


def test_empty_or_odd_forwarded_values() -> None:
    headers = [(b"x-forwarded-proto", b" "), (b"x-forwarded-host", b"a.example,")]
    request = request_for(ws_scope(**FORWARDED, extra=headers), trusted_proxies=[PROXY])
    assert request.site is None


def test_the_trust_cache_is_bounded() -> None:
    deployment = Deployment(trusted_proxies=["10.0.0.0/8"])
    for n in range(1100):
        assert deployment.trusts(f"10.0.{n // 256}.{n % 256}")
    assert deployment.trusts("x" * 100) is False  # long values are not remembered


def test_optional_fields_from_odd_servers() -> None:
    scope = ws_scope(
        extra=[(b"sec-fetch-site", b"same-origin"), (b"Sec-Fetch-Site", "cross-site")],  # type: ignore[list-item]
        scheme=b"wss",
    )
    request = HandshakeRequest.from_scope(scope)
    assert request.fetch_site == "same-origin, cross-site"
    assert request.scheme == "b'wss'"
    (one,) = [(b"sec-fetch-site", "cross-site")]
    request = HandshakeRequest.from_scope(ws_scope(extra=[one]))  # type: ignore[list-item]
    assert request.fetch_site == "cross-site"
    scope = ws_scope(
        extra=[(b"sec-fetch-site", b"none"), (b"x-forwarded-host", "a.example")],  # type: ignore[list-item]
        client=(PROXY, 1),
    )
    request = HandshakeRequest.from_scope(scope, Deployment(trusted_proxies=[PROXY]))
    assert (request.fetch_site, request.site) == ("none", Site(None, "a.example"))
