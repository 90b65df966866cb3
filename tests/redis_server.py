"""A real ``redis-server`` (or ``valkey-server``) for the Redis store tests: 127.0.0.1, a free
port, no persistence.

No fake Redis: the tests run against Debian's ``redis-server`` and ``valkey-server``
(``tests/run.sh`` installs both). A server can be stopped, paused and restarted on the same port
to test outages and recovery.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

#: The servers the store must work against, by name: the binary (None when not installed).
SERVERS = {"redis": shutil.which("redis-server"), "valkey": shutil.which("valkey-server")}
#: Parameters for a fixture that runs against each server; a missing one is skipped by name
#: (tests/run.sh installs both, so CI runs both).
KINDS = [
    pytest.param(kind, marks=pytest.mark.skipif(path is None, reason=f"{kind}-server missing"))
    for kind, path in SERVERS.items()
]


class RedisServer:
    """One redis-server process; ``url`` stays the same across restarts."""

    def __init__(self, tmp: Path, port: int | None = None, kind: str = "redis") -> None:
        binary = SERVERS[kind]
        if binary is None:
            raise RuntimeError(f"{kind}-server is not installed (tests/run.sh installs it)")
        self.binary = binary
        self.kind = kind
        self.tmp = tmp
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        log = (self.tmp / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind}-server exited with {self.proc.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.kind}-server did not answer on {self.port}")

    def ping(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), 0.5) as sock,
        ):
            sock.settimeout(0.5)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # in case it was paused
            proc.kill()
            proc.wait(10)

    def pause(self) -> None:
        """Freeze the server: connections stay open but nothing answers (a hung store)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def redis_server(tmp: Path, kind: str = "redis") -> Iterator[RedisServer]:
    server = RedisServer(tmp, kind=kind)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=KINDS)
def redis(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """One server per module and kind: each test that uses it runs on Redis and on Valkey."""
    kind = str(request.param)
    with redis_server(tmp_path_factory.mktemp(f"{kind}-server"), kind) as server:
        yield server
