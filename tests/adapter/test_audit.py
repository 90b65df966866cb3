"""Audit events through the middleware: the allowlisted fields, caps and redaction, sinks that
fail, stall or are slow, fail-closed auditing, drops and problem logging, audit ids."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from asgi_ws_handshake import (
    AuditEvent,
    HandshakeInfo,
    HandshakePolicy,
    HandshakeRequest,
    JSONFormatter,
    JSONLinesSink,
    LoggingSink,
    MemorySink,
    Outcome,
    ThreadedSink,
    get_handshake,
)
from asgi_ws_handshake.metrics import PrometheusSink
from asgi_ws_handshake.middleware import Receive, Scope, Send
from tests.asgi import Script, run, ws_scope
from tests.support import GOOD_ACCEPT, new_key

EXPECTED_FIELDS = {
    "id", "time", "duration", "client", "path", "route", "host", "origin", "subprotocols",
    "subprotocol", "version", "key", "key_valid", "expected_accept", "key_reused", "outcome",
    "reason", "status", "denial", "detail", "store_error", "subject", "credential",
    "would_reject", "fetch_site", "public_host", "public_scheme",
}  # fmt: skip


async def test_event_fields_are_an_allowlist_and_json_safe() -> None:
    scope = ws_scope(
        extra=[(b"cookie", b"session=SECRET1"), (b"authorization", b"Bearer SECRET2")],
        protocols="chat.v1",
    )
    result = await run(None, scope, clock=lambda: 1_700_000_000.0)
    (event,) = result.sink.events
    data = event.to_dict()
    assert set(data) == EXPECTED_FIELDS
    text = json.dumps(data)
    assert "SECRET" not in text
    assert data["time"] == "2023-11-14T22:13:20+00:00"
    assert data["client"] == "127.0.0.1:50000"
    assert data["outcome"] == "accepted"
    assert data["subprotocols"] == ["chat.v1"]
    assert data["version"] == "13"
    assert data["duration"] >= 0


async def test_key_and_header_values_are_capped() -> None:
    long_origin = "https://" + "a" * 5000 + ".test"
    result = await run(None, ws_scope(origin=long_origin, key="k" * 5000))
    (event,) = result.sink.events
    assert event.origin is not None
    assert len(event.origin) <= 260
    assert event.key is not None
    assert len(event.key) <= 260
    assert event.key_valid is False
    assert event.expected_accept is None
    assert event.reason == "key_malformed"


async def test_expected_accept_recorded_even_when_refused_first_for_version() -> None:
    result = await run(None, ws_scope(version="8"))
    (event,) = result.sink.events
    assert event.reason == "version_unsupported"
    assert event.key_valid is True
    assert event.expected_accept == GOOD_ACCEPT


async def test_secret_subprotocols_are_redacted() -> None:
    token = "base64url.bearer.authorization.k8s.io.c2VjcmV0LXRva2Vu"
    jwt = "eyJhbGciOiJIUzI1NiJ9.e30.abc"

    def select(request: object, offered: tuple[str, ...]) -> str | None:
        return "v4.channel.k8s.io"

    policy = HandshakePolicy(select_subprotocol=select)
    result = await run(
        None, ws_scope(protocols=f"{token}, {jwt}, v4.channel.k8s.io, {'x' * 80}"), policy=policy
    )
    (event,) = result.sink.events
    assert event.subprotocols == ("<redacted>", "<redacted>", "v4.channel.k8s.io", "<redacted>")
    assert event.subprotocol == "v4.channel.k8s.io"
    assert "c2VjcmV0" not in json.dumps(event.to_dict())
    # The app itself still sees what was offered.
    info = get_handshake(result.app_scopes[0])
    assert info is not None
    assert token in info.subprotocols


async def test_custom_redaction_rules() -> None:
    result = await run(
        None, ws_scope(protocols="chat.v1, tenant.42"), redact_subprotocols=["tenant.*"]
    )
    assert result.sink.events[0].subprotocols == ("chat.v1", "<redacted>")


async def test_a_raising_sink_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: AuditEvent) -> None:
        raise RuntimeError("sink down")

    kept = MemorySink()
    with caplog.at_level(logging.ERROR, logger="asgi_ws_handshake"):
        result = await run(None, audit=[broken, kept])
    assert result.script.sent == [{"type": "websocket.accept"}]
    assert [e.outcome for e in kept.events] == [Outcome.ACCEPTED]  # later sinks still run
    assert result.middleware.auditor.failures == 1
    assert any("audit sink" in r.getMessage() for r in caplog.records)


async def test_async_sink_runs_in_background_and_slow_ones_time_out() -> None:
    release = asyncio.Event()
    received: list[AuditEvent] = []

    async def slow(event: AuditEvent) -> None:
        await release.wait()  # never set: the sink hangs
        received.append(event)

    async def fast(event: AuditEvent) -> None:
        received.append(event)

    result = await run(None, audit=[slow, fast], audit_timeout=0.05)
    # The handshake completed while the slow sink was still waiting.
    assert result.script.sent == [{"type": "websocket.accept"}]
    auditor = result.middleware.auditor
    await auditor.drain()
    assert [e.outcome for e in received] == [Outcome.ACCEPTED]  # the fast one only
    assert auditor.failures == 1  # the slow one timed out


async def test_threaded_sink_keeps_slow_sync_sinks_off_the_loop() -> None:
    gate = threading.Event()
    done: list[AuditEvent] = []

    def slow(event: AuditEvent) -> None:
        gate.wait(10)
        done.append(event)

    threaded = ThreadedSink(slow, maxsize=1)
    try:
        first = await run(None, audit=threaded)  # taken by the worker, which blocks
        assert first.script.sent == [{"type": "websocket.accept"}]
        for _ in range(3):  # one fits the queue, the rest are dropped, none block
            await run(None, ws_scope(key=new_key()), audit=threaded)
        assert threaded.dropped >= 1
        gate.set()
    finally:
        threaded.close()
    assert done[0].outcome is Outcome.ACCEPTED
    assert len(done) + threaded.dropped == 4


async def test_fail_closed_refuses_when_the_audit_cannot_be_written() -> None:
    def broken(event: AuditEvent) -> None:
        raise OSError("disk full")

    seen = MemorySink()
    app_errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await send({"type": "websocket.accept"})
        except OSError as exc:
            app_errors.append(exc)
            raise

    result = await run(app, audit=[seen, broken], audit_fail_closed=True)
    assert result.script.sent[0]["type"] == "websocket.http.response.start"
    assert result.script.sent[0]["status"] == 503
    assert result.script.sent[1]["body"] == b"audit_unavailable\n"
    assert len(app_errors) == 1
    # The sink that did record the attempt gets a correction with the same id.
    first, correction = seen.events
    assert first.id == correction.id
    assert (first.outcome, correction.outcome, correction.reason, correction.status) == (
        Outcome.ACCEPTED,
        Outcome.REJECTED,
        "audit_unavailable",
        503,
    )


async def test_fail_closed_waits_for_async_sinks_and_accepts_when_they_succeed() -> None:
    written: list[AuditEvent] = []

    async def durable(event: AuditEvent) -> None:
        await asyncio.sleep(0)
        written.append(event)

    result = await run(None, audit=durable, audit_fail_closed=True)
    assert result.script.sent == [{"type": "websocket.accept"}]
    assert [e.outcome for e in written] == [Outcome.ACCEPTED]  # written before the accept


async def test_fail_closed_audit_accepts_when_every_sink_works() -> None:
    memory = MemorySink()
    result = await run(None, audit=memory, audit_fail_closed=True)
    assert (result.script.sent[0]["type"], memory.events[0].status) == ("websocket.accept", 101)


async def test_fail_closed_times_out_a_hanging_sink() -> None:
    async def hangs(event: AuditEvent) -> None:
        await asyncio.Event().wait()

    result = await run(None, audit=hangs, audit_fail_closed=True, audit_timeout=0.05)
    assert result.script.sent[0]["status"] == 503


async def test_memory_sink_is_a_bounded_ring() -> None:
    sink = MemorySink(maxlen=3)
    for _ in range(5):
        await run(None, ws_scope(key=new_key()), audit=sink)
    assert len(sink.events) == 3
    sink.clear()
    assert sink.events == []


async def test_sinks_can_be_replaced_after_construction() -> None:
    first, second = MemorySink(), MemorySink()
    result = await run(None, audit=first)
    result.middleware.auditor.sinks = (*result.middleware.auditor.sinks, second)
    await Script().start(result.middleware, ws_scope(key=new_key()))
    assert len(first.events) == 2
    assert len(second.events) == 1


async def test_jsonl_sink_writes_one_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JSONLinesSink(path)
    try:
        await run(None, audit=sink)
        await run(None, ws_scope(origin="https://evil.test", key=new_key()), audit=sink)
    finally:
        sink.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["outcome"] for line in lines] == ["accepted", "rejected"]


async def test_logging_sink_with_json_formatter() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger = logging.getLogger("tests.audit.json")
    logger.setLevel(logging.INFO)
    handler = Collect()
    handler.setFormatter(JSONFormatter())
    logger.addHandler(handler)
    try:
        await run(None, audit=LoggingSink(logger))
        await run(
            None, ws_scope(origin="https://evil.test", key=new_key()), audit=LoggingSink(logger)
        )
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(r) for r in records)
    assert first["log.level"] == "info"
    assert first["websocket"]["handshake"]["outcome"] == "accepted"
    assert first["event"]["outcome"] == "success"
    assert second["log.level"] == "warning"  # refusals log louder
    assert second["websocket"]["handshake"]["reason"] == "origin_not_allowed"
    assert (second["event"]["outcome"], second["event"]["reason"]) == (
        "failure",
        "origin_not_allowed",
    )


async def test_logging_sink_skips_work_when_disabled() -> None:
    logger = logging.getLogger("tests.audit.disabled")
    logger.setLevel(logging.CRITICAL)
    sink = LoggingSink(logger)
    result = await run(None, audit=sink)
    assert result.script.sent == [{"type": "websocket.accept"}]


async def test_prometheus_counters_after_a_known_sequence() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry)
    await run(None, ws_scope(key=new_key()), audit=sink)
    await run(None, ws_scope(key=new_key()), audit=sink)
    await run(None, ws_scope(origin="https://evil.test", key=new_key()), audit=sink)
    await run(None, ws_scope(version="8", key=new_key()), audit=sink)

    def count(outcome: str, reason: str, status: str) -> float | None:
        return registry.get_sample_value(
            "websocket_handshakes_total",
            {"outcome": outcome, "reason": reason, "route": "default", "status": status},
        )

    assert count("accepted", "", "101") == 2
    assert count("rejected", "origin_not_allowed", "403") == 1
    assert count("rejected", "version_unsupported", "426") == 1

    def timed(outcome: str) -> float | None:
        return registry.get_sample_value(
            "websocket_handshakes_duration_seconds_count", {"outcome": outcome, "route": "default"}
        )

    assert (timed("accepted"), timed("rejected")) == (2, 2)
    # Both accepted connections ended (the app returned): none is open, each has a lifetime.
    assert registry.get_sample_value("websocket_connections_open", {"route": "default"}) == 0
    assert (
        registry.get_sample_value(
            "websocket_connections_lifetime_seconds_count",
            {"route": "default", "code": "none", "closed_by": "app"},
        )
        == 2
    )


async def test_too_many_pending_async_sinks_are_dropped_not_queued() -> None:
    gate = asyncio.Event()

    async def hangs(event: AuditEvent) -> None:
        await gate.wait()

    first = await run(None, audit=hangs)
    auditor = first.middleware.auditor
    auditor.max_pending = 1
    scope = ws_scope(key=new_key())
    script = Script()
    await first.middleware(scope, script.receive, script.send)
    assert (auditor.failures, auditor.dropped) == (0, 1)  # the second event had no room
    gate.set()
    await auditor.drain()


async def test_sink_problems_are_counted_in_one_place_and_logged_rate_limited(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asgi_ws_handshake import ThreadedSink, delivery

    def broken(event: AuditEvent) -> None:
        raise RuntimeError("sink down")

    stalled = ThreadedSink(lambda event: None, maxsize=1)
    stalled.close()  # its worker is gone: the queue fills, the next events are dropped
    sink = MemorySink()
    with caplog.at_level(logging.ERROR, logger="asgi_ws_handshake"):
        first = await run(None, audit=[broken, stalled, sink])
        auditor = first.middleware.auditor
        for _ in range(49):
            script = Script()
            await first.middleware(ws_scope(key=new_key()), script.receive, script.send)
    assert len(sink.events) == 50  # the other sinks never broke a handshake
    assert (auditor.failures, auditor.dropped) == (50, 49)  # (the first event was queued)
    assert stalled.dropped == 49
    records = [r for r in caplog.records if r.name == "asgi_ws_handshake"]
    # One line with its traceback per failing sink, not one per handshake.
    assert len(records) == 2
    assert records[0].exc_info is not None
    assert "summarised every 60 s" in records[0].getMessage()
    # A summary once the period has passed, counting what was not logged one by one.
    monkeypatch.setattr(delivery, "SUMMARY_EVERY", 0.0)
    auditor._summary_at = 0.0
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="asgi_ws_handshake"):
        script = Script()
        await first.middleware(ws_scope(key=new_key()), script.receive, script.send)
    assert "50 failures, 0 dropped events since the last report" in caplog.text
    assert "0 failures, 48 dropped events since the last report" in caplog.text
    assert "(in all: 51 failures, 50 dropped)" in caplog.text


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
