"""The audit sinks and their delivery, called directly with built events: MemorySink,
LoggingSink, JSONFormatter, JSONLinesSink, ThreadedSink, the Auditor, PrometheusSink, the
redactor and the escaping of log text. Through the middleware: tests/adapter/test_audit.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake import (
    AuditEvent,
    Auditor,
    HandshakeInfo,
    HandshakeMiddleware,
    HandshakeRequest,
    JSONFormatter,
    JSONLinesSink,
    LoggingSink,
    MemorySink,
    Outcome,
    ThreadedSink,
)
from asgi_ws_handshake.audit import Redactor
from tests.support import GOOD_KEY

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
    assert data["websocket"]["handshake"]["detail"] == ""
    assert data["error"]["type"] == "ValueError"
    assert data["error"]["message"] == "boom"
    assert "ValueError: boom" in data["error"]["stack_trace"]


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
    sink = PrometheusSink(registry, prefix="t")
    sink(event())
    sink(event(outcome=Outcome.CLIENT_GONE, reason="client_gone", status=None))
    value = registry.get_sample_value(
        "t_handshakes_total",
        {"outcome": "accepted", "reason": "", "route": "default", "status": "101"},
    )
    gone = registry.get_sample_value(
        "t_handshakes_total",
        {"outcome": "client_gone", "reason": "client_gone", "route": "default", "status": ""},
    )
    assert (value, gone) == (1.0, 1.0)


async def test_default_sink_is_logging_and_a_single_callable_is_accepted() -> None:
    assert isinstance(HandshakeMiddleware(lambda *a: None).auditor.sinks[0], LoggingSink)  # type: ignore[arg-type]
    sink = MemorySink()
    assert HandshakeMiddleware(lambda *a: None, audit=sink).auditor.sinks == (sink,)  # type: ignore[arg-type]


def test_escape_leaves_printable_text_alone_and_escapes_the_rest() -> None:
    # Review item 2 (issue #13): log lines cannot be forged through the percent-decoded path.
    from asgi_ws_handshake.sinks import escape

    assert escape("/chat/ü") == "/chat/ü"
    assert escape("a\nb\rc\x1b[0m\u2028") == "a\\nb\\rc\\x1b[0m\\u2028"
