"""Real Redis and Valkey deployments past one server, on 127.0.0.1 free ports, for the tests:

- ``LocalCluster``: three primaries and three replicas (``cluster-enabled yes``), created with
  ``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`` (``valkey-cli`` for
  Valkey). Each node's cluster bus gets a free port of its own (``--cluster-port``).
- ``LocalSentinel``: one primary, one replica and three Sentinels (``redis-server
  --sentinel``, quorum 2) watching them.

Failure detection is fast on purpose (a node or primary is judged down after
``DOWN_AFTER_MS``), so that a failover fits in a test. Everything lives in a temporary
directory and is killed at the end.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis as redis_py

from tests.redis_server import CLIS, RedisServer

#: cluster-node-timeout / down-after-milliseconds: how long a silent node takes to be judged
#: down. Production defaults are 15 s (cluster) and 30 s (Sentinel).
DOWN_AFTER_MS = 1000
SERVICE = "wsh-primary"


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis_py.RedisError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        time.sleep(0.05)


def admin(server: RedisServer) -> redis_py.Redis:
    """A plain client for one node (the test's own view, not the store's)."""
    return redis_py.Redis(port=server.port, socket_timeout=2, decode_responses=True)


def info(server: RedisServer, section: str) -> dict[str, Any]:
    with admin(server) as client:
        return dict(client.info(section))


class LocalCluster:
    """A Redis or Valkey cluster of three primaries, each with one replica."""

    def __init__(self, tmp: Path, kind: str = "redis") -> None:
        cli = CLIS[kind]
        if cli is None:
            raise RuntimeError(f"{kind}-cli is not installed (tests/run.sh installs it)")
        self.cli = cli
        self.kind = kind
        options = ["--cluster-enabled", "yes", "--cluster-node-timeout", str(DOWN_AFTER_MS)]
        self.nodes: list[RedisServer] = []
        for n in range(6):
            node_dir = tmp / f"node{n}"  # each node writes its own nodes.conf
            node_dir.mkdir()
            self.nodes.append(RedisServer(node_dir, kind=kind, args=options, bus=True))

    @property
    def url(self) -> str:
        seeds = ",".join(node.address for node in self.nodes[:3])
        return f"redis+cluster://{seeds}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [node.address for node in self.nodes]
        subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "1",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self) -> None:
        """Until every live node says the cluster is ok and every primary has its replica."""

        def ready() -> bool:
            live = [node for node in self.nodes if node.alive]
            states = [info(node, "cluster") for node in live]
            if not all(state.get("cluster_enabled") == 1 for state in states):
                return False
            for node in live:
                with admin(node) as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                replication = info(node, "replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            primaries = [n for n in live if info(n, "replication")["role"] == "master"]
            return len(primaries) == 3

        wait_for(ready, "the cluster is ready")

    def node_at(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def primary_for(self, key: str) -> RedisServer:
        """The primary serving ``key``'s hash slot now."""
        with admin(next(n for n in self.nodes if n.alive)) as client:
            slot = int(client.cluster("keyslot", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if int(start) <= slot <= int(end):
                    return self.node_at(int(primary[1]))
        raise LookupError(f"no node serves {key!r}")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        return next(
            node
            for node in self.nodes
            if node.alive and info(node, "replication").get("master_port") == primary.port
        )

    def wait_promoted(self, replica: RedisServer) -> None:
        """Until ``replica`` is a primary and the live nodes say the cluster is ok again."""

        def promoted() -> bool:
            if info(replica, "replication")["role"] != "master":
                return False
            for node in self.nodes:
                if node.alive:
                    with admin(node) as client:
                        if client.cluster("info")["cluster_state"] != "ok":
                            return False
            return True

        wait_for(promoted, f"{replica.address} is promoted")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class LocalSentinel:
    """One primary, one replica and three Sentinels (quorum 2) naming it ``SERVICE``."""

    def __init__(self, tmp: Path, kind: str = "redis") -> None:
        self.tmp = tmp
        self.kind = kind
        self.primary = RedisServer(tmp, kind=kind)
        self.replica = RedisServer(tmp, kind=kind)
        self.sentinels = [RedisServer(tmp, kind=kind, sentinel=[]) for _ in range(3)]

    @property
    def url(self) -> str:
        seeds = ",".join(sentinel.address for sentinel in self.sentinels)
        return f"redis+sentinel://{seeds}/{SERVICE}"

    def start(self) -> None:
        self.primary.start()
        self.replica.args = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        wait_for(
            lambda: info(self.replica, "replication")["master_link_status"] == "up",
            "the replica follows the primary",
        )
        for sentinel in self.sentinels:
            sentinel.sentinel = [
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} 10000",
            ]
            sentinel.start()

        def watching() -> bool:
            for sentinel in self.sentinels:
                with admin(sentinel) as client:
                    state = client.sentinel_master(SERVICE)
                if state["num-other-sentinels"] != 2 or state["num-slaves"] != 1:
                    return False
            return True

        # Sentinels find each other through the primary (hello messages every 2 s).
        wait_for(watching, "every Sentinel knows the replica and the other two")

    def current_primary(self) -> int:
        """The primary's port, as the first Sentinel that answers says."""
        for sentinel in self.sentinels:
            if sentinel.alive:
                with admin(sentinel) as client:
                    _, port = client.sentinel_get_master_addr_by_name(SERVICE)
                    return int(port)
        raise LookupError("no Sentinel answers")

    def wait_promoted(self) -> None:
        """Until every Sentinel names the replica and the replica acts as a primary."""

        def promoted() -> bool:
            if info(self.replica, "replication")["role"] != "master":
                return False
            for sentinel in self.sentinels:
                with admin(sentinel) as client:
                    _, port = client.sentinel_get_master_addr_by_name(SERVICE)
                if int(port) != self.replica.port:
                    return False
            return True

        wait_for(promoted, "the replica is promoted")

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()


@contextlib.contextmanager
def local_cluster(tmp: Path, kind: str) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp, kind)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def local_sentinel(tmp: Path, kind: str) -> Iterator[LocalSentinel]:
    setup = LocalSentinel(tmp, kind)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()
