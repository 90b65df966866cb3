"""Clients that vanish at every step of the handshake leave nothing behind.

Adapter level: the middleware runs under pure asyncio with a scripted ``receive`` and a
recording ``send`` (tests/asgi.py); the client "vanishes" by a ``websocket.disconnect``
message, by a ``send`` that raises (the transport is gone) or by the server cancelling the
connection's task. After each step: exactly one audit event, no task left running, no
background audit work pending. tests/servers/test_vanish.py drops raw sockets at each step
against uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from asgi_ws_handshake import (
    AuditEvent,
    HandshakeMiddleware,
    HandshakePolicy,
    MemorySink,
    MemoryStore,
    Outcome,
    Reason,
)
from asgi_ws_handshake.middleware import Message
from tests.asgi import CONNECT, DISCONNECT, Script, accepting_app, ws_scope
from tests.support import new_key

ORIGIN = "http://app.test"
POLICY = HandshakePolicy(allow_origins=[ORIGIN])
EVIL = "http://evil.test"


def waiting(*messages: Message) -> Script:
    """A connection that hands out ``messages``, then waits (the client neither talks nor
    leaves)."""
    return Script([dict(message) for message in messages], then_disconnect=False)


def other_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def settle(mw: HandshakeMiddleware) -> None:
    """Let cancelled tasks and background sinks finish."""
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.wait_for(mw.auditor.drain(), 5)


async def run_until_cancelled(
    mw: HandshakeMiddleware, script: Script, ready: Callable[[], bool]
) -> None:
    """Start a connection, wait (bounded) until ``ready()``, then cancel it as a server would."""
    task = script.start(mw, ws_scope(origin=ORIGIN))
    for _ in range(1000):
        if ready() or task.done():
            break
        await asyncio.sleep(0)
    assert ready(), "the connection never reached the step under test"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@contextlib.contextmanager
def nothing_left_behind() -> Iterator[None]:
    before = other_tasks()
    yield
    leftover = other_tasks() - before
    assert not leftover, leftover


def one_event(sink: MemorySink) -> AuditEvent:
    assert len(sink.events) == 1, sink.events
    return sink.events[0]


# -- before connect ----------------------------------------------------------------------------


async def test_gone_before_connect() -> None:
    sink = MemorySink()
    called: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope)

    mw = HandshakeMiddleware(app, audit=sink)
    script = waiting(DISCONNECT)
    with nothing_left_behind():
        await asyncio.wait_for(mw(ws_scope(origin=ORIGIN), script.receive, script.send), 5)
        await settle(mw)
    event = one_event(sink)
    assert (event.outcome, event.reason, event.status) == (Outcome.CLIENT_GONE, "client_gone", None)
    assert script.sent == []
    assert called == []


async def test_receive_raises_before_connect() -> None:
    sink = MemorySink()
    mw = HandshakeMiddleware(accepting_app, audit=sink)
    script = waiting()
    script.receive_error = ConnectionResetError("peer reset")

    with nothing_left_behind():
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(mw(ws_scope(origin=ORIGIN), script.receive, script.send), 5)
        await settle(mw)
    assert one_event(sink).outcome == Outcome.CLIENT_GONE


async def test_cancelled_while_waiting_for_connect() -> None:
    sink = MemorySink()
    mw = HandshakeMiddleware(accepting_app, audit=sink)
    script = waiting()  # never delivers websocket.connect
    with nothing_left_behind():
        await run_until_cancelled(mw, script, lambda: script.receiving == 1)
        await settle(mw)
    assert one_event(sink).outcome == Outcome.CLIENT_GONE


# -- between connect and decision ----------------------------------------------------------------


class StallingStore(MemoryStore):
    """A store whose key check never returns (an unreachable Redis without a timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = False

    async def remember_key(self, key: str, ttl: float) -> bool:  # type: ignore[override]
        self.entered = True
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_cancelled_while_the_store_is_consulted() -> None:
    sink = MemorySink()
    store = StallingStore()
    mw = HandshakeMiddleware(accepting_app, policy=HandshakePolicy(), audit=sink, store=store)
    script = waiting(CONNECT)
    with nothing_left_behind():
        await run_until_cancelled(mw, script, lambda: store.entered)
        await settle(mw)
    event = one_event(sink)
    assert (event.outcome, event.reason, event.status) == (Outcome.CLIENT_GONE, "client_gone", None)
    assert script.sent == []


async def test_cancelled_while_the_refusal_is_sent() -> None:
    sink = MemorySink()
    mw = HandshakeMiddleware(accepting_app, audit=sink)
    script = waiting(CONNECT)
    script.block_send = True
    task = script.start(mw, ws_scope(origin=EVIL))
    with nothing_left_behind():
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settle(mw)
    event = one_event(sink)
    assert (event.outcome, event.reason, event.status) == (
        Outcome.CLIENT_GONE,
        Reason.ORIGIN_NOT_ALLOWED,
        None,
    )


@pytest.mark.parametrize("error", [ConnectionResetError("gone"), RuntimeError("closed")])
async def test_refusal_to_a_vanished_client(error: Exception) -> None:
    sink = MemorySink()
    mw = HandshakeMiddleware(accepting_app, audit=sink)
    script = waiting(CONNECT)
    script.send_error = error
    with nothing_left_behind():
        await asyncio.wait_for(mw(ws_scope(origin=EVIL), script.receive, script.send), 5)
        await settle(mw)
    event = one_event(sink)
    assert (event.outcome, event.reason, event.denial) == (
        Outcome.CLIENT_GONE,
        Reason.ORIGIN_NOT_ALLOWED,
        None,
    )


async def test_gone_while_the_app_decides() -> None:
    """The client leaves after connect; the app sees the disconnect and returns unanswered."""
    sink = MemorySink()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the replayed connect
        assert (await receive())["type"] == "websocket.disconnect"

    mw = HandshakeMiddleware(slow_app, audit=sink)
    script = waiting(CONNECT, DISCONNECT)
    with nothing_left_behind():
        await asyncio.wait_for(mw(ws_scope(origin=ORIGIN), script.receive, script.send), 5)
        await settle(mw)
    event = one_event(sink)
    assert (event.outcome, event.reason) == (Outcome.CLIENT_GONE, "client_gone")
    assert script.sent == []  # no refusal sent into a closed connection


async def test_cancelled_while_the_app_decides() -> None:
    sink = MemorySink()
    entered = asyncio.Event()

    async def stuck_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        entered.set()
        await asyncio.Event().wait()

    mw = HandshakeMiddleware(stuck_app, audit=sink)
    with nothing_left_behind():
        await run_until_cancelled(mw, waiting(CONNECT), entered.is_set)
        await settle(mw)
    assert one_event(sink).outcome == Outcome.CLIENT_GONE


# -- during a slow audit sink --------------------------------------------------------------------


class SlowSink:
    """An async sink that takes ``delay`` seconds (or forever), counting starts and ends."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.started = 0
        self.finished = 0

    async def __call__(self, event: AuditEvent) -> None:
        self.started += 1
        if self.delay is None or (self.delay == 0.0 and event.outcome is Outcome.ACCEPTED):
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(self.delay)
        self.finished += 1


@pytest.mark.parametrize("origin", [ORIGIN, EVIL], ids=["accepted", "refused"])
async def test_stalled_sink_is_bounded_and_leaves_no_task(origin: str) -> None:
    memory, slow = MemorySink(), SlowSink(None)
    mw = HandshakeMiddleware(
        accepting_app,
        policy=POLICY,
        audit=[slow, memory],
        audit_timeout=0.05,
    )
    script = waiting(CONNECT, DISCONNECT)
    with nothing_left_behind():
        await asyncio.wait_for(mw(ws_scope(origin=origin), script.receive, script.send), 5)
        # The handshake did not wait for the sink: it was answered while the sink still runs.
        assert script.sent
        assert slow.started == 1
        assert len(mw.auditor._pending) == 1
        await settle(mw)  # the sink's timeout ends it
    assert mw.auditor._pending == set()
    assert (slow.finished, mw.auditor.failures) == (0, 1)
    assert len(memory.events) == 1


async def test_gone_during_a_slow_fail_closed_sink() -> None:
    """fail-closed: the accept waits for the sink; the client leaves meanwhile."""
    memory, slow = MemorySink(), SlowSink(0.01)
    mw = HandshakeMiddleware(
        accepting_app,
        policy=POLICY,
        audit=[memory, slow],
        audit_fail_closed=True,
    )
    script = waiting(CONNECT, DISCONNECT)
    script.send_error = ConnectionResetError("gone while the audit was written")
    with nothing_left_behind():
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(mw(ws_scope(origin=ORIGIN), script.receive, script.send), 5)
        await settle(mw)
    # In fail-closed mode the event is written before the accept goes out; the accept then
    # failed, so a correction with the same id says what the client really got: nothing.
    accepted, correction = memory.events
    assert (accepted.outcome, accepted.status) == (Outcome.ACCEPTED, 101)
    assert (correction.outcome, correction.status) == (Outcome.CLIENT_GONE, None)
    assert correction.id == accepted.id
    assert slow.finished == 2


async def test_cancelled_during_a_fail_closed_sink() -> None:
    memory, slow = MemorySink(), SlowSink(None)
    mw = HandshakeMiddleware(
        accepting_app,
        policy=POLICY,
        audit=[memory, slow],
        audit_fail_closed=True,
        audit_timeout=30,
    )
    with nothing_left_behind():
        slow.delay = 0.0  # the correction goes to this sink too: let it through
        await run_until_cancelled(mw, waiting(CONNECT), lambda: slow.started == 1)
        await settle(mw)
    assert slow.started == 2
    # The memory sink had the accepted event when the task was cancelled while the slow sink
    # was awaited: the client got nothing, and a correction with the same id says so.
    accepted, correction = memory.events
    assert (accepted.outcome, correction.outcome) == (Outcome.ACCEPTED, Outcome.CLIENT_GONE)
    assert (correction.id, correction.status) == (accepted.id, None)
    assert slow.finished == 1  # the correction; the accepted event's call was cut short


# -- right after accept --------------------------------------------------------------------------


async def test_gone_right_after_accept() -> None:
    sink = MemorySink()
    mw = HandshakeMiddleware(accepting_app, policy=POLICY, audit=sink)
    script = waiting(CONNECT, DISCONNECT)
    with nothing_left_behind():
        await asyncio.wait_for(mw(ws_scope(origin=ORIGIN), script.receive, script.send), 5)
        await settle(mw)
    event = one_event(sink)
    assert (event.outcome, event.status) == (Outcome.ACCEPTED, 101)
    assert [m["type"] for m in script.sent] == ["websocket.accept"]


async def test_gone_while_the_accept_is_sent() -> None:
    sink = MemorySink()
    mw = HandshakeMiddleware(accepting_app, policy=POLICY, audit=sink)
    script = waiting(CONNECT)
    script.send_error = ConnectionResetError("gone")
    with nothing_left_behind():
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(mw(ws_scope(origin=ORIGIN), script.receive, script.send), 5)
        await settle(mw)
    event = one_event(sink)
    assert (event.outcome, event.reason, event.status) == (Outcome.CLIENT_GONE, "client_gone", None)


async def test_cancelled_after_accept() -> None:
    sink = MemorySink()
    mw = HandshakeMiddleware(accepting_app, policy=POLICY, audit=sink)
    script = waiting(CONNECT)
    with nothing_left_behind():
        await run_until_cancelled(mw, script, lambda: bool(script.sent))
        await settle(mw)
    assert one_event(sink).outcome == Outcome.ACCEPTED


async def test_many_vanishing_clients_leave_no_state() -> None:
    """A burst of connections abandoned at random steps: one event each, nothing pending."""
    sink = MemorySink(maxlen=10_000)
    slow = SlowSink(None)
    mw = HandshakeMiddleware(
        accepting_app,
        policy=POLICY,
        audit=[sink, slow],
        audit_timeout=0.05,
    )
    steps: list[Callable[[], Awaitable[None]]] = []
    for n in range(300):
        scope = ws_scope(origin=ORIGIN if n % 3 else EVIL, key=new_key())
        script = waiting(*[(DISCONNECT,), (CONNECT, DISCONNECT), (CONNECT,)][n % 3])
        if n % 5 == 0:
            script.send_error = ConnectionResetError("gone")

        async def one(script: Script = script, scope: Any = scope) -> None:
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                await asyncio.wait_for(mw(scope, script.receive, script.send), 0.2)

        steps.append(one)
    with nothing_left_behind():
        await asyncio.gather(*(step() for step in steps))
        await settle(mw)
    assert len(sink.events) == 300
    assert len({event.id for event in sink.events}) == 300
    assert mw.auditor._pending == set()
