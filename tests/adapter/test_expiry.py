"""Sockets that end when they must: ``max_connection_age`` and the identity's ``expires_at``.

Unit tests with a controllable clock: the event loop's own clock (what ``loop.call_at`` reads)
and the middleware's wall clock move together, by hand, so "not before, and then at once" is
deterministic. The real-socket test with a short real deadline is in test_identity_servers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asgi_ws_handshake import HandshakePolicy, MemorySink, get_handshake
from asgi_ws_handshake.identity import AuthRequest, Identity
from asgi_ws_handshake.middleware import Receive, Scope, Send
from asgi_ws_handshake.session import AGE_REASON, EXPIRY_REASON, GuardClosed
from tests.asgi import Script, run, ws_scope

NOW = 1_800_000_000.0


class Clock:
    """The running loop's clock plus an offset moved by hand, and a wall clock beside it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.offset = 0.0
        self.real = loop.time

    def loop_time(self) -> float:
        return self.real() + self.offset

    def wall(self) -> float:
        return NOW + self.offset

    async def advance(self, seconds: float) -> None:
        self.offset += seconds
        for _ in range(5):  # let due timers and the tasks they start run
            await asyncio.sleep(0)


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    loop = asyncio.get_running_loop()
    found = Clock(loop)
    monkeypatch.setattr(loop, "time", found.loop_time)
    return found


def closes(script: Script) -> list[dict[str, Any]]:
    return [dict(m) for m in script.sent if m["type"] == "websocket.close"]


def sinks() -> MemorySink:
    return MemorySink(closes=True)


async def test_max_connection_age_closes_at_the_deadline_not_before(clock: Clock) -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await clock.advance(9.9)
        seen.append(list(closes(script)))
        await clock.advance(0.2)
        seen.append(list(closes(script)))
        await send({"type": "websocket.close", "code": 1000})  # too late: dropped
        with pytest.raises(GuardClosed):
            await send({"type": "websocket.send", "text": "after the close"})

    script = Script(then_disconnect=False)
    sink = sinks()
    result = await run(
        app,
        ws_scope(),
        policy=HandshakePolicy(max_connection_age=10),
        script=script,
        audit=sink,
        clock=clock.wall,
    )
    assert seen[0] == []
    assert seen[1] == [{"type": "websocket.close", "code": 1008, "reason": AGE_REASON}]
    assert closes(result.script) == seen[1]  # exactly one close: the app's was dropped
    (event,) = sink.events
    (closed,) = sink.closes
    assert (closed.closed_by, closed.code, closed.reason) == ("guard", 1008, AGE_REASON)
    assert closed.id == event.id
    assert closed.lifetime >= 0


async def test_the_identity_expiry_closes_with_the_configured_code(clock: Clock) -> None:
    def hook(request: AuthRequest) -> Identity:
        return Identity("alice", expires_at=NOW + 5)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await clock.advance(4.9)
        assert closes(script) == []
        await clock.advance(0.2)
        # The app learns through its sends (Starlette turns an OSError into a disconnect);
        # raising it out of the app is the guard's business, never the server's.
        await send({"type": "websocket.send", "text": "x"})

    script = Script(then_disconnect=False)
    sink = sinks()
    policy = HandshakePolicy(authenticate=hook, max_connection_age=60, expiry_close_code=4001)
    await run(app, ws_scope(), policy=policy, script=script, audit=sink, clock=clock.wall)
    assert closes(script) == [{"type": "websocket.close", "code": 4001, "reason": EXPIRY_REASON}]
    (closed,) = sink.closes
    assert (closed.closed_by, closed.code, closed.to_dict()["subject"]) == ("guard", 4001, "alice")


async def test_the_age_wins_when_it_comes_first_and_close_on_expiry_can_be_off(
    clock: Clock,
) -> None:
    def hook(request: AuthRequest) -> Identity:
        return Identity("alice", expires_at=NOW + 5)

    for policy, when in (
        (HandshakePolicy(authenticate=hook, max_connection_age=3), 3.1),
        (HandshakePolicy(authenticate=hook, max_connection_age=30, close_on_expiry=False), 30.1),
    ):
        script = Script(then_disconnect=False)

        async def app(
            scope: Scope, receive: Receive, send: Send, when: float = when, script: Script = script
        ) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await clock.advance(when - 0.2)
            assert closes(script) == []
            await clock.advance(0.2)

        await run(app, ws_scope(), policy=policy, script=script, clock=clock.wall)
        assert [m["reason"] for m in closes(script)] == [AGE_REASON]


async def test_the_app_closing_first_cancels_the_timer(clock: Clock) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await clock.advance(5)
        await send({"type": "websocket.close", "code": 1000})
        await clock.advance(10)

    script = Script(then_disconnect=False)
    sink = sinks()
    await run(
        app,
        ws_scope(),
        policy=HandshakePolicy(max_connection_age=10),
        script=script,
        audit=sink,
        clock=clock.wall,
    )
    assert closes(script) == [{"type": "websocket.close", "code": 1000}]
    (closed,) = sink.closes
    assert closed.closed_by == "app"


@pytest.mark.parametrize("app_first", [True, False])
async def test_a_close_at_the_same_moment_is_sent_once(clock: Clock, app_first: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        clock.offset += 10.5  # due now; the timer runs at the loop's next turn
        if not app_first:  # the timer fires first (it is queued behind this task's turn)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await send({"type": "websocket.close", "code": 1000})

    script = Script(then_disconnect=False)
    sink = sinks()
    await run(
        app,
        ws_scope(),
        policy=HandshakePolicy(max_connection_age=10),
        script=script,
        audit=sink,
        clock=clock.wall,
    )
    sent = closes(script)
    assert len(sent) == 1
    assert sent[0]["code"] == (1000 if app_first else 1008)
    assert sink.closes[0].closed_by == ("app" if app_first else "guard")


async def test_the_guards_close_in_flight_finishes_before_the_connection_ends(
    clock: Clock,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        clock.offset += 11
        for _ in range(2):  # the timer fires and starts its close task; the app returns
            await asyncio.sleep(0)
        assert closes(script) == []

    script = Script(then_disconnect=False)
    await run(
        app, ws_scope(), policy=HandshakePolicy(max_connection_age=10), script=script,
        clock=clock.wall,
    )  # fmt: skip
    assert [m["code"] for m in closes(script)] == [1008]


async def test_a_client_that_left_is_not_closed_again(clock: Clock) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        await clock.advance(20)

    script = Script(then_disconnect=True)
    sink = sinks()
    await run(
        app,
        ws_scope(),
        policy=HandshakePolicy(max_connection_age=10),
        script=script,
        audit=sink,
        clock=clock.wall,
    )
    assert closes(script) == []
    assert sink.closes[0].closed_by == "app"


async def test_the_guards_close_failing_is_kept_from_the_server(clock: Clock) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await clock.advance(11)

    script = Script(
        then_disconnect=False,
        send_error=OSError("the client left at the same moment"),
        send_error_on="websocket.close",
    )
    await run(
        app, ws_scope(), policy=HandshakePolicy(max_connection_age=10), script=script,
        clock=clock.wall,
    )  # fmt: skip
    assert closes(script) == []


async def test_an_unrelated_app_error_still_propagates(clock: Clock) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise KeyError("a bug of the app's")

    with pytest.raises(KeyError):
        await run(app, ws_scope(), policy=HandshakePolicy(max_connection_age=10))


async def test_refused_handshakes_start_no_timer(clock: Clock) -> None:
    result = await run(
        None, ws_scope(origin="https://evil.test"), policy=HandshakePolicy(max_connection_age=1)
    )
    await clock.advance(5)
    assert closes(result.script) == []
    assert result.sink.events[0].status == 403


async def test_sockets_without_a_deadline_talk_to_the_server_directly() -> None:
    holders: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        holders.append(get_handshake(scope))
        conn = holders[-1]
        holders.append((conn.send_, conn.receive_))

    script = Script()
    await run(app, ws_scope(), policy=HandshakePolicy(), script=script)
    send_, receive_ = holders[1]
    assert send_ == script.send
    assert receive_ == script.receive
    holders.clear()
    script = Script()
    await run(app, ws_scope(), policy=HandshakePolicy(max_connection_age=9), script=script)
    send_, _ = holders[1]
    assert send_ != script.send


async def test_the_expiry_is_a_moment_and_the_age_counts_from_the_accept(clock: Clock) -> None:
    def hook(request: AuthRequest) -> Identity:
        return Identity("alice", expires_at=NOW + 5)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await clock.advance(3)  # the app takes its time before accepting
        await send({"type": "websocket.accept"})
        await clock.advance(1.9)  # 4.9 s after the handshake: still open
        assert closes(script) == []
        await clock.advance(0.2)  # the credential's moment has passed

    script = Script(then_disconnect=False)
    policy = HandshakePolicy(authenticate=hook, max_connection_age=4)
    await run(app, ws_scope(), policy=policy, script=script, clock=clock.wall)
    assert [m["reason"] for m in closes(script)] == [EXPIRY_REASON]
