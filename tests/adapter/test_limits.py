"""The middleware's rate limits, connection caps and store failures, driven with a scripted
``receive`` and a recording ``send`` over the in-memory store (and a store that fails)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import pytest

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, MemorySink, MemoryStore, Outcome
from asgi_ws_handshake.middleware import Message, Receive, Scope, Send
from asgi_ws_handshake.stores import StoreError
from tests.asgi import Script, accepting_app, run, ws_scope
from tests.support import new_key


def connect(mw: HandshakeMiddleware, client: str = "203.0.113.7") -> Script:
    """A connection from ``client`` (a fresh key each), left open until the test closes it."""
    script = Script(then_disconnect=False)
    scope = ws_scope(origin=None, host="example.com", key=new_key(), client=(client, 50000))
    script.start(mw, scope)
    return script


def headers(message: Message) -> dict[bytes, bytes]:
    return dict(message["headers"])


def make(
    app: Any = accepting_app, store: Any = None, **policy: Any
) -> tuple[HandshakeMiddleware, MemorySink]:
    sink = MemorySink()
    mw = HandshakeMiddleware(
        app,
        policy=HandshakePolicy(**policy),
        audit=sink,
        store=MemoryStore() if store is None else store,
    )
    return mw, sink


async def test_rate_limit_per_client_429_with_retry_after() -> None:
    mw, sink = make(rate_limit="2/minute")
    statuses = []
    for client in ("198.51.100.1", "198.51.100.1", "198.51.100.1", "198.51.100.2"):
        conn = connect(mw, client)
        statuses.append(await conn.status())
        if statuses[-1] == 101:
            await conn.close()
        else:
            # RFC 6585 4 / RFC 9110 10.2.3
            assert headers(await conn.answer())[b"retry-after"] == b"60"
    assert statuses == [101, 101, 429, 101]
    refused = [e for e in sink.events if e.reason == "rate_limited"]
    assert len(refused) == 1
    assert refused[0].status == 429
    assert refused[0].detail == "client handshake rate exceeded"


async def test_rate_limit_total_counts_all_clients() -> None:
    mw, sink = make(rate_limit_total="2/hour")
    statuses = []
    for n in range(3):
        conn = connect(mw, f"198.51.100.{n}")
        statuses.append(await conn.status())
        if statuses[-1] == 101:
            await conn.close()
    assert statuses == [101, 101, 429]
    assert sink.events[-1].detail == "overall handshake rate exceeded"
    assert headers(await conn.answer())[b"retry-after"] == b"3600"


async def test_rejected_by_policy_costs_no_rate_hit() -> None:
    store = MemoryStore()
    mw, _ = make(store=store, rate_limit="1/minute", allow_missing_origin=False)
    conn = connect(mw)
    assert await conn.status() == 403
    assert store._rates is None  # no rate was even looked at


async def test_connection_caps_503_and_release_on_close() -> None:
    store = MemoryStore()
    mw, sink = make(store=store, max_connections_per_client=1, max_connections=2)
    a1 = connect(mw, "198.51.100.1")
    assert await a1.status() == 101
    a2 = connect(mw, "198.51.100.1")
    assert await a2.status() == 503
    assert headers(await a2.answer())[b"retry-after"] == b"5"
    assert sink.events[-1].detail == "client connection cap reached"
    b1 = connect(mw, "198.51.100.2")
    assert await b1.status() == 101
    c1 = connect(mw, "198.51.100.3")
    assert await c1.status() == 503
    assert sink.events[-1].detail == "overall connection cap reached"
    assert sink.events[-1].reason == "too_many_connections"
    assert store.connections("default:total") == 2
    await a1.close()
    await b1.close()
    assert store.connections("default:total") == 0
    assert store.connections("default:client:198.51.100.1") == 0
    again = connect(mw, "198.51.100.1")
    assert await again.status() == 101
    await again.close()


async def raise_after_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    raise RuntimeError("boom")


async def raise_before_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    raise RuntimeError("boom")


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.close", "code": 1000})


async def server_close(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 1000})


async def never_answers(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await asyncio.sleep(3600)


@pytest.mark.parametrize(
    "app", [raise_after_accept, raise_before_accept, refuse, server_close, never_answers]
)
async def test_lease_released_however_the_app_ends(app: Any) -> None:
    store = MemoryStore()
    mw, _ = make(app, store=store, max_connections=1)
    conn = connect(mw)
    task = conn.task
    assert task is not None
    if app is never_answers:
        await asyncio.sleep(0.05)
        assert store.connections("default:total") == 1
        task.cancel()  # the server cancels the app (shutdown, vanished client)
    else:
        await conn.answer()
    raising = app in (raise_after_accept, raise_before_accept, never_answers)
    with (
        pytest.raises((RuntimeError, asyncio.CancelledError))
        if raising
        else contextlib.nullcontext()
    ):
        await asyncio.wait_for(task, 5)
    assert store.connections("default:total") == 0


class BrokenStore(MemoryStore):
    """A store whose every call fails, as a store that cannot reach its server does."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def remember_key(self, key: str, ttl: float) -> bool:  # type: ignore[override]
        self.calls.append("remember_key")
        raise StoreError("down")

    async def hit(self, name: str, limit: int, window: int) -> int:
        self.calls.append("hit")
        raise StoreError("down")

    async def acquire(self, lease: str, caps: Mapping[str, int]) -> str | None:  # type: ignore[override]
        self.calls.append("acquire")
        raise StoreError("down")


LIMITED = {"rate_limit": "5/minute", "max_connections": 5, "key_reuse": "reject"}


@pytest.mark.parametrize(
    ("policy", "status", "calls"),
    [
        # Fail closed (the default): 503 store_unavailable, no Retry-After, at the first failure.
        (LIMITED, 503, ["hit"]),
        ({"max_connections": 5, "key_reuse": "ignore"}, 503, ["acquire"]),
        ({"key_reuse": "reject"}, 503, ["remember_key"]),
        # A check that cannot refuse proceeds even when failing closed, marked.
        ({"key_reuse": "flag"}, 101, ["remember_key"]),
        # Fail open: proceeds, marked; the store is asked once per handshake, not per check.
        ({**LIMITED, "on_store_error": "open"}, 101, ["hit"]),
    ],
)
async def test_store_errors_follow_on_store_error(
    policy: dict[str, Any], status: int, calls: list[str]
) -> None:
    store = BrokenStore()
    mw, sink = make(store=store, **policy)
    conn = connect(mw)
    assert await conn.status() == status
    if status == 503:
        assert b"retry-after" not in headers(await conn.answer())
        assert conn.task is not None
        await asyncio.wait_for(conn.task, 5)
    else:
        await conn.close()
    (event,) = sink.events
    assert event.store_error is True
    assert event.reason == (None if status == 101 else "store_unavailable")
    assert store.calls == calls


class HangingStore(MemoryStore):
    async def hit(self, name: str, limit: int, window: int) -> int:
        await asyncio.sleep(3600)
        return 0


async def test_a_store_that_never_answers_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("asgi_ws_handshake.checks.STORE_DEADLINE", 0.2)

    mw, sink = make(store=HangingStore(), rate_limit="5/minute")
    conn = connect(mw)
    assert await conn.status() == 503
    assert sink.events[0].reason == "store_unavailable"


class FlakyStore(MemoryStore):
    """A store on another server: answers with awaitables, and can be down (or fail for
    some keys only)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.failing: set[str] = set()

    async def remember_key(self, key: str, ttl: float) -> bool:  # type: ignore[override]
        if self.down or key in self.failing:
            raise StoreError("down")
        return MemoryStore.remember_key(self, key, ttl)


@pytest.mark.parametrize("on_store_error", ["open", "closed"])
async def test_a_key_accepted_during_an_outage_is_remembered_once_the_store_is_back(
    on_store_error: str,
) -> None:
    store = FlakyStore()
    policy = HandshakePolicy(key_reuse="flag", on_store_error=on_store_error)  # type: ignore[arg-type]
    sink = MemorySink()

    async def once(key: str) -> None:
        script = Script()
        await mw(ws_scope(key=key), script.receive, script.send)

    async def accepting(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    mw = HandshakeMiddleware(accepting, policy=policy, store=store, audit=sink)
    replayed = new_key()
    store.down = True
    await once(replayed)  # "flag" cannot refuse: it passes, marked
    store.down = False
    store.failing = {replayed}
    await once(new_key())  # the store answers again, but the hand-over fails: kept for later
    assert mw.backlog._flushing is not None
    await asyncio.wait_for(mw.backlog._flushing, 5)
    assert [key for key, _ in mw.backlog.keys] == [replayed]
    store.failing = set()
    await once(new_key())  # the missed key is handed over now
    assert mw.backlog._flushing is not None
    await asyncio.wait_for(mw.backlog._flushing, 5)
    await once(replayed)
    first, _, _, again = sink.events
    assert (first.store_error, first.key_reused) == (True, None)
    assert (again.store_error, again.key_reused) == (False, True)  # the reuse is seen
    assert len(mw.backlog.keys) == 0


async def test_key_reuse_reject_and_a_failing_store_follows_on_store_error() -> None:
    class Broken(MemoryStore):
        async def remember_key(self, key: str, ttl: float) -> bool:  # type: ignore[override]
            raise ConnectionError("store down")

    policy = HandshakePolicy(key_reuse="reject")
    store = MemoryStore()
    first = await run(None, policy=policy, store=store)
    again = await run(None, policy=policy, store=store)
    assert first.sink.events[0].key_reused is False
    assert (again.script.sent[0]["status"], again.sink.events[0].reason) == (400, "key_reused")
    # on_store_error="closed" (the default): any error of the store is 503 store_unavailable.
    broken = await run(None, policy=policy, store=Broken())
    (event,) = broken.sink.events
    assert (broken.script.sent[0]["status"], event.reason, event.store_error) == (
        503,
        "store_unavailable",
        True,
    )
    # on_store_error="open": proceed, and the event says the store failed.
    open_policy = HandshakePolicy(key_reuse="reject", on_store_error="open")
    broken = await run(None, policy=open_policy, store=Broken())
    (event,) = broken.sink.events
    assert (event.outcome, event.store_error) == (Outcome.ACCEPTED, True)
