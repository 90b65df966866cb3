"""Real uvicorn processes on 127.0.0.1 and a small raw-socket client for the benchmarks.

Loopback only; every socket has a timeout and every run a bounded count.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.common import ROOT, alternate, median, spread, verdict

T = TypeVar("T")

HOST = "127.0.0.1"
TIMEOUT = 10.0
ORIGIN = "https://app.example.com"
WS = "websockets-sansio"  # what uvicorn's --ws auto picks when websockets is installed


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def cpu(self) -> float:
        """The server process's CPU seconds so far (asked over HTTP, measured in-process)."""
        with socket.create_connection((HOST, self.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /cpu HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
                if len(data) > 65536:
                    raise ValueError("response too large")
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"bad /cpu answer: {head!r}")
        return float(body)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"server did not listen on {port}")


def start(app: str, tmp: Path, ws: str = WS, cpu: int | None = None) -> Server:
    """Start uvicorn on ``app``; pinned to ``cpu`` when given (Linux)."""
    port = _free_port()
    log = tmp / f"{app.replace(':', '-')}-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--ws",
        ws,
        "--lifespan",
        "off",
        "--no-access-log",
        "--log-level",
        "error",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        _wait(port, proc, time.monotonic() + 30)
    except (RuntimeError, TimeoutError):
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"{app} failed to start:\n{log.read_text()}") from None
    return Server(app, port, proc, log)


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)


def placement() -> tuple[int | None, set[int] | None]:
    """(the CPU for the servers, the CPUs for the client), or (None, None) when not pinning.

    With two CPUs or more (and ``taskset``), the servers share the last CPU and the client
    threads get the others, so a round never measures the client and server fighting over one
    core. Fewer CPUs, or no affinity support: nothing is pinned.
    """
    if not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[-1], set(cpus[:-1])


@contextlib.contextmanager
def servers(
    apps: Mapping[str, str], ws: str = WS, *, pin: bool = True
) -> Iterator[dict[str, Server]]:
    """Start one uvicorn per ``{name: app}`` (all at once, so rounds alternate between them).

    With ``pin``, see ``placement``: the servers share one CPU, this process runs on the rest
    until the block ends.
    """
    server_cpu, client_cpus = placement() if pin else (None, None)
    before = os.sched_getaffinity(0) if client_cpus else None
    with tempfile.TemporaryDirectory(prefix="wsh-bench-") as tmp:
        started: dict[str, Server] = {}
        try:
            for name, app in apps.items():
                started[name] = start(app, Path(tmp), ws, server_cpu)
            if client_cpus:
                os.sched_setaffinity(0, client_cpus)
            yield started
        finally:
            if before is not None:
                os.sched_setaffinity(0, before)
            for server in started.values():
                stop(server)


def sessions(
    apps: Mapping[str, str],
    measures: Callable[[dict[str, Server]], Mapping[str, Callable[[], T]]],
    *,
    sessions: int,
    rounds: int,
    ws: str = WS,
    warm: Callable[[Server], object] | None = None,
) -> dict[str, list[T]]:
    """Every variant's measurements over ``sessions`` x ``rounds``.

    Each session starts fresh server processes (new hash seeds, new memory layout: a process
    can run a few percent faster or slower than its twin for the whole of its life, so one
    process per variant would measure that too), warms them, then alternates the variants for
    ``rounds`` rounds. The lists hold every round of every session, in order.
    """
    results: dict[str, list[T]] = {name: [] for name in apps}
    for _ in range(sessions):
        with servers(apps, ws) as running:
            if warm is not None:
                for server in running.values():
                    warm(server)
            for name, values in alternate(measures(running), rounds).items():
                results[name].extend(values)
    return results


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def upgrade_request(port: int, key: str) -> bytes:
    return (
        f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {ORIGIN}\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    ).encode("latin-1")


def handshake(port: int, request: bytes) -> socket.socket:
    """Open a socket and complete one handshake; the caller closes it."""
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk or len(data) > 65536:
                raise ConnectionError(f"no handshake answer: {data!r}")
            data += chunk
        if not data.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {data[:200]!r}")
        _, _, rest = data.partition(b"\r\n\r\n")
        if rest:
            raise RuntimeError("unexpected bytes after the handshake")
    except BaseException:
        sock.close()
        raise
    return sock


def in_threads(worker: Callable[[int], None], threads: int) -> float:
    """Run ``worker(i)`` in ``threads`` threads at once; return the wall seconds taken."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def run(index: int) -> None:
        barrier.wait()
        try:
            worker(index)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def summarise(raw: Mapping[str, Sequence[tuple[float, float]]]) -> dict[str, Any]:
    """Medians of (rate, server CPU) per variant, and each variant's ratios to ``bare``.

    A ratio is paired per round (the variant and bare measured in the same round), then the
    median is taken: ``rate_ratio`` / ``cpu_ratio`` for ``guarded``, ``<name>_rate_ratio`` /
    ``<name>_cpu_ratio`` for the others (``control``, ``channels``).
    """
    rate = {name: [r for r, _ in values] for name, values in raw.items()}
    cpu = {name: [c for _, c in values] for name, values in raw.items()}
    result: dict[str, Any] = {
        "per_second": {name: median(values) for name, values in rate.items()},
        "server_cpu_us": {name: median(values) for name, values in cpu.items()},
        "spread": {name: spread(values) for name, values in rate.items()},
    }
    for name in raw:
        if name == "bare":
            continue
        prefix = "" if name == "guarded" else f"{name}_"
        for measure, values in (("rate", rate), ("cpu", cpu)):
            ratios = [v / b for v, b in zip(values[name], values["bare"], strict=True)]
            result[f"{prefix}{measure}_ratio"] = median(ratios)
    return result


def comparison_rows(result: Mapping[str, Any], target: float, digits: int) -> list[list[str]]:
    """The table rows shared by the end-to-end benchmarks: bare, guarded, the ratios."""
    rate, cpu = result["per_second"], result["server_cpu_us"]
    rows = [
        ["bare app", f"{rate['bare']:.0f}", f"{cpu['bare']:.{digits}f}"],
        [
            "with asgi-ws-handshake (full policy)",
            f"{rate['guarded']:.0f}",
            f"{cpu['guarded']:.{digits}f}",
        ],
        [
            f"ratio guarded / bare (target >= {target})",
            f"{result['rate_ratio']:.3f} {verdict(result['rate_ratio'] >= target)}",
            f"{result['cpu_ratio']:.3f}",
        ],
    ]
    if "channels_rate_ratio" in result:
        rows.append(
            [
                "Channels OriginValidator (origin only) / bare",
                f"{result['channels_rate_ratio']:.3f}",
                f"{result['channels_cpu_ratio']:.3f}",
            ]
        )
    rows.append(
        [
            "control: bare again / bare (resolution)",
            f"{result['control_rate_ratio']:.3f}",
            f"{result['control_cpu_ratio']:.3f}",
        ]
    )
    return rows
