"""Prometheus metrics for handshakes and connections, behind the ``prometheus`` extra.

Owns the metric families, their label values (bounded: route patterns, reason codes, close
codes folded into a closed set; never a raw path, origin or client) and the registry for
``prometheus_client``'s multiprocess mode. What a handshake or connection was is the events';
when they happen is the middleware's. ``prometheus_client`` is imported when a
``PrometheusSink`` is built, never at import time.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from typing import Any

from .audit import AuditEvent, CloseEvent, Outcome

__all__ = [
    "DURATION_BUCKETS",
    "LIFETIME_BUCKETS",
    "PrometheusSink",
    "close_code_label",
    "multiprocess_registry",
]

#: Seconds from websocket.connect to the outcome: most handshakes take well under a
#: millisecond; slow stores, sinks or apps show above.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0)
#: Seconds from the accept to the end of a connection: a failed page load to a day-long tab.
LIFETIME_BUCKETS = (0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)

# RFC 6455 7.4.1 and the IANA registry: the codes with a defined meaning keep their number;
# the ranges for libraries (3000-3999) and private use (4000-4999) fold into one value each,
# so a client choosing its close code cannot mint label values.
_REGISTERED = frozenset(range(1000, 1016))


def close_code_label(code: int | None) -> str:
    """A bounded label for a close code (RFC 6455 7.4).

    ``"1000"`` to ``"1015"``, ``"3xxx"``, ``"4xxx"``, ``"other"``, or ``"none"`` when the
    code is unknown.
    """
    if code is None:
        return "none"
    if code in _REGISTERED:
        return str(code)
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


class PrometheusSink:
    """Count and time handshakes, gauge open connections, time their lifetimes.

    Families (``prefix`` is ``websocket`` by default):

    - ``<prefix>_handshakes_total{outcome,reason,route,status}`` (counter)
    - ``<prefix>_handshakes_duration_seconds{outcome,route}`` (histogram, connect to outcome)
    - ``<prefix>_connections_open{route}`` (gauge: +1 on an accepted handshake, -1 on its end)
    - ``<prefix>_connections_lifetime_seconds{route,code,closed_by}`` (histogram; ``code``
      from ``close_code_label``)
    - ``<prefix>_handshakes_would_reject_total{reason,route}`` (counter: handshakes a
      report-only route (``enforce=False``) let through that it would have refused; they
      count as accepted in the first family too)
    - ``<prefix>_audit_failures_total`` and ``<prefix>_audit_dropped_total`` (counters: the
      middleware's ``auditor.failures`` and ``auditor.dropped``, counted as they happen)

    ``route`` is the middleware's route pattern (or ``"default"``), ``reason`` a reason code
    (empty when accepted), ``status`` the status the client got (empty when none). Use it
    as a sink of its own (not inside a ``ThreadedSink``: it is fast, and the wrapper would
    hide its ``closed`` and ``audit_problem`` methods). Under ``--workers N`` see
    ``multiprocess_registry``.

    Args:
        registry: where to register (default: prometheus_client's global registry).
        prefix: the start of every metric name.
        duration_buckets: bucket bounds (seconds) of the handshake duration.
        lifetime_buckets: bucket bounds (seconds) of the connection lifetime.

    Raises:
        ImportError: when ``prometheus-client`` is not installed (``pip install
            'asgi-ws-handshake[prometheus]'``).
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        prefix: str = "websocket",
        duration_buckets: Sequence[float] = DURATION_BUCKETS,
        lifetime_buckets: Sequence[float] = LIFETIME_BUCKETS,
    ) -> None:
        try:
            import prometheus_client
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "PrometheusSink needs prometheus-client: "
                "pip install 'asgi-ws-handshake[prometheus]'"
            ) from exc
        kwargs: dict[str, Any] = {} if registry is None else {"registry": registry}
        self.handshakes = prometheus_client.Counter(
            f"{prefix}_handshakes",
            "WebSocket handshakes seen by the guard, by outcome",
            ["outcome", "reason", "route", "status"],
            **kwargs,
        )
        self.would_reject = prometheus_client.Counter(
            f"{prefix}_handshakes_would_reject",
            "Handshakes a report-only route (enforce=false) let through, by the refusal spared",
            ["reason", "route"],
            **kwargs,
        )
        self.duration = prometheus_client.Histogram(
            f"{prefix}_handshakes_duration_seconds",
            "Seconds from websocket.connect to the handshake's outcome",
            ["outcome", "route"],
            buckets=duration_buckets,
            **kwargs,
        )
        self.open = prometheus_client.Gauge(
            f"{prefix}_connections_open",
            "WebSocket connections accepted and not yet ended",
            ["route"],
            multiprocess_mode="livesum",  # the sum over the workers alive
            **kwargs,
        )
        self.lifetime = prometheus_client.Histogram(
            f"{prefix}_connections_lifetime_seconds",
            "Seconds from the accept to the end of a WebSocket connection",
            ["route", "code", "closed_by"],
            buckets=lifetime_buckets,
            **kwargs,
        )
        self.audit_failures = prometheus_client.Counter(
            f"{prefix}_audit_failures",
            "Audit sink calls that raised or timed out",
            **kwargs,
        )
        self.audit_dropped = prometheus_client.Counter(
            f"{prefix}_audit_dropped",
            "Audit events a sink never received (a full queue, too many pending, shutdown)",
            **kwargs,
        )
        self._handshake_children: dict[tuple[Any, ...], Any] = {}
        self._close_children: dict[tuple[Any, ...], Any] = {}

    def __call__(self, event: AuditEvent) -> None:
        key = (event.outcome, event.reason, event.route, event.status)
        children = self._handshake_children.get(key)
        if children is None:
            children = self._handshake_children_for(key)
        counted, timed, opened = children
        counted.inc()
        timed.observe(event.duration)
        if opened is not None:
            opened.inc()
        would_reject = event.would_reject
        if would_reject is not None:
            self.would_reject.labels(would_reject, event.route).inc()

    def closed(self, event: CloseEvent) -> None:
        """The end of an accepted connection (the middleware calls it once per accept)."""
        key = (event.route, close_code_label(event.code), event.closed_by)
        children = self._close_children.get(key)
        if children is None:
            children = self._close_children_for(key)
        opened, lived = children
        opened.dec()
        lived.observe(event.lifetime)

    # prometheus_client's ``labels()`` validates and locks on every call; the children of
    # each label set are looked up once and kept (as the metrics keep them: the label sets
    # are bounded).

    def _handshake_children_for(self, key: tuple[Outcome, str | None, str, int | None]) -> Any:
        outcome, reason, route, status = key
        children = (
            self.handshakes.labels(
                outcome, reason or "", route, "" if status is None else str(status)
            ),
            self.duration.labels(outcome, route),
            self.open.labels(route) if outcome is Outcome.ACCEPTED else None,
        )
        self._handshake_children[key] = children
        return children

    def _close_children_for(self, key: tuple[str, str, str]) -> Any:
        route, code, closed_by = key
        children = (self.open.labels(route), self.lifetime.labels(route, code, closed_by))
        self._close_children[key] = children
        return children

    def audit_problem(self, sink: object, exc: BaseException | None) -> None:
        """A sink failed (``exc``) or an event was dropped (None): the auditor tells us."""
        (self.audit_dropped if exc is None else self.audit_failures).inc()


def multiprocess_registry(path: str | None = None) -> Any:
    """A registry to expose under ``--workers N``: every worker's metrics, summed.

    ``prometheus_client``'s multiprocess mode: each worker writes its values to files in
    ``PROMETHEUS_MULTIPROC_DIR`` (set it, to an empty directory, before the server starts);
    this registry reads them all at each scrape. ``<prefix>_connections_open`` sums the live
    workers only (``livesum``): at each scrape the files of workers that no longer run are
    removed first (``mark_process_dead``), so a worker that crashed with connections open
    does not keep counting them. Counters and histograms keep what dead workers counted.

    Args:
        path: the directory (default: ``$PROMETHEUS_MULTIPROC_DIR``).
    """
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    collector = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
    registry.register(_LiveWorkers(collector))
    return registry


class _LiveWorkers:
    """A ``MultiProcessCollector`` that first forgets the live gauges of exited workers."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        from prometheus_client.multiprocess import mark_process_dead

        path = self.collector._path
        for name in glob.glob(os.path.join(glob.escape(path), "gauge_live*_*.db")):
            pid = name[: -len(".db")].rpartition("_")[2]
            if pid.isdigit() and not _alive(int(pid)):
                mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]
        return iter(self.collector.collect())


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on this machine: the workers share a directory)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process holds the pid
        return True
    return True
