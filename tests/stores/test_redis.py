"""``RedisStore`` against a real redis-server and valkey-server (no fake Redis), called
directly; policy files that configure it. ``MemoryStore``: tests/stores/test_memory.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake import HandshakeStore, StoreError
from asgi_ws_handshake.stores.rates import Rate
from asgi_ws_handshake.stores.redis import RedisStore
from asgi_ws_handshake.stores.redis_connect import parse_store_url
from asgi_ws_handshake.stores.redis_scripts import conn_key
from tests.redis_server import KINDS, RedisServer, redis_server

# -- RedisStore against a real redis-server ----------------------------------------------


_prefixes = iter(range(10**6))


async def with_store(
    server: RedisServer, scenario: Callable[[RedisStore], Awaitable[Any]], **options: Any
) -> Any:
    """``scenario`` on a fresh store (its own key prefix) on ``server``, closed afterwards."""
    store = RedisStore(server.url, prefix=f"unit{next(_prefixes)}:", **options)
    try:
        return await scenario(store)
    finally:
        await store.aclose()


async def test_redis_store_is_a_handshake_store(redis: RedisServer) -> None:
    assert await with_store(redis, lambda s: asyncio.sleep(0, isinstance(s, HandshakeStore)))


async def test_redis_remember_key_set_nx(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[object]:
        return [
            await store.remember_key("k1", 60),
            await store.remember_key("k1", 60),
            await store.remember_key("k2", 60),
            0 < await store.client.pttl(f"{store.prefix}key:k1") <= 60_000,
        ]

    assert await with_store(redis, scenario) == [False, True, False, True]


async def test_redis_hit_counts_through_limits_moving_window(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[int]:
        got = [await store.hit("a", 2, 60) for _ in range(3)]
        got.append(await store.hit("b", 2, 60))
        # limits' keys live under our prefix
        got.append(len([k async for k in store.client.scan_iter(f"{store.prefix}rate*")]))
        return got

    first, second, refused, other, keys = await with_store(redis, scenario)
    assert (first, second, other) == (0, 0, 0)
    assert 59 <= refused <= 60  # Retry-After: when the first hit leaves the window
    assert keys >= 1


def conn(store: RedisStore, name: str) -> str:
    """Where the connection counter ``name`` lives: ``{<prefix>conn:<route>}:<rest>``."""
    return conn_key(store.prefix, name)[1]


async def test_redis_acquire_caps_all_or_nothing_and_release(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[object]:
        caps = {"r:c1": 1, "r:total": 2}
        got: list[object] = [
            await store.acquire("l1", caps),
            await store.acquire("l2", caps),
            await store.acquire("l3", {"r:c2": 1, "r:total": 2}),
            await store.acquire("l4", {"r:c3": 1, "r:total": 2}),
        ]
        zcard = store.client.zcard
        got += [await zcard(conn(store, "r:total")), await zcard(conn(store, "r:c3"))]
        await store.release("l1")
        await store.release("l1")
        got += [await zcard(conn(store, "r:c1")), await zcard(conn(store, "r:total"))]
        got.append(await store.acquire("l5", caps))
        return got

    assert await with_store(redis, scenario) == [None, "r:c1", None, "r:total", 2, 0, 0, 1, None]


async def test_redis_acquire_without_caps_and_twice_for_one_lease(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[object]:
        shown = repr(store).replace(store.prefix, "<prefix>")
        got: list[object] = [shown, await store.acquire("l0", {})]
        await store.acquire("l1", {"r:total": 5})
        with pytest.raises(ValueError, match="lease 'l1' is already held"):
            await store.acquire("l1", {"r:total": 5})
        return got

    assert await with_store(redis, scenario) == [
        "RedisStore(kind='server', prefix='<prefix>', timeout=0.5)",
        None,
    ]


async def test_redis_counters_of_a_route_share_a_hash_tag(redis: RedisServer) -> None:
    # One script touches one hash slot: a route's counters share "{<prefix>conn:<route>}".
    assert conn_key("p:", "/chat/*:client:203.0.113.7") == (
        "{p:conn:/chat/*}",
        "{p:conn:/chat/*}:client:203.0.113.7",
    )
    assert conn_key("p:", "default:total") == ("{p:conn:default}", "{p:conn:default}:total")

    async def scenario(store: RedisStore) -> None:
        await store.acquire("l1", {"a:client:x": 1, "b:total": 1})

    with pytest.raises(ValueError, match="must share their route"):
        await with_store(redis, scenario)


async def test_redis_a_retried_call_is_answered_as_the_first_attempt_was(
    redis: RedisServer,
) -> None:
    # The store retries once on a fresh connection and cannot know whether the first attempt
    # ran: remembering the same key with the same token, or acquiring the same lease, again
    # must give the first answer (not "reused", not "full").
    async def scenario(store: RedisStore) -> list[object]:
        record = [f"{store.prefix}key:k1", 60_000]
        got: list[object] = [
            await store._remember(record[:1], ["token-a", record[1]]),
            await store._remember(record[:1], ["token-a", record[1]]),  # the retry
            await store._remember(record[:1], ["token-b", record[1]]),  # another handshake
        ]
        caps = {"r:client:x": 1}
        got.append(await store.acquire("l1", caps))
        store._live.pop("l1")  # as if the reply had been lost and acquire ran again
        got.append(await store.acquire("l1", caps))
        got.append(await store.acquire("l2", caps))  # a different lease is refused
        return got

    assert await with_store(redis, scenario) == [0, 0, 1, None, None, "r:client:x"]


async def test_redis_live_leases_are_refreshed_and_lost_ones_expire(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[Any]:
        key = conn(store, "r:total")
        await store.acquire("live", {"r:total": 5})
        # A lease from a "crashed" process: in Redis, but no process refreshes it.
        dead = RedisStore(client=store.client, prefix=store.prefix, lease_ttl=1.0)
        await dead.acquire("dead", {"r:total": 5})
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

    assert await with_store(redis, scenario, lease_ttl=1.0) == [b"live"]


async def test_redis_refresh_readds_leases_lost_by_the_server(redis: RedisServer) -> None:
    async def scenario(store: RedisStore) -> list[Any]:
        await store.acquire("l1", {"r:total": 5})
        await store.acquire("l2", {"s:total": 5})  # another route: another hash tag
        await store.client.delete(conn(store, "r:total"), conn(store, "s:total"))  # a restart
        await store.refresh()
        return [
            list(await store.client.zrange(conn(store, "r:total"), 0, -1)),
            list(await store.client.zrange(conn(store, "s:total"), 0, -1)),
        ]

    assert await with_store(redis, scenario) == [[b"l1"], [b"l2"]]


async def test_redis_unreachable_raises_store_error_in_bounded_time(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # never started: connection refused

    async def scenario(store: RedisStore) -> list[str]:
        errors = []
        for call in (
            store.remember_key("k", 10),
            store.hit("a", 1, 10),
            store.acquire("l", {"r:a": 1}),
        ):
            with pytest.raises(StoreError) as caught:
                await call
            errors.append(str(caught.value).split(":")[0])
        return errors

    assert await with_store(server, scenario, timeout=0.3) == ["remember_key", "hit", "acquire"]


async def test_redis_hung_server_times_out_then_recovers(redis: RedisServer) -> None:
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

    assert await with_store(redis, scenario, timeout=0.3, retry_interval=0.3) == [False, False]


async def mixed_calls(store: RedisStore, count: int, tag: str) -> list[object]:
    """``count`` concurrent calls of every kind; exceptions are returned, not raised."""

    async def one(n: int) -> object:
        if n % 3 == 0:
            return await store.remember_key(f"{tag}{n}", 60)
        if n % 3 == 1:
            return await store.hit(f"rate:{tag}{n % 7}", 10**6, 60)
        lease = f"{tag}{n}"
        got = await store.acquire(lease, {"r:total": 10**6})
        await store.release(lease)
        return got

    return list(await asyncio.gather(*(one(n) for n in range(count)), return_exceptions=True))


@pytest.mark.parametrize("kind", KINDS)
async def test_redis_restart_does_not_fail_calls_on_stale_pooled_connections(
    kind: str, tmp_path: Path
) -> None:
    # #13 item 7: after a restart every pooled connection is stale. Each must not fail a
    # call (and restart the fail-fast window): the store drops them and retries once.
    with redis_server(tmp_path, kind) as server:

        async def scenario(store: RedisStore) -> tuple[list[object], list[object]]:
            warm = await mixed_calls(store, 30, "warm")  # 30 pooled connections
            server.stop()
            server.start()  # while this loop is busy: no socket's end was read yet
            after = await mixed_calls(store, 30, "after")
            again = await mixed_calls(store, 30, "again")
            return warm + after, again

        first, second = await with_store(server, scenario)
    failed = [repr(result) for result in first + second if isinstance(result, BaseException)]
    assert failed == []


@pytest.mark.parametrize("kind", KINDS)
async def test_redis_outage_ends_within_one_retry_window_of_the_restart(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with redis_server(tmp_path, kind) as server:

        async def scenario(store: RedisStore) -> tuple[list[str], list[object]]:
            await mixed_calls(store, 30, "warm")
            await store.acquire("held", {"r:total": 10**6})  # refreshed every lease_ttl / 3
            server.stop()
            failures = [
                str(result).split(":")[1].strip()
                for result in await mixed_calls(store, 30, "down")
                if isinstance(result, StoreError)
            ]
            # The lease refresher fails too, says so, and keeps going.
            deadline = time.monotonic() + 10
            while "could not refresh connection leases" not in caplog.text:
                assert time.monotonic() < deadline, "no refresh was tried while the server was down"
                await asyncio.sleep(0.05)
            server.start()
            await asyncio.sleep(store.retry_interval)  # the window the outage opened
            return failures, await mixed_calls(store, 60, "back")

        with caplog.at_level(logging.WARNING, logger="asgi_ws_handshake"):
            during, after = await with_store(server, scenario, retry_interval=0.5, lease_ttl=1.0)
    # While down: the first calls find the server gone, the rest fail fast.
    assert set(during) <= {"ConnectionError", "store unavailable (retrying shortly)"}
    assert "ConnectionError" in during
    # One retry window after the server is back, every call is answered.
    assert [repr(r) for r in after if isinstance(r, BaseException)] == []


async def test_a_failure_does_not_close_the_store_again_after_a_success(tmp_path: Path) -> None:
    # The fail-fast window opens only when nothing succeeded since the failed call began:
    # a slow call that fails after the store answered others does not shut it again.
    store = RedisStore(RedisServer(tmp_path).url, retry_interval=30)

    async def slow_failure() -> None:
        await asyncio.sleep(0.2)
        raise ConnectionRefusedError("a call begun before the store came back")

    async def success() -> int:
        return 1

    async def scenario() -> list[object]:
        slow = asyncio.create_task(store._call("slow", slow_failure))
        await asyncio.sleep(0.05)
        got: list[object] = [await store._call("quick", success)]
        with pytest.raises(StoreError, match="ConnectionRefusedError"):
            await slow
        got.append(await store._call("next", success))  # not "retrying shortly"
        with pytest.raises(StoreError, match="ConnectionRefusedError"):
            await store._call("fails", slow_failure)  # nothing succeeded since it began
        with pytest.raises(StoreError, match="retrying shortly"):
            await store._call("next", success)
        await store.aclose()
        return got

    assert await scenario() == [1, 1]


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


async def test_policy_file_configures_limits_and_a_redis_store(redis: RedisServer) -> None:
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

    assert await scenario() is False


@pytest.mark.parametrize(
    ("url", "kind", "nodes", "service", "auth"),
    [
        ("redis://127.0.0.1:6379/0", "server", (), "", {}),
        ("unix:///run/redis.sock?db=1", "server", (), "", {}),
        (
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            "cluster",
            (("127.0.0.1", 7000), ("127.0.0.1", 7001)),
            "",
            {},
        ),
        (
            "REDIS+CLUSTER://app:p%40ss@a.internal,[::1]:7001/",
            "cluster",
            (("a.internal", 6379), ("::1", 7001)),
            "",
            {"username": "app", "password": "p@ss"},
        ),
        (
            "redis+sentinel://:secret@s1:5000,s2/my%20primary",
            "sentinel",
            (("s1", 5000), ("s2", 26379)),
            "my primary",
            {"password": "secret"},
        ),
    ],
)
def test_store_urls_name_a_server_a_cluster_or_a_sentinel_service(
    url: str, kind: str, nodes: tuple[tuple[str, int], ...], service: str, auth: dict[str, str]
) -> None:
    parsed = parse_store_url(url)
    assert (parsed.kind, parsed.nodes, parsed.service, parsed.auth) == (kind, nodes, service, auth)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379", "expected redis://, rediss://, unix://, redis+cluster://"),
        ("127.0.0.1:6379", "expected redis://"),
        ("redis+cluster://h:65536", "node 'h:65536' has a bad port"),
        ("redis+cluster://h:x", "node 'h:x' has a bad port"),
        ("redis+cluster://h:1,,h:2", "node '' has no host"),
        ("redis+cluster://[::1:7000", "bad node '[::1:7000'"),
        ("redis+cluster://h:1/2", "a cluster has database 0 only"),
        ("redis+cluster://h:1?ssl=true", "take no query options"),
        ("redis+sentinel://h:1", "name the service"),
        ("redis+sentinel://h:1/a/b", "name the service"),
        ("redis+sentinel://u:hunter2@h:1", "name the service"),
    ],
)
def test_bad_store_urls_are_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="invalid store url") as caught:
        RedisStore(url)
    assert problem in str(caught.value)
    assert "hunter2" not in str(caught.value)  # a password is never shown


def test_policy_file_urls_name_a_cluster_and_sentinel() -> None:
    from asgi_ws_handshake.config import PolicyFileError, parse_policy_file

    for url in ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", "redis+sentinel://h:1/svc"):
        spec = parse_policy_file({"store": {"type": "redis", "url": url}}).store
        assert spec.describe() == {"type": "redis", "url": url}
    with pytest.raises(PolicyFileError, match=r"store\.url: invalid store url") as caught:
        parse_policy_file({"store": {"type": "redis", "url": "redis+sentinel://u:pw@h:1"}})
    assert "pw" not in str(caught.value)
    assert "name the service" in str(caught.value)
