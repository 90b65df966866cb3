"""Observability in process: the OpenTelemetry and Prometheus sinks against the real SDK and
``prometheus_client``, driven through the middleware; the ECS log shape; the multiprocess
registry against real worker processes. (Through a real server: ``test_observe_servers``.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from asgi_ws_handshake import (
    AuditEvent,
    AuthRequest,
    HandshakeInfo,
    HandshakePolicy,
    Identity,
    JSONFormatter,
    LoggingSink,
    MemorySink,
    Outcome,
)
from asgi_ws_handshake.metrics import PrometheusSink, close_code_label, multiprocess_registry
from asgi_ws_handshake.middleware import Receive, Scope, Send
from asgi_ws_handshake.otel import SPAN_NAME, OpenTelemetrySink, _host_port
from tests.asgi import Script, make_request, run, ws_scope
from tests.support import ROOT


class Recorded:
    """An SDK tracer and meter provider recording into memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.sink = OpenTelemetrySink(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name in (None, s.name)]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value or histogram count) of each point of ``metric``."""
        found = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        for p in m.data.data_points:
                            value = getattr(p, "value", None)
                            found.append((dict(p.attributes or {}), getattr(p, "count", value)))
        return found


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    rec = Recorded()
    yield rec
    rec.tracer_provider.shutdown()
    rec.meter_provider.shutdown()


# -- OpenTelemetry ----------------------------------------------------------------------------


async def test_own_span_when_no_server_span_is_current(recorded: Recorded) -> None:
    memory = MemorySink()
    await run(None, ws_scope(protocols="chat.v1"), audit=[recorded.sink, memory])
    (span,) = recorded.spans()
    (event,) = memory.events
    assert (span.name, span.kind) == (SPAN_NAME, trace.SpanKind.SERVER)
    attributes = dict(span.attributes or {})
    assert attributes["websocket.handshake.outcome"] == "accepted"
    assert attributes["websocket.handshake.id"] == event.id
    assert attributes["websocket.handshake.subprotocol"] == "chat.v1"
    assert attributes["http.response.status_code"] == 101
    assert attributes["url.path"] == "/ws"
    assert (attributes["client.address"], attributes["client.port"]) == ("127.0.0.1", 50000)
    assert attributes["server.address"] == "app.test"
    assert "http.route" not in attributes  # "default" is no route template
    # The span covers the connect-to-outcome interval the event measured.
    assert span.end_time == int(event.time * 1e9)
    assert span.start_time == span.end_time - int(event.duration * 1e9)


async def test_attributes_go_onto_a_current_server_span(recorded: Recorded) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("GET /ws", kind=trace.SpanKind.SERVER):
        await run(None, ws_scope(origin="https://evil.test"), audit=recorded.sink)
    (span,) = recorded.spans()  # no span of ours beside it
    attributes = dict(span.attributes or {})
    assert span.name == "GET /ws"
    assert attributes["websocket.handshake.reason"] == "origin_not_allowed"
    assert attributes["http.response.status_code"] == 403
    assert "url.path" not in attributes  # the server span's own instrumentation sets those
    assert span.status.status_code is trace.StatusCode.UNSET  # a 4xx is no server error


async def test_a_connection_end_goes_onto_the_server_span(recorded: Recorded) -> None:
    class Gone(Exception):
        code = 4001

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise Gone

    tracer = recorded.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("ws", kind=trace.SpanKind.SERVER), pytest.raises(Gone):
        await run(app, audit=recorded.sink)
    attributes = dict(recorded.spans()[0].attributes or {})
    assert attributes["websocket.connection.close_code"] == "4001"
    assert attributes["websocket.connection.closed_by"] == "client"
    ((counted, lifetimes),) = recorded.points("websocket.server.connection.duration")
    assert counted["websocket.connection.close_code"] == "4xxx"  # bounded on meters
    assert lifetimes == 1


async def test_own_internal_span_under_a_span_that_is_not_a_server_span(
    recorded: Recorded,
) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("app work") as outer:
        await run(None, audit=recorded.sink)
    ours = recorded.spans(SPAN_NAME)
    assert [s.kind for s in ours] == [trace.SpanKind.INTERNAL]
    assert ours[0].parent is not None
    assert ours[0].parent.span_id == outer.get_span_context().span_id


async def test_the_subject_is_recorded_never_the_credential(
    recorded: Recorded, logged: tuple[logging.Logger, Lines]
) -> None:
    def alice(request: AuthRequest) -> Identity:
        return Identity("alice")

    logger, handler = logged
    policy = HandshakePolicy(authenticate=alice)
    await run(None, policy=policy, audit=[recorded.sink, LoggingSink(logger)])
    (span,) = recorded.spans(SPAN_NAME)
    assert (span.attributes or {})["user.id"] == "alice"
    (line,) = (json.loads(line) for line in handler.lines)
    assert line["user"] == {"id": "alice"}


async def test_server_errors_mark_the_span(recorded: Recorded) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise KeyError("bug")

    with pytest.raises(KeyError):  # refused with 500, then the app's exception propagates
        await run(app, audit=recorded.sink)
    (span,) = recorded.spans(SPAN_NAME)
    assert span.status.status_code is trace.StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "app_error"


async def test_meters_count_open_connections_by_route(recorded: Recorded) -> None:
    gate = asyncio.Event()

    async def held(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()

    routes = {"/chat/*": HandshakePolicy(allow_any_origin=True)}
    task = asyncio.ensure_future(
        run(held, ws_scope(path="/chat/1"), audit=recorded.sink, routes=routes)
    )
    for _ in range(100):
        if recorded.points("websocket.server.active_connections"):
            break
        await asyncio.sleep(0.01)
    assert recorded.points("websocket.server.active_connections") == [
        ({"websocket.handshake.route": "/chat/*"}, 1)
    ]
    gate.set()
    await asyncio.wait_for(task, 5)
    assert recorded.points("websocket.server.active_connections") == [
        ({"websocket.handshake.route": "/chat/*"}, 0)
    ]
    ((counted, one),) = recorded.points("websocket.server.handshakes")
    assert one == 1
    assert counted == {
        "websocket.handshake.outcome": "accepted",
        "websocket.handshake.route": "/chat/*",
        "http.response.status_code": 101,
    }


async def test_no_span_of_ours_when_spans_are_off(recorded: Recorded) -> None:
    sink = OpenTelemetrySink(
        tracer_provider=recorded.tracer_provider,
        meter_provider=recorded.meter_provider,
        spans=False,
    )
    await run(None, audit=sink)
    assert recorded.spans() == []
    assert [v for _, v in recorded.points("websocket.server.handshakes")] == [1]


async def test_sinks_on_one_meter_provider_share_its_instruments(recorded: Recorded) -> None:
    # Two middlewares (say, two mounted apps) each with a sink on the same provider: the
    # SDK keeps one instrument per name, so both must count into it.
    other = OpenTelemetrySink(meter_provider=recorded.meter_provider, spans=False)
    await run(None, audit=recorded.sink)
    await run(None, audit=other)
    assert [n for _, n in recorded.points("websocket.server.handshakes")] == [2]
    assert [n for _, n in recorded.points("websocket.server.handshake.duration")] == [2]


async def test_without_an_sdk_the_sink_is_a_no_op() -> None:
    sink = OpenTelemetrySink()  # the API's defaults: nothing configured, nothing recorded
    result = await run(None, audit=[sink, MemorySink(closes=True)])
    assert result.script.sent == [{"type": "websocket.accept"}]
    assert (result.middleware.auditor.failures, result.middleware.auditor.dropped) == (0, 0)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", ("example.com", None)),
        ("example.com:8443", ("example.com", 8443)),
        ("[::1]:8000", ("::1", 8000)),
        ("[::1]", ("::1", None)),
        ("example.com:\u00b2", ("example.com:\u00b2", None)),  # a latin-1 digit is no port
    ],
)
def test_server_address_from_host(host: str, expected: tuple[str, int | None]) -> None:
    assert _host_port(host) == expected


def test_own_span_without_client_or_host(recorded: Recorded) -> None:
    request = make_request(hosts=(), client=None)
    event = AuditEvent.build(
        handshake=HandshakeInfo(request),
        outcome=Outcome.REJECTED,
        status=400,
        reason="host_malformed",
        time=10.0,
        duration=0.5,
    )
    recorded.sink(event)
    (span,) = recorded.spans()
    attributes = dict(span.attributes or {})
    assert "client.address" not in attributes
    assert "server.address" not in attributes
    assert (span.start_time, span.end_time) == (9_500_000_000, 10_000_000_000)


async def test_close_codes_chosen_by_clients_make_no_new_label_sets(recorded: Recorded) -> None:
    class Gone(Exception):
        def __init__(self, code: int) -> None:
            self.code = code

    codes = iter(range(4000, 4050))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise Gone(next(codes))

    registry = CollectorRegistry()
    prometheus = PrometheusSink(registry)
    for _ in range(50):
        with pytest.raises(Gone):
            await run(app, audit=[prometheus, recorded.sink])
    assert len(prometheus._close_children) == len(recorded.sink.meters._closes) == 1
    assert len(prometheus._handshake_children) == len(recorded.sink.meters._handshakes) == 1
    lived = {"route": "default", "code": "4xxx", "closed_by": "client"}
    name = "websocket_connections_lifetime_seconds_count"
    assert registry.get_sample_value(name, lived) == 50
    assert registry.get_sample_value("websocket_connections_open", {"route": "default"}) == 0
    ((_, lifetimes),) = recorded.points("websocket.server.connection.duration")
    assert lifetimes == 50
    assert recorded.points("websocket.server.active_connections") == [
        ({"websocket.handshake.route": "default"}, 0)
    ]


# -- Prometheus and both: bounded labels, the auditor's counters -------------------------------


@pytest.mark.parametrize(
    ("code", "label"),
    [
        *[(None, "none"), (1000, "1000"), (1015, "1015"), (1016, "other"), (999, "other")],
        *[(3000, "3xxx"), (3999, "3xxx"), (4001, "4xxx"), (4999, "4xxx"), (5000, "other")],
    ],
)
def test_close_codes_fold_into_a_closed_set(code: int | None, label: str) -> None:
    assert close_code_label(code) == label


async def test_auditor_problems_are_counted_by_the_metrics_sinks(recorded: Recorded) -> None:
    registry = CollectorRegistry()
    prometheus = PrometheusSink(registry)

    def broken(event: AuditEvent) -> None:
        raise RuntimeError("sink down")

    async def slow(event: AuditEvent) -> None:
        await asyncio.sleep(10)

    sinks = [prometheus, recorded.sink, broken, slow]
    result = await run(None, audit=sinks)
    auditor = result.middleware.auditor
    auditor.max_pending = 0  # the next event has no room with the async sink: dropped
    script = Script()
    await result.middleware(ws_scope(), script.receive, script.send)
    await auditor.aclose(0.01)  # the first event's pending delivery is cancelled: dropped
    assert (auditor.failures, auditor.dropped) == (2, 2)
    assert registry.get_sample_value("websocket_audit_failures_total") == 2
    assert registry.get_sample_value("websocket_audit_dropped_total") == 2
    assert recorded.points("websocket.server.audit.failures") == [({}, 2)]
    assert recorded.points("websocket.server.audit.dropped") == [({}, 2)]


async def test_a_failed_accept_neither_opens_nor_closes_a_connection() -> None:
    # The accept could not be sent (the client left): the handshake's event says
    # client_gone, and no CloseEvent follows, so the gauge never goes below zero.
    registry = CollectorRegistry()
    memory = MemorySink(closes=True)
    with pytest.raises(OSError, match="gone"):
        await run(
            None,
            audit=[PrometheusSink(registry), memory],
            script=Script(send_error=OSError("gone")),
        )
    assert [e.outcome for e in memory.events] == ["client_gone"]
    assert memory.closes == []
    assert registry.get_sample_value("websocket_connections_open", {"route": "default"}) is None


async def test_prometheus_labels_never_carry_request_bytes() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry)
    policy = HandshakePolicy(allow_any_origin=True)
    for path in ("/chat/1", "/chat/\n2", "/other"):
        await run(None, ws_scope(path=path, origin="https://x.test"), policy=policy, audit=sink)
    values = {
        value
        for family in registry.collect()
        for sample in family.samples
        for value in sample.labels.values()
    }
    assert not any("/chat" in v or "x.test" in v or "\n" in v for v in values), values
    assert (
        registry.get_sample_value(
            "websocket_handshakes_total",
            {"outcome": "accepted", "reason": "", "route": "default", "status": "101"},
        )
        == 3
    )


# -- the multiprocess registry against real processes -------------------------------------------

_WORKER = """
import sys
from prometheus_client import CollectorRegistry
from asgi_ws_handshake.metrics import PrometheusSink
sink = PrometheusSink(CollectorRegistry())
for _ in range(int(sys.argv[1])):
    sink.open.labels("default").inc()
print("ready", flush=True)
sys.stdin.readline()  # a live worker waits here; a dead one has returned
"""


def test_multiprocess_registry_sums_live_workers_and_forgets_dead_ones(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}

    def worker(opened: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(opened)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        return proc

    alive, dead = worker(2), worker(5)
    try:
        registry = multiprocess_registry(str(tmp_path))

        def value() -> Any:
            return registry.get_sample_value("websocket_connections_open", {"route": "default"})

        assert value() == 7
        dead.communicate("\n", timeout=10)  # exits with 5 connections "open"
        assert value() == 2
    finally:
        for proc in (alive, dead):
            if proc.poll() is None:
                proc.communicate("\n", timeout=10)


# -- structured logs: ECS ------------------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JSONFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Lines]]:
    logger = logging.getLogger("tests.observe.ecs")
    logger.setLevel(logging.INFO)
    handler = Lines()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


async def test_json_logs_follow_ecs(logged: tuple[logging.Logger, Lines]) -> None:
    logger, handler = logged
    sink = LoggingSink(logger, closes=True)
    await run(None, ws_scope(path="/ws\n{forged}\x1b[31m"), audit=sink)
    await run(None, ws_scope(origin="https://evil.test"), audit=sink)
    assert all("\n" not in line for line in handler.lines)  # one JSON object a line
    accepted, closed, refused = (json.loads(line) for line in handler.lines)
    assert list(accepted)[:4] == ["@timestamp", "log.level", "message", "ecs.version"]
    assert accepted["@timestamp"].endswith("Z")
    assert accepted["log"]["logger"] == "tests.observe.ecs"
    assert accepted["event"]["action"] == "websocket-handshake"
    assert accepted["event"]["outcome"] == "success"
    assert isinstance(accepted["event"]["duration"], int)  # nanoseconds
    assert accepted["client"] == {"address": "127.0.0.1", "ip": "127.0.0.1", "port": 50000}
    assert accepted["url"]["path"] == "/ws\n{forged}\x1b[31m"  # JSON-escaped, intact
    assert accepted["http"]["response"]["status_code"] == 101
    handshake = accepted["websocket"]["handshake"]
    assert (handshake["outcome"], handshake["route"]) == ("accepted", "default")
    assert closed["event"]["action"] == "websocket-closed"
    assert closed["websocket"]["connection"]["id"] == handshake["id"]
    assert closed["event"]["type"] == ["connection", "end"]
    assert refused["log.level"] == "warning"
    assert refused["event"]["type"] == ["connection", "denied"]
    assert (refused["event"]["outcome"], refused["event"]["reason"]) == (
        "failure",
        "origin_not_allowed",
    )
    assert refused["http"]["response"]["status_code"] == 403


def test_json_logs_carry_trace_ids_and_plain_records(
    logged: tuple[logging.Logger, Lines],
) -> None:
    logger, handler = logged
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    logger.info("plain", extra={"otelTraceID": trace_id, "otelSpanID": "b7ad6b7169203331"})
    logger.info("no span", extra={"otelTraceID": "0" * 32, "otelSpanID": "0" * 16})
    logger.info("stack", stack_info=True)
    traced, untraced, stacked = (json.loads(line) for line in handler.lines)
    assert (traced["trace"], traced["span"]) == ({"id": trace_id}, {"id": "b7ad6b7169203331"})
    assert "trace" not in untraced
    assert "event" not in untraced
    assert "Stack (most recent call last)" in stacked["error"]["stack_trace"]


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (None, None),
        ("[::1]:8000", {"address": "[::1]", "port": 8000}),  # brackets: no IP, kept as sent
        ("::1:8000", {"address": "::1", "ip": "::1", "port": 8000}),
        ("proxy.internal:x", {"address": "proxy.internal"}),
        ("unix-socket", {"address": "unix-socket"}),
    ],
)
def test_json_logs_client_fields(
    logged: tuple[logging.Logger, Lines], client: str | None, expected: dict[str, Any] | None
) -> None:
    logger, handler = logged
    gone = {"outcome": "client_gone", "status": None, "client": client, "path": "/ws"}
    logger.info("gone", extra={"ws_handshake": gone, "otelTraceID": "ab" * 16})
    (line,) = (json.loads(line) for line in handler.lines)
    assert line.get("client") == expected
    assert (line["event"]["outcome"], line["event"]["type"]) == ("unknown", ["connection", "end"])
    assert "http" not in line  # the client got no status
    assert line["trace"] == {"id": "ab" * 16}
    assert "span" not in line
