"""``RedisStore`` past one server: a real Redis or Valkey cluster (three primaries, three
replicas) and a Sentinel setup (primary, replica, three Sentinels), each shared by uvicorn
workers through ``redis+cluster://`` and ``redis+sentinel://`` URLs.

Reused keys, rates, connection caps and one-time tickets hold across the workers; then a
primary is killed under load and its replica promoted: the fail-closed workers refuse (503)
and the fail-open ones let handshakes through marked ``store_error`` for a bounded time, then
both recover by themselves, and every handshake is audited exactly once with the status its
client got.
The failover test kills a node, so it runs last for each deployment.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake.stores.redis import RedisStore
from tests.fleet_support import (
    FLEET_POLICY,
    Held,
    Load,
    Shot,
    address,
    audit_of,
    fleet,
    handshake,
    percentile,
    wait_until,
)
from tests.redis_server import CLIS, KINDS, SERVERS, RedisServer
from tests.redis_topologies import (
    SERVICE,
    LocalCluster,
    LocalSentinel,
    admin,
    local_cluster,
    local_sentinel,
)
from tests.support import (
    Server,
    handshake_lines,
    new_key,
    raw_handshake,
    running,
    uvicorn_argv,
)

PREFIX = "topo:"
CONN_TAG = f"{{{PREFIX}conn:default}}"  # every connection counter of the default route

DEPLOYMENTS = [
    pytest.param(
        (shape, kind),
        id=f"{shape}-{kind}",
        marks=pytest.mark.skipif(
            SERVERS[kind] is None or CLIS[kind] is None, reason=f"{kind}-server missing"
        ),
    )
    for shape in ("cluster", "sentinel")
    for kind in SERVERS
]


@dataclass
class Deployment:
    shape: str
    kind: str
    setup: LocalCluster | LocalSentinel
    closed: list[Server]  # two workers failing closed (the default)
    opened: list[Server]  # two workers failing open

    def primary_for(self, key: str) -> RedisServer:
        if isinstance(self.setup, LocalCluster):
            return self.setup.primary_for(key)
        return self.setup.primary


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    shape, kind = request.param
    tmp = tmp_path_factory.mktemp(f"{shape}-{kind}")
    start = local_cluster if shape == "cluster" else local_sentinel
    with start(tmp, kind) as setup:
        opened = {**FLEET_POLICY, "on_store_error": "open"}
        policies = [FLEET_POLICY, FLEET_POLICY, opened, opened]
        with fleet(tmp, setup.url, PREFIX, policies) as workers:
            yield Deployment(shape, kind, setup, workers[:2], workers[2:])


def test_fleet_shares_keys_rates_and_caps(deployment: Deployment) -> None:
    a, b = deployment.closed
    # A key one worker accepted is refused by the other.
    key = new_key()
    assert handshake(a, address(), key=key).status == 101
    refused = handshake(b, address(), key=key)
    assert (refused.status, refused.body) == (400, b"key_reused\n")

    # One client's rate (10/minute) is counted across both workers.
    client = address()
    assert [handshake((a, b)[n % 2], client).status for n in range(10)] == [101] * 10
    limited = handshake(b, client)
    assert limited.status == 429
    assert limited.header("retry-after") is not None

    # Two connections per client, whichever worker holds them; the counters live together
    # in the hash slot of the route's tag.
    client = address()
    on_a, on_b = Held(a, client), Held(b, client)
    try:
        assert (on_a.response.status, on_b.response.status) == (101, 101)
        counter = f"{CONN_TAG}:client:{client}"
        with admin(deployment.primary_for(CONN_TAG)) as db:
            assert db.zcard(counter) == 2
        assert handshake(a, client).status == 503
        on_a.close()
        wait_until(lambda: handshake(b, client).status == 101, "the closed lease is released")
    finally:
        on_b.close()


def test_a_ticket_is_redeemed_once_across_the_fleet(deployment: Deployment, tmp_path: Path) -> None:
    """A one-time ticket (authenticators.Tickets) issued by one worker opens one socket on
    another, and is refused as replayed by every worker after: redeemed through the cluster
    or the Sentinel-managed primary."""
    env = {"WSH_REDIS_URL": deployment.setup.url, "WSH_REDIS_PREFIX": f"tickets-{id(tmp_path)}:"}
    argv = uvicorn_argv("websockets-sansio", "tests.apps.identity:app")
    with (
        running("tickets-a", argv, tmp_path, env=env) as a,
        running("tickets-b", argv, tmp_path, env=env) as b,
    ):
        url = f"http://127.0.0.1:{a.port}/issue?sub=frank"
        with urllib.request.urlopen(url, timeout=5) as answer:  # 127.0.0.1 only
            issued = json.loads(answer.read())["ticket"]
        path = f"/ticket?ticket={issued}"
        first = raw_handshake(b.port, handshake_lines(b.host, path=path, key=new_key()))
        assert first.status == 101
        for worker in (a, b):
            replay = raw_handshake(
                worker.port, handshake_lines(worker.host, path=path, key=new_key())
            )
            assert (replay.status, replay.body) == (401, b"auth_replayed\n")


async def test_a_store_on_a_client_the_caller_built(deployment: Deployment) -> None:
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.sentinel import Sentinel

    async def scenario() -> list[object]:
        setup = deployment.setup
        client: Any
        if isinstance(setup, LocalCluster):
            sentinel = None
            client = RedisCluster(host="127.0.0.1", port=setup.nodes[0].port)
        else:
            nodes = [("127.0.0.1", node.port) for node in setup.sentinels]
            sentinel = Sentinel(nodes)  # type: ignore[no-untyped-call]
            client = sentinel.master_for(SERVICE)
        store = RedisStore(client=client, prefix="own:")
        caps = {"default:client:x": 1, "default:total": 5}
        try:
            try:
                got: list[object] = [
                    store.kind,
                    await store.remember_key("k", 60),
                    await store.remember_key("k", 60),
                    await store.hit("rate:default:client:x", 1, 60),
                    await store.hit("rate:default:client:x", 1, 60) > 0,
                    await store.acquire("l1", caps),
                    await store.acquire("l2", caps),
                ]
                await store.refresh()
                await store.release("l1")
                got.append(await store.acquire("l2", caps))
            finally:
                await store.aclose()
            # The caller's client is not the store's to close.
            got.append(await client.zcard("{own:conn:default}:total"))
        finally:
            await client.aclose()
            if sentinel is not None:
                await sentinel.aclose()
        return got

    assert await scenario() == [
        deployment.shape,
        False,
        True,
        0,
        True,
        None,
        "default:client:x",
        None,
        1,
    ]


def measure(shots: list[Shot], failed: set[str], killed: float, promoted: float) -> str:
    hits = [shot for shot in shots if shot.key in failed]
    if not hits:
        return "none"
    first = min(shot.sent for shot in hits) - killed
    last = max(shot.sent for shot in hits) - killed
    return (
        f"{len(hits)} of {len(shots)}, sent {first:.2f}-{last:.2f} s after the kill"
        f" ({last - (promoted - killed):+.2f} s after the promotion)"
    )


async def test_failover_fails_open_or_closed_then_recovers(deployment: Deployment) -> None:
    setup = deployment.setup
    workers = [*deployment.closed, *deployment.opened]
    victim = deployment.primary_for(CONN_TAG)
    if isinstance(setup, LocalCluster):
        heir = setup.replica_of(victim)

        def promote() -> None:
            setup.wait_promoted(heir)

    else:
        sentinel = setup
        assert sentinel.current_primary() == victim.port

        def promote() -> None:
            sentinel.wait_promoted()

    async def scenario() -> tuple[list[Shot], float, float]:
        load = Load(workers, concurrency=2)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(1.0)  # steady state first
        killed = time.monotonic()
        victim.kill()
        await asyncio.to_thread(promote)
        promoted = time.monotonic()
        await asyncio.sleep(2.0)  # the workers find the new primary by themselves
        load.stop.set()
        return await running, killed, promoted

    shots, killed, promoted = await scenario()
    assert [shot.error for shot in shots if shot.status == 0] == []  # every one was answered

    # No audit event lost or duplicated, and each says what its client got.
    events = audit_of(workers, shots)
    assert Counter(len(found) for found in events.values()) == Counter({1: len(shots)})
    ports = [server.port for server in workers]
    by_key = {key: found[0] for key, found in events.items()}
    for shot in shots:
        assert by_key[shot.key]["status"] == shot.status, shot

    closed = [shot for shot in shots if shot.worker < 2]
    opened = [shot for shot in shots if shot.worker >= 2]
    assert {shot.status for shot in closed} <= {101, 503}
    assert {shot.status for shot in opened} == {101}
    refused = {shot.key for shot in closed if shot.status == 503}
    let_through = {shot.key for shot in opened if by_key[shot.key]["store_error"]}
    for key in refused:
        assert (by_key[key]["reason"], by_key[key]["store_error"]) == ("store_unavailable", True)
    # The failover was felt on both sides...
    assert refused
    assert let_through
    print(
        f"\n{deployment.shape}-{deployment.kind} failover (judged down after 1 s,"
        f" promoted {promoted - killed:.2f} s after the kill):"
        f"\n  fail closed: 503 for {measure(closed, refused, killed, promoted)}"
        f"\n  fail open: store_error for {measure(opened, let_through, killed, promoted)}"
        f"\n  {len(shots)} handshakes, {sum(map(len, events.values()))} audit events"
        f" on ports {ports}"
    )

    # ... and is over: every worker answers from the store again, without a restart.
    for server in workers:
        recovers = functools.partial(clean, server)
        wait_until(recovers, f"{server.name} recovers", timeout=30)
        assert all(recovers() for _ in range(10))


def clean(server: Server) -> bool:
    """One handshake accepted with the store's answer (not waved through by fail-open)."""
    key = new_key()
    if handshake(server, address(), key=key).status != 101:
        return False
    event: dict[str, Any] = server.event_for_key(key)
    return event["store_error"] is False


SOAK_HANDSHAKES = 40_000
#: What each kind of handshake may get: "reused" keys can pass if a failover lost their
#: record or a fail-open worker could not check them; every store-backed check can get 503.
SOAK_STATUSES = {
    "fresh": {101, 503},
    "reused": {400, 101, 503},
    "malformed": {403},
    "hot": {101, 429, 503},
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
async def test_fleet_soak_through_a_cluster_failover(kind: str, tmp_path: Path) -> None:
    """Four workers, a cluster, tens of thousands of mixed handshakes, one failover."""
    closed = {**FLEET_POLICY, "max_connections": 100_000}
    opened = {**closed, "on_store_error": "open"}
    with (
        local_cluster(tmp_path, kind) as cluster,
        fleet(tmp_path, cluster.url, "soak:", [closed, closed, opened, opened]) as workers,
    ):

        async def scenario() -> tuple[list[Shot], float, float, float]:
            mix = {"fresh": 7, "reused": 1, "malformed": 1, "hot": 1}
            load = Load(workers, concurrency=3, mix=mix)
            began = time.monotonic()
            running = asyncio.create_task(load.run())
            await load.reached(SOAK_HANDSHAKES // 2)
            victim = await asyncio.to_thread(cluster.primary_for, CONN_TAG)
            heir = await asyncio.to_thread(cluster.replica_of, victim)
            killed = time.monotonic()
            victim.kill()
            await asyncio.to_thread(cluster.wait_promoted, heir)
            promoted = time.monotonic()
            await load.reached(SOAK_HANDSHAKES)
            load.stop.set()
            return await running, began, killed, promoted

        shots, began, killed, promoted = await scenario()
        events = audit_of(workers, shots)

    assert [shot.error for shot in shots if shot.status == 0] == []
    for shot in shots:
        assert shot.status in SOAK_STATUSES[shot.kind], shot
    # Every handshake audited once, with what its client got (reused keys repeat: compare
    # the statuses per key).
    for key, sent in itertools.groupby(sorted(shots, key=lambda s: s.key), lambda s: s.key):
        sent_statuses = sorted(shot.status for shot in sent)
        assert sorted(event["status"] for event in events.get(key, [])) == sent_statuses, key

    # When the store failed: fresh handshakes (one event each) marked store_error, refused
    # on the fail-closed workers (503 store_unavailable), waved through on the fail-open ones.
    failing = [
        shot for shot in shots if shot.kind == "fresh" and events[shot.key][0]["store_error"]
    ]
    for shot in failing:
        expected = (503, "store_unavailable") if shot.worker < 2 else (101, None)
        assert (shot.status, events[shot.key][0]["reason"]) == expected, shot
    elapsed = max(shot.done for shot in shots) - began
    latencies = [shot.done - shot.sent for shot in shots]
    statuses = Counter(shot.status for shot in shots)
    print(
        f"\nsoak on a {kind} cluster: {len(shots)} handshakes in {elapsed:.1f} s"
        f" ({len(shots) / elapsed:.0f}/s), p50 {percentile(latencies, 0.5) * 1000:.1f} ms,"
        f" p99 {percentile(latencies, 0.99) * 1000:.1f} ms; statuses {dict(statuses)}"
        f"\n  failover: promoted {promoted - killed:.2f} s after the kill;"
        f" {sum(s.worker < 2 for s in failing)} fresh handshakes refused (fail closed) and"
        f" {sum(s.worker >= 2 for s in failing)} let through (fail open) while the store"
        f" failed, sent {min((s.sent for s in failing), default=killed) - killed:.2f}"
        f"-{max((s.sent for s in failing), default=killed) - killed:.2f} s after the kill"
        f"\n  {sum(map(len, events.values()))} audit events for {len(shots)} handshakes"
    )
