"""The ASGI adapter with scripted receive/send: exact message sequences, app (not) called,
the caller's scope untouched, exactly one audit event per handshake."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from asgi_ws_handshake import (
    HandshakeDenied,
    HandshakeInfo,
    HandshakeMiddleware,
    HandshakePolicy,
    HandshakeRequest,
    MemorySink,
    MemoryStore,
    Outcome,
    get_handshake,
)
from asgi_ws_handshake.middleware import Receive, Scope, Send
from tests.asgi import Script, run, ws_scope
from tests.support import GOOD_ACCEPT, GOOD_KEY, new_key


async def test_http_and_lifespan_pass_through_untouched() -> None:
    calls: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))
        if scope["type"] == "lifespan":
            await send({"type": "lifespan.startup.complete"})

    sink = MemorySink()
    middleware = HandshakeMiddleware(app, audit=sink)
    script = Script()
    for kind in ("http", "lifespan"):
        scope: dict[str, Any] = {"type": kind, "headers": [(b"origin", b"https://evil.test")]}
        await middleware(scope, script.receive, script.send)
        seen_scope, seen_receive, seen_send = calls[-1]
        assert seen_scope is scope
        assert seen_receive == script.receive
        # http: the server's own send; lifespan: a send that drains the sinks at shutdown.
        assert (seen_send == script.send) is (kind == "http")
    assert sink.events == []  # no audit for non-websocket scopes
    assert script.types() == ["lifespan.startup.complete"]  # passed through as it was


async def test_lifespan_shutdown_waits_for_the_sinks_then_completes() -> None:
    finished: list[str] = []

    async def slow(event: Any) -> None:
        await asyncio.sleep(0.05)
        finished.append(event.id)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "websocket.accept"})

    middleware = HandshakeMiddleware(app, audit=slow)
    await Script().start(middleware)
    assert finished == []  # delivered in the background
    script = Script()
    await middleware({"type": "lifespan"}, script.receive, script.send)
    assert len(finished) == 1  # drained before the server heard of the shutdown
    assert script.types() == ["lifespan.shutdown.complete"]


async def test_lifespan_shutdown_counts_and_logs_what_it_had_to_drop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stalled(event: Any) -> None:
        await asyncio.Event().wait()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "websocket.accept"})

    middleware = HandshakeMiddleware(app, audit=stalled, audit_timeout=60, drain_timeout=0.05)
    for _ in range(3):
        await Script().start(middleware, ws_scope(key=new_key()))
    script = Script()
    with caplog.at_level(logging.WARNING, logger="asgi_ws_handshake"):
        await middleware({"type": "lifespan"}, script.receive, script.send)
    assert middleware.auditor.dropped == 3
    assert middleware.auditor._pending == set()
    assert script.types() == ["lifespan.shutdown.complete"]
    assert "0 sink failures and 3 dropped events in all" in caplog.text


async def test_accepted_handshake_reaches_app_with_decision() -> None:
    result = await run(None, ws_scope(protocols="chat.v1, chat.v2"))
    # The connect message the middleware read is replayed to the app.
    assert result.app_received[0] == {"type": "websocket.connect"}
    # The negotiated subprotocol (server preference) is filled in.
    assert result.script.sent == [{"type": "websocket.accept", "subprotocol": "chat.v2"}]
    (child,) = result.app_scopes
    info = get_handshake(child)
    assert isinstance(info, HandshakeInfo)
    assert info.subprotocol == "chat.v2"
    assert info.subprotocols == ("chat.v1", "chat.v2")
    assert info.origin == "https://app.test"
    assert info.route == "default"
    # The scope is left as it was, but for the connection's own state namespace, which
    # gains the record (ASGI: a per-connection copy of the lifespan state, the app's to use).
    before = result.scope_before
    assert {k: v for k, v in result.scope.items() if k != "state"} == {
        k: v for k, v in before.items() if k != "state"
    }
    assert result.scope["state"] == {**before["state"], "ws_handshake": info}
    assert child["state"]["from_lifespan"] == 1

    (event,) = result.sink.events
    assert event.outcome is Outcome.ACCEPTED
    assert event.status == 101
    assert event.id == info.audit_id
    assert event.expected_accept == GOOD_ACCEPT
    assert event.key == GOOD_KEY
    assert event.key_valid is True
    assert event.subprotocol == "chat.v2"
    assert event.denial is None


async def test_without_a_state_namespace_the_record_rides_in_a_copy_of_the_scope() -> None:
    scope = ws_scope(state=None)
    result = await run(None, scope)
    (child,) = result.app_scopes
    assert "state" not in result.scope  # the server's scope is not touched
    assert child is not result.scope
    assert get_handshake(child) is not None


async def test_refusal_uses_http_response_extension() -> None:
    result = await run(None, ws_scope(origin="https://evil.test"))
    assert result.app_scopes == []  # the app never runs
    start, body = result.script.sent
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 403
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert body == {"type": "websocket.http.response.body", "body": b"origin_not_allowed\n"}
    assert headers[b"content-length"] == b"%d" % len(body["body"])
    (event,) = result.sink.events
    assert (event.outcome, event.reason, event.status, event.denial) == (
        Outcome.REJECTED,
        "origin_not_allowed",
        403,
        "http_response",
    )
    assert event.origin == "https://evil.test"


async def test_refusal_without_extension_closes() -> None:
    # daphne offers no websocket.http.response: a close before accept becomes 403.
    result = await run(None, ws_scope(origin="https://evil.test", extensions=None))
    assert result.script.sent == [{"type": "websocket.close", "code": 1008}]
    (event,) = result.sink.events
    assert (event.status, event.denial, event.reason) == (403, "close", "origin_not_allowed")


@pytest.mark.parametrize(("version", "status"), [("8", 426), ("", 400)])
async def test_version_refusal_names_supported_version(version: str, status: int) -> None:
    result = await run(None, ws_scope(version=version or None))
    start = result.script.sent[0]
    assert start["status"] == status
    assert (b"sec-websocket-version", b"13") in start["headers"]  # RFC 6455 4.4


async def test_app_choosing_unoffered_subprotocol_is_refused() -> None:
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await send({"type": "websocket.accept", "subprotocol": "never-offered"})
        except HandshakeDenied as exc:
            raised.append(exc)
            raise

    result = await run(app, ws_scope(protocols="chat.v1"))  # nothing escapes to the server
    assert len(raised) == 1
    assert result.script.types() == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert result.script.sent[0]["status"] == 500
    (event,) = result.sink.events
    assert (event.outcome, event.reason, event.status) == (
        Outcome.APP_ERROR,
        "app_subprotocol_not_offered",
        500,
    )


async def test_sends_after_a_refused_accept_keep_failing() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        with pytest.raises(HandshakeDenied):
            await send({"type": "websocket.accept", "subprotocol": "nope"})
        with pytest.raises(HandshakeDenied):
            await send({"type": "websocket.send", "text": "hi"})

    result = await run(app, ws_scope(protocols="chat.v1", extensions=None))
    assert result.script.sent == [{"type": "websocket.close", "code": 1008}]
    assert len(result.sink.events) == 1


async def test_app_picking_another_offered_subprotocol_is_kept() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "chat.v1"})

    result = await run(app, ws_scope(protocols="chat.v1, chat.v2"))
    assert result.script.sent == [{"type": "websocket.accept", "subprotocol": "chat.v1"}]
    assert result.sink.events[0].subprotocol == "chat.v1"


async def test_reserved_accept_headers_are_stripped() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(
            {
                "type": "websocket.accept",
                "headers": [
                    (b"Sec-WebSocket-Accept", b"forged"),
                    (b"sec-websocket-extensions", b"permessage-deflate"),
                    (b"upgrade", b"h2c"),
                    (b"Connection", b"keep-alive"),
                    (b"x-app", b"kept"),
                    (b"set-cookie", b"a=b"),
                ],
            }
        )

    result = await run(app, ws_scope(protocols="chat.v1"))
    # The negotiated subprotocol is filled in beside the app's own headers.
    assert result.script.sent == [
        {
            "type": "websocket.accept",
            "subprotocol": "chat.v1",
            "headers": [(b"x-app", b"kept"), (b"set-cookie", b"a=b")],
        }
    ]


async def test_client_gone_before_connect() -> None:
    result = await run(
        None, script=Script(incoming=[{"type": "websocket.disconnect", "code": 1006}])
    )
    assert result.app_scopes == []
    assert result.script.sent == []
    (event,) = result.sink.events
    assert (event.outcome, event.reason, event.status) == (Outcome.CLIENT_GONE, "client_gone", None)


async def test_receive_raising_before_connect_is_audited_and_propagates() -> None:
    script = Script(receive_error=OSError("transport gone"))
    result = await run(None, script=script, raises=OSError)
    assert str(result.error) == "transport gone"
    assert result.app_scopes == []
    assert script.sent == []
    assert [e.outcome for e in result.sink.events] == [Outcome.CLIENT_GONE]


async def test_app_exception_before_accept() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise ValueError("boom")

    sink = MemorySink()
    script = Script()
    middleware = HandshakeMiddleware(app, audit=sink, policy=HandshakePolicy())
    with pytest.raises(ValueError, match="boom"):
        await middleware(ws_scope(), script.receive, script.send)
    assert script.types() == ["websocket.http.response.start", "websocket.http.response.body"]
    assert script.sent[0]["status"] == 500
    (event,) = sink.events
    assert (event.outcome, event.reason, event.status) == (Outcome.APP_ERROR, "app_error", 500)
    assert event.detail == "app raised ValueError before answering"


async def test_app_exception_after_accept_keeps_the_accepted_event() -> None:
    sink = MemorySink()
    script = Script()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise ValueError("after accept")

    with pytest.raises(ValueError, match="after accept"):
        await HandshakeMiddleware(app, audit=sink)(ws_scope(), script.receive, script.send)
    assert script.sent == [{"type": "websocket.accept"}]
    assert [e.outcome for e in sink.events] == [Outcome.ACCEPTED]


async def test_app_close_before_accept() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1000})

    result = await run(app)
    assert result.script.sent == [{"type": "websocket.close", "code": 1000}]
    (event,) = result.sink.events
    assert (event.outcome, event.reason, event.status, event.denial) == (
        Outcome.APP_REJECTED,
        "app_rejected",
        403,
        "close",
    )


async def test_app_own_http_response_before_accept() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"login"})

    result = await run(app)
    assert result.script.types() == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert result.script.sent[1]["body"] == b"login"
    (event,) = result.sink.events
    assert (event.outcome, event.status, event.denial) == (
        Outcome.APP_REJECTED,
        401,
        "http_response",
    )


async def test_app_returning_without_answering() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    result = await run(app, script=Script(then_disconnect=False))
    assert result.script.sent[0]["status"] == 500
    (event,) = result.sink.events
    assert (event.outcome, event.reason) == (Outcome.APP_ERROR, "app_error")
    assert "without answering" in event.detail


async def test_app_sending_data_before_accept() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.send", "text": "too early"})

    sink = MemorySink()
    script = Script()
    with pytest.raises(RuntimeError, match="before the handshake is answered"):
        await HandshakeMiddleware(app, audit=sink)(ws_scope(), script.receive, script.send)
    assert script.sent[0]["status"] == 500  # the client got a refusal, not our data
    (event,) = sink.events
    assert (event.outcome, event.reason) == (Outcome.APP_ERROR, "app_error")


async def test_client_leaving_while_app_waits() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # connect
        message = await receive()  # the client leaves before the app answers
        assert message["type"] == "websocket.disconnect"

    result = await run(app)
    assert result.script.sent == []  # nothing to answer
    (event,) = result.sink.events
    assert event.outcome is Outcome.CLIENT_GONE


async def test_cancelled_app_before_accept_is_client_gone() -> None:
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        started.set()
        await asyncio.Event().wait()

    sink = MemorySink()
    script = Script(then_disconnect=False)
    task = script.start(HandshakeMiddleware(app, audit=sink))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [e.outcome for e in sink.events] == [Outcome.CLIENT_GONE]
    assert script.sent == []


async def test_refusal_to_a_vanished_client_raises_nothing() -> None:
    script = Script(send_error=OSError("broken pipe"))
    result = await run(None, ws_scope(origin="https://evil.test"), script=script)
    (event,) = result.sink.events
    assert (event.outcome, event.reason, event.status, event.denial) == (
        Outcome.CLIENT_GONE,
        "origin_not_allowed",
        None,
        None,
    )


async def test_accept_to_a_vanished_client_is_client_gone() -> None:
    class Gone(Exception):
        pass

    script = Script(send_error=Gone())
    with pytest.raises(Gone):
        await run(None, script=script)


@pytest.mark.parametrize(
    ("mode", "second"),
    [
        ("flag", (Outcome.ACCEPTED, True)),
        ("reject", (Outcome.REJECTED, True)),
        ("ignore", (Outcome.ACCEPTED, None)),
    ],
)
async def test_key_reuse(mode: str, second: tuple[Outcome, bool | None]) -> None:
    store = MemoryStore()
    policy = HandshakePolicy(key_reuse=mode)  # type: ignore[arg-type]
    first = await run(None, policy=policy, store=store)
    again = await run(None, policy=policy, store=store)
    assert first.sink.events[0].key_reused is (None if mode == "ignore" else False)
    event = again.sink.events[0]
    assert (event.outcome, event.key_reused) == second
    if mode == "reject":
        assert event.reason == "key_reused"
        assert again.script.sent[0]["status"] == 400
        assert again.app_scopes == []


async def test_refused_keys_are_not_remembered() -> None:
    store = MemoryStore()
    await run(None, ws_scope(origin="https://evil.test"), store=store)
    assert len(store) == 0


async def test_raising_selector_is_an_internal_error() -> None:
    def selector(request: HandshakeRequest, offered: tuple[str, ...]) -> str | None:
        raise KeyError("bug")

    policy = HandshakePolicy(select_subprotocol=selector)
    result = await run(None, ws_scope(protocols="a"), policy=policy)
    assert result.script.sent[0]["status"] == 500
    assert result.sink.events[0].reason == "internal_error"


def test_get_handshake_accepts_scope_or_connection() -> None:
    info = HandshakeInfo(HandshakeRequest())

    class Connection:
        scope: dict[str, Any] = {"state": {"ws_handshake": info}}  # noqa: RUF012

    assert get_handshake({"state": {"ws_handshake": info}}) is info
    assert get_handshake(Connection()) is info
    assert get_handshake({}) is None
    assert get_handshake({"state": {"ws_handshake": "forged"}}) is None
    assert get_handshake(object()) is None


async def test_default_audit_is_logging(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("refused before the app")

    script = Script()
    with caplog.at_level(logging.INFO, logger="asgi_ws_handshake.audit"):
        await HandshakeMiddleware(app)(
            ws_scope(origin="https://evil.test"), script.receive, script.send
        )
    (record,) = caplog.records
    assert "origin_not_allowed" in record.getMessage()
    assert record.ws_handshake["status"] == 403  # type: ignore[attr-defined]


async def test_wrapped_refusal_coming_out_of_the_app_is_swallowed() -> None:
    class AppLevelError(Exception):
        pass

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await send({"type": "websocket.accept", "subprotocol": "nope"})
        except HandshakeDenied:
            raise AppLevelError("the framework wrapped it") from None

    result = await run(app, ws_scope(protocols="chat.v1"))  # nothing escapes
    assert result.script.sent[0]["status"] == 500
    assert len(result.sink.events) == 1


async def test_unrelated_app_error_after_a_refusal_still_propagates() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        with contextlib.suppress(HandshakeDenied):
            await send({"type": "websocket.accept", "subprotocol": "nope"})
        raise KeyError("a real bug")

    with pytest.raises(KeyError, match="a real bug"):
        await run(app, ws_scope(protocols="chat.v1"))


# --- once answered, the app's receive and send hand back the server's own awaitables ---------


async def _through_middleware(app_body: Any) -> tuple[Script, dict[str, Any]]:
    """Run ``app_body(receive, send, seen)`` behind the middleware; return the server's side
    (whose ``returned`` keeps every awaitable it handed out) and what the app saw."""
    server = Script()
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await app_body(receive, send, seen)

    middleware = HandshakeMiddleware(app, policy=HandshakePolicy(), audit=MemorySink())
    await middleware(ws_scope(), server.receive, server.send)
    return server, seen


async def test_after_accept_messages_are_the_servers_own_awaitables() -> None:
    async def body(receive: Any, send: Any, seen: dict[str, Any]) -> None:
        connect = receive()
        seen["connect is ours"] = connect not in seen.setdefault("server", [])
        assert (await connect)["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        message = send({"type": "websocket.send", "text": "hi"})
        seen["send"] = message
        await message
        incoming = receive()
        seen["receive"] = incoming
        seen["next"] = await incoming

    server, seen = await _through_middleware(body)
    assert seen["send"] in server.returned  # the very awaitable the server's send returned
    assert seen["receive"] in server.returned
    assert server.types() == ["websocket.accept", "websocket.send"]
    assert seen["next"]["type"] == "websocket.disconnect"


async def test_accepting_before_reading_connect_still_replays_it_first() -> None:
    async def body(receive: Any, send: Any, seen: dict[str, Any]) -> None:
        await send({"type": "websocket.accept"})
        seen["first"] = await receive()
        incoming = receive()
        seen["second is the server's"] = incoming
        await incoming

    server, seen = await _through_middleware(body)
    assert seen["first"]["type"] == "websocket.connect"
    assert seen["second is the server's"] in server.returned


async def test_an_app_refusal_passes_its_body_to_the_server() -> None:
    async def body(receive: Any, send: Any, seen: dict[str, Any]) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        message = send({"type": "websocket.http.response.body", "body": b"no"})
        seen["body"] = message
        await message

    server, seen = await _through_middleware(body)
    assert seen["body"] in server.returned
    assert server.types() == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]


async def test_a_refused_answer_keeps_send_guarded() -> None:
    async def body(receive: Any, send: Any, seen: dict[str, Any]) -> None:
        await receive()
        with contextlib.suppress(HandshakeDenied):
            await send({"type": "websocket.accept", "subprotocol": "not-offered"})
        with pytest.raises(HandshakeDenied):
            await send({"type": "websocket.send", "text": "after the refusal"})
        seen["done"] = True

    server, seen = await _through_middleware(body)
    assert seen["done"]
    assert "websocket.send" not in server.types()


async def test_a_finished_handshake_leaves_no_reference_cycle() -> None:
    import gc

    from asgi_ws_handshake.guard import Connection

    async def refusing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close"})

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # and returns without answering: refused by the guard

    async def accepting(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    def alive() -> int:
        return sum(type(o) is Connection for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        before = alive()
        for app in (refusing, silent, accepting):  # an app refusal, none, an accepting app
            script = Script()
            # No sink keeps an event (an event holds its handshake's record).
            middleware = HandshakeMiddleware(app, audit=[])
            await middleware(ws_scope(), script.receive, script.send)
            del middleware, script
        # Freed by reference counting alone: nothing waits for the cycle collector.
        assert alive() == before
    finally:
        gc.enable()


class _Disconnect(Exception):
    """Like Starlette's WebSocketDisconnect: carries the close code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@pytest.mark.parametrize(
    ("ending", "closed_by", "code"),
    [("return", "app", None), ("client", "client", 1001), ("raise", "error", 1011)],
)
async def test_a_close_event_says_how_an_accepted_connection_ended(
    ending: str, closed_by: str, code: int | None
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        if ending == "client":
            raise _Disconnect(1001)
        if ending == "raise":
            raise KeyError("bug")

    sink = MemorySink(closes=True)
    try:
        await run(app, audit=sink)
    except (KeyError, _Disconnect):  # the app's own exceptions propagate, as they did
        assert ending != "return"
    (event,) = sink.events
    (closed,) = sink.closes
    assert (closed.id, closed.closed_by, closed.code) == (event.id, closed_by, code)
    assert closed.lifetime >= 0
    assert closed.to_dict()["event"] == "closed"


async def test_no_close_events_for_sinks_that_do_not_take_them() -> None:
    sink = MemorySink()
    result = await run(None, audit=sink)
    assert not result.middleware.auditor.watches_closes
    assert sink.closes == []
    assert len(sink.events) == 1


async def test_a_cancelled_connection_closes_as_the_servers() -> None:
    gate = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        gate.set()
        await asyncio.Event().wait()

    sink = MemorySink(closes=True)
    middleware = HandshakeMiddleware(app, audit=sink)
    script = Script(then_disconnect=False)
    task = script.start(middleware)
    await asyncio.wait_for(gate.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (closed,) = sink.closes
    assert (closed.closed_by, closed.reason) == ("server", "cancelled")


def test_a_connection_sets_every_slot_of_its_record() -> None:
    # Connection sets HandshakeInfo's fields itself (a call fewer per handshake): none may be
    # forgotten when a field is added to the record.
    from asgi_ws_handshake.guard import Connection

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    middleware = HandshakeMiddleware(app, audit=[])
    conn = Connection(middleware, ws_scope(), Script().receive, Script().send)
    slots = [name for klass in type(conn).__mro__ for name in getattr(klass, "__slots__", ())]
    assert len(slots) > 15
    # Except ``auth``: set only by the authenticate step, so that routes without it pay
    # nothing for it (HandshakeInfo.__init__ says so; read through ``authenticated``).
    assert conn.authenticated is None
    for name in slots:
        if name != "auth":
            getattr(conn, name)  # AttributeError if it was never set
