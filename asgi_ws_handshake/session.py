"""What an accepted connection carries past its handshake: who it is, and when it must end.

Owns ``scope["user"]`` / ``scope["auth"]`` for the app (Starlette's ``AuthenticationMiddleware``
keys) and the guard's deadline: ``max_connection_age`` and the identity's ``expires_at``
(``close_on_expiry``). Only connections with a deadline get any of it: one timer each
(``loop.call_at``), started when the accept goes out, and a task only when it fires. The
middleware calls ``open_session`` for routes whose policy has ``sessions``.

Racing the app's own close is settled in one place, synchronously (one event loop): whichever
close is sent first wins and the other is dropped. The app's sends after the guard's close
raise ``GuardClosed`` (an ``OSError``: Starlette turns it into ``WebSocketDisconnect``), and an
exception caused by it that comes back out of the app is the guard's, never the server's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

from .identity import ANONYMOUS, Authenticated, AuthScopes

if TYPE_CHECKING:
    from .policy import HandshakePolicy

# Loose ASGI aliases (STYLE.md), as the middleware's.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Connection(Protocol):
    """What this module needs of the middleware's per-connection state."""

    receive_: Receive
    send_: Send
    closing: tuple[int, str] | None

    @property
    def authenticated(self) -> Authenticated | None: ...

    def now(self) -> float: ...


__all__ = ["CLOSE_GRACE", "Expiry", "GuardClosed", "caused_by", "open_session"]

logger = logging.getLogger("asgi_ws_handshake")

#: Seconds the guard's own close may take to send when the app ends meanwhile.
CLOSE_GRACE = 5.0
AGE_REASON = "connection age limit reached"
EXPIRY_REASON = "credential expired"


class GuardClosed(OSError):
    """Raised into the app when it sends after the guard closed the connection (a deadline)."""


def open_session(
    conn: _Connection, policy: HandshakePolicy, scope: Scope, app: ASGIApp
) -> tuple[Scope, ASGIApp]:
    """The scope and app for an accepted connection of a policy with ``sessions``.

    The scope (a copy) gets ``user`` and ``auth`` when the policy authenticates; the app is
    wrapped to end at the connection's deadline, when it has one.
    """
    auth = conn.authenticated
    if auth is not None:
        identity = auth.identity
        if identity is None:
            scope = {**scope, "user": ANONYMOUS, "auth": AuthScopes()}
        else:
            scope = {**scope, "user": identity, "auth": AuthScopes(identity.scopes)}
    identity = None if auth is None else auth.identity
    expires_at = None
    if policy.close_on_expiry and identity is not None:
        expires_at = identity.expires_at
    age = policy.max_connection_age
    if age is None and expires_at is None:
        return scope, app
    expiry = Expiry(conn, age, expires_at, policy.expiry_close_code)
    return scope, expiry.wrap(app)


class Expiry:
    """One connection's deadline: a timer from the accept, and the guard's close at its end.

    Sits between the app and the server's ``receive``/``send`` of this connection only, to
    see the accept (the timer starts), the app's close and the client's disconnect (the
    timer stops).
    """

    __slots__ = (
        "age",
        "closed",
        "code",
        "conn",
        "error",
        "expires_at",
        "handle",
        "reason",
        "server_receive",
        "server_send",
        "task",
    )

    def __init__(
        self, conn: _Connection, age: float | None, expires_at: float | None, code: int
    ) -> None:
        self.conn = conn
        #: Seconds from the accept, and the wall-clock expiry: the earlier one is the deadline.
        self.age = age
        self.expires_at = expires_at
        self.code = code
        self.reason = AGE_REASON
        self.server_receive: Receive = conn.receive_
        self.server_send: Send = conn.send_
        conn.receive_ = self.receive
        conn.send_ = self.send
        #: True once the connection is closing, by anyone: the timer has nothing left to do.
        self.closed = False
        #: Set when the guard closed the connection; raised into the app's later sends.
        self.error: GuardClosed | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app``, stopped and cleaned up with this deadline."""

        async def deadline_app(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await app(scope, receive, send)
            except BaseException as exc:
                if self.error is None or not caused_by(exc, self.error):
                    raise
                # The guard's close came back out of the app: the client has its close.
            finally:
                await self.stop()

        return deadline_app

    # -- the server side, as the app and the guard see it

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if self.error is not None:  # the guard closed the connection
            if kind == "websocket.close":
                return  # the app's own close, too late: never a second close
            raise self.error
        if kind == "websocket.close":
            self.closed = True  # set before the await: the timer cannot close it too
            self._cancel()
        await self.server_send(message)
        if kind == "websocket.accept" and not self.closed:
            self._start()

    async def receive(self) -> Message:
        message = await self.server_receive()
        if message.get("type") == "websocket.disconnect":
            self.closed = True
            self._cancel()
        return message

    # -- the timer

    def _start(self) -> None:
        # Counted from the accept; the identity's expiry is a moment on the wall clock.
        delay = self.age
        if self.expires_at is not None:
            left = self.expires_at - self.conn.now()
            if delay is None or left < delay:
                delay, self.reason = left, EXPIRY_REASON
        assert delay is not None
        loop = asyncio.get_running_loop()
        self.handle = loop.call_at(loop.time() + max(0.0, delay), self._fire)

    def _cancel(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.cancel()

    def _fire(self) -> None:
        self.handle = None
        if self.closed:
            return
        self.closed = True
        self.error = GuardClosed(f"the guard closed the connection: {self.reason}")
        self.conn.closing = (self.code, self.reason)  # the CloseEvent says closed_by="guard"
        self.task = asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        # RFC 6455 7.4.1 / 5.5: the code, and a reason of at most 123 bytes.
        message: MutableMapping[str, Any] = {
            "type": "websocket.close",
            "code": self.code,
            "reason": self.reason,
        }
        try:
            await self.server_send(message)
        except Exception as exc:  # the client left at the same moment: nothing to close
            logger.debug("the guard's close was not sent: %s", type(exc).__name__)

    async def stop(self) -> None:
        """The app has ended: no timer left, and the guard's close (if started) finished."""
        self.closed = True
        self._cancel()
        task = self.task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(CLOSE_GRACE):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()


def caused_by(exc: BaseException, cause: BaseException) -> bool:
    """Whether ``cause`` is ``exc`` or in its chain of causes and contexts (bounded)."""
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            return False
        if seen is cause:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
