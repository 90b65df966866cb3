"""Prometheus metrics for handshakes, behind the ``prometheus`` extra (``prometheus-client``).

``prometheus_client`` is imported when a ``PrometheusSink`` is built, never at import time.
"""

from __future__ import annotations

from typing import Any

from .audit import AuditEvent

__all__ = ["PrometheusSink"]

# Handshakes are fast: most buckets sit below a millisecond; slow sinks/apps show above.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0)


class PrometheusSink:
    """Count handshakes by outcome, reason and route, and time them.

    Metrics: ``<namespace>_total{outcome,reason,route,status}`` (a counter),
    ``<namespace>_duration_seconds{outcome}`` (a histogram from connect to outcome) and
    ``<namespace>_would_reject_total{reason,route}`` (handshakes a report-only route let
    through that it would have refused; they also count as accepted in the first).

    Args:
        registry: where to register (default: prometheus_client's global registry).
        namespace: the metric name prefix.

    Raises:
        ImportError: when ``prometheus-client`` is not installed (``pip install
            'asgi-ws-handshake[prometheus]'``).
    """

    def __init__(self, registry: Any = None, *, namespace: str = "websocket_handshakes") -> None:
        try:
            import prometheus_client
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "PrometheusSink needs prometheus-client: "
                "pip install 'asgi-ws-handshake[prometheus]'"
            ) from exc
        kwargs: dict[str, Any] = {} if registry is None else {"registry": registry}
        self.handshakes = prometheus_client.Counter(
            namespace,
            "WebSocket handshakes seen by the guard, by outcome",
            ["outcome", "reason", "route", "status"],
            **kwargs,
        )
        self.would_reject = prometheus_client.Counter(
            f"{namespace}_would_reject",
            "Handshakes a report-only route (enforce=false) let through, by the refusal spared",
            ["reason", "route"],
            **kwargs,
        )
        self.duration = prometheus_client.Histogram(
            f"{namespace}_duration_seconds",
            "Seconds from websocket.connect to the handshake's outcome",
            ["outcome"],
            buckets=_BUCKETS,
            **kwargs,
        )

    def __call__(self, event: AuditEvent) -> None:
        outcome = str(event.outcome)
        self.handshakes.labels(
            outcome,
            event.reason or "",
            event.route,
            "" if event.status is None else str(event.status),
        ).inc()
        self.duration.labels(outcome).observe(event.duration)
        would_reject = event.would_reject
        if would_reject is not None:
            self.would_reject.labels(would_reject, event.route).inc()
