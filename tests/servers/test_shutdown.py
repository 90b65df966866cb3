"""Audit events at graceful shutdown (SIGINT through a real uvicorn): drained, or counted.

A burst of handshakes leaves events queued in a slow threaded sink and pending in a slow
async sink when uvicorn is told to stop. On lifespan shutdown the middleware drains both
within ``drain_timeout``: with time enough every event is written; with too little, what is
dropped is counted and logged, so events written + dropped = handshakes either way.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from tests.support import handshake_lines, new_key, read_events, start_server, uvicorn_argv

HANDSHAKES = 300


async def burst(port: int) -> int:
    """``HANDSHAKES`` handshakes (32 at a time); how many got 101."""
    gate = asyncio.Semaphore(32)

    async def one() -> bool:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(handshake_lines(f"127.0.0.1:{port}", key=new_key()))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
                return head.startswith(b"HTTP/1.1 101")
            finally:
                writer.close()

    return sum(await asyncio.gather(*(one() for _ in range(HANDSHAKES))))


@pytest.mark.parametrize("drain", ["10", "0.05"], ids=["time-enough", "too-little"])
async def test_sigint_drains_the_sinks_or_counts_what_it_drops(drain: str, tmp_path: Path) -> None:
    argv = uvicorn_argv("websockets-sansio", "tests.apps.shutdown:app", "--lifespan", "on")
    server = start_server("shutdown", argv, tmp_path, env={"WSH_DRAIN": drain})
    try:
        accepted = await burst(server.port)
    finally:
        server.proc.send_signal(signal.SIGINT)
        server.proc.wait(60)
    assert accepted == HANDSHAKES
    threaded = len(read_events(server.audit_path))
    pending = len(read_events(server.audit_path.with_suffix(".async")))
    log = server.log()
    totals = re.findall(r"(\d+) sink failures and (\d+) dropped events in all", log)
    dropped = totals[-1] if totals else None  # the last word: at exit
    if drain == "10":
        assert (threaded, pending) == (HANDSHAKES, HANDSHAKES), log[-2000:]
        assert dropped is None
    else:
        assert dropped is not None, log[-2000:]
        failures, drops = map(int, dropped)
        assert failures == 0
        # Every handshake is accounted for: written by each sink, or counted as dropped.
        assert threaded + pending + drops == 2 * HANDSHAKES
        assert drops > 0
