"""The app the observability tests run under uvicorn: Starlette behind the middleware with a
``PrometheusSink``, an ``OpenTelemetrySink`` and a JSON Lines audit file (``WSH_AUDIT_FILE``).

The server is another process, so what it recorded is served over HTTP: ``GET /metrics`` is
the Prometheus exposition (every worker's, summed, when ``PROMETHEUS_MULTIPROC_DIR`` is set);
``GET /telemetry`` returns the spans and metric points of this process's own OpenTelemetry
SDK (an in-memory span exporter and metric reader) as JSON. ``WSH_OTEL_ASGI=1`` puts
``opentelemetry-instrumentation-asgi``'s ``OpenTelemetryMiddleware`` in front.

Routes: ``/chat/{room}`` (route ``/chat/*``: origin ``http://allowed.test``, subprotocol
``chat.v1``) accepts, says which worker it is (``{"pid": ...}``) and echoes until the client
leaves (Starlette's ``WebSocketDisconnect`` carries the close code out of the app);
``/bye`` (the default route) accepts and closes with 4001 at once; ``/boom`` accepts, and its
audit event makes one sink raise.
"""

from __future__ import annotations

import json
import os
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_ws_handshake import AuditEvent, HandshakeMiddleware, HandshakePolicy, JSONLinesSink
from asgi_ws_handshake.audit import AuditSink
from asgi_ws_handshake.metrics import PrometheusSink, multiprocess_registry
from asgi_ws_handshake.middleware import ASGIApp
from asgi_ws_handshake.otel import OpenTelemetrySink

ALLOWED_ORIGIN = "http://allowed.test"

spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])

registry = CollectorRegistry()
exposed = multiprocess_registry() if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else registry


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(json.dumps({"pid": os.getpid()}))
    while True:  # until the client leaves: WebSocketDisconnect(code) propagates
        await websocket.send_text(await websocket.receive_text())


async def bye(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close(4001)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)


async def telemetry(request: Request) -> JSONResponse:
    recorded = [
        {
            "name": span.name,
            "kind": span.kind.name,
            "start": span.start_time,
            "end": span.end_time,
            "status": span.status.status_code.name,
            "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
        }
        for span in spans.get_finished_spans()
    ]
    data = reader.get_metrics_data()
    points = [
        {
            "name": metric.name,
            "scope": scope.scope.name,
            "attributes": dict(point.attributes or {}),
            "value": getattr(point, "value", None),
            "count": getattr(point, "count", None),
            "sum": getattr(point, "sum", None),
        }
        for resource in (data.resource_metrics if data is not None else ())
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    return JSONResponse({"spans": recorded, "metrics": points})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def flaky(event: AuditEvent) -> None:
    """A sink that fails for /boom: the auditor counts it, the metrics sinks are told."""
    if event.path == "/boom":
        raise RuntimeError("the audit sink failed")


def build() -> ASGIApp:
    sinks: list[AuditSink] = [
        PrometheusSink(registry),
        OpenTelemetrySink(tracer_provider=tracer_provider, meter_provider=meter_provider),
        flaky,
    ]
    audit_file = os.environ.get("WSH_AUDIT_FILE")
    if audit_file:
        sinks.append(JSONLinesSink(audit_file, closes=True))
    guard = Middleware(
        HandshakeMiddleware,
        policy=HandshakePolicy(allow_any_origin=True),
        routes={
            "/chat/*": HandshakePolicy(allow_origins=[ALLOWED_ORIGIN], subprotocols=["chat.v1"]),
        },
        audit=sinks,
    )
    app: ASGIApp = Starlette(
        routes=[
            WebSocketRoute("/chat/{room}", chat),
            WebSocketRoute("/bye", bye),
            WebSocketRoute("/boom", bye),
            Route("/metrics", metrics),
            Route("/telemetry", telemetry),
        ],
        middleware=[guard],
    )
    if os.environ.get("WSH_OTEL_ASGI") == "1":
        app = OpenTelemetryMiddleware(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    return app


app = build()
