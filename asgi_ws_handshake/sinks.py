"""Audit sinks: where events go. Any callable taking an ``AuditEvent`` is a sink.

Every text a sink writes is one line per event: request-derived fields (the percent-decoded
path, the Origin, the Host) can hold CR, LF or terminal escapes, so text output escapes them
(``escape``) and JSON output relies on JSON's own escaping.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .audit import AuditEvent, CloseEvent, Outcome

__all__ = [
    "JSONFormatter",
    "JSONLinesSink",
    "LoggingSink",
    "MemorySink",
    "ThreadedSink",
    "escape",
]

logger = logging.getLogger("asgi_ws_handshake")


def escape(text: object) -> str:
    """``text`` safe for a one-line log: non-printable characters as ``\\x..`` escapes.

    Servers percent-decode the path, so ``/ws%0a...`` arrives with a real line feed; written
    as it is, it would start a second, attacker-written log line.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class MemorySink:
    r"""Keep the last ``maxlen`` events in a ring (tests, dashboards).

    With ``closes=True`` it keeps the last ``maxlen`` ``CloseEvent``\ s too (``closes``).
    """

    def __init__(self, maxlen: int = 1000, *, closes: bool = False) -> None:
        self._events: collections.deque[AuditEvent] = collections.deque(maxlen=maxlen)
        self._closes: collections.deque[CloseEvent] = collections.deque(maxlen=maxlen)
        if closes:
            self.closed = self._closes.append

    def __call__(self, event: AuditEvent) -> None:
        self._events.append(event)

    @property
    def events(self) -> list[AuditEvent]:
        """A snapshot of the retained events, oldest first."""
        return list(self._events)

    @property
    def closes(self) -> list[CloseEvent]:
        """A snapshot of the retained close events, oldest first."""
        return list(self._closes)

    def clear(self) -> None:
        self._events.clear()
        self._closes.clear()


class LoggingSink:
    """Log one line per event; the event's fields ride along in ``extra["ws_handshake"]``.

    An event nobody would see (the logger disabled at the event's level) is not even built.
    With ``closes=True`` the end of each accepted connection is logged too (at ``level``).
    """

    def __init__(
        self,
        logger: logging.Logger | str = "asgi_ws_handshake.audit",
        *,
        level: int = logging.INFO,
        rejected_level: int = logging.WARNING,
        closes: bool = False,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self.rejected_level = rejected_level
        if closes:
            self.closed = self._closed

    def wants(self, outcome: Outcome) -> bool:
        """Whether an event with this outcome would be logged."""
        level = self.level if outcome is Outcome.ACCEPTED else self.rejected_level
        return self.logger.isEnabledFor(level)

    def __call__(self, event: AuditEvent) -> None:
        level = self.level if event.outcome is Outcome.ACCEPTED else self.rejected_level
        if not self.logger.isEnabledFor(level):
            return
        message = "websocket handshake %s %s status=%s reason=%s origin=%s client=%s id=%s"
        args: list[object] = [
            event.outcome,
            escape(event.path),
            event.status,
            event.reason,
            escape(repr(event.origin)),
            escape(event.client),
            event.id,
        ]
        would_reject = event.would_reject
        if would_reject is not None:  # a report-only route let it through
            message += " would_reject=%s"
            args.append(would_reject)
        self.logger.log(level, message, *args, extra={"ws_handshake": event.to_dict()})

    def _closed(self, event: CloseEvent) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        self.logger.log(
            self.level,
            "websocket closed %s by=%s code=%s reason=%s lifetime=%.3f id=%s",
            escape(event.handshake.request.path),
            event.closed_by,
            event.code,
            event.reason,
            event.lifetime,
            event.id,
            extra={"ws_handshake": event.to_dict()},
        )


class JSONFormatter(logging.Formatter):
    """Format records as one JSON object a line, in the Elastic Common Schema's field names.

    Follows the ecs-logging layout (``@timestamp``, ``log.level``, ``message`` first,
    ``ecs.version``; the rest as nested objects), so Elasticsearch, OpenSearch, Loki or
    Datadog pipelines index it without a mapping: ``log.logger``, ``log.origin``,
    ``process``, ``error.*`` for exceptions, ``trace.id``/``span.id`` when OpenTelemetry's
    logging instrumentation set them. A record from ``LoggingSink`` adds the ECS fields of
    the handshake (``event.*``, ``client.*``, ``url.path``, ``http.response.status_code``)
    and the whole event under ``websocket.handshake`` (or, for the end of a connection,
    ``websocket.connection``). JSON escapes every control character: one line per record.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "@timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "log.level": record.levelname.lower(),
            "message": record.getMessage(),
            "ecs.version": ECS_VERSION,
            "log": {
                "logger": record.name,
                "origin": {
                    "file": {"name": record.filename, "line": record.lineno},
                    "function": record.funcName,
                },
            },
            "process": {"pid": record.process, "thread": {"name": record.threadName}},
        }
        event = getattr(record, "ws_handshake", None)
        if isinstance(event, dict):
            data.update(_ecs_fields(event))
        trace_id = getattr(record, "otelTraceID", None)
        if isinstance(trace_id, str) and trace_id.strip("0"):
            data["trace"] = {"id": trace_id}
            span_id = getattr(record, "otelSpanID", None)
            if isinstance(span_id, str) and span_id.strip("0"):
                data["span"] = {"id": span_id}
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            data["error"] = {
                "type": type(exc).__qualname__,
                "message": str(exc),
                "stack_trace": self.formatException(record.exc_info),
            }
        elif record.stack_info:
            data["error"] = {"stack_trace": self.formatStack(record.stack_info)}
        return json.dumps(data, separators=(",", ":"), default=str)


#: The ECS version whose field names ``JSONFormatter`` writes.
ECS_VERSION = "8.11.0"
_ECS_OUTCOME = {"accepted": "success", "client_gone": "unknown"}  # else a refusal: failure
_ECS_TYPE = {
    "accepted": ["connection", "allowed", "start"],
    "app_error": ["connection", "error"],
    "client_gone": ["connection", "end"],
}


def _ecs_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The ECS fields of a handshake's (or a close's) ``to_dict()``."""
    if event.get("event") == "closed":
        lifetime = event.get("lifetime")
        return {
            "event": {
                "kind": "event",
                "category": ["network", "web"],
                "type": ["connection", "end"],
                "action": "websocket-closed",
                "outcome": "failure" if event.get("closed_by") == "error" else "success",
                "duration": _nanoseconds(lifetime),
            },
            "url": {"path": event.get("path")},
            "websocket": {"connection": event},
        }
    outcome = event.get("outcome")
    fields: dict[str, Any] = {
        "event": {
            "kind": "event",
            "category": ["network", "web"],
            "type": _ECS_TYPE.get(str(outcome), ["connection", "denied"]),
            "action": "websocket-handshake",
            "outcome": _ECS_OUTCOME.get(str(outcome), "failure"),
            "reason": event.get("reason"),
            "duration": _nanoseconds(event.get("duration")),
        },
        "url": {"path": event.get("path")},
        "websocket": {"handshake": event},
    }
    if event.get("status") is not None:
        fields["http"] = {"response": {"status_code": event["status"]}}
    if event.get("subject") is not None:
        fields["user"] = {"id": event["subject"]}
    client = event.get("client")
    if isinstance(client, str):
        address, _, port = client.rpartition(":")
        found: dict[str, Any] = {"address": address or client}
        fields["client"] = found
        with contextlib.suppress(ValueError):
            found["ip"] = str(ipaddress.ip_address(address))
        if port.isascii() and port.isdigit():
            found["port"] = int(port)
    return fields


def _nanoseconds(seconds: object) -> int | None:
    """ECS durations are nanoseconds."""
    return round(seconds * 1e9) if isinstance(seconds, int | float) else None


class JSONLinesSink:
    """Append each event as one JSON line to a file, flushed per event.

    With ``closes=True`` close events are written too, as lines with ``"event": "closed"``.
    """

    def __init__(self, path: str | Path, *, closes: bool = False) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        if closes:
            self.closed = self._write

    def __call__(self, event: AuditEvent) -> None:
        self._write(event)

    def _write(self, event: AuditEvent | CloseEvent) -> None:
        line = json.dumps(event.to_dict(), separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class ThreadedSink:
    """Run a slow synchronous sink in a worker thread behind a bounded queue.

    When the queue is full the event is dropped for this sink and counted in ``dropped``:
    a stalled sink never stalls a handshake. Drops and failures in the thread are reported to
    the middleware's ``Auditor`` too (its ``problems`` hook), which counts and logs them.
    """

    def __init__(self, sink: Callable[[AuditEvent], object], maxsize: int = 10_000) -> None:
        self.sink = sink
        self.dropped = 0
        self.failures = 0
        #: Told of each problem: (this sink, the exception, or None for a dropped event).
        self.problems: Callable[[object, BaseException | None], None] = _log_problem
        self._queue: queue.Queue[AuditEvent | None] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name="audit-sink", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"ThreadedSink({self.sink!r})"

    def __call__(self, event: AuditEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            self.problems(self, None)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                self.sink(event)
            except Exception as exc:
                self.failures += 1
                self.problems(self, exc)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the queue to empty; return the events left."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            if not self._thread.is_alive():
                break
            time.sleep(0.005)
        return self._queue.qsize() if self._queue.unfinished_tasks else 0

    def close(self, timeout: float | None = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


def _log_problem(sink: object, exc: BaseException | None) -> None:
    """A ``ThreadedSink``'s problems outside a middleware: logged."""
    logger.error(
        "audit sink %r %s", sink, "dropped an event" if exc is None else "failed", exc_info=exc
    )
