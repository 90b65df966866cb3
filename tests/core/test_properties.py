"""Property-based tests (Hypothesis) over the pure core: ``HandshakeRequest.from_scope`` and
``HandshakePolicy.evaluate``.

Headers are generated as raw bytes (any name, any value, any count and order, some huge), as
near-misses of well-formed values, and as well-formed values, so that both the "never raises"
properties and the "what an Accept guarantees" properties see accepted handshakes often.
Example counts are kept moderate so the module runs in a few seconds.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from asgi_ws_handshake import (
    Accept,
    HandshakeMiddleware,
    HandshakePolicy,
    HandshakeRequest,
    MemorySink,
    Reject,
    accept_key,
    parse_origin,
)
from asgi_ws_handshake.decision import RESPONSES, Reason
from tests.asgi import Script, run_sync, ws_scope

FAST = settings(
    max_examples=150,
    deadline=None,  # the first call of a huge value may be slow; no wall-clock assertions
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: For the properties whose interesting case (an Accept) is a minority of the inputs.
WIDER = settings(FAST, max_examples=300)

NAMES = [
    b"host",
    b"origin",
    b"sec-websocket-version",
    b"sec-websocket-key",
    b"sec-websocket-protocol",
]

# --- strategies -------------------------------------------------------------------------------

label = st.from_regex(r"[a-z0-9](?:[a-z0-9\-]{0,8}[a-z0-9])?", fullmatch=True)
labels = st.lists(label, min_size=1, max_size=4).map(".".join)
port = st.one_of(st.none(), st.integers(0, 70000).map(str), st.sampled_from(["", "080", "443"]))
scheme = st.sampled_from(["http", "https", "HTTPS", "ws", "ftp", "file", "javascript", "h"])
oddities = st.sampled_from(
    [
        "",
        " ",
        "\t",
        "\x00",
        "\r\n",
        "\x7f",
        "@",
        "%2e",
        "/",
        "?",
        "#",
        ":",
        ".",
        "..",
        "\\",
        "[",
        "]",
        ",",
        "*",
        "\u0430",  # Cyrillic a
        "\uff0e",  # fullwidth full stop
        "\u00df",
    ]
)


@st.composite
def origin_text(
    draw: st.DrawFn,
    hosts: st.SearchStrategy[str] = labels,
    schemes: st.SearchStrategy[str] = scheme,
) -> str:
    """Origin-like text: mostly well formed, sometimes with an odd character spliced in."""
    host = draw(hosts)
    if draw(st.booleans()):
        host = host.upper() if draw(st.booleans()) else host.title()
    if draw(st.integers(0, 4)) == 0:
        host = f"[{draw(st.ip_addresses(v=6))}]"
    text = f"{draw(schemes)}://{host}"
    p = draw(port)
    if p is not None and draw(st.booleans()):
        text += f":{p}"
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(oddities) + text[at:]
    return text


@st.composite
def key_text(draw: st.DrawFn) -> str:
    """Sec-WebSocket-Key-like text: base64 of random bytes, often 16, sometimes mangled."""
    raw = draw(st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=24)))
    key = base64.b64encode(raw).decode()
    mangle = draw(st.integers(0, 6))
    if mangle == 1:
        key = key.rstrip("=")
    elif mangle == 2:
        key = key.replace("+", "-").replace("/", "_")
    elif mangle == 3:
        at = draw(st.integers(0, len(key)))
        key = key[:at] + draw(st.sampled_from([" ", "\t", "\n", "=", "A", "\x00"])) + key[at:]
    elif mangle == 4 and len(key) > 21:
        # Change the 22nd character, whose 4 low bits are padding (only AQgw are canonical).
        key = key[:21] + draw(st.sampled_from("ABQRgwx/+")) + key[22:]
    return key


token = st.one_of(
    st.sampled_from(["chat", "chat.v1", "chat.v2", "graphql-ws", "x", "X"]),
    st.sampled_from(["a b", "", "é", "chat;q=1", '"chat"']),
)


def line(value: str) -> bytes:
    return value.encode("latin-1", "replace")


huge = st.builds(
    lambda chunk, count: chunk * count,
    st.binary(min_size=1, max_size=3),
    st.integers(min_value=2_000, max_value=40_000),
)
any_bytes = st.one_of(st.binary(max_size=64), huge)
header_name = st.one_of(
    st.sampled_from(NAMES),
    st.sampled_from(NAMES).map(lambda n: n.upper()),
    st.sampled_from(NAMES).map(lambda n: n.title()),
    st.binary(max_size=24),
)
raw_header = st.tuples(header_name, any_bytes)


@st.composite
def structured_header(draw: st.DrawFn) -> tuple[bytes, bytes]:
    name = draw(st.sampled_from(NAMES))
    if name == b"host":
        value = draw(labels) + draw(st.sampled_from(["", ":80", ":8000", ":443", ":99999"]))
    elif name == b"origin":
        value = draw(st.one_of(origin_text(), st.just("null")))
    elif name == b"sec-websocket-version":
        value = draw(st.sampled_from(["13", "13 ", " 13", "013", "13,13", "8", "", "13, 8"]))
    elif name == b"sec-websocket-key":
        value = draw(key_text())
    else:
        value = ", ".join(draw(st.lists(token, max_size=4)))
    return name, line(value)


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    """A websocket scope with any headers, plus the optional keys servers may leave out."""
    headers = draw(
        st.lists(st.one_of(raw_header, structured_header(), structured_header()), max_size=12)
    )
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["path"] = draw(st.text(max_size=20))
    if draw(st.booleans()):
        fields["http_version"] = draw(st.sampled_from(["1.1", "2", "3", "1.0"]))
    if draw(st.booleans()):
        fields["extensions"] = draw(
            st.sampled_from([{}, {"websocket.http.response": {}}, ["websocket.http.response"]])
        )
    if draw(st.booleans()):
        fields["client"] = draw(
            st.one_of(
                st.tuples(st.text(max_size=10), st.integers(0, 65535)),
                st.tuples(st.text(max_size=10), st.sampled_from(["80", "x", ""])),
                st.just("bogus"),
            )
        )
    if draw(st.booleans()):
        fields["subprotocols"] = draw(st.lists(token, max_size=3))
    # A None value would leave the key out (as ASGI reads a missing optional key), so the
    # missing keys above are drawn as absent rather than as None.
    return ws_scope(bare=True, headers=headers, **fields)


@st.composite
def good_scope(draw: st.DrawFn) -> dict[str, Any]:
    """A scope that a permissive policy would accept, before the mutation under test."""
    host = draw(labels)
    headers = [
        (b"host", line(host)),
        (b"sec-websocket-version", b"13"),
        (
            b"sec-websocket-key",
            line(base64.b64encode(draw(st.binary(min_size=16, max_size=16))).decode()),
        ),
        (b"origin", line(f"http://{host}")),
    ]
    return ws_scope(bare=True, headers=headers, path="/")


policies = st.sampled_from(
    [
        HandshakePolicy(),
        HandshakePolicy(allow_missing_origin=False, allow_null_origin=True),
        HandshakePolicy(allow_origins=["https://*.example.com", "http://a.test:8000"]),
        HandshakePolicy(allow_origin_regex=r"https?://[a-z]+\.test"),
        HandshakePolicy(allow_any_origin=True, subprotocols=["chat.v2", "chat"]),
        HandshakePolicy(allow_hosts=["example.com", "*.test"], subprotocols=["chat"]),
        HandshakePolicy(
            allow_any_origin=True,
            subprotocols=["chat.v1", "chat"],
            require_subprotocol=True,
            subprotocol_preference="client",
        ),
        HandshakePolicy(
            allow_any_origin=True,
            select_subprotocol=lambda _req, offered: offered[-1] if offered else None,
        ),
    ]
)


# --- never raises, always well formed -----------------------------------------------------------


@FAST
@given(scope=scopes(), policy=policies)
def test_arbitrary_scopes_never_raise_and_give_a_table_decision(
    scope: dict[str, Any], policy: HandshakePolicy
) -> None:
    request = HandshakeRequest.from_scope(scope)
    decision = policy.evaluate(request)
    assert isinstance(decision, Accept | Reject)
    if isinstance(decision, Reject):
        # Every refusal carries the status and headers of the response table.
        status, headers = RESPONSES[decision.reason]
        assert (decision.status, decision.headers[: len(headers)]) == (status, headers)
        # The detail is for logs and never echoes request bytes.
        for _, value in scope["headers"]:
            if len(value) > 12:
                assert value.decode("latin-1") not in decision.detail


@FAST
@given(scope=scopes(), policy=policies)
def test_the_remembered_verdict_is_the_one_evaluate_reaches_afresh(
    scope: dict[str, Any], policy: HandshakePolicy
) -> None:
    # Twice through the raw-value cache and the verdict memo, then with neither (the same
    # fields in a request built by hand): same request, same decision.
    first = policy.evaluate(HandshakeRequest.from_scope(scope))
    request = HandshakeRequest.from_scope(scope)
    second = policy.evaluate(request)
    fresh = policy.evaluate(request._replace(raw=None))
    assert first == second == fresh


@FAST
@given(headers=st.lists(raw_header, max_size=40))
def test_raw_byte_headers_in_any_order_never_raise(headers: list[tuple[bytes, bytes]]) -> None:
    request = HandshakeRequest.from_scope(ws_scope(bare=True, headers=headers))
    for policy in (HandshakePolicy(), HandshakePolicy(allow_any_origin=True)):
        policy.evaluate(request)
    # Reordering never turns a missing header into a present one (order-insensitive counts).
    shuffled = HandshakeRequest.from_scope(ws_scope(bare=True, headers=headers[::-1]))
    assert sorted(shuffled.origins) == sorted(request.origins)
    assert sorted(shuffled.keys) == sorted(request.keys)
    assert sorted(shuffled.versions) == sorted(request.versions)
    assert sorted(shuffled.hosts) == sorted(request.hosts)


# --- determinism --------------------------------------------------------------------------------


@FAST
@given(scope=scopes(), policy=policies)
def test_same_request_same_decision(scope: dict[str, Any], policy: HandshakePolicy) -> None:
    first = policy.evaluate(HandshakeRequest.from_scope(scope))
    again = policy.evaluate(HandshakeRequest.from_scope(dict(scope)))
    assert again == first
    assert policy.evaluate(HandshakeRequest.from_scope(scope)) == first


# --- what an Accept guarantees ------------------------------------------------------------------


@FAST
@given(
    base=good_scope(),
    extra=st.lists(st.one_of(structured_header(), raw_header), max_size=3),
    at=st.integers(0, 4),
    http_version=st.sampled_from(["1.1", "2"]),
    policy=policies,
)
def test_an_accept_saw_one_version_one_valid_key_at_most_one_origin(
    base: dict[str, Any],
    extra: list[tuple[bytes, bytes]],
    at: int,
    http_version: str,
    policy: HandshakePolicy,
) -> None:
    headers = base["headers"][:at] + extra + base["headers"][at:]
    scope = {**base, "headers": headers, "http_version": http_version}
    request = HandshakeRequest.from_scope(scope)
    decision = policy.evaluate(request)
    event(type(decision).__name__)
    if isinstance(decision, Reject):
        return
    assert request.versions == ("13",)
    assert len(request.origins) <= 1
    if request.http_version not in ("2", "3"):
        assert len(request.keys) == 1
        assert len(base64.b64decode(request.keys[0], validate=True)) == 16
        assert len(accept_key(request.keys[0])) == 28


@FAST
@given(key=key_text(), base=good_scope())
def test_an_accepted_key_always_decodes_to_16_bytes(key: str, base: dict[str, Any]) -> None:
    headers = [(n, v) for n, v in base["headers"] if n != b"sec-websocket-key"]
    headers.append((b"sec-websocket-key", line(key)))
    request = HandshakeRequest.from_scope({**base, "headers": headers})
    decision = HandshakePolicy().evaluate(request)
    event(type(decision).__name__)
    try:
        sent = key.strip(" \t")  # RFC 9110 5.5: surrounding whitespace is not the value
        decoded = base64.b64decode(sent.encode("latin-1"), validate=True)
        canonical = base64.b64encode(decoded).decode() == sent
    except (binascii.Error, UnicodeEncodeError):
        decoded, canonical = b"", False
    if isinstance(decision, Accept):
        assert len(decoded) == 16
        assert canonical
        assert request.keys == (key.strip(" \t"),)
    else:
        # Conversely, every canonical 16-byte key (surrounding whitespace aside) is accepted.
        assert not (canonical and len(decoded) == 16), decision


suffixes = st.lists(label, min_size=1, max_size=3).map(".".join)


@WIDER
@given(suffix=suffixes, data=st.data())
def test_a_wildcard_accepts_only_its_suffix_on_a_label_boundary(
    suffix: str, data: st.DataObject
) -> None:
    policy = HandshakePolicy(allow_origins=[f"https://*.{suffix}"], allow_missing_origin=False)
    near = st.one_of(
        labels.map(lambda left: f"{left}.{suffix}"),
        labels.map(lambda left: f"{left}{suffix}"),  # no dot: evilexample.com
        labels.map(lambda right: f"{suffix}.{right}"),  # example.com.evil.com
        st.just(suffix),
        st.just(f".{suffix}"),
        st.just(f"{suffix}."),
        labels,
    )
    https = st.sampled_from(["https", "https", "https", "HTTPS", "http", "wss"])
    origin = data.draw(origin_text(near, https))
    request = HandshakeRequest(origins=(origin,), keys=("dGhlIHNhbXBsZSBub25jZQ==",))
    decision = policy.evaluate(request)
    event(type(decision).__name__)
    parsed = parse_origin(origin)
    if isinstance(decision, Accept):
        assert parsed is not None
        assert decision.origin == parsed.serialized
        assert parsed.scheme == "https"
        assert parsed.port == 443
        assert parsed.host.endswith("." + suffix)
        assert parsed.host[: -len(suffix) - 1]  # a non-empty label before the boundary
        assert decision.origin is not None
        assert decision.origin.endswith("." + suffix)
    else:
        assert decision.reason in (Reason.ORIGIN_NOT_ALLOWED, Reason.ORIGIN_MALFORMED)


@FAST
@given(left=labels, suffix=suffixes)
def test_a_wildcard_accepts_every_subdomain(left: str, suffix: str) -> None:
    policy = HandshakePolicy(allow_origins=[f"https://*.{suffix}"])
    request = HandshakeRequest(origins=(f"https://{left}.{suffix}",), keys=("A" * 21 + "Q==",))
    assert isinstance(policy.evaluate(request), Accept)


@st.composite
def offered_lists(draw: st.DrawFn) -> list[str]:
    """Sec-WebSocket-Protocol lines: mostly distinct tokens, split over up to three lines."""
    items = draw(st.lists(token, max_size=5, unique=draw(st.integers(0, 3)) > 0))
    cuts = sorted(draw(st.lists(st.integers(0, len(items)), max_size=2)))
    bounds = [0, *cuts, len(items)]
    return [", ".join(items[a:b]) for a, b in itertools.pairwise(bounds)]


negotiating = st.sampled_from(
    [
        HandshakePolicy(subprotocols=["chat.v2", "chat", "x"]),
        HandshakePolicy(subprotocols=["chat.v1", "chat"], subprotocol_preference="client"),
        HandshakePolicy(subprotocols=["graphql-ws"], require_subprotocol=True),
        HandshakePolicy(select_subprotocol=lambda _req, offered: offered[-1] if offered else None),
        HandshakePolicy(allow_hosts=["*.test"], subprotocols=["X"]),
    ]
)


@WIDER
@given(lines=offered_lists(), policy=st.one_of(policies, negotiating), base=good_scope())
def test_the_negotiated_subprotocol_is_one_the_client_offered(
    lines: list[str], policy: HandshakePolicy, base: dict[str, Any]
) -> None:
    headers = base["headers"] + [(b"sec-websocket-protocol", line(text)) for text in lines]
    request = HandshakeRequest.from_scope({**base, "headers": headers})
    decision = policy.evaluate(request)
    event(type(decision).__name__)
    event(str(getattr(decision, "reason", "")))
    event(
        f"subprotocol chosen: {isinstance(decision, Accept) and decision.subprotocol is not None}"
    )
    offered = [item.strip() for text in lines for item in text.split(",") if item.strip()]
    assert list(request.subprotocols) == offered
    if isinstance(decision, Accept) and decision.subprotocol is not None:
        assert decision.subprotocol in offered
        if policy.select_subprotocol is None:
            assert decision.subprotocol in policy.subprotocols
    if isinstance(decision, Accept) and policy.require_subprotocol:
        assert decision.subprotocol is not None


# --- through the middleware: exactly one event, and it tells the truth ---------------------------

APP_ANSWERS = ["accept", "accept-unoffered", "close", "deny", "return", "raise", "send-first"]


def _app(answer: str) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if answer == "accept":
            await send({"type": "websocket.accept"})
        elif answer == "accept-unoffered":
            await send({"type": "websocket.accept", "subprotocol": "never-offered"})
        elif answer == "close":
            await send({"type": "websocket.close", "code": 1000})
        elif answer == "deny":
            await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b""})
        elif answer == "raise":
            raise LookupError("the app's own bug")
        elif answer == "send-first":
            await send({"type": "websocket.send", "text": "too early"})

    return app


@FAST
@given(
    scope=scopes(),
    policy=policies,
    answer=st.sampled_from(APP_ANSWERS),
    gone=st.sampled_from(["never", "before-connect", "on-send"]),
)
def test_every_handshake_leaves_exactly_one_event_that_tells_what_the_client_got(
    scope: dict[str, Any], policy: HandshakePolicy, answer: str, gone: str
) -> None:
    first = "websocket.disconnect" if gone == "before-connect" else "websocket.connect"
    script = Script([{"type": first}])
    if gone == "on-send":
        script.send_error = OSError("the client is gone")
    sink = MemorySink()
    middleware = HandshakeMiddleware(_app(answer), policy=policy, audit=sink)

    async def connection() -> None:
        # The app's own errors (and a failing server send) are the server's business.
        with contextlib.suppress(LookupError, RuntimeError, OSError):
            await middleware(dict(scope), script.receive, script.send)

    run_sync(connection())
    sent = script.sent
    (event,) = sink.events  # exactly one, whatever happened
    answered = sent[0] if sent else None
    if answered is None:
        assert event.status is None  # the client got nothing
    elif answered["type"] == "websocket.accept":
        assert event.status == 101
    elif answered["type"] == "websocket.close":
        assert event.status == 403  # servers send a close before accept as 403
    else:
        assert answered["type"] == "websocket.http.response.start"
        assert event.status == answered["status"]
    assert event.id
    event.to_dict()  # every derived field reads without error
