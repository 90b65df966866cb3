"""OpenTelemetry for handshakes and connections, behind the ``otel`` extra (the API only).

Owns the span attributes (HTTP semantic-convention names where one fits, ``websocket.*``
for the rest) and the four meters. There are no WebSocket semantic conventions yet
(semantic-conventions#2841), so the names below are this package's and documented in the
README. Which provider records them is the application's choice: without an SDK configured,
everything here is a no-op. ``opentelemetry`` is imported when the sink is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .audit import AuditEvent, CloseEvent, Outcome
from .metrics import DURATION_BUCKETS, LIFETIME_BUCKETS, close_code_label

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "CLOSED_BY",
    "CLOSE_CODE",
    "OUTCOME",
    "REASON",
    "ROUTE",
    "SPAN_NAME",
    "OpenTelemetrySink",
]

#: The instrumentation scope: tracer and meter name.
SCOPE = "asgi_ws_handshake"
#: The span recorded when no server span is current.
SPAN_NAME = "websocket handshake"

# Attributes of our own (``websocket.*``).
OUTCOME = "websocket.handshake.outcome"
REASON = "websocket.handshake.reason"
ROUTE = "websocket.handshake.route"
AUDIT_ID = "websocket.handshake.id"
ORIGIN = "websocket.handshake.origin"
SUBPROTOCOL = "websocket.handshake.subprotocol"
SUBPROTOCOLS = "websocket.handshake.subprotocols"
DENIAL = "websocket.handshake.denial"
DETAIL = "websocket.handshake.detail"
KEY_REUSED = "websocket.handshake.key_reused"
STORE_ERROR = "websocket.handshake.store_error"
CLOSE_CODE = "websocket.connection.close_code"
CLOSED_BY = "websocket.connection.closed_by"
CLOSE_REASON = "websocket.connection.close_reason"
LIFETIME = "websocket.connection.lifetime"
# HTTP semantic conventions (stable since 1.23).
STATUS = "http.response.status_code"
HTTP_ROUTE = "http.route"
ERROR_TYPE = "error.type"
_KEPT = 1024  # label sets whose attributes a sink keeps at hand


class OpenTelemetrySink:
    """Trace each handshake and meter handshakes and connections with OpenTelemetry.

    Spans: when a server span is current and recording (``opentelemetry-instrumentation-asgi``
    in front of the middleware), the handshake's attributes go onto it, and the connection's
    end too when it closes. Otherwise the sink records a span of its own, ``websocket
    handshake``, from the connect to the outcome (a ``SERVER`` span, or ``INTERNAL`` under
    another recording span). A status of 500 or more marks the span as an error.

    Meters (the ``asgi_ws_handshake`` meter):

    - ``websocket.server.handshakes`` (counter): outcome, reason, route, status
    - ``websocket.server.handshake.duration`` (histogram, s): outcome, route
    - ``websocket.server.active_connections`` (up-down counter): route
    - ``websocket.server.connection.duration`` (histogram, s): route, close code (bounded,
      see ``metrics.close_code_label``), closed by
    - ``websocket.server.audit.failures`` and ``websocket.server.audit.dropped`` (counters)

    Use it as a sink of its own, never inside a ``ThreadedSink``: it must run in the
    handshake's task to see the current span.

    Args:
        tracer_provider: default: the global one (``opentelemetry.trace``).
        meter_provider: default: the global one (``opentelemetry.metrics``).
        spans: record spans (or span attributes).
        duration_buckets: advised bucket bounds (seconds) of the handshake duration.
        lifetime_buckets: advised bucket bounds (seconds) of the connection duration.

    Raises:
        ImportError: without ``opentelemetry-api`` (``pip install 'asgi-ws-handshake[otel]'``).
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        spans: bool = True,
        duration_buckets: Sequence[float] = DURATION_BUCKETS,
        lifetime_buckets: Sequence[float] = LIFETIME_BUCKETS,
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "OpenTelemetrySink needs opentelemetry-api: pip install 'asgi-ws-handshake[otel]'"
            ) from exc
        self._trace = trace
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider) if spans else None
        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        self.handshakes = meter.create_counter(
            "websocket.server.handshakes",
            unit="{handshake}",
            description="WebSocket handshakes seen by the guard, by outcome",
        )
        self.duration = meter.create_histogram(
            "websocket.server.handshake.duration",
            unit="s",
            description="Time from websocket.connect to the handshake's outcome",
            explicit_bucket_boundaries_advisory=duration_buckets,
        )
        self.connections = meter.create_up_down_counter(
            "websocket.server.active_connections",
            unit="{connection}",
            description="WebSocket connections accepted and not yet ended",
        )
        self.lifetime = meter.create_histogram(
            "websocket.server.connection.duration",
            unit="s",
            description="Time from the accept to the end of a WebSocket connection",
            explicit_bucket_boundaries_advisory=lifetime_buckets,
        )
        self.audit_failures = meter.create_counter(
            "websocket.server.audit.failures",
            unit="{failure}",
            description="Audit sink calls that raised or timed out",
        )
        self.audit_dropped = meter.create_counter(
            "websocket.server.audit.dropped",
            unit="{event}",
            description="Audit events a sink never received",
        )
        self._handshake_attributes: dict[tuple[Any, ...], Any] = {}
        self._close_attributes: dict[tuple[Any, ...], Any] = {}

    def __call__(self, event: AuditEvent) -> None:
        key = (event.outcome, event.reason, event.route, event.status)
        known = self._handshake_attributes.get(key)
        if known is None:
            known = self._handshake_attributes_for(key)
        counted, timed, route = known
        self.handshakes.add(1, counted)
        self.duration.record(event.duration, timed)
        if route is not None:
            self.connections.add(1, route)
        if self.tracer is not None:
            self._trace_handshake(event)

    def closed(self, event: CloseEvent) -> None:
        """The end of an accepted connection (the middleware calls it once per accept)."""
        key = (event.route, event.code, event.closed_by)
        known = self._close_attributes.get(key)
        if known is None:
            known = self._close_attributes_for(key)
        route, lived = known
        self.connections.add(-1, route)
        self.lifetime.record(event.lifetime, lived)
        if self.tracer is not None:
            span = self._trace.get_current_span()
            if _is_server_span(self._trace, span):
                span.set_attributes(
                    {
                        CLOSE_CODE: "none" if event.code is None else str(event.code),
                        CLOSED_BY: event.closed_by,
                        CLOSE_REASON: event.reason,
                        LIFETIME: event.lifetime,
                    }
                )

    def audit_problem(self, sink: object, exc: BaseException | None) -> None:
        """A sink failed (``exc``) or an event was dropped (None): the auditor tells us."""
        (self.audit_dropped if exc is None else self.audit_failures).add(1)

    # The attributes of each (bounded) label set are built once and kept: the same dicts are
    # handed to the meters every time (they are never changed once handed over).

    def _handshake_attributes_for(self, key: tuple[Outcome, str | None, str, int | None]) -> Any:
        outcome, reason, route, status = key
        counted: dict[str, AttributeValue] = {OUTCOME: outcome.value, ROUTE: route}
        if reason is not None:
            counted[REASON] = str(reason)
        if status is not None:
            counted[STATUS] = status
        known = (
            counted,
            {OUTCOME: outcome.value, ROUTE: route},
            {ROUTE: route} if outcome is Outcome.ACCEPTED else None,
        )
        if len(self._handshake_attributes) >= _KEPT:
            self._handshake_attributes.clear()
        self._handshake_attributes[key] = known
        return known

    def _close_attributes_for(self, key: tuple[str, int | None, str]) -> Any:
        route, code, closed_by = key
        known = (
            {ROUTE: route},
            {ROUTE: route, CLOSE_CODE: close_code_label(code), CLOSED_BY: closed_by},
        )
        if len(self._close_attributes) >= _KEPT:
            self._close_attributes.clear()
        self._close_attributes[key] = known
        return known

    # -- spans

    def _trace_handshake(self, event: AuditEvent) -> None:
        trace = self._trace
        current = trace.get_current_span()
        if current.is_recording():
            if _is_server_span(trace, current):
                current.set_attributes(_attributes(event))
                _set_status(trace, current, event)
                return
            kind = trace.SpanKind.INTERNAL
        else:
            kind = trace.SpanKind.SERVER
        assert self.tracer is not None
        end = max(0, int(event.time * 1e9))
        own = self.tracer.start_span(
            SPAN_NAME, kind=kind, start_time=max(0, end - int(event.duration * 1e9))
        )
        if own.is_recording():  # nothing is built for a provider that keeps nothing
            own.set_attributes(_attributes(event))
            own.set_attributes(_request_attributes(event))
            _set_status(trace, own, event)
        own.end(end_time=end)


def _is_server_span(trace: Any, span: Span) -> bool:
    """Whether ``span`` records and is a server span (or of a kind the API cannot tell)."""
    if not span.is_recording():
        return False
    return getattr(span, "kind", trace.SpanKind.SERVER) is trace.SpanKind.SERVER


def _attributes(event: AuditEvent) -> dict[str, AttributeValue]:
    """What the handshake was and how it ended (for our span or the server's)."""
    attributes: dict[str, AttributeValue] = {
        OUTCOME: event.outcome.value,
        ROUTE: event.route,
        AUDIT_ID: event.id,
    }
    optional: dict[str, Any] = {
        REASON: None if event.reason is None else str(event.reason),
        STATUS: event.status,
        ORIGIN: event.origin,
        SUBPROTOCOL: event.subprotocol,
        DENIAL: event.denial,
        DETAIL: event.detail or None,
        KEY_REUSED: event.key_reused,
        STORE_ERROR: event.store_error or None,
    }
    attributes.update({name: value for name, value in optional.items() if value is not None})
    offered = event.subprotocols
    if offered:
        attributes[SUBPROTOCOLS] = list(offered)
    return attributes


def _request_attributes(event: AuditEvent) -> dict[str, AttributeValue]:
    """The request's HTTP attributes, for our own span (a server span has them already)."""
    request = event.request
    attributes: dict[str, AttributeValue] = {
        "url.path": request.path,
        "url.scheme": request.scheme,
        "network.protocol.name": "http",
        "network.protocol.version": request.http_version,
    }
    if event.route != "default":  # the matched pattern; "default" is no route template
        attributes[HTTP_ROUTE] = event.route
    if request.client is not None:
        attributes["client.address"], attributes["client.port"] = request.client
    host = event.host
    if host is not None:
        address, port = _host_port(host)
        attributes["server.address"] = address
        if port is not None:
            attributes["server.port"] = port
    return attributes


def _set_status(trace: Any, span: Span, event: AuditEvent) -> None:
    # HTTP semantic conventions: a server span is an error for 5xx only (a 403 is the
    # guard doing its job).
    status = event.status
    if status is not None and status >= 500:
        span.set_attribute(ERROR_TYPE, event.reason or str(status))
        span.set_status(trace.Status(trace.StatusCode.ERROR, event.reason or str(status)))


def _host_port(host: str) -> tuple[str, int | None]:
    """``host[:port]`` (a bracketed IPv6 literal keeps its brackets off) as sent in Host."""
    name, colon, port = host.rpartition(":")
    numeric = port.isascii() and port.isdigit()
    if not colon or not numeric or name.startswith("[") != name.endswith("]"):
        return host.strip("[]"), None
    return name.strip("[]"), int(port)
