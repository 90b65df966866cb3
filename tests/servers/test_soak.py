"""Soak: many handshakes, good and bad, at concurrency, through a real uvicorn.

The quick soak runs in the normal suite (a few thousand handshakes); ``--slow`` runs the long
one (tens of thousands). Both check: no client-side error and every answer as expected, no
error in the server log (uvicorn's known spurious one aside, counted), every handshake
audited exactly once (one JSONL event per unique path, unique ids, the id the app reported),
and no growth in tasks or traced memory between the first and the last batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.soak_support import diag, log_problems, wait_diag
from tests.support import Server, handshake_lines, new_key, running, uvicorn_argv

ALLOWED = "http://allowed.test"
CONCURRENCY = 48
#: Traced-memory growth allowed between the end of the first batch and the end of the last:
#: a fixed slack (measured: under 10 kB on the quick soak) plus a per-handshake budget far
#: below any real leak (a leaked dict entry or small object costs 60 bytes or more). uvicorn's
#: legacy `websockets` backend drifts by up to ~15 bytes per handshake over a 25,000-handshake
#: soak (its buffers and freelists), which the budget absorbs. The deliberate leak of
#: ``WSH_SOAK_LEAK`` (about 2.5 kB per handshake) exceeds it many times over.
MEMORY_SLACK = 120_000
MEMORY_PER_HANDSHAKE = 32

#: Raw-socket handshakes: kind -> (handshake_lines overrides, expected status). Only inputs
#: that every uvicorn backend hands to the app: some backends refuse a bad version, key or
#: token themselves, with no ASGI call and so no audit event (the adversarial table covers
#: those in-process).
RAW_KINDS: dict[str, tuple[dict[str, Any], int]] = {
    "bad-origin": ({"origin": "http://evil.test"}, 403),
    "null-origin": ({"origin": "null"}, 403),
    "cross-origin-same-route": ({"origin": ALLOWED, "path": "/same"}, 403),
    "subprotocol-required": ({"origin": ALLOWED, "path": "/required"}, 400),
    "app-unoffered-subprotocol": ({"origin": ALLOWED, "path": "/bad-subprotocol"}, 500),
    "app-deny": ({"origin": ALLOWED, "path": "/app-deny"}, 401),
    "app-close": ({"origin": ALLOWED, "path": "/app-close"}, 403),
    "raw-accept": ({"origin": ALLOWED, "protocols": "chat.v1"}, 101),
    "no-origin-accept": ({"path": "/reserved-headers"}, 101),
}


@dataclass
class Tally:
    """What the client side sent and saw."""

    paths: set[str] = field(default_factory=set)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    ids: dict[str, str] = field(default_factory=dict)  # path -> audit id the app reported
    errors: list[str] = field(default_factory=list)
    batches: int = 0


async def ws_client(server: Server, path: str, tally: Tally) -> None:
    """A real websockets client: open, read the app's JSON greeting, close."""
    async with connect(
        f"ws://127.0.0.1:{server.port}{path}",
        origin=ALLOWED,  # type: ignore[arg-type]
        subprotocols=["chat.v1"],  # type: ignore[list-item]
        open_timeout=20,
        close_timeout=5,
        # No permessage-deflate: its per-connection zlib buffers (~8 kB, freed only when the
        # legacy `websockets` backend tears a closing connection down) would swamp the memory
        # comparison with noise unrelated to the guard.
        compression=None,
    ) as ws:
        greeting = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert ws.subprotocol == "chat.v1"
    tally.ids[path] = greeting["audit_id"]
    tally.statuses["websockets", 101] += 1


async def raw_client(server: Server, path: str, kind: str, tally: Tally) -> None:
    overrides, expected = RAW_KINDS[kind]
    args = {"key": new_key(), **overrides, "path": path}
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 20)
    try:
        writer.write(handshake_lines(server.host, **args))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length:
                await asyncio.wait_for(reader.readexactly(length), 20)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if status != expected:
        tally.errors.append(f"{kind} {path}: got {status}, expected {expected}")
    tally.statuses[kind, status] += 1


async def batch(server: Server, start: int, count: int, tally: Tally) -> None:
    """``count`` handshakes, half through websockets, half raw across every bad kind."""
    gate = asyncio.Semaphore(CONCURRENCY)
    kinds = list(RAW_KINDS)

    async def one(n: int) -> None:
        async with gate:
            kind = "websockets" if n % 2 else kinds[n // 2 % len(kinds)]
            prefix = RAW_KINDS[kind][0].get("path", "/ws") if kind in RAW_KINDS else "/ws"
            path = f"{prefix}/soak-{n}"  # unique: tells the audit events apart
            tally.paths.add(path)
            try:
                if kind == "websockets":
                    await ws_client(server, path, tally)
                else:
                    await raw_client(server, path, kind, tally)
            except Exception as exc:
                tally.errors.append(f"{kind} {path}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(n) for n in range(start, start + count)))


def quiet(server: Server, baseline_tasks: int | None = None) -> dict[str, Any]:
    """Diagnostics once background audit work is done (and the task count back, if given)."""
    expected = {"pending_audits": 0}
    if baseline_tasks is not None:
        expected["tasks"] = baseline_tasks
    return wait_diag(server, **expected)


async def soak(
    server: Server, batches: int, size: int
) -> tuple[Tally, dict[str, Any], dict[str, Any]]:
    tally = Tally(batches=batches)
    # The idle server's own tasks: connections that have ended leave none behind, so after
    # each batch the count must come back to this (waited for: closing sockets linger). The
    # blocking polls run in a thread, so that this loop keeps closing the clients' sockets.
    idle = (await asyncio.to_thread(quiet, server))["tasks"]
    first: dict[str, Any] = {}
    for index in range(batches):
        await batch(server, index * size, size, tally)
        if index == 0:
            first = await asyncio.to_thread(quiet, server, idle)
    last = await asyncio.to_thread(quiet, server, idle)
    return tally, first, last


def check(server: Server, tally: Tally, first: dict[str, Any], last: dict[str, Any]) -> None:
    total = len(tally.paths)
    assert tally.errors == []
    events = server.wait_events(total, timeout=20)
    # Exactly once: one event per handshake, told apart by its unique path.
    assert len(events) == total
    assert {event["path"] for event in events} == tally.paths
    assert len({event["id"] for event in events}) == total
    by_path = {event["path"]: event for event in events}
    for path, audit_id in tally.ids.items():
        assert by_path[path]["id"] == audit_id
        assert (by_path[path]["outcome"], by_path[path]["status"]) == ("accepted", 101)
    # The statuses the clients saw are the statuses the audit recorded.
    audited = Counter(event["status"] for event in events)
    seen = Counter(status for (_, status), count in tally.statuses.items() for _ in range(count))
    assert audited == seen
    assert log_problems(server, events) == []
    # No growth between the first and the last batch.
    assert last["tasks"] == first["tasks"]
    assert last["pending_audits"] == 0
    # Bounded (two generations: between half the bound and the bound once it has filled).
    assert last["store_bound"] // 2 <= last["store"] <= last["store_bound"]
    growth = last["traced"] - first["traced"]
    budget = MEMORY_SLACK + MEMORY_PER_HANDSHAKE * (total - total // tally.batches)
    assert growth < budget, f"traced memory grew by {growth} bytes: {first} -> {last}"


async def run_soak(ws: str, tmp_path: Path, batches: int, size: int, env: dict[str, str]) -> None:
    argv = uvicorn_argv(ws, "tests.apps.soak:app")
    with running(f"soak-{ws}", argv, tmp_path, env={"WSH_TRACEMALLOC": "1", **env}) as server:
        tally, first, last = await soak(server, batches, size)
        diag(server)  # still answering
    check(server, tally, first, last)


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
async def test_quick_soak(ws: str, tmp_path: Path) -> None:
    await run_soak(ws, tmp_path, batches=3, size=600, env={})


async def test_the_memory_check_catches_a_leak(tmp_path: Path) -> None:
    """The same soak against a server whose audit sink keeps every event must fail."""
    with pytest.raises(AssertionError, match="traced memory grew by"):
        await run_soak(
            "websockets-sansio", tmp_path, batches=2, size=400, env={"WSH_SOAK_LEAK": "1"}
        )


@pytest.mark.slow
@pytest.mark.parametrize("ws", ["websockets-sansio", "websockets", "wsproto"])
async def test_long_soak(ws: str, tmp_path: Path) -> None:
    await run_soak(ws, tmp_path, batches=25, size=1000, env={})
