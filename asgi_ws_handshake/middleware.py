"""``HandshakeMiddleware``: the ASGI adapter, the only code here that awaits.

It reads ``websocket.connect``, asks the pure policy for a decision, consults the store,
refuses through the ``websocket.http.response`` extension (or ``websocket.close`` where the
server lacks it), hands accepted handshakes to the app and guards the app's answer. Exactly
one ``AuditEvent`` is emitted per handshake.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from .audit import AuditEvent, Auditor, AuditSink, LoggingSink, Outcome
from .decision import Accept, Reason, Reject
from .key import accept_key, is_valid_key
from .policy import HandshakePolicy
from .request import HandshakeRequest
from .stores import HandshakeStore, MemoryStore
from .subprotocol import redactor

__all__ = [
    "DEFAULT_REDACT",
    "HandshakeDenied",
    "HandshakeInfo",
    "HandshakeMiddleware",
    "get_handshake",
]

# Loose ASGI aliases (STYLE.md): assignable to and from Starlette's own under mypy --strict.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("asgi_ws_handshake")

#: Subprotocols that carry credentials are redacted in audit events (case-insensitive globs);
#: values longer than 64 characters are redacted too.
DEFAULT_REDACT = ("*bearer*", "*token*", "*authorization*", "*secret*", "*password*", "eyj*")
_REDACT_LONGER_THAN = 64
_REDACTED = "<redacted>"
_CAP = 256  # the most characters of a header value an audit event keeps
_STATE_KEY = "ws_handshake"
_NO_KEY_VERSIONS = ("2", "3")
# RFC 6455 4.2.2 item 5: the server's handshake fields are ours to set, not the app's.
_RESERVED = (b"sec-websocket-", b"upgrade", b"connection")
_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")
_ANSWERS = "'websocket.accept', 'websocket.close' or 'websocket.http.response.start'"


class HandshakeDenied(OSError):
    """Raised into the app when the guard refused its answer (an unoffered subprotocol).

    An ``OSError``, so Starlette turns it into ``WebSocketDisconnect`` as for a vanished client.
    """


@dataclass(frozen=True, slots=True)
class HandshakeInfo:
    """What the middleware decided, as the downstream app sees it."""

    audit_id: str
    #: The negotiated subprotocol (the app may still pick another offered one).
    subprotocol: str | None
    #: What the client offered, in its order.
    subprotocols: tuple[str, ...]
    #: The normalised origin, "null", or None when the client sent none.
    origin: str | None
    key_reused: bool | None
    route: str


def get_handshake(connection: Any) -> HandshakeInfo | None:
    """Return the handshake decision for a Starlette ``WebSocket`` or an ASGI scope."""
    scope = getattr(connection, "scope", connection)
    state = scope.get("state") if isinstance(scope, Mapping) else None
    info = state.get(_STATE_KEY) if isinstance(state, Mapping) else None
    return info if isinstance(info, HandshakeInfo) else None


class _Ids:
    """Unique, cheap audit ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._count = 0

    def next(self) -> str:
        if (pid := os.getpid()) != self._pid:  # a fresh prefix after a fork
            self._pid, self._prefix, self._count = pid, os.urandom(6).hex(), 0
        self._count += 1
        return f"{self._prefix}-{self._count:x}"


def _cap(values: tuple[str, ...]) -> str | None:
    if not values:
        return None
    value = values[0]
    return value if len(value) <= _CAP else value[:_CAP] + "..."


class HandshakeMiddleware:
    """Guard the WebSocket handshakes of an ASGI app.

    Args:
        app: the downstream ASGI app.
        policy: the default policy (same-origin when omitted).
        routes: ``{glob: policy}`` over ``scope["path"]``; the first match wins.
        audit: one sink or several (callables taking an ``AuditEvent``, sync or async);
            default a ``LoggingSink``.
        store: remembers keys (default a bounded ``MemoryStore``).
        audit_fail_closed: refuse handshakes (503 ``audit_unavailable``) whose accepted event
            could not be delivered to every sink.
        audit_timeout: seconds an async sink may take.
        redact_subprotocols: globs of subprotocols to redact in audit events.
        clock: wall clock for event times.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: HandshakePolicy | None = None,
        routes: Mapping[str, HandshakePolicy] | None = None,
        audit: AuditSink | Iterable[AuditSink] | None = None,
        store: HandshakeStore | None = None,
        audit_fail_closed: bool = False,
        audit_timeout: float = 2.0,
        redact_subprotocols: Iterable[str] = DEFAULT_REDACT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.policy = policy if policy is not None else HandshakePolicy()
        self.routes: tuple[tuple[re.Pattern[str], str, HandshakePolicy], ...] = tuple(
            (re.compile(fnmatch.translate(pattern)), pattern, route_policy)
            for pattern, route_policy in (routes or {}).items()
        )
        if audit is None:
            sinks: Iterable[AuditSink] = (LoggingSink(),)
        elif callable(audit):
            sinks = (audit,)
        else:
            sinks = audit
        self.auditor = Auditor(sinks, fail_closed=audit_fail_closed, timeout=audit_timeout)
        self.store: HandshakeStore = store if store is not None else MemoryStore()
        self._redact = redactor(redact_subprotocols)
        self._clock = clock
        self._ids = _Ids()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        await _Handshake(self, scope, receive, send).run()

    def route_for(self, path: str) -> tuple[str, HandshakePolicy]:
        """The (pattern, policy) that governs ``path``."""
        for regex, pattern, policy in self.routes:
            if regex.match(path):
                return pattern, policy
        return "default", self.policy

    def redact(self, value: str) -> str:
        """``value``, or ``"<redacted>"`` when it looks like it carries a secret."""
        regex = self._redact
        if len(value) > _REDACT_LONGER_THAN or (regex is not None and regex.match(value)):
            return _REDACTED
        return value


# Where a handshake stands, as seen from the app's send.
_PENDING, _DENIED, _OPEN, _APP_ANSWERED = range(4)  # order matters: see send()


class _Handshake:
    """One connection's trip through the middleware."""

    __slots__ = (
        "audit_id",
        "audited",
        "client_gone",
        "connect",
        "decision",
        "denied",
        "key_reused",
        "mw",
        "receive_",
        "request",
        "route",
        "scope",
        "send_",
        "started",
        "state",
        "store_error",
    )

    def __init__(self, mw: HandshakeMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.mw = mw
        self.scope = scope
        self.receive_ = receive
        self.send_ = send
        self.started = time.perf_counter()
        self.state = _PENDING
        self.client_gone = False
        self.audited = False
        self.key_reused: bool | None = None
        self.store_error = False
        self.connect: Message | None = None
        self.denied: HandshakeDenied | None = None
        self.request: HandshakeRequest | None = None
        self.decision: Accept | Reject | None = None
        self.route = "default"
        self.audit_id = mw._ids.next()

    async def run(self) -> None:
        mw = self.mw
        try:
            message = await self.receive_()
        except BaseException:
            self.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="receive failed")
            raise
        if message.get("type") != "websocket.connect":
            # websocket.disconnect (or anything unexpected): no handshake to answer, and the
            # app never sees a socket whose handshake was not checked.
            self.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="no websocket.connect")
            return
        self.connect = message
        self.route, policy = mw.route_for(str(self.scope.get("path", "")))
        request = self.request = HandshakeRequest.from_scope(self.scope)
        try:
            decision = policy.evaluate(request)
        except Exception as exc:  # a user callback (select_subprotocol) raised
            logger.exception("handshake policy raised")
            decision = Reject.because(Reason.INTERNAL_ERROR, f"policy raised {type(exc).__name__}")

        if (
            isinstance(decision, Accept)
            and decision.expected_accept
            and policy.key_reuse != "ignore"
        ):
            try:
                self.key_reused = await mw.store.remember_key(request.keys[0], policy.key_reuse_ttl)
            except Exception:
                logger.exception("store failed while remembering a key; failing open")
                self.store_error = True
            except BaseException:  # cancelled while the store answers: still one event
                self.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="cancelled in the store")
                raise
            if self.key_reused and policy.key_reuse == "reject":
                # RFC 6455 4.1 item 7: the nonce is selected randomly for each connection.
                decision = decision_reject(decision, Reason.KEY_REUSED, "key used before")
        self.decision = decision

        if isinstance(decision, Reject):
            await self.deny(decision, Outcome.REJECTED)
        else:
            await self.call_app(decision)

    async def call_app(self, decision: Accept) -> None:
        request = self.request
        assert request is not None
        info = HandshakeInfo(
            self.audit_id,
            decision.subprotocol,
            request.subprotocols,
            decision.origin,
            self.key_reused,
            self.route,
        )
        scope = self.scope
        child = dict(scope)  # never mutate the server's scope (ASGI spec)
        state = scope.get("state")
        child["state"] = (
            {**state, _STATE_KEY: info} if isinstance(state, Mapping) else {_STATE_KEY: info}
        )
        try:
            await self.mw.app(child, self.receive, self.send)
        except BaseException as exc:
            if self.state == _PENDING:
                if self.client_gone or isinstance(exc, asyncio.CancelledError):
                    self.audit(
                        Outcome.CLIENT_GONE,
                        Reason.CLIENT_GONE,
                        detail="left before the app answered",
                    )
                else:
                    why = f"app raised {type(exc).__name__} before answering"
                    await self.deny(
                        decision_reject(decision, Reason.APP_ERROR, why), Outcome.APP_ERROR
                    )
            if exc is self.denied:
                return  # our own refusal, come back out of the app: nothing for the server
            raise
        if self.state == _PENDING:
            if self.client_gone:
                self.audit(
                    Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="left before the app answered"
                )
            else:
                why = "app returned without answering"
                await self.deny(decision_reject(decision, Reason.APP_ERROR, why), Outcome.APP_ERROR)

    async def receive(self) -> Message:
        connect = self.connect
        if connect is not None:
            self.connect = None
            return connect
        message = await self.receive_()
        if self.state == _PENDING and message.get("type") == "websocket.disconnect":
            self.client_gone = True
        return message

    async def send(self, message: Message) -> None:
        state = self.state
        if state >= _OPEN:  # accepted, or answered by the app: messages pass untouched
            await self.send_(message)
            return
        if state == _DENIED:
            raise self.denied or HandshakeDenied("the handshake was refused")
        decision = self.decision
        assert isinstance(decision, Accept)
        kind = message.get("type")
        if kind == "websocket.accept":
            await self.accept(message, decision)
            return
        if kind not in ("websocket.close", "websocket.http.response.start"):
            why = f"app sent {kind!r} before answering"
            await self.deny(decision_reject(decision, Reason.APP_ERROR, why), Outcome.APP_ERROR)
            raise RuntimeError(
                f"expected {_ANSWERS} before the handshake is answered, got {kind!r}"
            )
        self.state = _APP_ANSWERED
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

    async def accept(self, message: Message, decision: Accept) -> None:
        request = self.request
        assert request is not None
        chosen = message.get("subprotocol")
        if chosen is None:
            if decision.subprotocol is not None:
                message = {**message, "subprotocol": decision.subprotocol}
        elif chosen not in request.subprotocols:
            # RFC 6455 4.1: a client fails the connection when the server picks a subprotocol
            # it did not offer; refuse it here, visibly, instead of a broken socket.
            why = "app chose a subprotocol the client did not offer"
            reject = decision_reject(decision, Reason.APP_SUBPROTOCOL_NOT_OFFERED, why)
            await self.deny(reject, Outcome.APP_ERROR)
            self.denied = HandshakeDenied("app_subprotocol_not_offered: handshake refused")
            raise self.denied
        headers = message.get("headers")
        if headers:
            kept = [(n, v) for n, v in headers if not bytes(n).lower().startswith(_RESERVED)]
            if len(kept) != len(headers):
                message = {**message, "headers": kept}
        subprotocol = message.get("subprotocol")
        if self.mw.auditor.fail_closed:
            event = self.event(Outcome.ACCEPTED, None, 101, None, "", subprotocol)
            self.audited = True
            if not await self.mw.auditor.deliver(event):
                # The correction event keeps the id of the one that could not be delivered.
                self.audited = False
                why = "the audit could not be written"
                await self.deny(
                    decision_reject(decision, Reason.AUDIT_UNAVAILABLE, why), Outcome.REJECTED
                )
                self.denied = HandshakeDenied("audit_unavailable: handshake refused")
                raise self.denied
            self.state = _OPEN
            await self.send_(message)
            return
        self.state = _OPEN
        try:
            await self.send_(message)
        except BaseException:
            self.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="left while accepting")
            raise
        self.audit(Outcome.ACCEPTED, None, 101, None, "", subprotocol)

    async def deny(self, reject: Reject, outcome: Outcome) -> None:
        """Send a refusal the way the server allows, then audit what the client got."""
        self.state = _DENIED
        request = self.request
        try:
            if request is not None and request.denial_response:
                # ASGI websocket.http.response extension.
                body = f"{reject.reason}\n".encode()
                headers = [_TEXT_PLAIN, (b"content-length", b"%d" % len(body))]
                headers.extend(
                    (n.encode("latin-1"), v.encode("latin-1")) for n, v in reject.headers
                )
                await self.send_(
                    {
                        "type": "websocket.http.response.start",
                        "status": reject.status,
                        "headers": headers,
                    }
                )
                await self.send_({"type": "websocket.http.response.body", "body": body})
                status, denial = reject.status, "http_response"
            else:
                # No extension (daphne): a close before accept, which servers send as 403.
                await self.send_({"type": "websocket.close", "code": 1008})
                status, denial = 403, "close"
        except BaseException as exc:  # the send failed, or the task was cancelled during it
            why = f"{reject.detail}; client left before the refusal"
            self.audit(Outcome.CLIENT_GONE, reject.reason, detail=why, reject=reject)
            if isinstance(exc, Exception):
                return
            raise
        self.audit(outcome, reject.reason, status, denial, reject.detail, reject=reject)

    def event(
        self,
        outcome: Outcome,
        reason: str | None,
        status: int | None,
        denial: str | None,
        detail: str,
        subprotocol: str | None = None,
        reject: Reject | None = None,
    ) -> AuditEvent:
        mw = self.mw
        request = self.request or HandshakeRequest.from_scope(self.scope)
        decision = reject or self.decision
        expected = decision.expected_accept if decision is not None else None
        keys = request.keys
        key_valid: bool | None
        if not keys:
            key_valid = None if request.http_version in _NO_KEY_VERSIONS else False
        else:
            key_valid = len(keys) == 1 and is_valid_key(keys[0])
            if key_valid and expected is None:
                expected = accept_key(keys[0])
        offered = request.subprotocols
        if offered:
            offered = tuple(map(mw.redact, offered))
            if subprotocol is not None:
                subprotocol = mw.redact(subprotocol)
        client = request.client
        return AuditEvent(
            id=self.audit_id,
            time=mw._clock(),
            duration=time.perf_counter() - self.started,
            client=f"{client[0]}:{client[1]}" if client else None,
            path=request.path,
            route=self.route,
            host=_cap(request.hosts),
            origin=_cap(request.origins),
            subprotocols=offered,
            subprotocol=subprotocol,
            version=_cap((", ".join(request.versions),)) if request.versions else None,
            key=_cap(keys),
            key_valid=key_valid,
            expected_accept=expected,
            key_reused=self.key_reused,
            outcome=outcome,
            reason=reason,
            status=status,
            denial=denial,
            detail=detail,
            store_error=self.store_error,
        )

    def audit(
        self,
        outcome: Outcome,
        reason: str | None,
        status: int | None = None,
        denial: str | None = None,
        detail: str = "",
        subprotocol: str | None = None,
        *,
        reject: Reject | None = None,
    ) -> None:
        """Emit this handshake's one event (later calls are no-ops)."""
        if self.audited:
            return
        self.audited = True
        self.mw.auditor.emit(
            self.event(outcome, reason, status, denial, detail, subprotocol, reject)
        )


def decision_reject(decision: Accept | Reject, reason: Reason, detail: str) -> Reject:
    """A refusal for ``reason`` that keeps what the policy computed (accept value, origin)."""
    return Reject.because(
        reason, detail, expected_accept=decision.expected_accept, origin=decision.origin
    )
