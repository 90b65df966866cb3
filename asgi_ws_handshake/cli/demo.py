"""The live demo: a Starlette chat behind the middleware, a foreign site, a live audit table,
and a room that asks who is connecting (sign in, a one-time ticket, closed at expiry).

Owns the demo apps, their page and running both servers in one event loop. Needs the
``demo`` extra (starlette, uvicorn); the CLI imports this module only for ``demo``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from typing import Any, TextIO

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..audit import AuditEvent, CloseEvent
from ..authenticators import Tickets
from ..logs import quiet_uvicorn_denials
from ..middleware import HandshakeMiddleware, get_handshake
from ..policy import HandshakePolicy
from ..sinks import LoggingSink
from .probe import ProbeOptions, format_report, run_probe

__all__ = ["SUBPROTOCOL", "AuditFeed", "build_apps", "run_demo"]

SUBPROTOCOL = "chat.v1"
_MAX_TEXT = 500
#: Seconds a demo session lasts; a "short" one shows the guard closing the socket at expiry.
LONG_SESSION = 600.0
SHORT_SESSION = 5.0
_COOKIE = "demo_session"
_MAX_SESSIONS = 1000


def _page() -> str:
    """The demo page, a real HTML file shipped as package data (demo.html beside this module)."""
    return resources.files(__package__).joinpath("demo.html").read_text(encoding="utf-8")


class AuditFeed:
    """An audit sink that keeps recent events and pushes them to subscribed queues."""

    def __init__(self, history: int = 200, queue_size: int = 500) -> None:
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._queue_size = queue_size

    def __call__(self, event: AuditEvent) -> None:
        self._add(
            {
                "id": event.id,
                "time": datetime.fromtimestamp(event.time).strftime("%H:%M:%S"),
                "path": event.path,
                "origin": event.origin,
                "subject": event.subject,
                "subprotocol": event.subprotocol,
                "outcome": str(event.outcome),
                "reason": event.reason,
                "status": event.status,
            }
        )

    def closed(self, event: CloseEvent) -> None:
        """How an accepted connection ended (the second kind of event): a row of its own."""
        handshake = event.handshake
        origins = handshake.request.origins
        self._add(
            {
                "id": event.id,
                "time": datetime.fromtimestamp(event.time).strftime("%H:%M:%S"),
                "path": handshake.request.path,
                "origin": origins[0] if origins else None,
                "subject": handshake.subject,
                "subprotocol": handshake.subprotocol,
                "outcome": f"closed_by_{event.closed_by}",
                "reason": event.reason,
                "status": event.code,
            }
        )

    def _add(self, row: dict[str, Any]) -> None:
        self._history.append(row)
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled page misses rows
                queue.put_nowait(row)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """A queue pre-filled with the history, fed until the block ends."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        for row in self._history:
            queue.put_nowait(row)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


async def _events(websocket: WebSocket) -> None:
    feed: AuditFeed = websocket.app.state.feed
    await websocket.accept()

    async def pump(queue: asyncio.Queue[dict[str, Any]]) -> None:
        with contextlib.suppress(Exception):
            while True:
                await websocket.send_text(json.dumps(await queue.get()))

    with feed.subscribe() as queue:
        task = asyncio.ensure_future(pump(queue))
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _chat(websocket: WebSocket) -> None:
    room: set[WebSocket] = websocket.app.state.room
    await websocket.accept()  # the middleware fills in the negotiated subprotocol
    info = get_handshake(websocket)
    await websocket.send_text(
        json.dumps(
            {
                "type": "welcome",
                "subprotocol": info.subprotocol if info else None,
                "origin": info.origin if info else None,
                "audit_id": info.audit_id if info else None,
                "subject": info.subject if info else None,
            }
        )
    )
    room.add(websocket)
    try:
        while True:
            text = (await websocket.receive_text())[:_MAX_TEXT]
            message = json.dumps({"type": "message", "text": text})
            for peer in list(room):
                try:
                    await peer.send_text(message)
                except Exception:
                    room.discard(peer)
    except WebSocketDisconnect:
        pass
    finally:
        room.discard(websocket)


class _Sessions:
    """The demo's sign-in: a session cookie, and tickets for the authenticated room.

    A real app has its own login; what matters here is the flow: the page signs in over
    HTTP, asks the ticket endpoint (same origin, with its cookie) for a one-time ticket, and
    opens the socket with it. The socket is closed when the session expires.
    """

    def __init__(self, tickets: Tickets) -> None:
        self.tickets = tickets
        self._sessions: dict[str, tuple[str, float]] = {}

    async def login(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not 0 < len(name) <= 32 or not name.isprintable():
            return JSONResponse({"error": "a name of 1 to 32 printable characters"}, 400)
        seconds = SHORT_SESSION if body.get("short") else LONG_SESSION
        if len(self._sessions) >= _MAX_SESSIONS:
            self._sessions.clear()  # a demo: bounded, not durable
        sid = secrets.token_urlsafe(24)
        expires = time.time() + seconds
        self._sessions[sid] = (name, expires)
        response = JSONResponse({"name": name, "expires_in": seconds})
        response.set_cookie(
            _COOKIE, sid, max_age=int(seconds), httponly=True, samesite="strict", path="/"
        )
        return response

    async def ticket(self, request: Request) -> JSONResponse:
        session = self._sessions.get(request.cookies.get(_COOKIE, ""))
        if session is None or session[1] <= time.time():
            return JSONResponse({"error": "sign in first"}, 401)
        name, expires = session
        # ?expired=1: a ticket whose 30 seconds are already over, to show the refusal.
        ttl = -1.0 if request.query_params.get("expired") else None
        return JSONResponse({"ticket": self.tickets.issue(name, expires_at=expires, ttl=ttl)})


def _page_route(role: str, chat_url: str) -> Route:
    html = (
        _page()
        .replace("{{ROLE}}", role)
        .replace("{{CHAT_URL}}", chat_url)
        .replace("{{SUBPROTOCOL}}", SUBPROTOCOL)
    )

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    return Route("/", page)


def build_apps(feed: AuditFeed, main_ws_url: str) -> tuple[HandshakeMiddleware, Starlette]:
    """The protected chat app and the foreign site that tries to use it.

    Args:
        feed: the audit sink both pages read their table from.
        main_ws_url: the chat endpoint's ``ws://`` URL, as the foreign page must call it.
    """
    tickets = Tickets(secrets.token_bytes(32))
    sessions = _Sessions(tickets)
    chat = Starlette(
        routes=[
            _page_route("protected", ""),
            Route("/login", sessions.login, methods=["POST"]),
            Route("/ticket", sessions.ticket),
            WebSocketRoute("/chat", _chat),
            WebSocketRoute("/room", _chat),
            WebSocketRoute("/events", _events),
        ]
    )
    chat.state.feed = feed
    chat.state.room = set()
    # Same-origin (no allow_origins): only pages served by this server may open the chat.
    policy = HandshakePolicy(subprotocols=[SUBPROTOCOL], key_reuse="reject")
    # The room also asks who: a one-time ticket, and the socket ends with the session.
    room = HandshakePolicy(subprotocols=[SUBPROTOCOL], key_reuse="reject", authenticate=tickets)
    protected = HandshakeMiddleware(
        chat, policy=policy, routes={"/room": room}, audit=[feed, LoggingSink()]
    )
    # The foreign site: another origin serving the same page. Its own /events socket carries
    # the protected server's audit table (same process, same feed) so the refusal is visible.
    foreign = Starlette(
        routes=[_page_route("foreign", main_ws_url), WebSocketRoute("/events", _events)]
    )
    foreign.state.feed = feed
    return protected, foreign


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen on {host}:{port}: {exc.strerror} (try --port 0)"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to ``run_demo`` (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_demo(
    host: str = "127.0.0.1",
    port: int = 8000,
    foreign_port: int = 8001,
    *,
    probe: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Run the demo until interrupted (or, with ``probe``, until the probe is done).

    Returns:
        The exit status: 0, or 1 when ``probe`` found a failure.
    """
    main_sock = _bind(host, port)
    try:
        foreign_sock = _bind(host, foreign_port)
    except OSError:
        main_sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    main_port = main_sock.getsockname()[1]
    foreign_port = foreign_sock.getsockname()[1]
    main_url = f"http://{shown}:{main_port}/"
    foreign_url = f"http://{shown}:{foreign_port}/"
    ws_url = f"ws://{shown}:{main_port}/chat"

    feed = AuditFeed()
    protected, foreign = build_apps(feed, ws_url)
    quiet_uvicorn_denials()  # uvicorn's ERROR after each of the guard's refusals
    servers = [
        _Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
        for app in (protected, foreign)
    ]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop)
    tasks = [
        asyncio.ensure_future(server.serve(sockets=[sock]))
        for server, sock in zip(servers, (main_sock, foreign_sock), strict=True)
    ]
    status = 0
    try:
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                stop()
                break
            await asyncio.sleep(0.02)
        else:
            print(f"protected chat:   {main_url}", file=out)
            print(f"foreign origin:   {foreign_url}  (its handshake is refused)", file=out)
            print(f"chat endpoint:    {ws_url}", file=out)
            if probe:
                options = ProbeOptions(origin=main_url.rstrip("/"), subprotocols=(SUBPROTOCOL,))
                report = await asyncio.to_thread(run_probe, ws_url, options)
                print(format_report(report), file=out)
                status = 0 if report.ok else 1
                stop()
            else:
                print("press Ctrl+C to stop", file=out)
            out.flush()
        await asyncio.gather(*tasks)
    finally:
        stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        main_sock.close()
        foreign_sock.close()
    return status


def configure_logging() -> None:
    """Show audit lines in the terminal."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    audit = logging.getLogger("asgi_ws_handshake")
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    audit.propagate = False
