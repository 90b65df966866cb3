"""Several uvicorn processes sharing one real redis-server through ``RedisStore``.

Each process is a separate ``uvicorn`` on its own port, as two machines behind a load balancer
are; clients are told apart by ``X-Forwarded-For`` (uvicorn ``--proxy-headers`` sets
``scope["client"]`` from it), so each test uses its own client addresses.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py

from tests.fleet_support import (
    FLEET_POLICY,
    LEASE_TTL,
    Held,
    Load,
    Shot,
    address,
    audit_of,
    handshake,
    request,
    wait_until,
)
from tests.fleet_support import start_app as start_worker
from tests.redis_server import RedisServer, redis_server
from tests.support import Server, new_key, raw_handshake


def start_app(
    name: str, tmp: Path, redis: RedisServer, prefix: str, policy: dict[str, Any], **env: str
) -> Server:
    return start_worker(name, tmp, redis.url, prefix, policy, **env)


@pytest.fixture(scope="module")
def fleet(
    redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    tmp = tmp_path_factory.mktemp("fleet")
    a = start_app("worker-a", tmp, redis, "fleet:", FLEET_POLICY)
    try:
        b = start_app("worker-b", tmp, redis, "fleet:", FLEET_POLICY)
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def db(redis: RedisServer) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(redis.url, socket_timeout=5)
    yield client
    client.close()


def leases(db: redis_py.Redis, prefix: str, client: str) -> int:
    return int(db.zcard(f"{{{prefix}conn:default}}:client:{client}"))


def test_reused_key_accepted_by_one_worker_is_refused_by_the_other(
    fleet: tuple[Server, Server],
) -> None:
    a, b = fleet
    key = new_key()
    assert handshake(a, address(), key=key).status == 101
    refused = handshake(b, address(), key=key)
    assert refused.status == 400
    assert refused.body == b"key_reused\n"
    assert b.event_for_key(key)["reason"] == "key_reused"
    assert a.event_for_key(key)["outcome"] == "accepted"


def test_client_rate_limit_holds_across_workers(fleet: tuple[Server, Server]) -> None:
    a, b = fleet
    client = address()
    statuses = [handshake((a, b)[n % 2], client).status for n in range(10)]
    assert statuses == [101] * 10
    key = new_key()
    refused = handshake(a, client, key=key)
    assert refused.status == 429  # RFC 6585 4
    retry_after = refused.header("retry-after")
    assert retry_after is not None
    assert 1 <= int(retry_after) <= 60  # RFC 9110 10.2.3
    event = a.event_for_key(key)
    assert (event["reason"], event["status"], event["client"]) == (
        "rate_limited",
        429,
        f"{client}:0",
    )
    assert handshake(b, address()).status == 101  # another client is not limited


def test_client_connection_cap_holds_across_workers(
    fleet: tuple[Server, Server], db: redis_py.Redis
) -> None:
    a, b = fleet
    client = address()
    on_a, on_b = Held(a, client), Held(b, client)
    try:
        assert (on_a.response.status, on_b.response.status) == (101, 101)
        assert leases(db, "fleet:", client) == 2
        for server in (a, b):
            key = new_key()
            refused = handshake(server, client, key=key)
            assert refused.status == 503
            assert refused.header("retry-after") == "5"
            assert server.event_for_key(key)["reason"] == "too_many_connections"
        on_a.close()
        wait_until(lambda: leases(db, "fleet:", client) == 1, "the lease is released")
        again = Held(b, client)
        assert again.response.status == 101
        again.close()
    finally:
        on_b.close()


def _client_close(held: Held) -> None:
    held.close()


def _vanish(held: Held) -> None:
    held.vanish()


@pytest.mark.parametrize("ending", [_client_close, _vanish], ids=["client-close", "vanish"])
def test_lease_released_when_the_client_ends(
    fleet: tuple[Server, Server], db: redis_py.Redis, ending: Callable[[Held], None]
) -> None:
    a, _ = fleet
    client = address()
    held = Held(a, client)
    assert held.response.status == 101
    assert leases(db, "fleet:", client) == 1
    ending(held)
    wait_until(lambda: leases(db, "fleet:", client) == 0, "the lease is released")


@pytest.mark.parametrize(
    ("path", "status", "outcome"),
    [
        ("/server-close", 101, "accepted"),
        ("/raise-after", 101, "accepted"),
        ("/app-raise", 500, "app_error"),
        ("/app-return", 500, "app_error"),
        ("/app-close", 403, "app_rejected"),
        ("/app-deny", 401, "app_rejected"),
    ],
)
def test_lease_released_when_the_server_ends(
    fleet: tuple[Server, Server], db: redis_py.Redis, path: str, status: int, outcome: str
) -> None:
    a, _ = fleet
    client = address()
    held = Held(a, client, path=path)
    try:
        assert held.response.status == status
        # The app ran, so the lease had been taken; it is gone once the connection ended.
        assert a.event_for_key(held.key)["outcome"] == outcome
        wait_until(lambda: leases(db, "fleet:", client) == 0, "the lease is released")
    finally:
        held.sock.close()


def test_killed_workers_leases_expire_and_live_ones_are_kept(
    fleet: tuple[Server, Server],
    redis: RedisServer,
    db: redis_py.Redis,
    tmp_path: Path,
) -> None:
    a, _ = fleet
    doomed = start_app("worker-doomed", tmp_path, redis, "fleet:", FLEET_POLICY)
    survivor_client, lost_client = address(), address()
    survivor = Held(a, survivor_client)
    try:
        lost = Held(doomed, lost_client)
        assert (survivor.response.status, lost.response.status) == (101, 101)
        assert leases(db, "fleet:", lost_client) == 1
        doomed.proc.send_signal(signal.SIGKILL)  # no finally, no release: a crash
        doomed.proc.wait(10)
        lost.sock.close()
        # Nobody refreshes the lost lease: it stops counting within LEASE_TTL.
        wait_until(lambda: count_live(db, lost_client) == 0, "the crashed lease expires")
        # Meanwhile the survivor's lease, refreshed by worker A, has outlived several TTLs.
        time.sleep(LEASE_TTL)
        assert count_live(db, survivor_client) == 1
        again = Held(a, lost_client)
        again.close()
        assert again.response.status == 101
    finally:
        survivor.close()
        doomed.stop()


def count_live(db: redis_py.Redis, client: str) -> int:
    """Leases of ``client`` that have not expired (expired ones are swept lazily)."""
    seconds, micros = db.time()
    now_ms = seconds * 1000 + micros // 1000
    return int(db.zcount(f"{{fleet:conn:default}}:client:{client}", now_ms, "+inf"))


# -- the store goes away -----------------------------------------------------------------

OUTAGE_POLICY = {
    "key_reuse": "reject",
    "rate_limit": "100/minute",
    "max_connections": 50,
}


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[RedisServer, Server, Server]]:
    """A redis-server of its own (to stop), an app failing open and one failing closed."""
    with redis_server(tmp_path) as fragile:
        env = {"WSH_STORE_TIMEOUT": "0.3", "WSH_RETRY_INTERVAL": "0.3"}
        opened = start_app(
            "fail-open", tmp_path, fragile, "out:", {**OUTAGE_POLICY, "on_store_error": "open"},
            **env,
        )  # fmt: skip
        try:
            closed = start_app("fail-closed", tmp_path, fragile, "out:", OUTAGE_POLICY, **env)
        except BaseException:
            opened.stop()
            raise
        try:
            yield fragile, opened, closed
        finally:
            opened.stop()
            closed.stop()


def attempt(server: Server) -> tuple[int, dict[str, Any]]:
    """One handshake, answered within raw_handshake's 5 s bound (a hang fails the test)."""
    key = new_key()
    response = raw_handshake(server.port, request(server, address(), key=key))
    return response.status, server.event_for_key(key)


def recovered(server: Server) -> bool:
    status, event = attempt(server)
    return status == 101 and event["store_error"] is False


@pytest.mark.parametrize("failure", ["stopped", "hung"])
def test_store_outage_fails_open_or_closed_then_recovers(
    outage: tuple[RedisServer, Server, Server], failure: str
) -> None:
    fragile, opened, closed = outage
    for server in (opened, closed):
        status, event = attempt(server)
        assert (status, event["store_error"]) == (101, False)

    if failure == "stopped":
        fragile.stop()
    else:
        fragile.pause()  # accepts connections, answers nothing: only timeouts help
    try:
        for _ in range(3):  # during the back-off too
            status, event = attempt(opened)
            assert (status, event["store_error"], event["reason"]) == (101, True, None)
            status, event = attempt(closed)
            assert (status, event["store_error"], event["reason"]) == (
                503,
                True,
                "store_unavailable",
            )
    finally:
        if failure == "stopped":
            fragile.start()
        else:
            fragile.resume()

    # The same apps, not restarted, use the store again.
    wait_until(lambda: recovered(closed), "the fail-closed app recovers")
    wait_until(lambda: recovered(opened), "the fail-open app recovers")


async def test_fail_closed_ends_within_a_retry_window_of_a_restart_under_load(
    tmp_path: Path,
) -> None:
    # #13 item 7 through real uvicorn: Redis is killed under load and restarted. Refusals
    # last until the first handshake the store answers after the restart, and none follows
    # it (a stale pooled connection failing later would start another fail-fast window).
    with redis_server(tmp_path) as fragile:
        worker = start_app("restart", tmp_path, fragile, "restart:", OUTAGE_POLICY)
        try:

            async def scenario() -> tuple[list[Shot], float, float]:
                load = Load([worker], concurrency=6)
                running = asyncio.create_task(load.run())
                await asyncio.sleep(1.0)  # steady: a pool of connections in use
                killed = time.monotonic()
                fragile.stop()
                await asyncio.sleep(1.0)
                await asyncio.to_thread(fragile.start)  # returns once it answers PING
                back = time.monotonic()
                await asyncio.sleep(3.0)
                load.stop.set()
                return await running, killed, back

            shots, killed, back = await scenario()
            events = audit_of([worker], shots)
        finally:
            worker.stop()
    assert [shot.error for shot in shots if shot.status == 0] == []
    assert {shot.status for shot in shots} == {101, 503}
    assert sorted(len(found) for found in events.values()) == [1] * len(shots)
    answered = [shot.done for shot in shots if shot.sent > back and shot.status == 101]
    assert answered, "the store did not recover by itself"
    recovered = min(answered)
    assert [shot for shot in shots if shot.sent > recovered and shot.status != 101] == []
    refused = [shot for shot in shots if shot.sent > back and shot.status == 503]
    print(
        f"\nredis down {back - killed:.2f} s; after it was back, {len(refused)} of"
        f" {sum(shot.sent > back for shot in shots)} handshakes refused, the last sent"
        f" {max((s.sent for s in refused), default=back) - back:.2f} s after"
        f" (retry_interval 1 s); first answered {recovered - back:.2f} s after"
    )
