"""Delivering audit events to sinks: ``Auditor``.

Owns how events reach sinks without a sink ever breaking or stalling a handshake, and the
one place every problem is counted: ``failures`` (a sink raised or timed out) and
``dropped`` (an event a sink never got: a full queue, too many pending deliveries, shutdown).
Problems are logged rate-limited, so a flood of handshakes never becomes a flood of
tracebacks: the first problem of each sink with its traceback, then a summary at most every
``SUMMARY_EVERY`` seconds. ``aclose`` drains the sinks at shutdown within a bound and says
what it had to drop; the middleware calls it on lifespan shutdown, and an ``atexit`` hook does
the same for the threaded sinks of processes that end without one.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .audit import AuditEvent, AuditSink, CloseEvent, Outcome

__all__ = ["SUMMARY_EVERY", "Auditor"]

logger = logging.getLogger("asgi_ws_handshake")

#: Seconds between two summaries of sink problems.
SUMMARY_EVERY = 60.0
_AUDITORS: weakref.WeakSet[Auditor] = weakref.WeakSet()


class Auditor:
    """Deliver events to sinks without letting a sink break or stall a handshake.

    Sync sinks run inline (they must be fast: wrap slow ones in ``ThreadedSink``); awaitables
    returned by async sinks run as background tasks bounded by ``timeout`` and ``max_pending``.
    With ``fail_closed`` every sink is awaited and ``deliver`` reports whether all succeeded.
    Sinks with a ``closed(event)`` method also receive ``CloseEvent``\\ s.
    """

    def __init__(
        self,
        sinks: Iterable[AuditSink],
        *,
        fail_closed: bool = False,
        timeout: float = 2.0,
        max_pending: int = 10_000,
    ) -> None:
        self.fail_closed = fail_closed
        self.timeout = timeout
        self.max_pending = max_pending
        #: Sink calls that raised or timed out.
        self.failures = 0
        #: Events a sink never received (a full queue, too many pending, shutdown).
        self.dropped = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._unreported: dict[str, list[int]] = {}  # sink -> [failures, drops] since a summary
        self._reported: set[str] = set()  # sinks whose first problem was logged in full
        self._summary_at = 0.0
        self.sinks = tuple(sinks)
        _AUDITORS.add(self)

    @property
    def sinks(self) -> tuple[AuditSink, ...]:
        """The sinks every event goes to (assignable)."""
        return self._sinks

    @sinks.setter
    def sinks(self, sinks: Iterable[AuditSink]) -> None:
        self._sinks: tuple[AuditSink, ...] = tuple(sinks)
        # Whether an event is worth building: False when every sink is a logger that would
        # drop it (see ``wants``); sinks that can say so expose ``wants(outcome)``.
        self.choosy = not self._sinks or all(
            callable(getattr(sink, "wants", None)) for sink in self._sinks
        )
        self._closers: tuple[tuple[AuditSink, Callable[[CloseEvent], Any]], ...] = tuple(
            (sink, getattr(sink, "closed"))  # noqa: B009 (AuditSink has no such attribute)
            for sink in self._sinks
            if callable(getattr(sink, "closed", None))
        )
        #: Whether any sink takes ``CloseEvent``\\ s (the middleware records ends only then).
        self.watches_closes = bool(self._closers)
        for sink in self._sinks:
            if hasattr(sink, "problems"):  # ThreadedSink: problems in its thread come here
                setattr(sink, "problems", self._problem)  # noqa: B010

    def wants(self, outcome: Outcome) -> bool:
        """Whether any sink would keep an event with this outcome (build it only then)."""
        if not self.choosy:
            return bool(self._sinks)
        return any(sink.wants(outcome) for sink in self._sinks)  # type: ignore[attr-defined]

    def emit(self, event: AuditEvent) -> None:
        """Deliver ``event``; never raises."""
        for sink in self._sinks:
            try:
                result = sink(event)
            except Exception as exc:
                self._problem(sink, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                self._spawn(sink, result)

    def close(self, event: CloseEvent) -> None:
        """Deliver a ``CloseEvent`` to the sinks that take them; never raises."""
        for sink, closed in self._closers:
            try:
                result = closed(event)
            except Exception as exc:
                self._problem(sink, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                self._spawn(sink, result)

    async def deliver(self, event: AuditEvent) -> bool:
        """Deliver ``event`` and wait for every sink; True when all of them succeeded."""
        ok = True
        for sink in self._sinks:
            try:
                result = sink(event)
                if result is not None and inspect.isawaitable(result):
                    async with asyncio.timeout(self.timeout):
                        await result
            except Exception as exc:
                self._problem(sink, exc)
                ok = False
        return ok

    def _spawn(self, sink: AuditSink, awaitable: Awaitable[None]) -> None:
        if len(self._pending) >= self.max_pending:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            self._problem(sink, None)  # dropped: too many deliveries pending
            return
        task = asyncio.ensure_future(self._run(sink, awaitable))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _run(self, sink: AuditSink, awaitable: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await awaitable
        except asyncio.CancelledError:
            self._problem(sink, None)  # cancelled (shutdown): the sink never got the event
            raise
        except Exception as exc:
            self._problem(sink, exc)

    def _problem(self, sink: object, exc: BaseException | None) -> None:
        """Count a failure (``exc``) or a drop (None), and log it rate-limited."""
        if exc is None:
            self.dropped += 1
        else:
            self.failures += 1
        name = repr(sink)
        now = time.monotonic()
        if name not in self._reported:
            self._reported.add(name)
            self._summary_at = max(self._summary_at, now + SUMMARY_EVERY)
            what = "dropped an event" if exc is None else "failed"
            exc_info = exc if exc is not None and not isinstance(exc, TimeoutError) else None
            logger.error(
                "audit sink %s %s (further problems are summarised every %d s)",
                name,
                what,
                SUMMARY_EVERY,
                exc_info=exc_info,
            )
            return
        counts = self._unreported.setdefault(name, [0, 0])
        counts[exc is None] += 1
        if now >= self._summary_at:
            self._summary_at = now + SUMMARY_EVERY
            self.report()

    def report(self) -> None:
        """Log (and forget) the problems not yet logged, one line per sink."""
        for name, (failures, drops) in self._unreported.items():
            logger.error(
                "audit sink %s: %d failures, %d dropped events since the last report "
                "(in all: %d failures, %d dropped)",
                name,
                failures,
                drops,
                self.failures,
                self.dropped,
            )
        self._unreported.clear()

    async def drain(self) -> None:
        """Wait for background sink tasks (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def aclose(self, grace: float = 5.0) -> None:
        """Drain every sink within ``grace`` seconds; count and log what had to be dropped.

        Pending async deliveries are awaited, then cancelled; threaded sinks are flushed.
        """
        deadline = time.monotonic() + grace
        if self._pending:
            _, pending = await asyncio.wait(set(self._pending), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:  # each cancelled delivery counts itself as dropped (see _run)
                await asyncio.wait(pending, timeout=1.0)
        # Threaded sinks go on writing while the process lives; what is still queued when it
        # exits is counted then (``_at_exit``).
        self._flush(max(0.0, deadline - time.monotonic()), count=False)
        self.summarise()

    def summarise(self) -> None:
        """Log the problems not yet logged, and the totals when there were any."""
        self.report()
        if self.failures or self.dropped:
            logger.warning(
                "audit: %d sink failures and %d dropped events in all",
                self.failures,
                self.dropped,
            )

    def _flush(self, timeout: float, *, count: bool) -> int:
        """Flush threaded sinks (``flush(timeout) -> events left``); count the left as dropped.

        Returns the events left in their queues.
        """
        left = 0
        for sink in self._sinks:
            flush = getattr(sink, "flush", None)
            if callable(flush):
                undelivered = flush(timeout)
                left += undelivered
                for _ in range(undelivered if count else 0):
                    self._problem(sink, None)
        return left


#: Seconds the threaded sinks get at interpreter exit before their queues are given up.
EXIT_FLUSH = 5.0


@atexit.register
def _at_exit() -> None:
    # The daemon threads of threaded sinks die with the process: give them a last bounded
    # chance, and count (and say) what is left.
    for auditor in list(_AUDITORS):
        if any(callable(getattr(sink, "flush", None)) for sink in auditor.sinks):
            dropped = auditor.dropped
            auditor._flush(EXIT_FLUSH, count=True)
            if auditor.dropped != dropped or auditor._unreported:
                auditor.summarise()
