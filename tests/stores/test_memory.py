"""``MemoryStore``, called directly: reused keys in two generations (bounded, each key for its
own TTL), moving-window rates, connection leases, ticket redemption."""

from __future__ import annotations

import asyncio

import pytest

from asgi_ws_handshake import HandshakeStore, MemoryStore, StoreError
from tests.support import new_key


def test_memory_store_is_a_handshake_store() -> None:
    assert isinstance(MemoryStore(), HandshakeStore)


async def test_memory_hit_moving_window_refuses_then_recovers() -> None:
    # limits' moving window over its in-memory storage: 2 per second.
    store = MemoryStore()

    async def scenario() -> list[int]:
        got = [await store.hit("a", 2, 1), await store.hit("a", 2, 1)]
        got.append(await store.hit("a", 2, 1))  # the window holds 2: refused, Retry-After 1
        got.append(await store.hit("b", 2, 1))  # another name has its own window
        await asyncio.sleep(1.1)  # both hits left the window
        got.append(await store.hit("a", 2, 1))
        return got

    assert await scenario() == [0, 0, 1, 0, 0]


async def test_memory_retry_after_counts_down_the_window() -> None:
    store = MemoryStore()

    async def scenario() -> list[int]:
        return [await store.hit("a", 1, 60) for _ in range(3)]

    first, second, third = await scenario()
    assert first == 0
    assert 59 <= second <= 60  # seconds until the counted hit leaves the 60 s window
    assert third <= second  # refused hits are not counted: the window does not move


def test_memory_acquire_caps_all_or_nothing_and_release() -> None:
    store = MemoryStore()  # answers at once: no awaitable
    caps = {"c1": 1, "total": 2}
    got: list[object] = [
        store.acquire("l1", caps),
        store.acquire("l2", caps),  # c1 is full
        store.acquire("l3", {"c2": 1, "total": 2}),
        store.acquire("l4", {"c3": 1, "total": 2}),  # total is full
        store.connections("total"),
        store.connections("c3"),  # the refused lease counted nowhere
    ]
    store.release("l1")
    store.release("l1")  # twice: harmless
    store.release("unknown")
    got += [store.connections("c1"), store.connections("total")]
    got.append(store.acquire("l5", caps))
    assert got == [None, "c1", None, "total", 2, 0, 0, 1, None]


def test_memory_same_lease_twice_is_an_error() -> None:
    store = MemoryStore()
    store.acquire("l1", {"a": 5})
    with pytest.raises(ValueError, match="'l1'"):
        store.acquire("l1", {"a": 5})


def test_memory_store_bounds_and_expiry() -> None:
    now = [0.0]
    store = MemoryStore(max_keys=2, clock=lambda: now[0])  # two generations of one key each
    assert store.remember_key("a", 10) is False
    assert store.remember_key("a", 10) is True
    assert store.remember_key("b", 10) is False
    assert store.remember_key("c", 10) is False  # the generation holding "a" is dropped
    assert len(store) == 2
    assert store.remember_key("a", 10) is False
    now[0] = 100.0  # everything expired
    assert store.remember_key("b", 10) is False
    assert store.remember_key("b", 10) is True
    assert len(store) <= 2
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=0)


def test_memory_store_bound_holds_under_a_burst() -> None:
    store = MemoryStore(max_keys=1000)
    keys = [new_key() for _ in range(20_000)]
    for key in keys:
        assert store.remember_key(key, 600) is False
    assert 500 <= len(store) <= 1000  # two generations of at most 500 each
    assert all(store.remember_key(key, 600) is True for key in keys[-500:])  # the newest half
    assert store.remember_key(keys[0], 600) is False  # the oldest were forgotten


def test_memory_store_forgets_after_ttl() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    assert store.remember_key("a", 10) is False
    assert store.remember_key("a", 10) is True
    now[0] = 10.5
    assert store.remember_key("b", 10) is False
    assert store.remember_key("a", 10) is False  # expired: remembered afresh
    now[0] = 31.0  # everything older than 20.5 s is gone
    assert store.remember_key("c", 10) is False
    assert len(store) <= 2
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=0)


def test_memory_store_keeps_each_key_for_its_own_ttl() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    assert store.remember_key("long", 100) is False
    assert store.remember_key("short", 1) is False  # beside a longer-lived key (two routes)
    now[0] = 5.0
    assert store.remember_key("short", 1) is False  # expired, although its generation lives
    assert store.remember_key("short", 1) is True
    assert store.remember_key("long", 100) is True
    now[0] = 250.0  # the old generation has expired: dropped whole, O(1)
    assert store.remember_key("new", 1) is False
    assert len(store) == 2  # "new", and "short" (expired) in what is now the old generation
    assert store.remember_key("short", 1) is False
    assert store.remember_key("long", 100) is False


def test_memory_store_redeem_is_bounded_and_expires() -> None:
    now = [0.0]
    store = MemoryStore(max_keys=2, clock=lambda: now[0])
    assert store.redeem("a", 10)
    assert not store.redeem("a", 10)
    assert store.redeem("b", 10)
    with pytest.raises(StoreError, match="unexpired tickets"):
        store.redeem("c", 10)
    now[0] = 11.0
    assert store.redeem("c", 10)  # the expired ones made room
    assert store.redeem("a", 10)  # and an expired ticket id is forgotten


def test_at_its_bound_after_churn_a_key_costs_what_the_readme_says() -> None:
    """What the store holds at its bound once both generations have filled and rotated: the
    README's figure (about 135 B per key, key string included; the old store held ~248)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        store = MemoryStore(max_keys=20_000)
        for _ in range(3):  # three times the bound: churned
            batch = [new_key() for _ in range(20_000)]
            for key in batch:
                store.remember_key(key, 600.0)
            del batch
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert 10_000 <= len(store) <= 20_000  # bounded; the latest half always held
    assert retained / len(store) < 160, retained / len(store)
