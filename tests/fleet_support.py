"""Helpers for the tests that run a fleet of real uvicorn processes over a shared Redis:
starting ``tests.apps.fleet`` workers, raw handshakes from chosen client addresses, held
connections, and an asyncio load generator that records every handshake it sends.

Each worker is a separate ``uvicorn`` on its own port, as machines behind a load balancer are;
clients are told apart by ``X-Forwarded-For`` (uvicorn ``--proxy-headers`` sets
``scope["client"]`` from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import (
    RawResponse,
    Server,
    handshake_lines,
    new_key,
    raw_handshake,
    read_response,
    start_server,
    uvicorn_argv,
)

LEASE_TTL = 2.0  # short, so that refreshes and expiry happen within a test
FLEET_POLICY = {
    "key_reuse": "reject",
    "rate_limit": "10/minute",
    "max_connections_per_client": 2,
}


def argv() -> list[str]:
    return uvicorn_argv(
        "websockets-sansio",
        "tests.apps.fleet:app",
        "--proxy-headers",
        "--forwarded-allow-ips",
        "127.0.0.1",
    )


def start_app(
    name: str, tmp: Path, url: str, prefix: str, policy: dict[str, Any], **env: str
) -> Server:
    """One uvicorn worker running ``tests.apps.fleet`` over the store at ``url``."""
    return start_server(
        name,
        argv(),
        tmp,
        env={
            "WSH_REDIS_URL": url,
            "WSH_REDIS_PREFIX": prefix,
            "WSH_LEASE_TTL": str(LEASE_TTL),
            "WSH_POLICY": json.dumps(policy),
            **env,
        },
    )


@contextlib.contextmanager
def fleet(
    tmp: Path, url: str, prefix: str, policies: Sequence[dict[str, Any]], **env: str
) -> Iterator[list[Server]]:
    """Start one worker per policy (in parallel), all sharing ``url`` and ``prefix``."""
    with ThreadPoolExecutor(len(policies)) as pool:
        futures = [
            pool.submit(start_app, f"worker-{n}", tmp, url, prefix, policy, **env)
            for n, policy in enumerate(policies)
        ]
    started = [future.result() for future in futures if future.exception() is None]
    errors = [exc for future in futures if (exc := future.exception()) is not None]
    try:
        if errors:
            raise errors[0]
        yield started
    finally:
        for server in started:
            server.stop()


_addresses = (f"198.51.{a}.{b}" for a in range(100, 256) for b in range(1, 255))


def address() -> str:
    """A fresh client address for each use (198.51.100.0/24 and up, unused elsewhere)."""
    return next(_addresses)


def request(server: Server, client: str, *, path: str = "/ws", key: str | None = None) -> bytes:
    return handshake_lines(
        server.host, path=path, key=key or new_key(), extra=[("X-Forwarded-For", client)]
    )


def handshake(server: Server, client: str, **kwargs: Any) -> RawResponse:
    return raw_handshake(server.port, request(server, client, **kwargs))


class Held:
    """An accepted connection kept open on a raw socket."""

    def __init__(self, server: Server, client: str, path: str = "/ws") -> None:
        self.key = new_key()
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.sock.sendall(request(server, client, path=path, key=self.key))
        self.response = read_response(self.sock)

    def close(self) -> None:
        """A clean client close: a masked close frame (RFC 6455 5.5.1), code 1000."""
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8"))
        try:
            self.sock.sendall(b"\x88\x82" + mask + payload)
            self.sock.settimeout(5)
            while self.sock.recv(4096):  # until the server closes its side
                pass
        finally:
            self.sock.close()

    def vanish(self) -> None:
        """The client disappears: no close frame, the TCP connection reset."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        self.sock.close()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


# -- load --------------------------------------------------------------------------------


@dataclass
class Shot:
    """One handshake the load generator sent, and what came back."""

    worker: int
    kind: str
    key: str
    sent: float  # time.monotonic()
    done: float = 0.0
    status: int = 0  # 0: no answer (the error says why)
    error: str = ""


@dataclass
class Load:
    """Handshakes from ``concurrency`` clients per worker until ``stop`` is set.

    ``mix`` weights the kinds of handshake: "fresh" (a new key from a new client address),
    "reused" (a key this load already had accepted), "malformed" (an Origin with a path:
    refused by the policy, before any store call), "hot" (one client address per worker,
    which soon exceeds its rate).
    """

    servers: Sequence[Server]
    concurrency: int = 2
    mix: dict[str, int] = field(default_factory=lambda: {"fresh": 1})
    shots: list[Shot] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._kinds = itertools.cycle([kind for kind, n in self.mix.items() for _ in range(n)])
        self._accepted: list[str] = []
        self._clients = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count(1))
        self._sent = asyncio.Event()

    async def reached(self, count: int) -> None:
        """Wait until ``count`` handshakes have been sent."""
        while len(self.shots) < count:
            self._sent.clear()
            await self._sent.wait()

    async def run(self) -> list[Shot]:
        clients = [
            self._client(worker, lane)
            for worker in range(len(self.servers))
            for lane in range(self.concurrency)
        ]
        await asyncio.gather(*clients)
        return self.shots

    async def _client(self, worker: int, lane: int) -> None:
        server = self.servers[worker]
        hot = f"192.0.2.{worker + 1}"
        while not self.stop.is_set():
            kind = next(self._kinds)
            key, client, origin = new_key(), next(self._clients), None
            if kind == "reused" and self._accepted:
                key = self._accepted[len(self.shots) % len(self._accepted)]
            elif kind == "malformed":
                origin = "https://app.example/path"  # RFC 6454 7.1: no path in an origin
            elif kind == "hot":
                client = hot
            lines = handshake_lines(
                server.host, key=key, origin=origin, extra=[("X-Forwarded-For", client)]
            )
            shot = Shot(worker, kind, key, time.monotonic())
            self.shots.append(shot)
            self._sent.set()
            await self._send(server.port, lines, shot)
            if kind == "fresh" and shot.status == 101 and len(self._accepted) < 1000:
                self._accepted.append(key)

    @staticmethod
    async def _send(port: int, lines: bytes, shot: Shot) -> None:
        writer = None
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(lines)
                head = await reader.readuntil(b"\r\n\r\n")
                shot.status = int(head.split(b" ", 2)[1])
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            shot.error = f"{type(exc).__name__}: {exc}"
        finally:
            shot.done = time.monotonic()
            if writer is not None:
                writer.close()


def audit_of(servers: Sequence[Server], shots: Sequence[Shot]) -> dict[str, list[dict[str, Any]]]:
    """The audit events of ``shots``' keys, from every worker's file, by key.

    Waits (bounded) until as many events as shots are written: sinks write after answering.
    """
    wanted = Counter(shot.key for shot in shots)
    deadline = time.monotonic() + 10
    while True:
        found: dict[str, list[dict[str, Any]]] = {}
        for server in servers:
            for event in server.events():
                if event["key"] in wanted:
                    found.setdefault(event["key"], []).append(event)
        if sum(map(len, found.values())) >= len(shots) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0
