# ruff: noqa: E501  (the table keeps one row a line)
"""The adversarial table: hostile or odd handshake inputs and the decision each must get.

Every row goes through the whole pure path (raw header bytes -> ``HandshakeRequest.from_scope``
-> ``HandshakePolicy.evaluate``) and then through the ASGI adapter with a scripted
receive/send, which must send the status of the response table or call the app.
``ACCEPT`` means the app is reached; otherwise the row names the reason code.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pytest

from asgi_ws_handshake import (
    RESPONSES,
    Accept,
    HandshakePolicy,
    HandshakeRequest,
    Reason,
    Reject,
)
from tests.asgi import run, ws_scope
from tests.support import GOOD_KEY

ACCEPT = None  # the expected "reason" of a row that must be accepted

#: Browser-style allowlist: an exact origin, a wildcard, a non-default port, an IPv6 literal.
LISTED = HandshakePolicy(
    allow_origins=[
        "https://app.example.com",
        "https://*.example.com",
        "http://localhost:8000",
        "http://[::1]:8080",
    ]
)
#: One exact origin and nothing else (look-alike rows need no wildcard in the way).
EXACT = HandshakePolicy(allow_origins=["https://app.example.com"])
#: Same-origin, no Host allowlist: the default.
SAME = HandshakePolicy()
#: Same-origin plus a Host allowlist: the DNS-rebinding defence.
PINNED = HandshakePolicy(allow_hosts=["app.example.com", "*.example.com"])

POLICIES = {"listed": LISTED, "exact": EXACT, "same": SAME, "pinned": PINNED}

# Keys: standard-alphabet characters that the URL-safe alphabet spells differently.
STD_KEY = base64.b64encode(b"\xfb\xff\xbf" * 5 + b"\xfb").decode()  # contains "+" and "/"
URLSAFE_KEY = base64.urlsafe_b64encode(b"\xfb\xff\xbf" * 5 + b"\xfb").decode()
assert set("+/") <= set(STD_KEY)
assert set("-_") <= set(URLSAFE_KEY)


@dataclass(frozen=True)
class Row:
    id: str
    policy: str
    expect: Reason | None
    origin: str | list[str] | None = None
    host: str | list[str] | None = "app.example.com"
    key: str | list[str] | None = GOOD_KEY
    version: str | list[str] | None = "13"
    #: The normalised origin the decision must carry, when the row checks it.
    normalised: str | None = None
    http_version: str = "1.1"

    def headers(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for name, value in (
            (b"host", self.host),
            (b"sec-websocket-key", self.key),
            (b"sec-websocket-version", self.version),
            (b"origin", self.origin),
        ):
            if value is None:
                continue
            items = [value] if isinstance(value, str) else value
            out.extend((name, item.encode("latin-1")) for item in items)
        return out

    def scope(self) -> dict[str, Any]:
        return ws_scope(headers=self.headers(), http_version=self.http_version)


def latin1(text: str) -> str:
    """What a UTF-8 Origin looks like once the server hands over bytes read as latin-1."""
    return text.encode("utf-8").decode("latin-1")


MALFORMED = Reason.ORIGIN_MALFORMED
NOT_ALLOWED = Reason.ORIGIN_NOT_ALLOWED

TABLE = [
    # -- origins: baseline and case ----------------------------------------------------------
    Row("exact", "listed", ACCEPT, "https://app.example.com", normalised="https://app.example.com"),
    Row("upper-case", "listed", ACCEPT, "HTTPS://APP.EXAMPLE.COM", normalised="https://app.example.com"),
    Row("mixed-case-wildcard", "listed", ACCEPT, "https://A.B.Example.Com", normalised="https://a.b.example.com"),
    Row("wildcard-is-not-apex", "listed", NOT_ALLOWED, "https://example.com"),
    Row("wildcard-suffix-no-dot", "listed", NOT_ALLOWED, "https://evilexample.com"),
    Row("wildcard-as-prefix", "listed", NOT_ALLOWED, "https://app.example.com.evil.test"),
    Row("wildcard-empty-label", "listed", MALFORMED, "https://.example.com"),
    Row("wildcard-other-scheme", "listed", NOT_ALLOWED, "http://a.example.com"),
    # -- userinfo ------------------------------------------------------------------------------
    Row("userinfo-user", "listed", MALFORMED, "https://user@app.example.com"),
    Row("userinfo-password", "listed", MALFORMED, "https://user:pw@app.example.com"),
    Row("userinfo-hides-attacker", "listed", MALFORMED, "https://app.example.com@evil.test"),
    Row("userinfo-hides-allowed", "listed", MALFORMED, "https://evil.test@app.example.com"),
    # -- trailing dots, empty labels -----------------------------------------------------------
    Row("trailing-dot", "listed", NOT_ALLOWED, "https://app.example.com.", normalised="https://app.example.com."),
    Row("trailing-dot-wildcard", "listed", NOT_ALLOWED, "https://a.example.com."),
    Row("double-trailing-dot", "listed", MALFORMED, "https://app.example.com.."),
    Row("double-dot-inside", "listed", MALFORMED, "https://app..example.com"),
    # -- paths, queries, fragments, percent-encoding, backslashes ------------------------------
    Row("path-slash", "listed", MALFORMED, "https://app.example.com/"),
    Row("path", "listed", MALFORMED, "https://app.example.com/ws"),
    Row("query", "listed", MALFORMED, "https://app.example.com?x=1"),
    Row("fragment", "listed", MALFORMED, "https://app.example.com#x"),
    Row("percent-dot", "listed", MALFORMED, "https://app%2eexample.com"),
    Row("percent-letter", "listed", MALFORMED, "https://%61pp.example.com"),
    Row("backslash", "listed", MALFORMED, "https://evil.test\\.example.com"),
    # -- IDN look-alikes. Browsers serialise IDN origins as punycode (RFC 6454 6.1). Raw UTF-8
    # on the wire (no browser sends it) is read as latin-1: malformed, or another punycode name,
    # never the Latin one.
    Row("idn-punycode-look-alike", "exact", NOT_ALLOWED, "https://xn--pp-6kc.example.com", normalised="https://xn--pp-6kc.example.com"),
    Row("idn-punycode-registrable", "listed", NOT_ALLOWED, "https://xn--exmple-4nf.com"),
    Row("idn-punycode-under-wildcard", "listed", ACCEPT, "https://xn--bcher-kva.example.com", normalised="https://xn--bcher-kva.example.com"),
    Row("idn-utf8-cyrillic-a", "exact", MALFORMED, latin1("https://\u0430pp.example.com")),
    Row("idn-utf8-cyrillic-er", "exact", MALFORMED, latin1("https://ap\u0440.example.com")),
    Row("idn-utf8-fullwidth", "exact", MALFORMED, latin1("https://\uff41\uff50\uff50.example.com")),
    # -- explicit default ports, other ports ----------------------------------------------------
    Row("default-port-explicit", "listed", ACCEPT, "https://app.example.com:443", normalised="https://app.example.com"),
    Row("default-port-wildcard", "listed", ACCEPT, "https://a.example.com:443", normalised="https://a.example.com"),
    Row("port-listed", "listed", ACCEPT, "http://localhost:8000", normalised="http://localhost:8000"),
    Row("port-missing", "listed", NOT_ALLOWED, "http://localhost"),
    Row("port-other", "listed", NOT_ALLOWED, "https://app.example.com:8443"),
    Row("http-default-port-on-https", "listed", NOT_ALLOWED, "https://app.example.com:80"),
    Row("port-leading-zero", "listed", MALFORMED, "https://app.example.com:0443"),
    Row("port-plus", "listed", MALFORMED, "https://app.example.com:+443"),
    Row("port-fullwidth-digits", "listed", MALFORMED, latin1("https://app.example.com:\uff14\uff14\uff13")),
    # -- ports out of range ---------------------------------------------------------------------
    Row("port-65535", "listed", NOT_ALLOWED, "https://app.example.com:65535"),
    Row("port-65536", "listed", MALFORMED, "https://app.example.com:65536"),
    Row("port-99999", "listed", MALFORMED, "https://app.example.com:99999"),
    Row("port-huge", "listed", MALFORMED, "https://app.example.com:" + "9" * 40),
    Row("port-zero", "listed", MALFORMED, "https://app.example.com:0"),
    Row("port-negative", "listed", MALFORMED, "https://app.example.com:-1"),
    Row("port-empty", "listed", MALFORMED, "https://app.example.com:"),
    # -- IPv6 literals ---------------------------------------------------------------------------
    Row("ipv6", "listed", ACCEPT, "http://[::1]:8080", normalised="http://[::1]:8080"),
    Row("ipv6-long-form", "listed", ACCEPT, "http://[0:0:0:0:0:0:0:1]:8080", normalised="http://[::1]:8080"),
    Row("ipv6-upper", "listed", ACCEPT, "http://[0::0001]:8080", normalised="http://[::1]:8080"),
    Row("ipv6-other-port", "listed", NOT_ALLOWED, "http://[::1]"),
    Row("ipv6-mapped-v4", "listed", NOT_ALLOWED, "http://[::ffff:127.0.0.1]:8080"),
    Row("ipv6-unbracketed", "listed", MALFORMED, "http://::1:8080"),
    Row("ipv6-unclosed", "listed", MALFORMED, "http://[::1:8080"),
    Row("ipv6-zone-id", "listed", MALFORMED, "http://[fe80::1%25eth0]:8080"),
    Row("ipv6-future", "listed", MALFORMED, "http://[v1.fe80]:8080"),
    Row("ipv6-junk-after", "listed", MALFORMED, "http://[::1]x:8080"),
    # -- schemes other than http/https ----------------------------------------------------------
    Row("scheme-ws", "listed", NOT_ALLOWED, "wss://app.example.com"),
    Row("scheme-extension", "listed", NOT_ALLOWED, "chrome-extension://abcdefghijklmnop"),
    Row("scheme-file", "listed", MALFORMED, "file://"),
    Row("scheme-javascript", "listed", MALFORMED, "javascript:alert(1)"),
    Row("scheme-data", "listed", MALFORMED, "data:text/html;x"),
    Row("scheme-data-comma", "listed", Reason.ORIGIN_MULTIPLE, "data:text/html,x"),
    Row("scheme-missing", "listed", MALFORMED, "//app.example.com"),
    Row("scheme-one-slash", "listed", MALFORMED, "https:/app.example.com"),
    Row("scheme-bare-host", "listed", MALFORMED, "app.example.com"),
    Row("scheme-same-origin-ws", "same", NOT_ALLOWED, "ws://app.example.com"),
    Row("scheme-same-origin-ftp", "same", NOT_ALLOWED, "ftp://app.example.com:80"),
    # -- whitespace and control characters -------------------------------------------------------
    Row("ows-around", "listed", ACCEPT, " \thttps://app.example.com\t ", normalised="https://app.example.com"),
    Row("space-inside", "listed", MALFORMED, "https://app .example.com"),
    Row("space-after-scheme", "listed", MALFORMED, "https:// app.example.com"),
    Row("nul", "listed", MALFORMED, "https://app.example.com\x00"),
    Row("nul-inside", "listed", MALFORMED, "https://app\x00.example.com"),
    Row("cr", "listed", MALFORMED, "https://app.example.com\r"),
    Row("vertical-tab", "listed", MALFORMED, "https://app.example.com\x0b"),
    Row("del", "listed", MALFORMED, "https://app.example.com\x7f"),
    Row("nbsp", "listed", MALFORMED, latin1("https://\u00a0app.example.com")),
    Row("nbsp-latin1", "listed", MALFORMED, "https://\xa0app.example.com"),
    Row("zero-width-space", "exact", MALFORMED, latin1("https://app\u200b.example.com")),
    # -- null, empty, repeated -------------------------------------------------------------------
    Row("null", "listed", Reason.ORIGIN_NULL, "null"),
    Row("null-ows", "listed", Reason.ORIGIN_NULL, " null "),
    Row("null-upper", "listed", MALFORMED, "NULL"),
    Row("empty", "listed", MALFORMED, ""),
    Row("two-lines", "listed", Reason.ORIGIN_MULTIPLE, ["https://app.example.com"] * 2),
    Row("comma-joined", "listed", Reason.ORIGIN_MULTIPLE, "https://app.example.com, https://evil.test"),
    Row("trailing-comma", "listed", Reason.ORIGIN_MULTIPLE, "https://app.example.com,"),
    # -- keys ------------------------------------------------------------------------------------
    Row("key-rfc-vector", "same", ACCEPT, key=GOOD_KEY),
    Row("key-std-alphabet", "same", ACCEPT, key=STD_KEY),
    Row("key-urlsafe-alphabet", "same", Reason.KEY_MALFORMED, key=URLSAFE_KEY),
    Row("key-no-padding", "same", Reason.KEY_MALFORMED, key=GOOD_KEY.rstrip("=")),
    Row("key-one-pad", "same", Reason.KEY_MALFORMED, key=GOOD_KEY[:-1]),
    Row("key-three-pads", "same", Reason.KEY_MALFORMED, key=GOOD_KEY + "="),
    Row("key-pad-inside", "same", Reason.KEY_MALFORMED, key="dGhlIHNhbXBs=ZSBub25jZQ="),
    # "R" carries non-zero pad bits: lenient decoders read 16 bytes, it is still not canonical.
    Row("key-noncanonical-pad-bits", "same", Reason.KEY_MALFORMED, key="dGhlIHNhbXBsZSBub25jZR=="),
    Row("key-15-bytes", "same", Reason.KEY_MALFORMED, key=base64.b64encode(bytes(15)).decode()),
    Row("key-17-bytes", "same", Reason.KEY_MALFORMED, key=base64.b64encode(bytes(17)).decode()),
    Row("key-space-inside", "same", Reason.KEY_MALFORMED, key="dGhlIHNhbXBs ZSBub25jZQ=="),
    Row("key-tab-inside", "same", Reason.KEY_MALFORMED, key="dGhlIHNhbXBs\tZSBub25jZQ=="),
    Row("key-nul", "same", Reason.KEY_MALFORMED, key=GOOD_KEY + "\x00"),
    Row("key-ows-around", "same", ACCEPT, key=f" \t{GOOD_KEY} "),
    Row("key-empty", "same", Reason.KEY_MALFORMED, key=""),
    Row("key-missing", "same", Reason.KEY_MISSING, key=None),
    Row("key-two-lines", "same", Reason.KEY_MULTIPLE, key=[GOOD_KEY, STD_KEY]),
    Row("key-same-twice", "same", Reason.KEY_MULTIPLE, key=[GOOD_KEY, GOOD_KEY]),
    Row("key-comma-joined", "same", Reason.KEY_MULTIPLE, key=f"{GOOD_KEY}, {STD_KEY}"),
    Row("key-none-over-http2", "same", ACCEPT, key=None, http_version="2"),
    # -- versions --------------------------------------------------------------------------------
    Row("version-13", "same", ACCEPT),
    # RFC 9110 5.5: optional whitespace around a field value is not part of it.
    Row("version-13-trailing-space", "same", ACCEPT, version="13 "),
    Row("version-13-leading-tab", "same", ACCEPT, version="\t13"),
    Row("version-013", "same", Reason.VERSION_UNSUPPORTED, version="013"),
    Row("version-13-comma-13", "same", Reason.VERSION_UNSUPPORTED, version="13,13"),
    Row("version-two-lines", "same", Reason.VERSION_UNSUPPORTED, version=["13", "13"]),
    Row("version-13-8", "same", Reason.VERSION_UNSUPPORTED, version="13, 8"),
    Row("version-8", "same", Reason.VERSION_UNSUPPORTED, version="8"),
    Row("version-plus", "same", Reason.VERSION_UNSUPPORTED, version="+13"),
    Row("version-13.0", "same", Reason.VERSION_UNSUPPORTED, version="13.0"),
    Row("version-nul", "same", Reason.VERSION_UNSUPPORTED, version="13\x00"),
    Row("version-empty", "same", Reason.VERSION_UNSUPPORTED, version=""),
    Row("version-missing", "same", Reason.VERSION_MISSING, version=None),
    # -- Host and Origin that differ only by port or case (same-origin rule) -------------------
    Row("same-origin", "same", ACCEPT, "https://app.example.com", normalised="https://app.example.com"),
    Row("same-origin-host-case", "same", ACCEPT, "http://app.example.com", host="APP.Example.COM"),
    Row("same-origin-origin-case", "same", ACCEPT, "HTTP://APP.EXAMPLE.COM", host="app.example.com"),
    Row("same-origin-host-default-port", "same", ACCEPT, "http://app.example.com", host="app.example.com:80"),
    Row("same-origin-origin-default-port", "same", ACCEPT, "http://app.example.com:80", host="app.example.com"),
    Row("same-origin-both-ports", "same", ACCEPT, "http://app.example.com:8000", host="app.example.com:8000"),
    Row("port-differs-host", "same", NOT_ALLOWED, "http://app.example.com", host="app.example.com:8000"),
    Row("port-differs-origin", "same", NOT_ALLOWED, "http://app.example.com:8000", host="app.example.com"),
    Row("port-differs-both", "same", NOT_ALLOWED, "http://app.example.com:8001", host="app.example.com:8000"),
    Row("https-origin-host-port-80", "same", NOT_ALLOWED, "https://app.example.com", host="app.example.com:80"),
    Row("host-trailing-dot", "same", NOT_ALLOWED, "http://app.example.com", host="app.example.com."),
    Row("host-ip-origin-name", "same", NOT_ALLOWED, "http://localhost:8000", host="127.0.0.1:8000"),
    Row("host-ipv6-forms", "same", ACCEPT, "http://[0::1]:8000", host="[::1]:8000"),
    Row("host-port-leading-zero", "same", Reason.HOST_MALFORMED, "http://app.example.com", host="app.example.com:080"),
    Row("host-userinfo", "same", Reason.HOST_MALFORMED, "http://app.example.com", host="u@app.example.com"),
    Row("host-empty", "same", Reason.HOST_MALFORMED, "http://app.example.com", host=""),
    Row("host-missing", "same", Reason.HOST_MALFORMED, "http://app.example.com", host=None),
    Row("host-two-lines", "same", Reason.HOST_MALFORMED, "http://app.example.com", host=["app.example.com"] * 2),
    Row("host-space-inside", "same", Reason.HOST_MALFORMED, "http://app.example.com", host="app.example.com :80"),
    # -- DNS rebinding: the attacker's name resolves to us, so Origin == Host -------------------
    # Without a Host allowlist the same-origin rule cannot tell (documented); with one it can.
    Row("rebinding-same-origin-only", "same", ACCEPT, "http://attacker.test", host="attacker.test"),
    Row("rebinding-pinned", "pinned", Reason.HOST_NOT_ALLOWED, "http://attacker.test", host="attacker.test"),
    Row("rebinding-pinned-port", "pinned", Reason.HOST_NOT_ALLOWED, "http://attacker.test:8000", host="attacker.test:8000"),
    Row("rebinding-pinned-ip", "pinned", Reason.HOST_NOT_ALLOWED, "http://127.0.0.1:8000", host="127.0.0.1:8000"),
    Row("rebinding-pinned-suffix", "pinned", Reason.HOST_NOT_ALLOWED, "http://app.example.com.attacker.test", host="app.example.com.attacker.test"),
    Row("rebinding-pinned-no-dot", "pinned", Reason.HOST_NOT_ALLOWED, "http://evilexample.com", host="evilexample.com"),
    Row("rebinding-pinned-apex", "pinned", Reason.HOST_NOT_ALLOWED, "http://example.com", host="example.com"),
    Row("rebinding-pinned-no-origin", "pinned", Reason.HOST_NOT_ALLOWED, None, host="attacker.test"),
    Row("pinned-own-host", "pinned", ACCEPT, "http://app.example.com", host="app.example.com"),
    Row("pinned-own-host-case-port", "pinned", ACCEPT, "http://app.example.com:8000", host="APP.example.com:8000"),
    Row("pinned-subdomain", "pinned", ACCEPT, "https://a.example.com", host="a.example.com"),
    Row("pinned-cross-origin", "pinned", NOT_ALLOWED, "http://attacker.test", host="app.example.com"),
]  # fmt: skip


#: Origins as text with non-ASCII characters (a server or framework decoded the bytes).
#: Browsers send the ASCII serialisation (RFC 6454 6.2), so none of these comes from a
#: browser; IDNA would map several of them onto the very name they imitate (full-width letters,
#: the ideographic full stop, a zero-width space, "\xaa"): the guard refuses them all as
#: malformed rather than guess. (origin, policy)
UNICODE_TABLE = [
    ("https://\u0430pp.example.com", "exact"),  # Cyrillic a
    ("https://ap\u0440.example.com", "exact"),  # Cyrillic r
    ("https://app.ex\u0430mple.com", "listed"),
    ("https://\u0430pp.example.com", "listed"),  # even under a wildcard
    ("https://b\u00fccher.example.com", "listed"),
    ("https://\uff41\uff50\uff50.example.com", "exact"),  # full-width "app"
    ("https://app\u3002example.com", "exact"),  # ideographic full stop
    ("https://\u00a0app.example.com", "exact"),
    ("https://app\u200b.example.com", "exact"),  # zero-width space
    ("https://\xaapp.example.com", "exact"),  # latin-1 byte that IDNA maps to "a"
    ("https://app.example.com\u2028", "exact"),
    ("https://\U0001f600.example.com", "listed"),
]


@pytest.mark.parametrize(("origin", "policy"), UNICODE_TABLE)
def test_unicode_origins_are_malformed(origin: str, policy: str) -> None:
    decision = POLICIES[policy].evaluate(HandshakeRequest(origins=(origin,), keys=(GOOD_KEY,)))
    assert isinstance(decision, Reject), decision
    assert decision.reason == MALFORMED
    assert decision.origin is None


def test_unicode_patterns_match_their_punycode_origins() -> None:
    # Configuration may name hosts in Unicode; they compare in their ASCII form (RFC 5890).
    policy = HandshakePolicy(
        allow_origins=["https://b\u00fccher.example", "https://*.m\u00fcnchen.test"]
    )
    for origin in ("https://xn--bcher-kva.example", "https://a.xn--mnchen-3ya.test"):
        assert isinstance(
            policy.evaluate(HandshakeRequest(origins=(origin,), keys=(GOOD_KEY,))), Accept
        )


def test_table_ids_are_unique() -> None:
    ids = [row.id for row in TABLE]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("row", TABLE, ids=[row.id for row in TABLE])
def test_adversarial_decision(row: Row) -> None:
    request = HandshakeRequest.from_scope(row.scope())
    decision = POLICIES[row.policy].evaluate(request)
    if row.expect is ACCEPT:
        assert isinstance(decision, Accept), decision
    else:
        assert isinstance(decision, Reject), decision
        assert decision.reason == row.expect, decision
        assert decision.status == RESPONSES[row.expect][0]
    if row.normalised is not None:
        assert decision.origin == row.normalised


@pytest.mark.parametrize("row", TABLE, ids=[row.id for row in TABLE])
async def test_adversarial_through_the_adapter(row: Row) -> None:
    result = await run(None, row.scope(), policy=POLICIES[row.policy])
    sent = result.script.sent
    [event] = result.sink.events
    if row.expect is ACCEPT:
        assert result.app_scopes
        assert [m["type"] for m in sent] == ["websocket.accept"]
        assert (event.outcome, event.status) == ("accepted", 101)
    else:
        assert not result.app_scopes
        assert [m["type"] for m in sent] == [
            "websocket.http.response.start",
            "websocket.http.response.body",
        ]
        assert sent[0]["status"] == RESPONSES[row.expect][0]
        assert sent[1]["body"] == f"{row.expect}\n".encode()
        assert (event.outcome, event.reason, event.status) == (
            "rejected",
            row.expect,
            sent[0]["status"],
        )
