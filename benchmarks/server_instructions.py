"""End to end, counted: the uvicorn server process's CPU instructions per handshake, under valgrind.

Each variant's server (``benchmarks.apps:bare``, ``:guarded``, ``:channels_validator``) runs
under ``valgrind --tool=cachegrind --cache-sim=no`` twice with the same layout: start-up, a
readiness probe and one first connection, ``--warm`` connections, then ``--count`` more or
none, then SIGINT and uvicorn's graceful shutdown. The difference of the two totals over
``--count`` is what one connection costs the server process: uvicorn's parsing, the asyncio
plumbing, the app and, for ``guarded`` and ``channels``, the guard. This process is the
client and is not counted.

A connection here: open a socket, send the upgrade request, read the 101, send a close frame
and read until the server closes, one connection at a time, the client waiting before each
step until the server sits idle in ``epoll_wait`` (``/proc/PID/wchan``), so that each step
wakes it once and its event loop runs the same iterations in every run, however busy the
machine. Same keys in the same order in both runs, ``PYTHONHASHSEED=0``,
one worker, ``--ws websockets-sansio``, no access log, no lifespan. Reruns agree to a few
dozen instructions per connection; counts with N=600, 1,000 and 1,500 connections within 3%
of each other (at N=300 the guard's comes out some 5% lower: work that falls every few
hundred connections, such as the older generations' collections, is then missed).

Three things would otherwise count what a server does not pay per handshake: uvicorn's main
loop wakes every 0.1 s (a wall-clock tick: the slower run would count more of them), so the
server runs without it (``TicklessServer``: the same ``uvicorn.Server``, its main loop
waiting for the signal instead); the warm-up (default 1,100) fills the guarded app's
``MemorySink`` (1,000 events), so that the measured connections find it in its steady state;
after the warm-up the client signals the server (SIGUSR1) to freeze its heap (``gc.freeze``),
so that collections traverse what the measured connections create and keep, not uvicorn's
and Django's modules (a full collection of the whole heap costs some 20 million
instructions, and whether one falls inside the measured window is a step function of the
count); and the process ends with ``os._exit`` once uvicorn has shut down, skipping the
interpreter's teardown (in both runs).

Reported: instructions per connection for each variant, the guard's added over bare (ours,
Channels), their ratio, and what fraction of the bare server's work the guard adds.

    python -m benchmarks.server_instructions [--quick] [--count N] [--warm N]
        [--variants bare,guarded,channels] [--callgrind DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import gc
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import valgrind
from benchmarks.common import ROOT, emit, parser, table, verdict
from benchmarks.servers import HOST, TIMEOUT, WS, upgrade_request

APPS = {
    "bare": "benchmarks.apps:bare",
    "guarded": "benchmarks.apps:guarded",
    "channels": "benchmarks.apps:channels_validator",
}
LABELS = {
    "bare": "uvicorn + bare app (uvicorn's own work per connection)",
    "guarded": "uvicorn + asgi-ws-handshake (full policy)",
    "channels": "uvicorn + Channels OriginValidator (origin only)",
}
#: The Host every request names, whatever port the run listens on: identical bytes per run.
HOST_PORT = 8000
#: A masked close frame, code 1000 (RFC 6455 5.5.1): the client's half of the closing handshake.
CLOSE_FRAME = bytes([0x88, 0x82, 0x01, 0x02, 0x03, 0x04]) + bytes([0x03 ^ 0x01, 0xE8 ^ 0x02])
#: Seconds the client waits before each step of a connection where it cannot see whether
#: the server is idle (no ``/proc``; see ``idle``).
PAUSE = 0.005

#: The signal that tells the server to freeze its heap (``gc.freeze``) after the warm-up.
FREEZE = signal.SIGUSR1

#: (warm, count)
FULL = (1100, 1000)
QUICK = (5, 30)


# -- the server side: runs under valgrind


def serve(app: str, port: int) -> None:
    """Run uvicorn on ``app`` without the main loop's 0.1 s tick (see the module docstring)."""
    import uvicorn

    class TicklessServer(uvicorn.Server):
        stop: asyncio.Event | None = None
        loop: asyncio.AbstractEventLoop | None = None

        async def main_loop(self) -> None:
            self.loop = asyncio.get_running_loop()
            self.stop = asyncio.Event()
            # A signal before this point has set should_exit; one after it sets ``stop``.
            if await self.on_tick(0):  # the Date header, once; True when told to exit
                return
            await self.stop.wait()

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if self.loop is not None and self.stop is not None:
                self.loop.call_soon_threadsafe(self.stop.set)

    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        ws=WS,
        lifespan="off",
        access_log=False,
        log_level="error",
        workers=1,
    )

    def freeze(sig: int, frame: FrameType | None) -> None:
        gc.collect()
        gc.freeze()

    signal.signal(FREEZE, freeze)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it caught
        TicklessServer(config).run()
    # No teardown: the interpreter's final collections would traverse whatever the served
    # connections left alive (a full sink's events), a cost no server pays per handshake.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# -- the client side: this process


def keys(count: int) -> list[str]:
    rng = random.Random(4321)
    return [base64.b64encode(rng.randbytes(16)).decode() for _ in range(count)]


def idle(pid: int) -> None:
    """Wait until the server process sits in ``epoll_wait`` with nothing to do.

    Read from ``/proc/PID/wchan`` (Linux), twice in a row a moment apart; where it cannot be
    read, sleep ``PAUSE`` instead. Bounded in time.
    """
    wchan = Path(f"/proc/{pid}/wchan")
    deadline = time.monotonic() + TIMEOUT
    seen = 0
    while seen < 2 and time.monotonic() < deadline:
        try:
            waiting = "epoll" in wchan.read_text()
        except OSError:
            time.sleep(PAUSE)
            return
        seen = seen + 1 if waiting else 0
        time.sleep(0.0005)


def connection(port: int, key: str, wait: Callable[[], None]) -> None:
    """One connection: the handshake, then the closing handshake, until the server closes.

    Before each step the client waits (``wait``) until the server is idle, so each step wakes it
    once and it runs the same event-loop iterations in every run, whatever else the machine
    is doing.
    """
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wait()
        sock.sendall(upgrade_request(HOST_PORT, key))
        answer = _read(sock, lambda data: b"\r\n\r\n" in data)
        if not answer.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {answer[:200]!r}")
        wait()
        sock.sendall(CLOSE_FRAME)
        _read(sock, lambda data: False)  # until the server closes
    wait()


def _read(sock: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    """Read until ``done(data)`` or the end of the stream; bounded in bytes and time."""
    data = b""
    while not done(data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 65536:
            raise RuntimeError("the server sent too much")
    return data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _first_connection(
    port: int, key: str, proc: subprocess.Popen[bytes], log: Path, wait: Callable[[], None]
) -> None:
    """Wait until the server listens, then make one whole connection (as in every run)."""
    deadline = time.monotonic() + 300  # uvicorn's imports under valgrind take a while
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection((HOST, port), timeout=TIMEOUT).close()
        except OSError:
            time.sleep(0.1)
            continue
        # That probe reached the server (one connection opened and closed, in every run);
        # the first handshake then proves the app is loaded.
        wait()
        connection(port, key, wait)
        return
    raise TimeoutError(f"server did not listen on {port}")


def count_instructions(name: str, warm: int, measured: int) -> int:
    """The total instructions of one server process that served ``1 + warm + measured``."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="wsh-vg-") as tmp:
        log, out = Path(tmp) / "valgrind.log", Path(tmp) / "server.log"
        argv = [
            *valgrind.command(f"{name}.{measured}", str(log)),
            sys.executable,
            "-m",
            "benchmarks.server_instructions",
            "--serve",
            APPS[name],
            "--port",
            str(port),
        ]
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=valgrind.environment(), stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            wait = functools.partial(idle, proc.pid)
            first, *rest = keys(1 + warm + measured)
            _first_connection(port, first, proc, out, wait)
            for key in rest[:warm]:
                connection(port, key, wait)
            # The heap so far leaves the collector's view, frozen while the server is idle,
            # so at the same point in every run.
            proc.send_signal(FREEZE)
            wait()
            for key in rest[warm:]:
                connection(port, key, wait)
            proc.send_signal(signal.SIGINT)
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        found = valgrind.total(log.read_text())
        if proc.returncode != 0 or found is None:
            raise RuntimeError(
                f"valgrind run of {name!r} failed ({proc.returncode}):\n"
                f"{out.read_text()[-2000:]}\n{log.read_text()[-2000:]}"
            )
        return found


def run(warm: int, count: int, variants: Sequence[str] = tuple(APPS)) -> dict[str, Any]:
    """Instructions per connection for each variant (two valgrind runs each, side by side)."""
    valgrind.require()
    valgrind.precompile()
    jobs: dict[tuple[str, int], Callable[[], int]] = {
        (name, measured): functools.partial(count_instructions, name, warm, measured)
        for name in variants
        for measured in (count, 0)
    }
    totals = valgrind.side_by_side(jobs)
    per = {name: (totals[name, count] - totals[name, 0]) / count for name in variants}
    result: dict[str, Any] = {
        "benchmark": "server_instructions",
        "server": f"uvicorn --ws {WS}",
        "warm": warm,
        "count": count,
        "per_connection": per,
    }
    if "bare" in per:
        added = {name: per[name] - per["bare"] for name in per if name != "bare"}
        result["added"] = added
        result["added_fraction"] = {name: value / per["bare"] for name, value in added.items()}
        if "guarded" in added and "channels" in added:
            result["ratio_to_channels"] = added["guarded"] / added["channels"]
    return result


def render(result: dict[str, Any]) -> str:
    per, added = result["per_connection"], result.get("added", {})
    fraction = result.get("added_fraction", {})
    rows: list[list[object]] = []
    for name, value in per.items():
        extra = f"{added[name]:,.0f} (+{fraction[name]:.1%})" if name in added else ""
        rows.append([LABELS[name], f"{value:,.0f}", extra])
    if "ratio_to_channels" in result:
        ratio = result["ratio_to_channels"]
        mark = f"{ratio:.2f} {verdict(ratio <= 0.5)}"
        rows.append(["ours / Channels added (target <= 0.5)", "", mark])
    head = (
        f"Server-process instructions per connection through {result['server']} under valgrind "
        f"(cachegrind --cache-sim=no): {result['count']} connections after {result['warm']} "
        "warm-up, difference of N and 0 in one layout"
    )
    return head + "\n" + table(["variant", "instructions/connection", "added over bare"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--serve" in args_list:
        served = argparse.ArgumentParser()
        served.add_argument("--serve", required=True)
        served.add_argument("--port", type=int, required=True)
        got = served.parse_args(args_list)
        serve(got.serve, got.port)
        return
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--warm", type=int, default=FULL[0])
    p.add_argument("--count", type=int, default=FULL[1])
    p.add_argument("--variants", default=",".join(APPS))
    p.add_argument("--callgrind", metavar="DIR", help="keep callgrind profiles in DIR")
    args = p.parse_args(args_list)
    if args.callgrind:
        valgrind.PROFILES = Path(args.callgrind)
    warm, count = QUICK if args.quick else (args.warm, args.count)
    result = run(warm, count, [v for v in args.variants.split(",") if v])
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
