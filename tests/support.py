"""Test support shared by the whole suite: a raw-socket handshake client, a server-process
harness that starts real ASGI servers on 127.0.0.1 ephemeral ports, and audit-file readers.

Traffic goes to loopback only, every socket is bounded in time and bytes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Debian's chromium (the test command installs it) and the flags that keep it off the network.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]
GOOD_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3
GOOD_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MAX_RESPONSE = 64 * 1024


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


def handshake_lines(
    host: str,
    *,
    path: str = "/ws",
    origin: str | Sequence[str] | None = None,
    key: str | Sequence[str] | None = GOOD_KEY,
    version: str | Sequence[str] | None = "13",
    protocols: str | Sequence[str] | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Build a raw HTTP/1.1 upgrade request; a sequence value repeats the header line."""

    def lines(name: str, value: str | Sequence[str] | None) -> list[str]:
        if value is None:
            return []
        values = [value] if isinstance(value, str) else list(value)
        return [f"{name}: {v}" for v in values]

    head = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        *lines("Sec-WebSocket-Key", key),
        *lines("Sec-WebSocket-Version", version),
        *lines("Origin", origin),
        *lines("Sec-WebSocket-Protocol", protocols),
        *(f"{k}: {v}" for k, v in extra),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket, *, read_body: bool = True) -> RawResponse:
    """Read one HTTP response head (and a Content-Length body, unless 101)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
        if len(data) > MAX_RESPONSE:
            raise ValueError("response head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    _, status, *reason = status_line.split(" ", 2)
    headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    response = RawResponse(int(status), reason[0] if reason else "", headers)
    if response.status != 101 and read_body:
        length = response.header("content-length")
        if length is not None:
            body = rest
            while len(body) < int(length):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
            response.body = body[: int(length)]
        else:
            body = rest
            with contextlib.suppress(OSError):
                while len(body) < MAX_RESPONSE and (chunk := sock.recv(4096)):
                    body += chunk
            response.body = body
    return response


def raw_handshake(port: int, request: bytes, *, timeout: float = 5.0) -> RawResponse:
    """Send ``request`` to 127.0.0.1:port and return the server's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_response(sock)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"server did not listen on {port}")


@dataclass
class Server:
    """A real ASGI server process on 127.0.0.1."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    audit_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.audit_path)

    def wait_events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until the audit file holds at least ``count`` events."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.02)

    def event_for_key(self, key: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if e["key"] == key]
            if found:
                assert len(found) == 1, found
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no audit event for key {key!r}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def read_events(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON Lines audit file (a line still being written is skipped)."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def start_server(
    name: str,
    argv: Sequence[str],
    tmp: Path,
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    startup: float = 20.0,
) -> Server:
    """Start ``argv`` (``{port}`` is substituted) and wait until it listens."""
    for attempt in range(3):
        chosen = port or free_port()
        log_path = tmp / f"{name}-{chosen}.log"
        audit_path = tmp / f"{name}-{chosen}.audit.jsonl"
        full_env = {
            **os.environ,
            "WSH_AUDIT_FILE": str(audit_path),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        cmd = [part.replace("{port}", str(chosen)) for part in argv]
        log = log_path.open("wb")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(ROOT)
        )
        log.close()
        try:
            wait_for_port(chosen, proc, time.monotonic() + startup)
        except (RuntimeError, TimeoutError):
            proc.kill()
            proc.wait(5)
            if attempt == 2 or port is not None:
                raise RuntimeError(f"{name} failed to start:\n{log_path.read_text()}") from None
            continue
        return Server(name, chosen, proc, log_path, audit_path, full_env)
    raise AssertionError("unreachable")


def uvicorn_argv(ws: str, app: str = "tests.apps.main:app", *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--ws",
        ws,
        "--no-access-log",
        "--log-level",
        "info",
        *extra,
    ]


def serve_argv(policy: Path, *extra: str) -> list[str]:
    """The project's own ``serve`` command running ``tests.apps.main:downstream``."""
    return [
        sys.executable,
        "-m",
        "asgi_ws_handshake",
        "serve",
        "tests.apps.main:downstream",
        "--policy",
        str(policy),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
        *extra,
    ]


def hypercorn_argv(app: str = "tests.apps.main:app", *extra: str) -> list[str]:
    return [sys.executable, "-m", "hypercorn", app, "--bind", "127.0.0.1:{port}", *extra]


def daphne_argv(app: str = "tests.apps.main:app", *extra: str) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", *extra, app]


def granian_argv(app: str = "tests.apps.main:app", *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        "1",
        "--no-access-log",
        *extra,
        app,
    ]


#: Every server of the compatibility matrix: name -> argv builder taking the app target.
SERVERS: dict[str, Callable[[str], list[str]]] = {
    "uvicorn-websockets-sansio": lambda app: uvicorn_argv("websockets-sansio", app),
    "uvicorn-websockets": lambda app: uvicorn_argv("websockets", app),
    "uvicorn-wsproto": lambda app: uvicorn_argv("wsproto", app),
    "hypercorn": hypercorn_argv,
    "daphne": daphne_argv,
    "granian": granian_argv,
}


def server_argv(name: str, app: str = "tests.apps.main:app") -> list[str]:
    """The command that runs ``app`` under the matrix server ``name``."""
    return SERVERS[name](app)


@contextlib.contextmanager
def running(name: str, argv: Sequence[str], tmp: Path, **kwargs: Any) -> Iterator[Server]:
    server = start_server(name, argv, tmp, **kwargs)
    try:
        yield server
    finally:
        server.stop()
