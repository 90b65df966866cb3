"""A real ``redis-server`` (or ``valkey-server``) for the Redis store tests: 127.0.0.1, a free
port, no persistence; also as a cluster node or a Sentinel (``tests.redis_topologies``).

No fake Redis: the tests run against Debian's ``redis-server`` and ``valkey-server``
(``tests/run.sh`` installs both, with their ``redis-cli``/``valkey-cli``). A server can be
stopped, paused and restarted on the same port to test outages and recovery.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support import free_port

#: The servers the store must work against, by name: the binary (None when not installed).
SERVERS = {"redis": shutil.which("redis-server"), "valkey": shutil.which("valkey-server")}
#: Their command-line clients (``--cluster create`` builds a cluster).
CLIS = {"redis": shutil.which("redis-cli"), "valkey": shutil.which("valkey-cli")}
#: Parameters for a fixture that runs against each server; a missing one is skipped by name
#: (tests/run.sh installs both, so CI runs both).
KINDS = [
    pytest.param(kind, marks=pytest.mark.skipif(path is None, reason=f"{kind}-server missing"))
    for kind, path in SERVERS.items()
]


class RedisServer:
    """One redis-server process; ``url`` stays the same across restarts.

    Args:
        args: more command-line options (``--cluster-enabled yes``, ``--replicaof ...``).
        sentinel: run as a Sentinel with these configuration lines (Sentinel rewrites its
            configuration file, so it needs one of its own).
        bus: pick a free cluster bus port too (``--cluster-port``).
    """

    def __init__(
        self,
        tmp: Path,
        port: int | None = None,
        kind: str = "redis",
        *,
        args: Sequence[str] = (),
        sentinel: Sequence[str] | None = None,
        bus: bool = False,
    ) -> None:
        binary = SERVERS[kind]
        if binary is None:
            raise RuntimeError(f"{kind}-server is not installed (tests/run.sh installs it)")
        self.binary = binary
        self.kind = kind
        self.tmp = tmp
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.bus_port = free_port() if bus else None
        self.args = list(args)
        self.sentinel = None if sentinel is None else list(sentinel)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        if self.sentinel is not None:
            conf = self.tmp / f"sentinel-{self.port}.conf"
            if not conf.exists():  # a restarted Sentinel keeps what it learnt
                lines = [f"port {self.port}", "bind 127.0.0.1", f'dir "{self.tmp}"']
                conf.write_text("\n".join([*lines, *self.sentinel, ""]))
            return [self.binary, str(conf), "--sentinel"]
        bus = ["--cluster-port", str(self.bus_port)] if self.bus_port else []
        # No disk, and a replica's first sync starts at once (not after 5 s).
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--repl-diskless-sync-delay", "0", "--dir", str(self.tmp),
                *bus, *self.args]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        # Another process may take a free port between our check and the server's bind: a
        # first start picks new ports and tries again (a restart must keep its port).
        for attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError:
                if self.started or self.fixed_port or attempt == 2:
                    raise
                self.port = free_port()
                self.bus_port = free_port() if self.bus_port else None
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> None:
        log = (self.tmp / f"{self.kind}-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind}-server exited with {self.proc.returncode}")
            if self.ping():
                self.started = True
                return
            time.sleep(0.05)
        self.kill()
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

    #: A crash: SIGKILL, no shutdown (the name says what a failover test does).
    kill = stop

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
