"""A small reverse proxy for the tests, as nginx is usually configured in front of uvicorn.

It listens on 127.0.0.1, reads one request head, rewrites ``Host`` to the backend's address
(as ``proxy_pass http://backend`` does), sets the forwarding headers itself (replacing any the
client sent: nginx's ``proxy_set_header``), pretends to end TLS (``proto=https``), and connects
to the backend FROM ``127.0.0.2``, so that the backend can tell it from clients that connect
directly from 127.0.0.1. Then it copies bytes both ways. Everything is bounded: the head's
size, each connection's lifetime, the number of connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Literal

PROXY_ADDRESS = "127.0.0.2"  # the address the proxy connects to the backend from
_MAX_HEAD = 16 * 1024
_LIFETIME = 30.0
_DROPPED = {b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-for", b"forwarded"}


class ForwardingProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<backend>, adding proxy headers."""

    def __init__(self, backend: int, mode: Literal["x-forwarded", "forwarded"]) -> None:
        self.backend = backend
        self.mode = mode
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def start(self) -> ForwardingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def headers(self, client: str, host: bytes) -> list[bytes]:
        if self.mode == "forwarded":
            return [b'Forwarded: for="%s";host="%s";proto=https' % (client.encode(), host)]
        return [
            b"X-Forwarded-For: " + client.encode(),
            b"X-Forwarded-Host: " + host,
            b"X-Forwarded-Proto: https",
        ]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with asyncio.timeout(_LIFETIME):
                await self._forward(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD:
            return
        request_line, *lines = head[:-4].split(b"\r\n")
        host = b""
        kept = []
        for line in lines:
            name = line.partition(b":")[0].strip().lower()
            if name == b"host":
                host = line.partition(b":")[2].strip()
            if name not in _DROPPED:
                kept.append(line)
        client = writer.get_extra_info("peername")[0]
        upstream = [
            request_line,
            b"Host: 127.0.0.1:%d" % self.backend,
            *kept,
            *self.headers(client, host),
        ]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((PROXY_ADDRESS, 0))
            sock.setblocking(False)
            await self._loop.sock_connect(sock, ("127.0.0.1", self.backend))
            back_reader, back_writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        back_writer.write(b"\r\n".join(upstream) + b"\r\n\r\n")
        try:
            await asyncio.gather(_pipe(reader, back_writer), _pipe(back_reader, writer))
        finally:
            back_writer.close()
            with contextlib.suppress(Exception):
                await back_writer.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            writer.write_eof()


@contextlib.contextmanager
def forwarding(backend: int, mode: Literal["x-forwarded", "forwarded"]) -> Iterator[int]:
    """Run a proxy in front of ``backend``; yields its port."""
    proxy = ForwardingProxy(backend, mode).start()
    try:
        yield proxy.port
    finally:
        proxy.stop()
