"""Audit events and sinks: one ``AuditEvent`` per handshake, delivered to every sink.

Owns the event's fields, their JSON form and delivery (inline for sync sinks, background
tasks with a timeout for async ones). What happened is decided by the middleware.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
import json
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "AuditEvent",
    "AuditSink",
    "Auditor",
    "JSONFormatter",
    "JSONLinesSink",
    "LoggingSink",
    "MemorySink",
    "Outcome",
    "ThreadedSink",
]


logger = logging.getLogger("asgi_ws_handshake")

#: A sink is any callable taking an event; it may return an awaitable.
AuditSink = Callable[["AuditEvent"], "Awaitable[None] | None"]


class Outcome(enum.StrEnum):
    """How a handshake ended."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # refused by the policy (or a store, rate or audit check)
    APP_REJECTED = "app_rejected"  # the app closed or sent its own response before accepting
    APP_ERROR = "app_error"  # the app raised, returned without answering, or answered wrongly
    CLIENT_GONE = "client_gone"  # the client left before the handshake was answered


class AuditEvent(NamedTuple):
    """What one handshake was and how it ended. Holds no header outside an allowlist.

    A ``NamedTuple``: immutable, and several times cheaper to build than a frozen dataclass
    of 22 fields, on a path every handshake takes.
    """

    id: str
    #: Seconds since the epoch (UTC) when the outcome was known.
    time: float
    #: Seconds from the websocket.connect message to the outcome.
    duration: float
    client: str | None
    path: str
    route: str
    host: str | None
    #: The Origin as sent (first value, capped), "null", or None.
    origin: str | None
    #: Offered subprotocols, secret-looking ones redacted.
    subprotocols: tuple[str, ...]
    subprotocol: str | None
    version: str | None
    #: The Sec-WebSocket-Key as sent (first value, capped).
    key: str | None
    key_valid: bool | None
    expected_accept: str | None
    key_reused: bool | None
    outcome: Outcome
    reason: str | None
    #: The HTTP status the client was given: 101 when accepted, None when it got nothing.
    status: int | None
    #: How a refusal was delivered: "http_response", "close", or None.
    denial: str | None
    detail: str = ""
    #: True when a store call failed and the policy failed open.
    store_error: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-safe values (``time`` as ISO 8601 UTC)."""
        data = self._asdict()
        data["time"] = datetime.fromtimestamp(self.time, UTC).isoformat()
        data["subprotocols"] = list(self.subprotocols)
        data["outcome"] = str(self.outcome)
        return data


class MemorySink:
    """Keep the last ``maxlen`` events in a ring (tests, dashboards)."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._events: collections.deque[AuditEvent] = collections.deque(maxlen=maxlen)

    def __call__(self, event: AuditEvent) -> None:
        self._events.append(event)

    @property
    def events(self) -> list[AuditEvent]:
        """A snapshot of the retained events, oldest first."""
        return list(self._events)

    def clear(self) -> None:
        self._events.clear()


class LoggingSink:
    """Log one line per event; the event's fields ride along in ``extra["ws_handshake"]``."""

    def __init__(
        self,
        logger: logging.Logger | str = "asgi_ws_handshake.audit",
        *,
        level: int = logging.INFO,
        rejected_level: int = logging.WARNING,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self.rejected_level = rejected_level

    def __call__(self, event: AuditEvent) -> None:
        level = self.level if event.outcome is Outcome.ACCEPTED else self.rejected_level
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            "websocket handshake %s %s status=%s reason=%s origin=%r client=%s id=%s",
            event.outcome,
            event.path,
            event.status,
            event.reason,
            event.origin,
            event.client,
            event.id,
            extra={"ws_handshake": event.to_dict()},
        )


class JSONFormatter(logging.Formatter):
    """Format records as one JSON object a line, merging ``extra["ws_handshake"]``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "ws_handshake", None)
        if isinstance(event, dict):
            data["event"] = event
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, separators=(",", ":"))


class JSONLinesSink:
    """Append each event as one JSON line to a file, flushed per event."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, event: AuditEvent) -> None:
        line = json.dumps(event.to_dict(), separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class ThreadedSink:
    """Run a slow synchronous sink in a worker thread behind a bounded queue.

    When the queue is full the event is dropped for this sink and counted in ``dropped``:
    a stalled sink never stalls a handshake.
    """

    def __init__(self, sink: Callable[[AuditEvent], object], maxsize: int = 10_000) -> None:
        self.sink = sink
        self.dropped = 0
        self.failures = 0
        self._queue: queue.Queue[AuditEvent | None] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name="audit-sink", daemon=True)
        self._thread.start()

    def __call__(self, event: AuditEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                self.sink(event)
            except Exception:
                self.failures += 1
                logger.exception("audit sink %r failed", self.sink)

    def close(self, timeout: float | None = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class Auditor:
    """Deliver events to sinks without letting a sink break or stall a handshake.

    Sync sinks run inline (they must be fast: wrap slow ones in ``ThreadedSink``); awaitables
    returned by async sinks run as background tasks bounded by ``timeout`` and ``max_pending``.
    With ``fail_closed`` every sink is awaited and ``deliver`` reports whether all succeeded.
    """

    def __init__(
        self,
        sinks: Iterable[AuditSink],
        *,
        fail_closed: bool = False,
        timeout: float = 2.0,
        max_pending: int = 10_000,
    ) -> None:
        self.sinks = tuple(sinks)
        self.fail_closed = fail_closed
        self.timeout = timeout
        self.max_pending = max_pending
        #: Sink calls that raised, timed out or were dropped.
        self.failures = 0
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def sinks(self) -> tuple[AuditSink, ...]:
        """The sinks every event goes to (assignable)."""
        return self._sinks

    @sinks.setter
    def sinks(self, sinks: Iterable[AuditSink]) -> None:
        self._sinks: tuple[AuditSink, ...] = tuple(sinks)
        # What emit calls: a MemorySink's ring is appended to directly (one C call).
        self._calls: tuple[tuple[AuditSink, AuditSink], ...] = tuple(
            (sink, sink._events.append if type(sink) is MemorySink else sink)
            for sink in self._sinks
        )

    def emit(self, event: AuditEvent) -> None:
        """Deliver ``event``; never raises."""
        for sink, call in self._calls:
            try:
                result = call(event)
            except Exception:
                self._failed(sink)
                continue
            if result is not None and inspect.isawaitable(result):
                self._spawn(sink, result)

    async def deliver(self, event: AuditEvent) -> bool:
        """Deliver ``event`` and wait for every sink; True when all of them succeeded."""
        ok = True
        for sink in self.sinks:
            try:
                result = sink(event)
                if result is not None and inspect.isawaitable(result):
                    async with asyncio.timeout(self.timeout):
                        await result
            except Exception:
                self._failed(sink)
                ok = False
        return ok

    def _spawn(self, sink: AuditSink, awaitable: Awaitable[None]) -> None:
        if len(self._pending) >= self.max_pending:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            self._failed(sink, "dropped: too many pending audit tasks")
            return
        task = asyncio.ensure_future(self._run(sink, awaitable))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _run(self, sink: AuditSink, awaitable: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await awaitable
        except Exception:
            self._failed(sink)

    def _failed(self, sink: AuditSink, why: str = "raised") -> None:
        self.failures += 1
        logger.error("audit sink %r failed (%s)", sink, why, exc_info=why == "raised")

    async def drain(self) -> None:
        """Wait for background sink tasks (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def redact(values: Sequence[str], is_secret: Callable[[str], bool]) -> tuple[str, ...]:
    """Replace secret-looking values with ``"<redacted>"``."""
    return tuple("<redacted>" if is_secret(value) else value for value in values)
