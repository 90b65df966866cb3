"""The whole policy for one WebSocket route, without a middleware: a FastAPI dependency
(``Depends(guard)``) or, in Starlette, an async context manager (``guard.connect(ws)``).

It is the middleware's own path, not a second one: the route's connection runs through a
``HandshakeMiddleware`` (evaluate, authenticate, store checks, the guard of the app's answer,
the audit, deadlines) whose app is the rest of the endpoint. A refusal is raised the way the
framework refuses: ``HTTPException`` (a denial response) where the server offers the
``websocket.http.response`` extension, else ``WebSocketException`` (close 1008). Needs
Starlette (the ``demo`` extra, or FastAPI).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from starlette.exceptions import HTTPException, WebSocketException
from starlette.websockets import WebSocket

from .audit import AuditSink
from .middleware import HandshakeMiddleware, Message, Receive, Scope, Send
from .policy import HandshakePolicy
from .stores import HandshakeStore

__all__ = ["HandshakeGuard"]

_HANDOFF = "asgi_ws_handshake.handoff"
# Headers of a refusal that the framework's response sets itself.
_OWN_HEADERS = (b"content-type", b"content-length")


class _Handoff:
    """One connection's meeting point between the endpoint and the middleware's task."""

    __slots__ = ("app_args", "done", "ready", "refusal", "websocket")

    def __init__(self, websocket: WebSocket) -> None:
        loop = asyncio.get_running_loop()
        self.websocket = websocket
        #: Set when the middleware hands the connection over (its app was called).
        self.ready: asyncio.Future[None] = loop.create_future()
        #: Set when the endpoint has finished (with its exception, if any).
        self.done: asyncio.Future[None] = loop.create_future()
        self.app_args: tuple[Scope, Receive, Send] | None = None
        self.refusal: list[Message] = []

    async def send(self, message: Message) -> None:
        if self.app_args is None:
            # Before the hand-over, only a refusal is sent: keep it for the framework.
            self.refusal.append(message)
            return
        await self.websocket.send(message)

    def refused(self) -> Exception:
        """The framework's exception for the kept refusal."""
        start = self.refusal[0] if self.refusal else {}
        if start.get("type") == "websocket.http.response.start":
            body = b"".join(m.get("body", b"") for m in self.refusal[1:])
            headers = {
                bytes(name).decode("latin-1"): bytes(value).decode("latin-1")
                for name, value in start.get("headers", ())
                if bytes(name).lower() not in _OWN_HEADERS
            }
            return HTTPException(start["status"], body.decode().strip(), headers or None)
        # No denial extension (or nothing sent): a close before accept, 403 on the wire.
        return WebSocketException(1008, "handshake refused")


async def _handoff_app(scope: Scope, receive: Receive, send: Send) -> None:
    handoff: _Handoff = scope[_HANDOFF]
    child = {key: value for key, value in scope.items() if key != _HANDOFF}
    handoff.app_args = (child, receive, send)
    handoff.ready.set_result(None)
    await handoff.done  # the endpoint's own exception comes back out here


class HandshakeGuard:
    """Guard one route's handshakes with a policy, as the middleware would.

    FastAPI::

        guard = HandshakeGuard(HandshakePolicy(authenticate=tickets))

        @app.websocket("/ws")
        async def chat(websocket: Annotated[WebSocket, Depends(guard)]) -> None:
            await websocket.accept()  # the guarded socket: get_handshake(websocket) works

    Starlette::

        async def chat(websocket: WebSocket) -> None:
            async with guard.connect(websocket) as websocket:
                await websocket.accept()

    Use the socket it gives: its scope carries the record (``get_handshake``), ``user`` and
    ``auth``, and its sends go through the guard. Arguments are ``HandshakeMiddleware``'s.
    """

    def __init__(
        self,
        policy: HandshakePolicy | None = None,
        *,
        audit: AuditSink | Iterable[AuditSink] | None = None,
        store: HandshakeStore | None = None,
        **options: Any,
    ) -> None:
        self.middleware = HandshakeMiddleware(
            _handoff_app, policy=policy, audit=audit, store=store, **options
        )

    async def __call__(self, websocket: WebSocket) -> AsyncIterator[WebSocket]:
        """The FastAPI dependency: yields the guarded socket."""
        async with self.connect(websocket) as guarded:
            yield guarded

    @contextlib.asynccontextmanager
    async def connect(self, websocket: WebSocket) -> AsyncIterator[WebSocket]:
        """Judge the handshake; yield the guarded socket, or raise the framework's refusal.

        Raises:
            HTTPException: refused, where the server offers the denial response.
            WebSocketException: refused (code 1008), where it does not.
        """
        handoff = _Handoff(websocket)
        scope = {**websocket.scope, _HANDOFF: handoff}
        task = asyncio.ensure_future(self.middleware(scope, websocket.receive, handoff.send))
        try:
            await asyncio.wait((task, handoff.ready), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        if handoff.app_args is None:  # judged and refused (or the client left): no endpoint
            await task
            raise handoff.refused()
        child, receive, send = handoff.app_args
        try:
            yield WebSocket(child, receive, send)
        except BaseException as exc:
            handoff.done.set_exception(exc)
            # The middleware decides: the guard's own refusal or close comes back as a normal
            # end (nothing for the server); anything else is raised again from the task.
            await task
        else:
            handoff.done.set_result(None)
            await task
