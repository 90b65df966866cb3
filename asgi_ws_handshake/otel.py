"""OpenTelemetry for handshakes and connections, behind the ``otel`` extra (the API only).

Owns the span attributes (HTTP semantic-convention names where one fits, ``websocket.*``
for the rest) and the four meters. There are no WebSocket semantic conventions yet
(semantic-conventions#2841), so the names below are this package's and documented in the
README. Which provider records them is the application's choice: without an SDK configured,
everything here is a no-op. ``opentelemetry`` is imported when the sink is built.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import __version__
from .audit import AuditEvent, CloseEvent, Outcome
from .metrics import DURATION_BUCKETS, LIFETIME_BUCKETS, close_code_label

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
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
CREDENTIAL = "websocket.handshake.credential"
CLOSE_CODE = "websocket.connection.close_code"
CLOSED_BY = "websocket.connection.closed_by"
CLOSE_REASON = "websocket.connection.close_reason"
LIFETIME = "websocket.connection.lifetime"
# HTTP semantic conventions (stable since 1.23).
STATUS = "http.response.status_code"
HTTP_ROUTE = "http.route"
ERROR_TYPE = "error.type"
USER_ID = "user.id"  # the identity's subject (semantic conventions' user registry)


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

    Every sink on one meter provider shares its instruments (the first one built sets the
    histograms' buckets), as the SDK keeps one instrument per name. Use it as a sink of its
    own, never inside a ``ThreadedSink``: it must run in the handshake's task to see the
    current span.

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
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        with _SHARED_LOCK:
            meters = _SHARED.get(provider)
            if meters is None:
                meters = _SHARED[provider] = _Meters(provider, duration_buckets, lifetime_buckets)
        self.meters = meters

    def __call__(self, event: AuditEvent) -> None:
        self.meters.handshake(event)
        if self.tracer is not None:
            self._trace_handshake(event)

    def closed(self, event: CloseEvent) -> None:
        """The end of an accepted connection (the middleware calls it once per accept)."""
        self.meters.close(event)
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
        meters = self.meters
        (meters.audit_dropped if exc is None else meters.audit_failures).add(1)

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


class _Meters:
    """The instruments of one meter provider, shared by every sink built on it.

    Counts and open connections are tallied here and read by observable instruments when
    the SDK collects: a tally costs a few instructions where a synchronous SDK measurement
    costs tens of thousands. The histograms stay synchronous (they carry exemplars).
    What each label set needs is built once and kept: the label sets are bounded (route
    patterns, reason codes, statuses, folded close codes) and the attribute dicts handed to
    the SDK are never changed afterwards.
    """

    def __init__(
        self,
        provider: MeterProvider,
        duration_buckets: Sequence[float],
        lifetime_buckets: Sequence[float],
    ) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter(SCOPE, __version__, provider)
        self._observation = metrics.Observation
        self._lock = threading.Lock()
        self._handshakes: dict[tuple[Any, ...], _Handshake] = {}
        self._closes: dict[tuple[str, str, str], _Close] = {}
        self._open: dict[str, _Tally] = {}
        self.handshakes = meter.create_observable_counter(
            "websocket.server.handshakes",
            callbacks=[self._observe(lambda: [k.tally for k in self._handshakes.values()])],
            unit="{handshake}",
            description="WebSocket handshakes seen by the guard, by outcome",
        )
        self.duration = meter.create_histogram(
            "websocket.server.handshake.duration",
            unit="s",
            description="Time from websocket.connect to the handshake's outcome",
            explicit_bucket_boundaries_advisory=duration_buckets,
        )
        self.connections = meter.create_observable_up_down_counter(
            "websocket.server.active_connections",
            callbacks=[self._observe(self._open.values)],
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

    def handshake(self, event: AuditEvent) -> None:
        key = (event.outcome, event.reason, event.route, event.status)
        known = self._handshakes.get(key)
        if known is None:
            known = self._handshake(key)
        with self._lock:
            known.tally.value += 1
            if known.opened is not None:
                known.opened.value += 1
        self.duration.record(event.duration, known.timed)

    def close(self, event: CloseEvent) -> None:
        key = (event.route, close_code_label(event.code), event.closed_by)
        known = self._closes.get(key)
        if known is None:
            known = self._close(key)
        with self._lock:
            known.opened.value -= 1
        self.lifetime.record(event.lifetime, known.lived)

    def _handshake(self, key: tuple[Outcome, str | None, str, int | None]) -> _Handshake:
        outcome, reason, route, status = key
        counted: dict[str, AttributeValue] = {OUTCOME: outcome.value, ROUTE: route}
        if reason is not None:
            counted[REASON] = str(reason)
        if status is not None:
            counted[STATUS] = status
        opened = self._open_tally(route) if outcome is Outcome.ACCEPTED else None
        known = _Handshake(_Tally(counted), {OUTCOME: outcome.value, ROUTE: route}, opened)
        with self._lock:
            return self._handshakes.setdefault(key, known)

    def _close(self, key: tuple[str, str, str]) -> _Close:
        route, code, closed_by = key
        lived: dict[str, AttributeValue] = {ROUTE: route, CLOSE_CODE: code, CLOSED_BY: closed_by}
        known = _Close(self._open_tally(route), lived)
        with self._lock:
            return self._closes.setdefault(key, known)

    def _open_tally(self, route: str) -> _Tally:
        with self._lock:
            return self._open.setdefault(route, _Tally({ROUTE: route}))

    def _observe(
        self, tallies: Callable[[], Iterable[_Tally]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """An observable instrument's callback: the current value of each tally."""

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                return [self._observation(t.value, t.attributes) for t in tallies()]

        return observe


#: The meters of each meter provider (the SDK keeps one instrument per name and meter).
_SHARED: weakref.WeakKeyDictionary[Any, _Meters] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


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
        USER_ID: event.subject,
        CREDENTIAL: event.credential,
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


class _Tally:
    """A count for one attribute set, read when the SDK collects."""

    __slots__ = ("attributes", "value")

    def __init__(self, attributes: dict[str, AttributeValue]) -> None:
        self.attributes = attributes
        self.value = 0


class _Handshake(NamedTuple):
    """What a handshake of one label set updates."""

    tally: _Tally
    timed: dict[str, AttributeValue]
    opened: _Tally | None


class _Close(NamedTuple):
    """What a connection end of one label set updates."""

    opened: _Tally
    lived: dict[str, AttributeValue]
