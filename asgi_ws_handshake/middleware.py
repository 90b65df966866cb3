"""``HandshakeMiddleware``: the ASGI adapter, the only code here that awaits.

It reads ``websocket.connect``, asks the pure policy for a decision, consults the store,
refuses through the ``websocket.http.response`` extension (or ``websocket.close`` where the
server lacks it), hands accepted handshakes to the app and guards the app's answer. Exactly
one ``AuditEvent`` is emitted per handshake.

Two shortcuts keep it cheap, both reaching exactly what the long way reaches: the plain
lane (``HandshakeMiddleware._plain``) decides ordinary handshakes from their raw header
values and the policy's memoised decision, and the hand-over (``_Handshake.hand_over``)
re-targets the app's ``receive`` and ``send`` at the server's own once the handshake is
answered, so messages pass through no code of ours.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from functools import partial
from typing import Any, NamedTuple, TypeVar

from .audit import AuditEvent, Auditor, AuditSink, LoggingSink, Outcome
from .decision import Accept, Reason, Reject
from .key import accept_key, accept_key_bytes, is_valid_key
from .policy import HandshakePolicy
from .request import HandshakeRequest, client_address, plain_fields
from .stores import HandshakeStore, MemoryStore, StoreError
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
_REDACT_CACHE = 1024
_CAP = 256  # the most characters of a header value an audit event keeps
_STATE_KEY = "ws_handshake"
_NO_KEY_VERSIONS = ("2", "3")
# RFC 6455 4.2.2 item 5: the server's handshake fields are ours to set, not the app's.
_RESERVED = (b"sec-websocket-", b"upgrade", b"connection")
_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")
_ANSWERS = "'websocket.accept', 'websocket.close' or 'websocket.http.response.start'"
# A backstop for stores that do not bound their own calls: no handshake waits longer.
_STORE_DEADLINE = 5.0
_T = TypeVar("_T")


class HandshakeDenied(OSError):
    """Raised into the app when the guard refused its answer (an unoffered subprotocol).

    An ``OSError``, so Starlette turns it into ``WebSocketDisconnect`` as for a vanished client.
    """


class HandshakeInfo(NamedTuple):
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
        self.reseed()
        if hasattr(os, "register_at_fork"):  # POSIX: a fresh prefix in each forked worker
            os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(6).hex() + "-"
        self.count = itertools.count(1)

    def next(self) -> str:
        return self.prefix + format(next(self.count), "x")


_IDS = _Ids()


def _cap(values: tuple[str, ...]) -> str | None:
    if values:
        value = values[0]
        return value if len(value) <= _CAP else value[:_CAP] + "..."
    return None


class HandshakeMiddleware:
    """Guard the WebSocket handshakes of an ASGI app.

    Args:
        app: the downstream ASGI app.
        policy: the default policy (same-origin when omitted).
        routes: ``{glob: policy}`` over ``scope["path"]``; the first match wins.
        audit: one sink or several (callables taking an ``AuditEvent``, sync or async);
            default a ``LoggingSink``.
        store: remembers keys, counts handshake rates and connection leases (default a
            bounded ``MemoryStore``; ``stores.redis.RedisStore`` for several processes).
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
        # Exactly the built-in class (a subclass may override with I/O): answers inline.
        self._inline_store = type(self.store) is MemoryStore
        # The plain lane (see _plain): policies whose only stateful check is the key, asked
        # of the built-in memory store, and whose decision ``HandshakePolicy.plain`` memoises.
        policies = [self.policy, *(policy for _, _, policy in self.routes)]
        self._plain_policies = frozenset(id(p) for p in policies if self._plain_ok(p))
        self._plain_lane = bool(self._plain_policies)
        self._redact = redactor(redact_subprotocols)
        self._redacted: dict[str, str] = {}
        self._redacted_lists: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        # The whole handshake: connect, decision, refusal or the app, one event. Written out
        # here rather than in a method of _Handshake: one coroutine frame fewer between the
        # server and the app, which every suspended receive crosses twice.
        hs = _Handshake(self, scope, receive, send)
        if self._plain_lane:
            self._plain(hs, scope)
        try:
            message = await receive()
            if message.get("type") != "websocket.connect":
                # websocket.disconnect (or anything unexpected): no handshake to answer, and
                # the app never sees a socket whose handshake was not checked.
                hs.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="no websocket.connect")
                return
            hs.connect = message
            decision = hs.decision
            if decision is None:
                decision = await hs.decide()
            elif isinstance(decision, Accept):
                # Decided by the plain lane, whose store is the built-in memory store: only
                # the key is left to check, inline.
                decision = hs.check_key_inline(decision)
            hs.decision = decision
            if isinstance(decision, Reject):
                await hs.deny(decision, Outcome.REJECTED)
                return
            # The app gets partials of hs.receive and hs.send, re-targeted at the server's own
            # callables once the handshake is answered (see _Handshake.hand_over).
            hs.app_receive = app_receive = partial(hs.receive)
            hs.app_send = app_send = partial(hs.send)
            try:
                await self.app(hs.child_scope(decision), app_receive, app_send)
            except BaseException as exc:
                if not await hs.app_raised(exc, decision):
                    raise
            else:
                if hs.state == _PENDING:
                    await hs.app_returned(decision)
            finally:
                # However the connection ended: closed by either side, the app raised or
                # refused, the client vanished, or the task was cancelled.
                hs.app_receive = hs.app_send = None  # they refer back to hs: no cycle left
                if hs.lease is not None:
                    await hs.release_lease()
        except BaseException:
            # Cancelled (or failed) before an answer: while reading connect, while the store
            # answered or while a refusal was sent. The handshake still leaves its one event
            # (a no-op when it was already audited).
            hs.audit(Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="ended before an answer")
            raise

    def _plain_ok(self, policy: HandshakePolicy) -> bool:
        return not (
            policy.client_rate
            or policy.total_rate
            or policy.max_connections
            or policy.max_connections_per_client
            or policy.select_subprotocol is not None
            or type(policy) is not HandshakePolicy
            or (policy.key_reuse != "ignore" and not self._inline_store)
        )

    def _plain(self, handshake: _Handshake, scope: Scope) -> None:
        """Decide an ordinary handshake from its raw header values, when it is one.

        The plain lane: one pass over the headers for the five values, the memoised
        ``HandshakePolicy.plain`` decision for (Origin, Host, protocol), one SHA-1 for the
        key. Refusals are decided here too (a flood of cross-site handshakes is refused
        cheaply). Whatever is unusual (a repeated or missing line, another version, HTTP/2,
        a malformed key) leaves ``handshake`` undecided and takes the full path, which
        gives the same decision for ordinary handshakes, only slower.
        """
        fields = plain_fields(scope.get("headers"))
        if fields is None:
            return
        origin, host, version, key, protocol = fields
        path = scope.get("path")
        if type(path) is not str:  # (missing: the full path reads "/" but routes on "")
            return
        route, policy = self.route_for(path) if self.routes else ("default", self.policy)
        if id(policy) not in self._plain_policies:
            return
        if protocol is None:
            # uvicorn's wsproto backend removes the header and leaves only the scope's list
            # (HandshakePolicy.plain reads a tuple as that list, as from_scope does).
            listed = scope.get("subprotocols")
            if listed:
                if type(listed) is not list and type(listed) is not tuple:
                    return
                protocol = tuple(listed)
        elif type(protocol) is not bytes:
            return
        if version != b"13" or scope.get("http_version", "1.1") != "1.1":
            return
        client = client_address(scope.get("client"))
        # (Values that are not bytes: ignored by from_scope, and so by ``plain``; a key that is
        # not bytes is no key for accept_key_bytes.)
        entry = policy.plain(origin, host, protocol)
        if entry is None:
            return
        expected = accept_key_bytes(key)
        if expected is None:
            return
        scheme = scope.get("scheme", "ws")
        extensions = scope.get("extensions")
        handshake.request = tuple.__new__(
            HandshakeRequest,
            (
                path,
                entry.hosts,
                entry.origins,
                ("13",),
                (key.decode("latin-1"),),
                entry.subprotocols,
                "1.1",
                scheme if type(scheme) is str else str(scheme),
                client,
                (type(extensions) is dict or isinstance(extensions, Mapping))
                and "websocket.http.response" in extensions,
            ),
        )
        known = entry.decision
        if isinstance(known, Reject):
            # The same refusal, with this key's accept value (see HandshakePolicy.plain);
            # positional, in Reject's field order: _replace costs more than the rest here.
            reason, status, headers, _, origin_value, detail = known
            handshake.decision = tuple.__new__(
                Reject, (reason, status, headers, expected, origin_value, detail)
            )
        else:
            handshake.decision = tuple.__new__(Accept, (known.subprotocol, expected, known.origin))
        handshake.route, handshake.policy = route, policy

    def route_for(self, path: str) -> tuple[str, HandshakePolicy]:
        """The (pattern, policy) that governs ``path``."""
        for regex, pattern, policy in self.routes:
            if regex.match(path):
                return pattern, policy
        return "default", self.policy

    def redact_all(self, offered: tuple[str, ...]) -> tuple[str, ...]:
        """``redact`` over an offered list, remembered per list."""
        cached = self._redacted_lists.get(offered)
        if cached is None:
            cached = tuple([self.redact(value) for value in offered])
            # Bounded in entries and in size: only short lists of short values are kept.
            if len(offered) <= 8 and sum(map(len, offered)) <= 8 * _REDACT_LONGER_THAN:
                if len(self._redacted_lists) >= _REDACT_CACHE:
                    self._redacted_lists.clear()
                self._redacted_lists[offered] = cached
        return cached

    def redact(self, value: str) -> str:
        """``value``, or ``"<redacted>"`` when it looks like it carries a secret."""
        cached = self._redacted.get(value)
        if cached is not None:
            return cached
        if len(value) > _REDACT_LONGER_THAN:
            return _REDACTED  # (not remembered: the cache holds short values only)
        regex = self._redact
        result = _REDACTED if regex is not None and regex.match(value) else value
        if len(self._redacted) >= _REDACT_CACHE:
            self._redacted.clear()  # bounded: random values cannot grow it
        self._redacted[value] = result
        return result


# Where a handshake stands, as seen from the app's send.
_PENDING, _DENIED, _OPEN, _APP_ANSWERED = range(4)  # order matters: see send()


class _Handshake:
    """One connection's trip through the middleware."""

    __slots__ = (
        "app_receive",
        "app_send",
        "audit_id",
        "audited",
        "client_gone",
        "connect",
        "decision",
        "denied",
        "key_reused",
        "lease",
        "mw",
        "policy",
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
        self.lease: str | None = None
        self.connect: Message | None = None
        self.denied: HandshakeDenied | None = None
        self.request: HandshakeRequest | None = None
        self.decision: Accept | Reject | None = None
        self.route = "default"
        self.policy = mw.policy  # the route's, once known
        self.app_receive: partial[Awaitable[Message]] | None = None
        self.app_send: partial[Awaitable[None]] | None = None
        self.audit_id = _IDS.next()

    async def decide(self) -> Accept | Reject:
        """The full path: the route's policy, ``evaluate``, then the store's checks."""
        mw = self.mw
        if mw.routes:
            self.route, policy = mw.route_for(str(self.scope.get("path", "")))
        else:
            policy = mw.policy
        request = self.request = HandshakeRequest.from_scope(self.scope)
        try:
            decision = policy.evaluate(request)
        except Exception as exc:  # a user callback (select_subprotocol) raised
            logger.exception("handshake policy raised")
            return Reject.because(Reason.INTERNAL_ERROR, f"policy raised {type(exc).__name__}")
        if type(decision) is Accept and policy._stateful:
            return await self.stateful_checks(policy, decision, request)
        return decision

    def check_key_inline(self, decision: Accept) -> Accept | Reject:
        """The plain lane's key-reuse check, against the built-in memory store."""
        policy = self.policy
        if policy.key_reuse == "ignore":
            return decision
        request = self.request
        assert request is not None
        store: MemoryStore = self.mw.store  # type: ignore[assignment]
        self.key_reused = reused = store.remember(request.keys[0], policy.key_reuse_ttl)
        if reused and policy.key_reuse == "reject":
            # RFC 6455 4.1 item 7: the nonce is selected randomly for each connection.
            return decision_reject(decision, Reason.KEY_REUSED, "key used before")
        return decision

    async def stateful_checks(
        self, policy: HandshakePolicy, decision: Accept, request: HandshakeRequest
    ) -> Accept | Reject:
        """Rates, then reused keys, then connection caps: the checks that need the store."""
        if policy.client_rate or policy.total_rate:
            checked = await self.check_rates(policy, decision)
            if type(checked) is Reject:
                return checked
        if decision.expected_accept and policy.key_reuse != "ignore":
            try:
                self.key_reused = await self.ask(
                    self.mw.store.remember_key(request.keys[0], policy.key_reuse_ttl)
                )
            except StoreError:
                # Only a check that can refuse fails closed; "flag" proceeds, marked.
                if policy.key_reuse == "reject":
                    return self.store_failed(policy, decision)
            if self.key_reused and policy.key_reuse == "reject":
                # RFC 6455 4.1 item 7: the nonce is selected randomly for each connection.
                return decision_reject(decision, Reason.KEY_REUSED, "key used before")
        if policy.max_connections or policy.max_connections_per_client:
            return await self.take_lease(policy, decision)
        return decision

    async def ask(self, call: Awaitable[_T]) -> _T:
        """Await one store call, bounded in time; ``StoreError`` when it cannot answer.

        After one failure the handshake asks the store nothing more, so it waits at most once.
        """
        if self.store_error:
            if asyncio.iscoroutine(call):
                call.close()
            raise StoreError("the store already failed during this handshake")
        try:
            if self.mw._inline_store:  # the built-in memory store never suspends: no deadline
                return await call
            async with asyncio.timeout(_STORE_DEADLINE):
                return await call
        except Exception as exc:  # StoreError, the backstop's TimeoutError, or a store bug
            logger.warning("handshake store failed: %s: %s", type(exc).__name__, exc)
            self.store_error = True
            raise StoreError(str(exc)) from exc

    def store_failed(self, policy: HandshakePolicy, decision: Accept) -> Accept | Reject:
        """Apply ``on_store_error`` to a check the store could not answer."""
        if policy.on_store_error == "open":
            return decision  # the audit event carries store_error=True
        return decision_reject(decision, Reason.STORE_UNAVAILABLE, "the store did not answer")

    def client_name(self) -> str:
        """The route and client address that rates and caps are counted under."""
        request = self.request
        client = request.client if request is not None else None
        # scope["client"] (ASGI spec): the peer, or what uvicorn --proxy-headers put there.
        return f"{self.route}:client:{client[0] if client else '-'}"

    async def check_rates(self, policy: HandshakePolicy, decision: Accept) -> Accept | Reject:
        """Count this handshake against the client's rate, then the route's overall rate."""
        store = self.mw.store
        checks = (
            (policy.client_rate, self.client_name(), "client"),
            (policy.total_rate, f"{self.route}:total", "overall"),
        )
        for rate, name, which in checks:
            if rate is None:
                continue
            try:
                retry_after = await self.ask(store.hit(f"rate:{name}", rate.limit, rate.window))
            except StoreError:
                return self.store_failed(policy, decision)
            if retry_after:
                # RFC 6585 4: 429 Too Many Requests MAY carry Retry-After (RFC 9110 10.2.3).
                return Reject.because(
                    Reason.RATE_LIMITED,
                    f"{which} handshake rate exceeded",
                    expected_accept=decision.expected_accept,
                    origin=decision.origin,
                    headers=(("retry-after", str(retry_after)),),
                )
        return decision

    async def take_lease(self, policy: HandshakePolicy, decision: Accept) -> Accept | Reject:
        """Count this connection under the route's caps until ``release_lease``."""
        caps: dict[str, int] = {}
        if policy.max_connections_per_client:
            caps[self.client_name()] = policy.max_connections_per_client
        if policy.max_connections:
            caps[f"{self.route}:total"] = policy.max_connections
        try:
            full = await self.ask(self.mw.store.acquire(self.audit_id, caps))
        except StoreError:
            return self.store_failed(policy, decision)
        if full is not None:
            which = "overall" if full.endswith(":total") else "client"
            # RFC 9110 15.6.4: 503 with Retry-After (10.2.3) for a temporary overload.
            return Reject.because(
                Reason.TOO_MANY_CONNECTIONS,
                f"{which} connection cap reached",
                expected_accept=decision.expected_accept,
                origin=decision.origin,
                headers=(("retry-after", str(policy.connections_retry_after)),),
            )
        self.lease = self.audit_id  # the audit id names the lease: unique, and greppable
        return decision

    async def release_lease(self) -> None:
        lease, self.lease = self.lease, None
        if lease is None:
            return
        try:
            async with asyncio.timeout(_STORE_DEADLINE):
                await self.mw.store.release(lease)
        except Exception:
            # An expiring store drops the lease by itself; a memory store never fails here.
            logger.warning("could not release connection lease %s", lease, exc_info=True)

    def child_scope(self, decision: Accept) -> Scope:
        """A copy of the scope (never mutate the server's, ASGI spec) carrying the result."""
        request = self.request
        assert request is not None
        info = tuple.__new__(
            HandshakeInfo,
            (
                self.audit_id,
                decision.subprotocol,
                request.subprotocols,
                decision.origin,
                self.key_reused,
                self.route,
            ),
        )
        scope = self.scope
        state = scope.get("state")
        if not (type(state) is dict or isinstance(state, Mapping)):
            state = {}  # the server offers no state: the result still rides along
        # A copy: never mutate the server's scope (ASGI spec, "Middleware").
        return {**scope, "state": {**state, _STATE_KEY: info}}

    async def app_raised(self, exc: BaseException, decision: Accept) -> bool:
        """Audit an exception out of the app; True when it is ours and must not propagate."""
        if self.state == _PENDING:
            if self.client_gone or isinstance(exc, asyncio.CancelledError):
                self.audit(
                    Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="left before the app answered"
                )
            else:
                why = f"app raised {type(exc).__name__} before answering"
                await self.deny(decision_reject(decision, Reason.APP_ERROR, why), Outcome.APP_ERROR)
        # Our own refusal, come back out of the app (perhaps wrapped by the app or its
        # framework): the client has its answer, nothing for the server.
        return self.denied is not None and _caused_by(exc, self.denied)

    async def app_returned(self, decision: Accept) -> None:
        """The app returned without answering the handshake."""
        if self.client_gone:
            self.audit(
                Outcome.CLIENT_GONE, Reason.CLIENT_GONE, detail="left before the app answered"
            )
        else:
            why = "app returned without answering"
            await self.deny(decision_reject(decision, Reason.APP_ERROR, why), Outcome.APP_ERROR)

    # receive and send are plain functions returning the awaitable: once the handshake is
    # answered they hand back the server's own coroutine, so a message costs no extra frame.
    # And once it is answered, the partials the app holds are re-targeted at the server's
    # callables themselves, so a message costs no Python call of ours either.

    def hand_over(self) -> None:
        """The handshake is answered: make the app's receive and send the server's own.

        ``functools.partial.__setstate__`` (its pickling hook) re-targets the very partial
        objects the app holds. From then on a message goes from the app to the server
        through the partial's C call only. ``receive`` is handed over once the connect
        message the middleware read has been replayed to the app. A refused handshake keeps
        ``send``, which then raises ``HandshakeDenied``. Called once the state is open or
        answered by the app.
        """
        send, receive = self.app_send, self.app_receive
        try:
            # (Each is handed over once; the middleware then forgets it.)
            if send is not None:
                send.__setstate__((self.send_, (), None, None))  # type: ignore[attr-defined]
                self.app_send = None
            if receive is not None and self.connect is None:
                receive.__setstate__((self.receive_, (), None, None))  # type: ignore[attr-defined]
                self.app_receive = None
        except (AttributeError, TypeError):
            # A Python without the hook: the partials keep calling our receive and send,
            # which pass messages through once answered, one call slower.
            self.app_receive = self.app_send = None

    def receive(self) -> Awaitable[Message]:
        if self.connect is None and self.state != _PENDING:
            return self.receive_()
        return self.receive_pending()

    async def receive_pending(self) -> Message:
        connect = self.connect
        if connect is not None:
            self.connect = None
            if self.state >= _OPEN:  # answered before the app read connect: rare
                self.hand_over()
            return connect
        message = await self.receive_()
        if self.state == _PENDING and message.get("type") == "websocket.disconnect":
            self.client_gone = True
        return message

    def send(self, message: Message) -> Awaitable[None]:
        if self.state >= _OPEN:  # accepted, or answered by the app: messages pass untouched
            return self.send_(message)
        if self.state == _PENDING and message.get("type") == "websocket.accept":
            return self.accept(message)
        return self.send_pending(message)

    async def send_pending(self, message: Message) -> None:
        state = self.state
        if state == _DENIED:
            raise self.denied or HandshakeDenied("the handshake was refused")
        decision = self.decision
        assert isinstance(decision, Accept)
        kind = message.get("type")
        if kind not in ("websocket.close", "websocket.http.response.start"):
            why = f"app sent {kind!r} before answering"
            await self.deny(decision_reject(decision, Reason.APP_ERROR, why), Outcome.APP_ERROR)
            raise RuntimeError(
                f"expected {_ANSWERS} before the handshake is answered, got {kind!r}"
            )
        self.state = _APP_ANSWERED
        self.hand_over()
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
        request = self.request
        decision = self.decision
        assert request is not None
        assert isinstance(decision, Accept)
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
        subprotocol = message.get("subprotocol")
        listed = self.scope.get("subprotocols")
        if subprotocol is not None and listed and subprotocol not in listed:
            # The server only sends what its own scope list holds (hypercorn keeps the last
            # Sec-WebSocket-Protocol line and raises on anything else): refuse visibly.
            # (The detail names no value: subprotocols may carry credentials.)
            why = "the server cannot send the chosen subprotocol: its scope lists only others"
            await self.deny(decision_reject(decision, Reason.INTERNAL_ERROR, why), Outcome.REJECTED)
            self.denied = HandshakeDenied("internal_error: handshake refused")
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
            self.hand_over()
            await self.send_(message)
            return
        self.state = _OPEN
        self.hand_over()
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
        if expected is not None:
            # The policy computes an accept value only for a single valid key.
            key_valid = True
        elif not keys:
            key_valid = None if request.http_version in _NO_KEY_VERSIONS else False
        else:
            key_valid = len(keys) == 1 and is_valid_key(keys[0])
            if key_valid:
                expected = accept_key(keys[0])
        offered = request.subprotocols
        if offered:
            redacted = mw.redact_all(offered)
            if subprotocol is not None:  # usually one of the offered: redacted already
                subprotocol = (
                    redacted[offered.index(subprotocol)]
                    if subprotocol in offered
                    else mw.redact(subprotocol)
                )
            offered = redacted
        client = request.client
        versions = request.versions
        hosts, origins = request.hosts, request.origins
        # Positional, in AuditEvent's field order: the cheapest way to build the tuple.
        # (Values within the cap are taken as they are, without a call: the usual case.)
        return tuple.__new__(
            AuditEvent,
            (
                self.audit_id,
                mw._clock(),
                time.perf_counter() - self.started,
                f"{client[0]}:{client[1]}" if client else None,
                request.path,
                self.route,
                hosts[0] if len(hosts) == 1 and len(hosts[0]) <= _CAP else _cap(hosts),
                origins[0] if len(origins) == 1 and len(origins[0]) <= _CAP else _cap(origins),
                offered,
                subprotocol,
                (versions[0] if len(versions) == 1 else _cap((", ".join(versions),)))
                if versions
                else None,
                keys[0] if len(keys) == 1 and len(keys[0]) <= _CAP else _cap(keys),
                key_valid,
                expected,
                self.key_reused,
                outcome,
                reason,
                status,
                denial,
                detail,
                self.store_error,
            ),
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


def _caused_by(exc: BaseException, cause: BaseException) -> bool:
    """Whether ``cause`` is ``exc`` or in its chain of causes and contexts."""
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            return False
        if seen is cause:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def decision_reject(decision: Accept | Reject, reason: Reason, detail: str) -> Reject:
    """A refusal for ``reason`` that keeps what the policy computed (accept value, origin)."""
    return Reject.because(
        reason, detail, expected_accept=decision.expected_accept, origin=decision.origin
    )
