"""The plain lane: ordinary handshakes decided from raw header values and a memoised decision.

The lane is an optimisation only, so the one property that matters is agreement: whenever the
lane decides a scope, it built the very ``HandshakeRequest`` that ``from_scope`` builds and
reached the very decision that ``evaluate`` reaches. Checked here over generated scopes (the
property module's strategies plus near-ordinary ones), and end to end: the same scope through
a middleware with the lane and one without gives the same messages and the same audit event.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from asgi_ws_handshake import (
    Accept,
    HandshakeMiddleware,
    HandshakePolicy,
    HandshakeRequest,
    MemorySink,
    MemoryStore,
    Reject,
    accept_key,
)
from asgi_ws_handshake.key import accept_key_bytes
from asgi_ws_handshake.middleware import _Handshake
from asgi_ws_handshake.request import plain_fields
from tests.asgi import Script, run, ws_scope
from tests.support import GOOD_KEY
from tests.test_properties import FAST, WIDER, key_text, line, origin_text, policies, scopes, token

EXTRA_POLICIES = [
    HandshakePolicy(),
    HandshakePolicy(allow_origins=["https://app.test"], subprotocols=["chat.v2", "chat.v1"]),
    HandshakePolicy(allow_origins=["https://*.test"], key_reuse="reject"),
    HandshakePolicy(allow_null_origin=True, allow_missing_origin=False, key_reuse="ignore"),
]
all_policies = st.one_of(st.sampled_from(EXTRA_POLICIES), policies)


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})


async def _never(*_: Any) -> Any:
    raise AssertionError("the plain lane must not touch receive or send")


def lane(policy: HandshakePolicy, scope: dict[str, Any]) -> _Handshake | None:
    """Run only the plain lane on ``scope``; the handshake when the lane decided it."""
    mw = HandshakeMiddleware(_app, policy=policy, audit=[], store=MemoryStore())
    handshake = _Handshake(mw, scope, _never, _never)
    if mw._plain_lane:
        mw._plain(handshake, scope)
    return handshake if handshake.decision is not None else None


def assert_agrees(policy: HandshakePolicy, scope: dict[str, Any]) -> bool:
    handshake = lane(policy, scope)
    event("plain lane" if handshake else "full path")
    if handshake is None:
        return False
    request = HandshakeRequest.from_scope(scope)
    assert handshake.request == request
    assert handshake.decision == policy.evaluate(request)  # accepted or refused alike
    return True


def mostly(good: Any, *others: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` about nine times in ten, else one of ``others``."""
    return st.integers(0, 9).flatmap(lambda i: st.just(good) if i else st.one_of(*others))


@st.composite
def ordinary_scopes(draw: st.DrawFn) -> dict[str, Any]:
    """Browser-like scopes, each part ordinary about nine times in ten, else a near-miss."""
    host = draw(mostly("app.test", st.sampled_from(["app.test:8000", "APP.test", "", "a b"])))
    headers: list[tuple[Any, Any]] = [(b"host", line(host)), (b"upgrade", b"websocket")]
    origin = draw(
        mostly(
            "https://app.test",
            st.none(),
            st.sampled_from(["null", "http://app.test", "https://x.test", "https://app.test:443"]),
            origin_text(),
        )
    )
    if origin is not None:
        headers.append((b"origin", line(origin)))
    version = draw(mostly("13", st.sampled_from(["8", " 13", "13,13", ""])))
    headers.append((b"sec-websocket-version", line(version)))
    key = draw(
        mostly(
            GOOD_KEY,
            st.binary(min_size=16, max_size=16).map(lambda b: base64.b64encode(b).decode()),
            key_text(),
        )
    )
    headers.append((b"sec-websocket-key", line(key)))
    if draw(st.booleans()):
        offered = draw(st.lists(st.one_of(token, st.sampled_from(["chat.v1", "chat"])), max_size=3))
        headers.append((b"sec-websocket-protocol", line(", ".join(offered))))
    extra = draw(
        mostly(
            [(b"cookie", b"a=1")],
            st.sampled_from(
                [
                    [],
                    [(b"Origin", b"https://evil.test")],  # a name a server forgot to lowercase
                    [(b"origin", b"https://evil.test")],  # a repeated Origin line
                    [(b"cookie", b"a=1"), (b"cookie", b"b=2")],  # any repeated line
                    [("origin", "https://evil.test")],  # str, not bytes
                    [(b"sec-websocket-key", bytearray(b"x"))],
                    [(b"x-odd", "text")],
                ]
            ),
        )
    )
    headers.extend(extra)
    headers = draw(st.permutations(headers))
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": draw(mostly("/ws", st.just(b"/ws"))),
        "headers": headers,
        "client": draw(mostly(("127.0.0.1", 5000), st.sampled_from([None, ("::1", "80"), "x"]))),
        "http_version": draw(mostly("1.1", st.sampled_from(["2", "1.0"]))),
        "extensions": draw(mostly({"websocket.http.response": {}}, st.just(None))),
    }
    if draw(st.booleans()):
        scope["subprotocols"] = draw(st.lists(token, max_size=2))
    return scope


@WIDER
@given(scope=ordinary_scopes(), policy=all_policies)
def test_the_lane_agrees_with_from_scope_and_evaluate(
    scope: dict[str, Any], policy: HandshakePolicy
) -> None:
    assert_agrees(policy, scope)


@FAST
@given(scope=scopes(), policy=all_policies)
def test_the_lane_agrees_on_arbitrary_scopes(
    scope: dict[str, Any], policy: HandshakePolicy
) -> None:
    assert_agrees(policy, scope)


@pytest.mark.parametrize(
    ("server", "changes"),
    [
        ("uvicorn wsproto: the offer only in the scope's list", {"protocols": None}),
        ("daphne: the client as a list, no http_version", {"client": ["127.0.0.1", 5000]}),
        ("granian: the port as a string", {"client": ("127.0.0.1", "5000")}),
    ],
)
def test_every_server_shape_takes_the_lane(server: str, changes: dict[str, Any]) -> None:
    policy = HandshakePolicy(allow_origins=["https://app.test"], subprotocols=["chat.v1"])
    scope = ws_scope(protocols="chat.v1")
    if "protocols" in changes:
        scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"sec-websocket-protocol"]
    if "client" in changes:
        scope["client"] = changes["client"]
        del scope["http_version"]
    handshake = lane(policy, scope)
    assert handshake is not None, server
    assert handshake.request == HandshakeRequest.from_scope(scope)
    assert handshake.decision == Accept("chat.v1", accept_key(GOOD_KEY), "https://app.test")


@pytest.mark.parametrize(
    "scope",
    [
        ws_scope(origin="https://evil.test"),
        ws_scope(origin="null"),
        ws_scope(host="other.test"),
        ws_scope(protocols="chat.v1, chat.v1"),
    ],
)
def test_refusals_are_decided_in_the_lane_with_their_own_accept_value(
    scope: dict[str, Any],
) -> None:
    policy = HandshakePolicy(allow_origins=["https://app.test"], allow_hosts=["app.test"])
    handshake = lane(policy, scope)
    assert handshake is not None
    assert isinstance(handshake.decision, Reject)
    assert handshake.decision == policy.evaluate(HandshakeRequest.from_scope(scope))
    assert handshake.decision.expected_accept == accept_key(GOOD_KEY)


def test_a_browser_handshake_takes_the_lane() -> None:
    policy = HandshakePolicy(allow_origins=["https://app.test"], subprotocols=["chat.v1"])
    handshake = lane(policy, ws_scope(protocols="chat.v1"))
    assert handshake is not None
    assert handshake.decision == Accept("chat.v1", accept_key(GOOD_KEY), "https://app.test")


def _with(name: bytes, value: Any) -> dict[str, Any]:
    """A browser-like scope with header ``name``'s value replaced by ``value``."""
    scope = ws_scope(protocols="chat.v1")
    scope["headers"] = [(n, value if n == name else v) for n, v in scope["headers"]]
    return scope


@pytest.mark.parametrize(
    ("why", "scope"),
    [
        ("uppercase name", ws_scope(extra=[(b"Cookie", b"a=1")])),
        ("repeated Origin", ws_scope(extra=[(b"origin", b"https://app.test")])),
        ("repeated Host", ws_scope(extra=[(b"host", b"app.test")])),
        ("another version", ws_scope(version="8")),
        ("malformed key", ws_scope(key="not a key")),
        ("HTTP/2", {**ws_scope(), "http_version": "2"}),
        ("headers not a list", {**ws_scope(), "headers": iter(ws_scope()["headers"])}),
        ("non-str path", {**ws_scope(), "path": b"/ws"}),
        ("no path", {k: v for k, v in ws_scope().items() if k != "path"}),
        ("a key that is not bytes", _with(b"sec-websocket-key", bytearray(GOOD_KEY.encode()))),
        ("an Origin that is not bytes", _with(b"origin", bytearray(b"https://app.test"))),
        ("a protocol line that is not bytes", _with(b"sec-websocket-protocol", "chat.v1")),
    ],
)
def test_unusual_handshakes_take_the_full_path(why: str, scope: dict[str, Any]) -> None:
    policy = HandshakePolicy(allow_origins=["https://app.test"], subprotocols=["chat.v1"])
    assert lane(policy, scope) is None, why


def test_policies_the_lane_cannot_memoise_always_take_the_full_path() -> None:
    class Custom(HandshakePolicy):
        pass

    scope = ws_scope()
    assert lane(HandshakePolicy(allow_origins=["https://app.test"]), scope) is not None
    selector = HandshakePolicy(select_subprotocol=lambda _request, offered: None)
    for policy in (selector, Custom()):
        assert policy.plain(b"https://app.test", b"app.test", None) is None
        assert lane(policy, scope) is None
    capped = HandshakePolicy(max_connections=5)
    assert capped.plain(b"https://app.test", b"app.test", None) is not None
    assert lane(capped, scope) is None  # the cap needs the store, asked on the full path
    # A store that is not exactly the built-in memory store is asked on the full path...
    assert not HandshakeMiddleware(_app, store=_OtherStore())._plain_lane
    # ... unless the policy asks it nothing.
    ignoring = HandshakePolicy(key_reuse="ignore")
    assert HandshakeMiddleware(_app, policy=ignoring, store=_OtherStore())._plain_lane
    # Routes: each route's policy on its own.
    routed = HandshakeMiddleware(
        _app,
        policy=HandshakePolicy(max_connections=5),
        routes={"/ws*": HandshakePolicy(allow_origins=["https://app.test"], subprotocols=["c"])},
    )
    assert routed._plain_lane
    handshake = _Handshake(routed, scope, _never, _never)
    routed._plain(handshake, scope)
    assert (handshake.route, handshake.decision) == (
        "/ws*",
        Accept(None, accept_key(GOOD_KEY), "https://app.test"),
    )
    other = {**scope, "path": "/other"}
    handshake = _Handshake(routed, other, _never, _never)
    routed._plain(handshake, other)
    assert handshake.decision is None  # the default policy has a cap: the full path


class _OtherStore(MemoryStore):
    """A subclass may do I/O in its methods: never called inline."""


def test_the_memo_is_bounded_by_the_bytes_it_keys_on() -> None:
    policy = HandshakePolicy(allow_origins=["https://*.test"])
    label = "a" * 60
    for i in range(600):  # about 16 KiB of Origin each: the byte bound comes long before 1024
        origin = f"https://{'.'.join([label] * 260)}{i}.test".encode()
        assert policy.plain(origin, b"app.test", None) is not None
        held = sum(len(key[0]) for key in policy._plain if isinstance(key[0], bytes))
        assert held <= 256 * 1024
    assert len(policy._plain) < 20


def test_the_memo_is_bounded_and_keeps_answering() -> None:
    policy = HandshakePolicy(allow_origins=["https://*.test"])
    for i in range(3000):
        entry = policy.plain(f"https://h{i}.test".encode(), b"app.test", None)
        assert entry is not None
        assert entry.decision.origin == f"https://h{i}.test"
        assert len(policy._plain) <= 1024
    refused = policy.plain(b"https://evil.example", b"app.test", None)
    assert refused is not None
    assert isinstance(refused.decision, Reject)
    assert refused.decision.reason == "origin_not_allowed"
    assert refused.decision.expected_accept is None  # each handshake fills in its own
    assert policy != HandshakePolicy(allow_origins=["https://*.test", "https://x.test"])
    assert policy == HandshakePolicy(allow_origins=["https://*.test"])  # the memo is not compared


@FAST
@given(key=st.one_of(key_text(), st.binary(min_size=16, max_size=16).map(base64.b64encode)))
def test_accept_key_bytes_matches_the_text_form(key: str | bytes) -> None:
    raw = key if isinstance(key, bytes) else line(key)
    text = raw.decode("latin-1")
    valid = HandshakeRequest(keys=(text,), versions=("13",))
    decision = HandshakePolicy(allow_any_origin=True).evaluate(valid)
    if isinstance(decision, Reject):
        assert accept_key_bytes(raw) is None
    else:
        assert accept_key_bytes(raw) == accept_key(text) == decision.expected_accept


def test_plain_fields_reads_exactly_the_five_values() -> None:
    scope = ws_scope(protocols="chat")
    assert plain_fields(scope["headers"]) == [
        b"https://app.test",
        b"app.test",
        b"13",
        scope["headers"][3][1],
        b"chat",
    ]
    assert plain_fields(tuple(scope["headers"])) is not None
    # Other headers may repeat (two Cookie lines over HTTP/2); the five may not.
    cookies = [*scope["headers"], (b"cookie", b"a=1"), (b"cookie", b"b=2")]
    assert plain_fields(cookies) == plain_fields(scope["headers"])
    assert plain_fields([*scope["headers"], (b"sec-websocket-protocol", b"x")]) is None
    assert plain_fields([(b"host", b"a"), (b"x", b"1", b"2")]) is None
    assert plain_fields([([1], b"a")]) is None
    assert plain_fields([(b"123", b"a")]) is None  # no lowercase letter at all: not "plain"
    assert plain_fields(None) is None


# --- end to end: with the lane and without it, the same answer and the same event -------------

VOLATILE = ("id", "time", "duration")
REUSED = "AAAAAAAAAAAAAAAAAAAAAA=="

CASES = list(
    itertools.product(
        [
            ws_scope(protocols="chat.v1, chat.v2"),
            ws_scope(protocols="bearer.secret-token, chat.v1"),
            ws_scope(origin=None),
            ws_scope(origin="https://evil.test"),
            ws_scope(key=REUSED),
            ws_scope(extensions=None),
        ],
        ["accept", "accept chat.v2", "accept unoffered", "close", "raise", "return"],
    )
)


async def _through(
    plain: bool, scope: dict[str, Any], answer: str
) -> tuple[list[Any], list[dict[str, Any]], list[Any]]:
    async def app(child: Any, receive: Any, send: Any) -> None:
        await receive()
        if answer == "accept":
            await send({"type": "websocket.accept"})
        elif answer == "accept chat.v2":
            await send({"type": "websocket.accept", "subprotocol": "chat.v2"})
        elif answer == "accept unoffered":
            await send({"type": "websocket.accept", "subprotocol": "other"})
        elif answer == "close":
            await send({"type": "websocket.close"})
        elif answer == "raise":
            raise ValueError("app bug")

    policy = HandshakePolicy(
        allow_origins=["https://app.test"], subprotocols=["chat.v2", "chat.v1"], key_reuse="reject"
    )
    store = MemoryStore()
    store.remember(REUSED, 600)
    sink = MemorySink()
    script = Script()
    infos: list[Any] = []
    decided: list[bool] = []
    original = HandshakeMiddleware._plain

    def spy(self: HandshakeMiddleware, handshake: _Handshake, scope: Any) -> None:
        original(self, handshake, scope)
        decided.append(handshake.decision is not None)

    with pytest.MonkeyPatch.context() as patch:
        # With the lane (watched), or the full path only.
        patch.setattr(HandshakeMiddleware, "_plain", spy if plain else lambda *_: None)
        try:
            result = await run(app, scope, policy=policy, script=script, audit=sink, store=store)
            infos = [s["state"]["ws_handshake"]._replace(audit_id="-") for s in result.app_scopes]
        except ValueError:
            assert answer == "raise"
    events = [{k: v for k, v in e._asdict().items() if k not in VOLATILE} for e in sink.events]
    if plain:  # the lane decided every one of these handshakes, refusals included
        assert decided == [True]
    return script.sent, events, infos


@pytest.mark.parametrize(("scope", "answer"), CASES)
async def test_with_and_without_the_lane_the_client_and_the_audit_see_the_same(
    scope: dict[str, Any], answer: str
) -> None:
    with_lane = await _through(True, dict(scope), answer)
    without = await _through(False, dict(scope), answer)
    assert len(with_lane[1]) == 1
    assert with_lane == without


def test_a_scope_list_that_is_not_a_list_takes_the_full_path() -> None:
    scope = ws_scope()
    scope["subprotocols"] = {"chat.v1"}  # a set: from_scope reads it, the lane does not
    assert lane(HandshakePolicy(subprotocols=["chat.v1"]), scope) is None


async def test_without_the_partial_hook_messages_still_pass_through() -> None:
    """Where functools.partial has no __setstate__, the app's callables stay ours."""

    class NoHook:
        def __init__(self, func: Any) -> None:
            self.func = func

        def __call__(self, *args: Any) -> Any:
            return self.func(*args)

    script = Script(incoming=[{"type": "websocket.connect"}, {"type": "websocket.receive"}])
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        await send({"type": "websocket.accept"})
        seen.append(await receive())
        await send({"type": "websocket.send", "text": "still here"})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("asgi_ws_handshake.middleware.partial", NoHook)
        middleware = HandshakeMiddleware(app, audit=MemorySink())
        await middleware(ws_scope(), script.receive, script.send)
    assert [m["type"] for m in seen] == ["websocket.connect", "websocket.receive"]
    assert script.types() == ["websocket.accept", "websocket.send"]


def test_the_redaction_caches_are_bounded_in_entries_and_size() -> None:
    middleware = HandshakeMiddleware(_app, redact_subprotocols=["*token*"])
    for i in range(1500):
        assert middleware.redact_all((f"chat.{i}", "x-token")) == (f"chat.{i}", "<redacted>")
        assert len(middleware._redacted_lists) <= 1024
        assert len(middleware._redacted) <= 1024
    long = "a" * 10_000
    assert middleware.redact_all((long, "chat.1")) == ("<redacted>", "chat.1")
    assert middleware.redact_all(tuple(f"p{i}" for i in range(20)))[0] == "p0"
    assert all(len(value) <= 64 for value in middleware._redacted)
    assert all(len(offer) <= 8 for offer in middleware._redacted_lists)
