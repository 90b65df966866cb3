"""The store interface: ``MemoryStore`` and ``RedisStore`` against a real
redis-server (no fake Redis), called directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake import HandshakeStore, MemoryStore, StoreError
from asgi_ws_handshake.policy import Rate
from asgi_ws_handshake.stores.redis import RedisStore
from tests.redis_server import RedisServer


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


# -- MemoryStore -------------------------------------------------------------------------


def test_memory_store_is_a_handshake_store() -> None:
    assert isinstance(MemoryStore(), HandshakeStore)


def test_memory_hit_moving_window_refuses_then_recovers() -> None:
    # limits' moving window over its in-memory storage: 2 per second.
    store = MemoryStore()

    async def scenario() -> list[int]:
        got = [await store.hit("a", 2, 1), await store.hit("a", 2, 1)]
        got.append(await store.hit("a", 2, 1))  # the window holds 2: refused, Retry-After 1
        got.append(await store.hit("b", 2, 1))  # another name has its own window
        await asyncio.sleep(1.1)  # both hits left the window
        got.append(await store.hit("a", 2, 1))
        return got

    assert run(scenario()) == [0, 0, 1, 0, 0]


def test_memory_retry_after_counts_down_the_window() -> None:
    store = MemoryStore()

    async def scenario() -> list[int]:
        return [await store.hit("a", 1, 60) for _ in range(3)]

    first, second, third = run(scenario())
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


# -- RedisStore against a real redis-server ----------------------------------------------


_prefixes = iter(range(10**6))


def with_store(
    server: RedisServer, scenario: Callable[[RedisStore], Awaitable[Any]], **options: Any
) -> Any:
    async def main() -> Any:
        store = RedisStore(server.url, prefix=f"unit{next(_prefixes)}:", **options)
        try:
            return await scenario(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


def test_redis_store_is_a_handshake_store(redis: RedisServer) -> None:
    assert with_store(redis, lambda s: asyncio.sleep(0, isinstance(s, HandshakeStore)))


def test_redis_remember_key_set_nx(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[object]:
        return [
            await store.remember_key("k1", 60),
            await store.remember_key("k1", 60),
            await store.remember_key("k2", 60),
            0 < await store.client.pttl(f"{store.prefix}key:k1") <= 60_000,
        ]

    assert with_store(redis, scenario) == [False, True, False, True]


def test_redis_hit_counts_through_limits_moving_window(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[int]:
        got = [await store.hit("a", 2, 60) for _ in range(3)]
        got.append(await store.hit("b", 2, 60))
        # limits' keys live under our prefix
        got.append(len([k async for k in store.client.scan_iter(f"{store.prefix}rate*")]))
        return got

    first, second, refused, other, keys = with_store(redis, scenario)
    assert (first, second, other) == (0, 0, 0)
    assert 59 <= refused <= 60  # Retry-After: when the first hit leaves the window
    assert keys >= 1


def test_redis_acquire_caps_all_or_nothing_and_release(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[object]:
        caps = {"c1": 1, "total": 2}
        got: list[object] = [
            await store.acquire("l1", caps),
            await store.acquire("l2", caps),
            await store.acquire("l3", {"c2": 1, "total": 2}),
            await store.acquire("l4", {"c3": 1, "total": 2}),
        ]
        zcard = store.client.zcard
        got += [await zcard(f"{store.prefix}conn:total"), await zcard(f"{store.prefix}conn:c3")]
        await store.release("l1")
        await store.release("l1")
        got += [await zcard(f"{store.prefix}conn:c1"), await zcard(f"{store.prefix}conn:total")]
        got.append(await store.acquire("l5", caps))
        return got

    assert with_store(redis, scenario) == [None, "c1", None, "total", 2, 0, 0, 1, None]


def test_redis_live_leases_are_refreshed_and_lost_ones_expire(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[Any]:
        key = f"{store.prefix}conn:total"
        await store.acquire("live", {"total": 5})
        # A lease from a "crashed" process: in Redis, but no process refreshes it.
        dead = RedisStore(client=store.client, prefix=store.prefix, lease_ttl=1.0)
        await dead.acquire("dead", {"total": 5})
        dead._live.clear()
        await dead.aclose()
        assert await store.client.zcard(key) == 2
        deadline = time.monotonic() + 10
        while await store.client.zrange(key, 0, -1) != [b"live"]:  # refreshes sweep "dead"
            assert time.monotonic() < deadline, "the dead lease did not expire"
            await asyncio.sleep(0.1)
        # Two lease lifetimes later the live lease still counts, thanks to refreshes.
        await asyncio.sleep(2.0)
        return list(await store.client.zrange(key, 0, -1))

    assert with_store(redis, scenario, lease_ttl=1.0) == [b"live"]


def test_redis_refresh_readds_leases_lost_by_the_server(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[Any]:
        await store.acquire("l1", {"total": 5})
        await store.client.delete(f"{store.prefix}conn:total")  # as after a restart
        await store.refresh()
        return list(await store.client.zrange(f"{store.prefix}conn:total", 0, -1))

    assert with_store(redis, scenario) == [b"l1"]


def test_redis_unreachable_raises_store_error_in_bounded_time(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # never started: connection refused

    async def scenario(store: RedisStore) -> list[str]:
        errors = []
        for call in (
            store.remember_key("k", 10),
            store.hit("a", 1, 10),
            store.acquire("l", {"a": 1}),
        ):
            with pytest.raises(StoreError) as caught:
                await call
            errors.append(str(caught.value).split(":")[0])
        return errors

    assert with_store(server, scenario, timeout=0.3) == ["remember_key", "hit", "acquire"]


def test_redis_hung_server_times_out_then_recovers(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[object]:
        got: list[object] = [await store.remember_key("before", 60)]
        redis.pause()
        try:
            with pytest.raises(StoreError, match="TimeoutError"):
                async with asyncio.timeout(5):  # bounded: a hang fails the test
                    await store.remember_key("during", 60)
            with pytest.raises(StoreError, match="retrying shortly"):
                await store.remember_key("during", 60)  # fails fast while backing off
        finally:
            redis.resume()
        await asyncio.sleep(store.retry_interval)
        got.append(await store.remember_key("after", 60))
        return got

    assert with_store(redis, scenario, timeout=0.3, retry_interval=0.3) == [False, False]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of url or client"),
        ({"url": "redis://x", "timeout": 0}, "invalid timeout 0"),
        ({"url": "redis://x", "lease_ttl": 0.5}, "invalid lease_ttl 0.5"),
        ({"url": "redis://x", "retry_interval": -1}, "invalid retry_interval -1"),
    ],
)
def test_redis_store_validates_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisStore(**options)


def test_policy_file_configures_limits_and_a_redis_store(redis: RedisServer) -> None:
    from asgi_ws_handshake.config import parse_policy_file

    data = {
        "rate_limit": "3/minute",
        "rate_limit_total": "100 per hour",
        "max_connections": 4,
        "max_connections_per_client": 2,
        "on_store_error": "open",
        "store": {"type": "redis", "url": redis.url, "prefix": "file:", "lease_ttl": 5.0},
    }
    policy_file = parse_policy_file(data)
    policy = policy_file.policy
    assert (policy.client_rate, policy.total_rate) == (Rate(3, 60), Rate(100, 3600))
    assert (policy.max_connections, policy.max_connections_per_client) == (4, 2)
    assert policy.on_store_error == "open"

    async def scenario() -> bool:
        store = policy_file.store.build()
        assert isinstance(store, RedisStore)
        try:
            assert (store.prefix, store.lease_ttl) == ("file:", 5.0)
            return await store.remember_key("from-file", 10)
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) is False
