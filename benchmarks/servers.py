"""Real uvicorn processes on 127.0.0.1 and a small raw-socket client for the benchmarks.

Loopback only; every socket has a timeout and every run a bounded count.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ROOT

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


def start(app: str, tmp: Path, ws: str = WS) -> Server:
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


@contextlib.contextmanager
def servers(apps: Sequence[str], ws: str = WS) -> Iterator[dict[str, Server]]:
    """Start one uvicorn per app (all at once, so rounds can alternate between them)."""
    with tempfile.TemporaryDirectory(prefix="wsh-bench-") as tmp:
        started: dict[str, Server] = {}
        try:
            for app in apps:
                started[app] = start(app, Path(tmp), ws)
            yield started
        finally:
            for server in started.values():
                stop(server)


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
