"""The guard of one connection: its record, the store checks, and the app's answer.

``Connection`` is the per-connection state the middleware creates for every handshake: the
record that the app (``get_handshake``) and the audit events read, the checks' findings, and
the guard of the app's answer. The guard's states live in one place, ``State``, and change
only in ``accept``, ``deny`` and the handling of the app's own answer. The app's ``receive``
and ``send`` are plain methods that return the server's own awaitables once the handshake is
answered: only the replayed connect message and the app's answer cost a coroutine of ours.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from .audit import IDS, AuditEvent, CloseEvent, Outcome, Redactor
from .checks import StoreChecks
from .decision import Accept, Reason, Reject, refusal
from .delivery import Auditor
from .logs import note_denial
from .proxies import Deployment
from .request import HandshakeRequest
from .session import caused_by

__all__ = [
    "ASGIApp",
    "Connection",
    "HandshakeDenied",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "State",
]

# Loose ASGI aliases (STYLE.md): assignable to and from Starlette's own under mypy --strict.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("asgi_ws_handshake")

# RFC 6455 4.2.2 item 5: the server's handshake fields are ours to set, not the app's.
_RESERVED = (b"sec-websocket-", b"upgrade", b"connection")
_ANSWERS = "'websocket.accept', 'websocket.close' or 'websocket.http.response.start'"
_perf = time.perf_counter


class HandshakeDenied(OSError):
    """Raised into the app when the guard refused its answer (an unoffered subprotocol).

    An ``OSError``, so Starlette turns it into ``WebSocketDisconnect`` as for a vanished client.
    """


class State(enum.IntEnum):
    """Where a handshake stands, as the app's ``send`` sees it (the order matters)."""

    PENDING = 0  #: decided and handed to the app, which has not answered yet
    DENIED = 1  #: refused by the guard: the app's sends raise ``HandshakeDenied``
    OPEN = 2  #: accepted: messages pass untouched
    ANSWERED = 3  #: the app refused by itself: messages pass untouched


_PENDING, _DENIED, _OPEN, _ANSWERED = State


class Guarded(Protocol):
    """What a connection needs of the middleware that guards it."""

    auditor: Auditor
    redact: Redactor
    deployment: Deployment | None

    def clock(self) -> float: ...


async def _replayed(message: Message) -> Message:
    return message


class Connection(StoreChecks):
    """One connection's trip through the middleware: the record, the checks and the guard.

    The guard's states live in ``state`` (``State``) and change only in ``accept``,
    ``deny`` and ``app_answered``.
    """

    __slots__ = (
        "audited",
        "client_gone",
        "closing",
        "connect",
        "denied",
        "listed",
        "mw",
        "opened",
        "receive_",
        "send_",
        "started",
        "state",
    )

    def __init__(self, mw: Guarded, scope: Scope, receive: Receive, send: Send) -> None:
        # HandshakeInfo's fields, set here rather than through its __init__ (a call fewer on
        # every handshake; tests/adapter/test_middleware.py checks that every slot is set).
        self.request = HandshakeRequest.from_scope(scope, mw.deployment)
        self.route = "default"
        self.redact = mw.redact
        self._serial = IDS.next()
        self.decision = None
        self.key_reused = None
        self.store_error = False
        self.lease = None
        self.started = _perf()
        self.mw = mw
        #: The server's own list of offered subprotocols (what it is able to send back).
        self.listed = scope.get("subprotocols")
        self.receive_ = receive
        self.send_ = send
        self.state = _PENDING
        self.connect: Message | None = None
        self.audited = False
        self.client_gone = False
        self.denied: HandshakeDenied | None = None
        #: When the accept was sent (only when a sink takes close events).
        self.opened = 0.0
        #: (code, reason) when the guard itself closes the connection.
        self.closing: tuple[int, str] | None = None

    # -- what the app calls: plain methods returning the server's awaitables once answered

    def receive(self) -> Awaitable[Message]:
        connect = self.connect
        if connect is not None:
            self.connect = None
            return _replayed(connect)
        if self.state is _PENDING:
            return self._receive_pending()
        return self.receive_()

    async def _receive_pending(self) -> Message:
        message = await self.receive_()
        if self.state is _PENDING and message.get("type") == "websocket.disconnect":
            self.client_gone = True
        return message

    def send(self, message: Message) -> Awaitable[None]:
        if self.state >= _OPEN:  # accepted, or answered by the app: messages pass untouched
            return self.send_(message)
        if self.state is _PENDING and message.get("type") == "websocket.accept":
            return self.accept(message)
        return self._send_pending(message)

    # -- the guard of the app's answer

    async def _send_pending(self, message: Message) -> None:
        if self.state is _DENIED:
            raise self.denied or HandshakeDenied("the handshake was refused")
        kind = message.get("type")
        if kind not in ("websocket.close", "websocket.http.response.start"):
            why = f"app sent {kind!r} before answering"
            await self.deny(self.refuse(Reason.APP_ERROR, why), Outcome.APP_ERROR)
            raise RuntimeError(
                f"expected {_ANSWERS} before the handshake is answered, got {kind!r}"
            )
        self.state = _ANSWERED
        try:
            await self.send_(message)
        except BaseException:
            self.audit(
                Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="left during the app's refusal"
            )
            raise
        if kind == "websocket.close":
            # Before accept, servers send a close as 403 (ASGI spec, websocket.close).
            self.audit(Outcome.APP_REJECTED, Reason.APP_REJECTED, 403, "close", "app closed")
        else:
            status = message.get("status")
            status = status if isinstance(status, int) else None
            self.audit(
                Outcome.APP_REJECTED, Reason.APP_REJECTED, status, "http_response", "app refused"
            )

    async def accept(self, message: Message) -> None:
        decision = self.decision
        assert type(decision) is Accept
        request = self.request
        chosen = message.get("subprotocol")
        if chosen is None:
            if decision.subprotocol is not None:
                message = {**message, "subprotocol": decision.subprotocol}
        elif chosen not in request.subprotocols:
            # RFC 6455 4.1: a client fails the connection when the server picks a subprotocol
            # it did not offer; refuse it here, visibly, instead of a broken socket.
            why = "app chose a subprotocol the client did not offer"
            reject = self.refuse(Reason.APP_SUBPROTOCOL_NOT_OFFERED, why)
            await self.deny(reject, Outcome.APP_ERROR)
            self.denied = HandshakeDenied("app_subprotocol_not_offered: handshake refused")
            raise self.denied
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            listed = self.listed
            if listed and subprotocol not in listed:
                # The server only sends what its own scope list holds (hypercorn keeps the
                # last Sec-WebSocket-Protocol line and raises on anything else): refuse
                # visibly. (The detail names no value: subprotocols may carry credentials.)
                why = "the server cannot send the chosen subprotocol: its scope lists only others"
                await self.deny(self.refuse(Reason.INTERNAL_ERROR, why), Outcome.REJECTED)
                self.denied = HandshakeDenied("internal_error: handshake refused")
                raise self.denied
        headers = message.get("headers")
        if headers:
            kept = [(n, v) for n, v in headers if not bytes(n).lower().startswith(_RESERVED)]
            if len(kept) != len(headers):
                message = {**message, "headers": kept}
        auditor = self.mw.auditor
        if auditor.fail_closed:
            await self._accept_audited(message, subprotocol)
            return
        self.state = _OPEN
        if auditor.watches_closes:
            self.opened = _perf()
        try:
            await self.send_(message)
        except BaseException:
            self.state = _ANSWERED  # never opened: no CloseEvent follows this handshake's event
            self.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="left while accepting")
            raise
        self.audit(Outcome.ACCEPTED, None, 101, selected=subprotocol)

    async def _accept_audited(self, message: Message, subprotocol: str | None) -> None:
        """``audit_fail_closed``: every sink has the accepted event before the client does.

        When the accept then cannot be sent (or the task is cancelled while a sink is
        awaited), each sink receives a correction: an event with the same id saying what the
        client really got.
        """
        event = self.event(Outcome.ACCEPTED, None, 101, selected=subprotocol)
        self.audited = True
        try:
            delivered = await self.mw.auditor.deliver(event)
        except BaseException:
            self.audited = False
            self.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="ended while auditing")
            raise
        if not delivered:
            self.audited = False  # the refusal's event corrects the accepted one (same id)
            reject = self.refuse(Reason.AUDIT_UNAVAILABLE, "the audit could not be written")
            await self.deny(reject, Outcome.REJECTED)
            self.denied = HandshakeDenied("audit_unavailable: handshake refused")
            raise self.denied
        self.state = _OPEN
        self.opened = _perf()
        try:
            await self.send_(message)
        except BaseException:
            self.audited = False
            self.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="left while accepting")
            raise

    def close_event(self, ended: BaseException | None) -> CloseEvent:
        """How the accepted connection ended, from how the app's coroutine ended."""
        code = getattr(ended, "code", None)
        if self.closing is not None:
            by, (code, reason) = "guard", self.closing
        elif ended is None:
            by, reason = "app", "the app returned"
        elif isinstance(ended, asyncio.CancelledError):
            by, reason = "server", "cancelled"
        elif isinstance(code, int) and not isinstance(code, bool):
            by, reason = "client", "the client closed"  # e.g. Starlette's WebSocketDisconnect
        else:
            by, code, reason = "error", 1011, f"the app raised {type(ended).__name__}"
        return CloseEvent(
            self,
            by,
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            reason,
            _perf() - self.opened,
            self.mw.clock(),
        )

    def now(self) -> float:
        """The middleware's wall clock (identity expiry is judged by it)."""
        return self.mw.clock()

    def finish(self) -> None:
        """The app has returned: let go of the server's callables (events outlive them)."""
        self.receive_ = self.send_ = _finished

    def refuse(self, reason: Reason, detail: str) -> Reject:
        """A refusal of the app's answer that keeps what the policy found (the origin)."""
        return Reject.because(reason, detail, origin=self.origin)

    async def deny(self, reject: Reject, outcome: Outcome) -> None:
        """Send a refusal the way the server allows, then audit what the client got."""
        self.state = _DENIED
        try:
            if self.request.denial_response:
                start, body = refusal(reject)
                await self.send_(start)
                await self.send_(body)
                status, denial = reject.status, "http_response"
                if outcome is Outcome.REJECTED:
                    note_denial()  # (for the uvicorn log filter, logs.quiet_uvicorn_denials)
            else:
                # No extension (daphne): a close before accept, which servers send as 403.
                await self.send_({"type": "websocket.close", "code": 1008})
                status, denial = 403, "close"
        except BaseException as exc:  # the send failed, or the task was cancelled during it
            why = f"{reject.detail}; client left before the refusal"
            self.audit(Outcome.CLIENT_GONE, reject.reason, detail=why)
            if isinstance(exc, Exception):
                return
            raise
        self.audit(outcome, reject.reason, status, denial, reject.detail)

    async def app_raised(self, exc: BaseException) -> bool:
        """Audit an exception out of the app; True when it is ours and must not propagate."""
        if self.state is _PENDING:
            if self.client_gone or isinstance(exc, asyncio.CancelledError):
                self.audit(
                    Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="left before the app answered"
                )
            else:
                why = f"app raised {type(exc).__name__} before answering"
                await self.deny(self.refuse(Reason.APP_ERROR, why), Outcome.APP_ERROR)
        # Our own refusal, come back out of the app (perhaps wrapped by the app or its
        # framework): the client has its answer, nothing for the server.
        return self.denied is not None and caused_by(exc, self.denied)

    async def app_returned(self) -> None:
        """The app returned without answering the handshake."""
        if self.client_gone:
            self.audit(
                Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="left before the app answered"
            )
        else:
            why = "app returned without answering"
            await self.deny(self.refuse(Reason.APP_ERROR, why), Outcome.APP_ERROR)

    # -- the audit event

    def event(
        self,
        outcome: Outcome,
        reason: str | None,
        status: int | None = None,
        denial: str | None = None,
        detail: str = "",
        selected: str | None = None,
    ) -> AuditEvent:
        return AuditEvent.build(
            handshake=self,
            outcome=outcome,
            status=status,
            reason=reason,
            denial=denial,
            detail=detail,
            selected=selected,
            time=self.mw.clock(),
            duration=_perf() - self.started,
        )

    def audit(
        self,
        outcome: Outcome,
        reason: str | None,
        status: int | None = None,
        denial: str | None = None,
        detail: str = "",
        selected: str | None = None,
    ) -> None:
        """Emit this handshake's one event (later calls are no-ops)."""
        if self.audited:
            return
        self.audited = True
        auditor = self.mw.auditor
        if not auditor.choosy or auditor.wants(outcome):
            auditor.emit(self.event(outcome, reason, status, denial, detail, selected))


def _finished(*args: object) -> Any:
    raise RuntimeError("the ASGI connection has ended")
