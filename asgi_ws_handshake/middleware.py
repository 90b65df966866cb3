"""``HandshakeMiddleware``: the ASGI adapter, the only code here that awaits.

One path for every handshake: read ``websocket.connect``, ask the route's policy
(``evaluate``), then the store (``checks``); refuse through the ``websocket.http.response``
extension (or ``websocket.close`` where the server lacks it), or hand the connection to the
app and guard its answer. Exactly one ``AuditEvent`` per handshake.

The app's ``receive`` and ``send`` are plain methods that return the server's own awaitables
once the handshake is answered: only the replayed connect message and the app's answer cost
a coroutine of ours.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .audit import (
    DEFAULT_REDACT,
    AuditSink,
    HandshakeInfo,
    Outcome,
    Redactor,
)
from .checks import KeyBacklog
from .decision import Accept, Reason, Reject
from .delivery import Auditor
from .guard import (
    _OPEN,
    _PENDING,
    ASGIApp,
    Connection,
    HandshakeDenied,
    Message,
    Receive,
    Scope,
    Send,
    State,
)
from .policy import HandshakePolicy
from .proxies import Deployment, ProxyHeaders
from .request import route_path
from .session import open_session
from .sinks import LoggingSink
from .stores import HandshakeStore, MemoryStore

__all__ = [
    "DEFAULT_REDACT",
    "ASGIApp",
    "HandshakeDenied",
    "HandshakeInfo",
    "HandshakeMiddleware",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "State",
    "get_handshake",
]


logger = logging.getLogger("asgi_ws_handshake")

_STATE_KEY = "ws_handshake"


def get_handshake(connection: Any) -> HandshakeInfo | None:
    """Return the handshake record for a Starlette ``WebSocket`` or an ASGI scope."""
    scope = getattr(connection, "scope", connection)
    state = scope.get("state") if isinstance(scope, Mapping) else None
    info = state.get(_STATE_KEY) if isinstance(state, Mapping) else None
    return info if isinstance(info, HandshakeInfo) else None


class HandshakeMiddleware:
    """Guard the WebSocket handshakes of an ASGI app.

    Args:
        app: the downstream ASGI app.
        policy: the default policy (same-origin when omitted).
        routes: ``{glob: policy}`` over the path the app's router sees (``path`` minus
            ``root_path``, as Starlette routes); the first match wins.
        audit: one sink or several (callables taking an ``AuditEvent``, sync or async);
            default a ``LoggingSink``.
        store: remembers keys, counts handshake rates and connection leases (default a
            bounded ``MemoryStore``; ``stores.redis.RedisStore`` for several processes).
        audit_fail_closed: refuse handshakes (503 ``audit_unavailable``) whose accepted event
            could not be delivered to every sink.
        audit_timeout: seconds an async sink may take.
        redact_subprotocols: globs of subprotocols to redact in audit events.
        clock: wall clock for event times.
        drain_timeout: seconds the sinks get to finish at lifespan shutdown.
        trusted_proxies, public_origins, proxy_headers: behind reverse proxies (see
            ``proxies.Deployment``): the peers whose ``X-Forwarded-*`` (or ``Forwarded``)
            headers give the public host, scheme and client; or the site's origins.
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
        drain_timeout: float = 5.0,
        trusted_proxies: Iterable[str] = (),
        public_origins: Iterable[str] = (),
        proxy_headers: ProxyHeaders = "x-forwarded",
    ) -> None:
        self.app = app
        deployment = Deployment(trusted_proxies, public_origins, proxy_headers)  # (None: unread)
        self.deployment = deployment if deployment.proxied or deployment.public_origins else None
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
        #: Keys the store missed during an outage, remembered once it answers again.
        self.backlog = KeyBacklog()
        self.redact = Redactor(redact_subprotocols)
        self.clock = clock
        self.drain_timeout = drain_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "websocket":
            if kind == "lifespan":
                await self.app(scope, receive, self._lifespan_send(send))
            else:
                await self.app(scope, receive, send)
            return
        # The whole handshake, written out here: one coroutine frame between the server and
        # the app. Every step is the same for every handshake, ordinary or odd.
        conn = Connection(self, scope, receive, send)
        try:
            message = await receive()
            if message.get("type") != "websocket.connect":
                # websocket.disconnect (or anything unexpected): no handshake to answer, and
                # the app never sees a socket whose handshake was not checked.
                conn.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="no websocket.connect")
                return
            request = conn.request
            if self.routes:
                conn.route, policy = self.route_for(route_path(scope))
            else:
                policy = self.policy
            try:
                decision = policy.evaluate(request)
            except Exception as exc:  # a user callback (select_subprotocol) raised
                logger.exception("handshake policy raised")
                decision = Reject.because(
                    Reason.INTERNAL_ERROR, f"policy raised {type(exc).__name__}"
                )
            app = self.app
            if type(decision) is Accept and policy.stateful:
                checked = conn.check(self.store, policy, decision, request, self.backlog, scope)
                if type(checked) is Accept or type(checked) is Reject:
                    decision = checked
                else:  # the store (or authenticate) suspended: wait for its answers
                    decision = await checked  # type: ignore[misc]
                # An identity for the app, a deadline for the connection (session.py).
                if policy.sessions and type(decision) is Accept:
                    scope, app = open_session(conn, policy, scope, app)
            conn.decision = decision
            if type(decision) is Reject:
                if policy.enforce:
                    await conn.deny(decision, Outcome.REJECTED)
                    return
                # Report-only: audited as accepted, would_reject naming the refusal.
                decision = conn.decision = policy.report_only(request, decision)
            conn.connect = message
            state = scope.get("state")
            if type(state) is dict:
                # The connection's own namespace: the server hands each connection a copy of
                # the lifespan state for the app to write to (ASGI spec, "state"), as
                # Starlette's ``websocket.state`` does. The scope itself is left as it is.
                state[_STATE_KEY] = conn
                child = scope
            else:  # no state (or an odd one): a copy of the scope carries the record
                state = {**state, _STATE_KEY: conn} if isinstance(state, Mapping) else {}
                state[_STATE_KEY] = conn
                child = {**scope, "state": state}
            ended: BaseException | None = None
            try:
                await app(child, conn.receive, conn.send)
            except BaseException as exc:
                ended = exc
                if not await conn.app_raised(exc):
                    raise
            else:
                if conn.state is _PENDING:
                    await conn.app_returned()
            finally:
                # However the connection ended: closed by either side, the app raised or
                # refused, the client vanished, or the task was cancelled.
                conn.finish()
                if conn.state is _OPEN and self.auditor.watches_closes:
                    self.auditor.close(conn.close_event(ended))
                if conn.lease is not None:
                    await conn.release(self.store)
        except BaseException:
            # Cancelled (or failed) before an answer: while reading connect, while the store
            # answered or while a refusal was sent. The handshake still leaves its one event
            # (a no-op when it was already audited).
            conn.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="ended before an answer")
            raise

    def _lifespan_send(self, send: Send) -> Send:
        """The app's lifespan ``send``: the sinks are drained before shutdown completes."""

        async def lifespan_send(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await self.auditor.aclose(self.drain_timeout)
                except Exception:  # never stand between the app and the server's shutdown
                    logger.exception("draining the audit sinks failed")
            await send(message)

        return lifespan_send

    def route_for(self, path: str) -> tuple[str, HandshakePolicy]:
        """The (pattern, policy) that governs ``path`` (the path the app's router sees)."""
        for regex, pattern, policy in self.routes:
            if regex.match(path):
                return pattern, policy
        return "default", self.policy
