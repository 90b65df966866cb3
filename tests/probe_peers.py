"""Servers other projects run, for the probe's tests: each on 127.0.0.1 on an ephemeral port,
started and stopped by the tests, bounded in bytes and time.

- ``websockets_server``: the ``websockets`` library's own server (``websockets.asyncio``),
  with or without ``origins=``, or with a deliberately weak origin check in
  ``process_request``, one per path (``WEAK_CHECKS``);
- ``version_server``: a raw asyncio server that speaks version 8 beside 13 on purpose (and
  sloppier variants), with an exact origin check;
- ``plain_http_server``: the standard library's HTTP server, which answers 200 or 404.

Django Channels' ``OriginValidator`` under daphne is ``tests/apps/probe_channels.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import http
import http.server
import re
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Origin

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 16 * 1024


def _scheme_blind(origin: str, port: int) -> bool:
    return urlsplit(origin).netloc == f"127.0.0.1:{port}"


def _port_blind(origin: str, port: int) -> bool:
    parts = urlsplit(origin)
    return parts.scheme == "http" and parts.hostname == "127.0.0.1"


#: Weak origin checks, one per path: ``check(origin, server_port)``. Each is a mistake seen
#: in real code; the probe must name it.
WEAK_CHECKS: dict[str, Callable[[str, int], bool]] = {
    # Node ws verifyClient: origin.startsWith("http://127.0.0.1")
    "/prefix": lambda origin, port: origin.startswith("http://127.0.0.1"),
    # "allow our domain and its subdomains", with no dot before it
    "/suffix": lambda origin, port: (
        origin.startswith("http://") and origin.endswith("chat.app.test")
    ),
    # a real wildcard over the parent domain: one label, then ".app.test"
    "/wildcard": lambda origin, port: (
        re.fullmatch(r"http://([a-z0-9-]+\.)?app\.test", origin) is not None
    ),
    # compares the host with ours and forgets the port
    "/port": _port_blind,
    # compares host:port and forgets the scheme
    "/scheme": _scheme_blind,
}


class _Closable(Protocol):
    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


@contextlib.contextmanager
def _serving(start: Callable[[socket.socket], Coroutine[Any, Any, _Closable]]) -> Iterator[int]:
    """Run ``start(listening_socket)`` on an event loop in a thread; yield the port."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"peer-{port}", daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(start(sock), loop).result(10)
        try:
            yield port
        finally:

            async def stop() -> None:
                server.close()
                await asyncio.wait_for(server.wait_closed(), 5)

            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        sock.close()


async def _echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


@contextlib.contextmanager
def websockets_server(*, origins: Sequence[str] | None = None, weak: bool = False) -> Iterator[int]:
    """The ``websockets`` server, echoing. ``origins``: the library's own origin check; the
    string ``{port}`` in an origin becomes the server's port. ``weak``: ``WEAK_CHECKS``."""

    def refuse_weak(connection: ServerConnection, request: Request) -> Response | None:
        check = WEAK_CHECKS.get(urlsplit(request.path).path)
        values = request.headers.get_all("Origin")
        port = int(connection.local_address[1])
        if check is None or not values or check(values[0], port):
            return None  # websockets checks the rest (key, version) itself
        return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")

    async def start(sock: socket.socket) -> _Closable:
        port = sock.getsockname()[1]
        allowed: list[Origin | None] | None = None
        if origins is not None:
            allowed = [Origin(o.replace("{port}", str(port))) for o in origins]
        kwargs: dict[str, Any] = {"process_request": refuse_weak} if weak else {}
        return await serve(_echo, sock=sock, origins=allowed, **kwargs)

    with _serving(start) as port:
        yield port


# ---- a raw server that speaks version 8 on purpose -----------------------------------------


def _accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def _valid_key(keys: list[str]) -> bool:
    if len(keys) != 1:
        return False
    try:
        return len(base64.b64decode(keys[0], validate=True)) == 16
    except binascii.Error:
        return False


#: Which Sec-WebSocket-Version lines each path accepts, and what it advertises otherwise.
VERSION_PATHS: dict[str, tuple[Callable[[list[str]], bool], str]] = {
    # versions 13 and 8, one line, exactly (RFC 6455 4.4), advertised as the RFC shows
    "/v8": (lambda lines: lines in (["13"], ["8"]), "13, 8"),
    # the same, but it advertises 13 only
    "/v8-quiet": (lambda lines: lines in (["13"], ["8"]), "13"),
    # splits the value and takes any known item: "13, 8" gets through
    "/sloppy": (
        lambda lines: any(v.strip() in ("13", "8") for v in ",".join(lines).split(",")),
        "13",
    ),
    # never looks at the version
    "/any": (lambda lines: True, "13"),
    # speaks only the draft: the valid handshake (13) is refused
    "/old": (lambda lines: lines == ["8"], "8"),
    # 13 only, and every refusal is a dropped connection (RFC 6455 10.7 allows it)
    "/drop": (lambda lines: lines == ["13"], ""),
    # 13 only, advertised as 8; refuses bad keys with 403 and answers 101s carelessly
    "/broken": (lambda lines: lines == ["13"], "8"),
}


def _response(
    status: int, reason: str, headers: Sequence[tuple[str, str]], body: str = ""
) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    if status != 101:
        head += ["Content-Type: text/plain", f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode("latin-1")


def _refusal(port: int, path: str, headers: dict[str, list[str]]) -> bytes:
    """The refusal of one handshake, or b"" when it is acceptable."""
    accepts, advertised = VERSION_PATHS.get(path, VERSION_PATHS["/v8"])
    if not _valid_key(headers.get("sec-websocket-key", [])):
        # "/broken" refuses with the wrong status.
        status = 403 if path == "/broken" else 400
        return _response(status, "Bad Request", [], "bad key\n")
    if not accepts(headers.get("sec-websocket-version", [])):
        versions = [("Sec-WebSocket-Version", advertised)]
        return _response(426, "Upgrade Required", versions, "version\n")
    origins = headers.get("origin", [])
    if origins and origins != [f"http://127.0.0.1:{port}"]:
        return _response(403, "Forbidden", [], "origin\n")
    return b""


def _answer(port: int, path: str, headers: dict[str, list[str]]) -> bytes:
    """The response to one handshake; b"" to drop the connection unanswered."""
    refusal = _refusal(port, path, headers)
    if refusal:
        return b"" if path == "/drop" else refusal
    key = headers["sec-websocket-key"][0]
    answer = [("Connection", "Upgrade"), ("Sec-WebSocket-Accept", _accept(key))]
    if path != "/broken":
        answer.append(("Upgrade", "websocket"))
    elif headers.get("sec-websocket-protocol"):
        # "/broken" selects a subprotocol whether it was offered or not.
        answer.append(("Sec-WebSocket-Protocol", "chat"))
    return _response(101, "Switching Protocols", answer)


@contextlib.contextmanager
def version_server() -> Iterator[int]:
    """Speaks version 8 beside 13 (``VERSION_PATHS``), same-origin only, one answer per
    connection, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        path = request_line.split(" ")[1] if request_line.count(" ") == 2 else "/"
        answer = _answer(port, path, headers)
        if answer:
            writer.write(answer)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.drain(), 5)
                await asyncio.wait_for(reader.read(64), 1)  # the probe's close frame
        writer.close()

    async def start(sock: socket.socket) -> _Closable:
        return await asyncio.start_server(handle, sock=sock, limit=MAX_HEAD)

    with _serving(start) as port:
        yield port


# ---- a plain HTTP server -------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def plain_http_server(root: Path) -> Iterator[int]:
    """The standard library's file server on ``root``: 200 for ``/`` and files, 404 else."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
