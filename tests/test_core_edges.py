"""Focused tests for the edges the other suites do not reach in-process: audit sinks and
delivery, the adapter's answers to odd apps, the memory store's bounds, pattern validation.
Each asserts the behaviour its name states.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake import (
    AuditEvent,
    Auditor,
    HandshakeDenied,
    HandshakeInfo,
    HandshakeMiddleware,
    HandshakePolicy,
    HandshakeRequest,
    JSONFormatter,
    JSONLinesSink,
    LoggingSink,
    MemorySink,
    MemoryStore,
    Outcome,
    ThreadedSink,
    get_handshake,
)
from asgi_ws_handshake.audit import Redactor
from asgi_ws_handshake.origin import OriginMatcher, parse_host_pattern, parse_origin
from tests.support import GOOD_KEY

Message = dict[str, Any]
ORIGIN = "http://app.test"


def event(**overrides: Any) -> AuditEvent:
    """An accepted handshake's event; keywords override the request's or the event's fields."""
    request_fields: dict[str, Any] = {
        "path": "/ws",
        "hosts": ("app.test",),
        "origins": (ORIGIN,),
        "keys": (GOOD_KEY,),
        "subprotocols": ("chat",),
        "client": ("127.0.0.1", 1),
    }
    request_fields.update({k: overrides.pop(k) for k in list(overrides) if k in request_fields})
    info = HandshakeInfo(HandshakeRequest(**request_fields))
    info.key_reused = overrides.pop("key_reused", False)
    fields: dict[str, Any] = {
        "handshake": info,
        "outcome": Outcome.ACCEPTED,
        "status": 101,
        "selected": "chat",
        "duration": 0.001,
    }
    fields.update(overrides)
    return AuditEvent.build(**fields)


# -- audit sinks ---------------------------------------------------------------------------------


def test_to_dict_is_json_safe_with_iso_time() -> None:
    data = event().to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["time"] == "1970-01-01T00:00:00+00:00"
    assert data["subprotocols"] == ["chat"]
    assert data["outcome"] == "accepted"


def test_memory_sink_keeps_the_last_n_and_clears() -> None:
    sink = MemorySink(maxlen=2)
    for n in range(3):
        sink(event(detail=str(n)))
    assert [e.detail for e in sink.events] == ["1", "2"]
    sink.clear()
    assert sink.events == []


def test_logging_sink_levels_and_extra(caplog: pytest.LogCaptureFixture) -> None:
    sink = LoggingSink("test.audit")
    with caplog.at_level(logging.INFO, "test.audit"):
        sink(event())
        sink(event(outcome=Outcome.REJECTED, reason="origin_not_allowed", status=403))
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.WARNING]
    assert caplog.records[1].ws_handshake["reason"] == "origin_not_allowed"  # type: ignore[attr-defined]


def test_logging_sink_skips_disabled_levels(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.audit.quiet")
    sink = LoggingSink(logger, level=logging.DEBUG)
    with caplog.at_level(logging.INFO, "test.audit.quiet"):
        sink(event())
    assert caplog.records == []


def test_json_formatter_merges_the_event_and_exc_info() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "hello %s", ("you",), None)
    record.ws_handshake = event().to_dict()
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    data = json.loads(JSONFormatter().format(record))
    assert data["message"] == "hello you"
    assert data["event"]["detail"] == ""
    assert "ValueError: boom" in data["exc_info"]


def test_json_lines_sink_appends_one_line_per_event(tmp_path: Path) -> None:
    sink = JSONLinesSink(tmp_path / "audit.jsonl")
    sink(event(detail="1"))
    sink(event(detail="2"))
    sink.close()
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["detail"] for line in lines] == ["1", "2"]


def test_threaded_sink_delivers_counts_failures_and_drops() -> None:
    seen: list[str] = []

    def slow(e: AuditEvent) -> None:
        if e.detail == "bad":
            raise RuntimeError("sink broke")
        seen.append(e.detail)

    sink = ThreadedSink(slow, maxsize=100)
    sink(event(detail="1"))
    sink(event(detail="bad"))
    sink(event(detail="2"))
    sink.close()
    assert seen == ["1", "2"]
    assert sink.failures == 1

    blocked = ThreadedSink(lambda e: None, maxsize=1)
    blocked.close()  # the worker is gone: the queue fills and further events are dropped
    blocked(event())
    blocked(event())
    assert blocked.dropped >= 1


def test_redactor_without_patterns_redacts_only_long_values() -> None:
    redact = Redactor([])
    assert redact("secret-token") == "secret-token"
    assert redact("x" * 65) == "<redacted>"
    assert Redactor()("Bearer.abc") == "<redacted>"


async def test_auditor_isolates_failing_and_timed_out_sinks() -> None:
    got: list[str] = []

    def broken(e: AuditEvent) -> None:
        raise RuntimeError("no")

    async def stalled(e: AuditEvent) -> None:
        await asyncio.Event().wait()

    async def fine(e: AuditEvent) -> None:
        got.append(e.detail)

    auditor = Auditor([broken, stalled, fine], timeout=0.01)
    auditor.emit(event())
    await asyncio.wait_for(auditor.drain(), 5)
    assert got == [""]
    assert auditor.failures == 2
    assert await auditor.deliver(event(detail="2")) is False
    assert got == ["", "2"]


async def test_auditor_drops_beyond_max_pending() -> None:
    async def stalled(e: AuditEvent) -> None:
        await asyncio.sleep(0.01)

    auditor = Auditor([stalled], max_pending=1)
    auditor.emit(event())
    auditor.emit(event())  # dropped: one already pending
    assert (auditor.failures, auditor.dropped) == (0, 1)
    await asyncio.wait_for(auditor.drain(), 5)
    assert auditor._pending == set()


def test_prometheus_sink_counts_by_outcome() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from asgi_ws_handshake.metrics import PrometheusSink

    registry = prometheus_client.CollectorRegistry()
    sink = PrometheusSink(registry, namespace="t")
    sink(event())
    sink(event(outcome=Outcome.CLIENT_GONE, reason="client_gone", status=None))
    value = registry.get_sample_value(
        "t_total", {"outcome": "accepted", "reason": "", "route": "default", "status": "101"}
    )
    gone = registry.get_sample_value(
        "t_total",
        {"outcome": "client_gone", "reason": "client_gone", "route": "default", "status": ""},
    )
    assert (value, gone) == (1.0, 1.0)


# -- memory store --------------------------------------------------------------------------------


def test_memory_store_bounds_and_expiry() -> None:
    now = [0.0]
    store = MemoryStore(max_keys=2, clock=lambda: now[0])  # two generations of one key each
    assert store.remember_key("a", 10) is False
    assert store.remember_key("a", 10) is True
    assert store.remember_key("b", 10) is False
    assert store.remember_key("c", 10) is False  # the generation holding "a" is dropped
    assert len(store) == 2
    assert store.remember_key("a", 10) is False
    now[0] = 100.0  # everything expired
    assert store.remember_key("b", 10) is False
    assert store.remember_key("b", 10) is True
    assert len(store) <= 2
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=0)


# -- origin and host patterns --------------------------------------------------------------------


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


# -- the adapter ---------------------------------------------------------------------------------


HEADERS = [
    (b"host", b"app.test"),
    (b"origin", ORIGIN.encode()),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-key", GOOD_KEY.encode()),
    (b"sec-websocket-protocol", b"chat, bearer.abc"),
]


async def drive(
    app: Any,
    *,
    extensions: bool = True,
    mw_kwargs: dict[str, Any] | None = None,
    path: str = "/ws",
    messages: tuple[Message, ...] = ({"type": "websocket.connect"},),
) -> tuple[list[Message], MemorySink, BaseException | None]:
    sink = MemorySink()
    kwargs: dict[str, Any] = {
        "policy": HandshakePolicy(allow_origins=[ORIGIN], subprotocols=["chat"]),
        "audit": sink,
        **(mw_kwargs or {}),
    }
    mw = HandshakeMiddleware(app, **kwargs)
    scope: dict[str, Any] = {"type": "websocket", "path": path, "headers": HEADERS}
    if extensions:
        scope["extensions"] = {"websocket.http.response": {}}
    queue = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    error: BaseException | None = None
    try:
        await asyncio.wait_for(mw(scope, receive, send), 5)
    except Exception as exc:
        error = exc
    await mw.auditor.drain()
    return sent, sink, error


async def test_non_websocket_scopes_pass_through_untouched() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    mw = HandshakeMiddleware(app)
    scope = {"type": "http", "path": "/"}

    async def nothing() -> Message:
        raise AssertionError

    await mw(scope, nothing, nothing)  # type: ignore[arg-type]
    assert seen == [scope]


async def test_accept_fills_the_subprotocol_strips_reserved_headers_and_shares_info() -> None:
    infos: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        infos.append(get_handshake(scope))
        headers = [(b"Sec-WebSocket-Accept", b"x"), (b"connection", b"y"), (b"x-ok", b"1")]
        await send({"type": "websocket.accept", "headers": headers})
        await send({"type": "websocket.send", "text": "hi"})

    sent, sink, error = await drive(app)
    assert error is None
    assert sent[0] == {
        "type": "websocket.accept",
        "subprotocol": "chat",
        "headers": [(b"x-ok", b"1")],
    }
    assert sent[1]["text"] == "hi"
    [info] = infos
    assert (info.subprotocol, info.origin, info.route) == ("chat", ORIGIN, "default")
    [ev] = sink.events
    assert ev.subprotocols == ("chat", "<redacted>")  # token-looking offers are redacted
    assert get_handshake(object()) is None


async def test_app_that_sends_before_answering_is_refused() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.send", "text": "too early"})

    sent, sink, error = await drive(app)
    assert isinstance(error, RuntimeError)
    assert sent[0]["status"] == 500
    assert (sink.events[0].outcome, sink.events[0].reason) == (Outcome.APP_ERROR, "app_error")


async def test_app_that_raises_gets_a_500_and_the_error_propagates() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise ValueError("app bug")

    sent, sink, error = await drive(app)
    assert isinstance(error, ValueError)
    assert sent[0]["status"] == 500
    assert sink.events[0].detail == "app raised ValueError before answering"


async def test_app_that_returns_unanswered_gets_a_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    sent, sink, error = await drive(app)
    assert (error, sent[0]["status"], sink.events[0].reason) == (None, 500, "app_error")


async def test_app_refusals_are_audited_as_app_rejected() -> None:
    async def closes(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1000})

    async def denies(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    _, sink, _ = await drive(closes)
    assert (sink.events[0].outcome, sink.events[0].status, sink.events[0].denial) == (
        Outcome.APP_REJECTED,
        403,
        "close",
    )
    sent, sink, _ = await drive(denies)
    assert [m["type"] for m in sent][-1] == "websocket.http.response.body"
    assert (sink.events[0].status, sink.events[0].denial) == (401, "http_response")


async def test_unoffered_subprotocol_is_refused_and_raised_into_the_app() -> None:
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": "websocket.accept", "subprotocol": "never-offered"})
        except HandshakeDenied as exc:
            raised.append(exc)
            await send({"type": "websocket.send", "text": "after"})  # refused again

    sent, sink, error = await drive(app)
    assert error is None  # the middleware's own refusal does not escape to the server
    assert isinstance(raised[0], HandshakeDenied)
    assert sent[0]["status"] == 500
    assert sink.events[0].reason == "app_subprotocol_not_offered"


async def test_without_the_denial_extension_refusals_are_a_close() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    mw_kwargs = {"policy": HandshakePolicy(allow_origins=["https://other.test"])}
    sent, sink, _ = await drive(app, extensions=False, mw_kwargs=mw_kwargs)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert (sink.events[0].status, sink.events[0].denial) == (403, "close")


async def test_fail_closed_audit_refuses_with_503() -> None:
    def broken(e: AuditEvent) -> None:
        raise RuntimeError("disk full")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    memory = MemorySink()
    mw_kwargs = {"audit": [broken, memory], "audit_fail_closed": True}
    sent, _, error = await drive(app, mw_kwargs=mw_kwargs)
    assert error is None
    assert sent[0]["status"] == 503
    # The accepted event reached the working sink, then the correction with the same id.
    assert [e.outcome for e in memory.events] == [Outcome.ACCEPTED, Outcome.REJECTED]
    assert len({e.id for e in memory.events}) == 1


async def test_fail_closed_audit_accepts_when_every_sink_works() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    memory = MemorySink()
    sent, _, error = await drive(app, mw_kwargs={"audit": memory, "audit_fail_closed": True})
    assert (error, sent[0]["type"], memory.events[0].status) == (None, "websocket.accept", 101)


async def test_routes_select_policies_and_a_raising_selector_is_an_internal_error() -> None:
    def selector(request: Any, offered: tuple[str, ...]) -> str | None:
        raise RuntimeError("selector bug")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    routes = {"/admin/*": HandshakePolicy(allow_any_origin=True, select_subprotocol=selector)}
    sent, sink, _ = await drive(app, path="/admin/x", mw_kwargs={"routes": routes})
    assert sent[0]["status"] == 500
    assert (sink.events[0].route, sink.events[0].reason) == ("/admin/*", "internal_error")


async def test_key_reuse_reject_and_a_failing_store_follows_on_store_error() -> None:
    class Broken(MemoryStore):
        async def remember_key(self, key: str, ttl: float) -> bool:  # type: ignore[override]
            raise ConnectionError("store down")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    policy = HandshakePolicy(allow_origins=[ORIGIN], key_reuse="reject")
    store = MemoryStore()
    _, first, _ = await drive(app, mw_kwargs={"policy": policy, "store": store})
    sent, again, _ = await drive(app, mw_kwargs={"policy": policy, "store": store})
    assert first.events[0].key_reused is False
    assert (sent[0]["status"], again.events[0].reason) == (400, "key_reused")
    # on_store_error="closed" (the default): 503 store_unavailable.
    sent, broken, _ = await drive(app, mw_kwargs={"policy": policy, "store": Broken()})
    assert (sent[0]["status"], broken.events[0].reason) == (503, "store_unavailable")
    assert broken.events[0].store_error is True
    # on_store_error="open": proceed, and the event says the store failed.
    open_policy = HandshakePolicy(allow_origins=[ORIGIN], key_reuse="reject", on_store_error="open")
    _, broken, _ = await drive(app, mw_kwargs={"policy": open_policy, "store": Broken()})
    assert (broken.events[0].outcome, broken.events[0].store_error) == (Outcome.ACCEPTED, True)


async def test_default_sink_is_logging_and_a_single_callable_is_accepted() -> None:
    assert isinstance(HandshakeMiddleware(lambda *a: None).auditor.sinks[0], LoggingSink)  # type: ignore[arg-type]
    sink = MemorySink()
    assert HandshakeMiddleware(lambda *a: None, audit=sink).auditor.sinks == (sink,)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_worker_numbers_its_audit_ids_under_a_fresh_prefix() -> None:
    def new_id() -> str:
        return HandshakeInfo(HandshakeRequest()).audit_id

    parent = new_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave without running pytest's teardown
        os.write(write_end, new_id().encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert child.rsplit("-", 1)[0] != parent.rsplit("-", 1)[0]
    assert child.endswith("-1")  # the count starts again too
    assert new_id().rsplit("-", 1)[0] == parent.rsplit("-", 1)[0]
