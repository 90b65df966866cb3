"""Step 5 of a handshake: who is connecting (``authenticate``), then the checks that need a
store: handshake rates, reused keys and connection leases.

Owns what the policy's stateful options mean (``rate_limit``, ``rate_limit_total``,
``key_reuse``, ``max_connections``, ``max_connections_per_client``, ``on_store_error``),
turning the store's answers into a decision. Knows no ASGI message: the middleware runs it
after ``evaluate`` accepted a handshake.

A store answers each call either at once (the in-process ``MemoryStore``) or with an
awaitable (Redis). ``StoreChecks.check`` runs the steps in order and returns a decision as
soon as every answer was immediate; only when a store suspends does it hand back a coroutine
that awaits the answer and carries on with the same steps. Each step's rule is written once
(``_apply``), whichever way its answer came.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .decision import Accept, Decision, Reason, Reject
from .identity import Authenticated, AuthRefusal, AuthRequest, Identity
from .policy import HandshakePolicy
from .record import HandshakeInfo
from .request import HandshakeRequest
from .stores import HandshakeStore, StoreError

__all__ = ["KeyBacklog", "StoreChecks"]

logger = logging.getLogger("asgi_ws_handshake")

#: A backstop for stores that do not bound their own calls: no handshake waits longer.
STORE_DEADLINE = 5.0
_FAILED = object()  # a store call that raised, timed out, or was not made after a failure
_IMMEDIATE = (bool, int, str, type(None))  # what stores answer when they do not suspend


class StoreChecks(HandshakeInfo):
    """A handshake going through the store-backed checks, which record what they find on it
    (``key_reused``, ``store_error``, ``lease``) for the audit event. The middleware's
    per-connection state extends this class.
    """

    __slots__ = ()

    def check(
        self,
        store: HandshakeStore,
        policy: HandshakePolicy,
        decision: Accept,
        request: HandshakeRequest,
        backlog: KeyBacklog | None = None,
        scope: Mapping[str, Any] | None = None,
    ) -> Decision | Awaitable[Decision]:
        """Run ``authenticate`` (when the policy has one: ``scope`` holds the credentials),
        then the policy's ``store_checks`` in order: rates, the reused key, connection caps.

        Returns the decision when every answer was immediate, else an awaitable of it.
        A connection lease, when the route has caps, is named by the audit id. A key the
        store could not remember goes to ``backlog``, to be remembered once it answers again.
        """
        if policy.authenticate is not None:
            return self._authenticate(store, policy, decision, request, backlog, scope or {})
        return self._run(store, policy, decision, request, 0, backlog)

    def _run(
        self,
        store: HandshakeStore,
        policy: HandshakePolicy,
        decision: Accept,
        request: HandshakeRequest,
        index: int,
        backlog: KeyBacklog | None,
    ) -> Decision | Awaitable[Decision]:
        checks = policy.store_checks
        while index < len(checks):
            check = checks[index]
            if self.store_error:
                answer: Any = _FAILED  # one failure per handshake: the store is not asked again
            else:
                try:
                    answer = self._ask(store, policy, request, check)
                except Exception as exc:  # a store that fails fast, before any awaitable
                    answer = self._failed(exc)
                if type(answer) not in _IMMEDIATE and answer is not _FAILED:
                    return self._resume(store, policy, decision, request, index, backlog, answer)
            verdict = self._apply(store, policy, decision, request, backlog, check, answer)
            if type(verdict) is not Accept:
                return verdict
            index += 1
        return decision

    async def _resume(
        self,
        store: HandshakeStore,
        policy: HandshakePolicy,
        decision: Accept,
        request: HandshakeRequest,
        index: int,
        backlog: KeyBacklog | None,
        answer: Awaitable[Any],
    ) -> Decision:
        try:
            async with asyncio.timeout(STORE_DEADLINE):
                value = await answer
        except Exception as exc:  # StoreError, the backstop's TimeoutError, or a store bug
            value = self._failed(exc)
        check = policy.store_checks[index]
        verdict = self._apply(store, policy, decision, request, backlog, check, value)
        if type(verdict) is not Accept:
            return verdict
        rest = self._run(store, policy, decision, request, index + 1, backlog)
        return rest if type(rest) is Accept or type(rest) is Reject else await rest  # type: ignore[misc]

    # -- who is connecting: the authenticate hook, sync or async, bounded, failing closed

    def now(self) -> float:
        """Wall-clock seconds (the middleware's injectable clock overrides this)."""
        return time.time()

    def _authenticate(
        self,
        store: HandshakeStore,
        policy: HandshakePolicy,
        decision: Accept,
        request: HandshakeRequest,
        backlog: KeyBacklog | None,
        scope: Mapping[str, Any],
    ) -> Decision | Awaitable[Decision]:
        hook = policy.authenticate
        assert hook is not None
        auth = AuthRequest(request, scope, route=self.route, origin=decision.origin, store=store)
        try:
            answer = hook(auth)
        except Exception as exc:
            return self._auth_failed(exc, decision, auth)
        if inspect.isawaitable(answer):
            return self._authenticated_later(
                store, policy, decision, request, backlog, auth, answer
            )
        verdict = self._auth_apply(policy, decision, request, auth, answer)
        if type(verdict) is not Accept:
            return verdict
        return self._run(store, policy, decision, request, 0, backlog)

    async def _authenticated_later(
        self,
        store: HandshakeStore,
        policy: HandshakePolicy,
        decision: Accept,
        request: HandshakeRequest,
        backlog: KeyBacklog | None,
        auth: AuthRequest,
        answer: Awaitable[Any],
    ) -> Decision:
        try:
            async with asyncio.timeout(policy.authenticate_timeout):
                value = await answer
        except TimeoutError:
            self.auth = Authenticated(None, auth.source, auth.consumed)
            logger.warning("authenticate did not answer within %ss", policy.authenticate_timeout)
            return Reject.because(
                Reason.AUTH_TIMEOUT, "authenticate timed out", origin=decision.origin
            )
        except Exception as exc:
            return self._auth_failed(exc, decision, auth)
        verdict = self._auth_apply(policy, decision, request, auth, value)
        if type(verdict) is not Accept:
            return verdict
        rest = self._run(store, policy, decision, request, 0, backlog)
        return rest if type(rest) is Accept or type(rest) is Reject else await rest  # type: ignore[misc]

    def _auth_failed(self, exc: Exception, decision: Accept, auth: AuthRequest) -> Reject:
        """A hook that raised: its refusal, a store that failed, or a bug (500, never accept)."""
        self.auth = Authenticated(None, auth.source, auth.consumed)  # what to redact
        if isinstance(exc, AuthRefusal):
            return exc.reject(decision.origin, auth.scrub)
        if isinstance(exc, StoreError):  # a ticket that cannot be redeemed is not let through
            self._failed(exc)
            return Reject.because(
                Reason.STORE_UNAVAILABLE, "the store did not answer", origin=decision.origin
            )
        # Never the message: it may quote a credential. The place is enough to find the bug.
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        where = f" at {frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else ""
        logger.error("authenticate raised %s%s", type(exc).__qualname__, where)
        return Reject.because(
            Reason.AUTH_ERROR, f"authenticate raised {type(exc).__name__}", origin=decision.origin
        )

    def _auth_apply(
        self,
        policy: HandshakePolicy,
        decision: Accept,
        request: HandshakeRequest,
        auth: AuthRequest,
        answer: Any,
    ) -> Decision:
        """What the hook's answer means for the handshake; records the identity."""
        # Whatever the answer, the event must know where the credential came from and
        # which subprotocol item it consumed (to redact it); the identity is added below.
        self.auth = Authenticated(None, auth.source, auth.consumed)
        if isinstance(answer, AuthRefusal):
            return answer.reject(decision.origin, auth.scrub)
        if type(answer) is Reject:
            detail = auth.scrub(answer.detail)
            return answer._replace(origin=answer.origin or decision.origin, detail=detail)
        if answer is None:
            if not policy.allow_anonymous:
                return Reject.because(Reason.AUTH_MISSING, "no credentials", origin=decision.origin)
            return decision
        if not isinstance(answer, Identity):
            why = f"authenticate returned {type(answer).__name__}, not an Identity"
            return Reject.because(Reason.AUTH_ERROR, why, origin=decision.origin)
        expires = answer.expires_at
        if expires is not None and expires <= self.now():
            return Reject.because(Reason.AUTH_EXPIRED, "identity expired", origin=decision.origin)
        consumed = auth.consumed
        if consumed is not None and decision.subprotocol == consumed:
            # The token is a credential: it is never negotiated (nor echoed back).
            why = "the negotiated subprotocol is the credential"
            return Reject.because(Reason.INTERNAL_ERROR, why, origin=decision.origin)
        limit = None
        key = policy.limit_key
        if key == "subject":
            limit = f"{self.route}:subject:{answer.subject}"
        elif key != "client":
            try:
                value = key(request, answer)
            except Exception as exc:
                logger.error("limit_key raised %s", type(exc).__qualname__)
                value = None
            if not isinstance(value, str) or not 0 < len(value) <= 256:
                why = "limit_key did not return a str of 1 to 256 characters"
                return Reject.because(Reason.AUTH_ERROR, why, origin=decision.origin)
            limit = f"{self.route}:key:{value}"
        self.auth = Authenticated(answer, auth.source, consumed, limit)
        return decision

    def _limit_name(self, policy: HandshakePolicy, request: HandshakeRequest) -> str:
        """The name per-client rates and caps count under: the identity's key, or the address."""
        if policy.authenticate is not None:
            auth: Authenticated | None = getattr(self, "auth", None)
            if auth is not None and auth.limit is not None:
                return auth.limit
        return self.client_name(request)

    def _ask(
        self, store: HandshakeStore, policy: HandshakePolicy, request: HandshakeRequest, check: str
    ) -> Any:
        """The store's answer for ``check``: a value, or an awaitable of it."""
        if check == "key_reuse":
            if len(request.keys) != 1:
                return False  # no key over HTTP/2 and HTTP/3 (and none to trust otherwise)
            return store.remember_key(request.keys[0], policy.key_reuse_ttl)
        if check == "connections":
            caps: dict[str, int] = {}
            if policy.max_connections_per_client:
                caps[self._limit_name(policy, request)] = policy.max_connections_per_client
            if policy.max_connections:
                caps[f"{self.route}:total"] = policy.max_connections
            return store.acquire(self.audit_id, caps)
        if check == "client_rate":
            rate, name = policy.client_rate, self._limit_name(policy, request)
        else:
            rate, name = policy.total_rate, f"{self.route}:total"
        assert rate is not None
        return store.hit(f"rate:{name}", rate.limit, rate.window)

    def _failed(self, exc: Exception) -> object:
        logger.warning("handshake store failed: %s: %s", type(exc).__name__, exc)
        self.store_error = True
        return _FAILED

    def _apply(
        self,
        store: HandshakeStore,
        policy: HandshakePolicy,
        decision: Accept,
        request: HandshakeRequest,
        backlog: KeyBacklog | None,
        check: str,
        value: Any,
    ) -> Decision:
        """What the store's answer (or its failure) means for the handshake."""
        if check == "key_reuse":
            if backlog is not None and (value is _FAILED or backlog.keys):
                backlog.answered(store, request, policy, value is not _FAILED)
            if value is _FAILED:
                # Only a check that can refuse fails closed; "flag" proceeds, marked.
                if policy.key_reuse == "reject":
                    return self._store_failed(policy, decision)
                return decision
            self.key_reused = reused = bool(value)
            if reused and policy.key_reuse == "reject":
                # RFC 6455 4.1 item 7: the nonce is selected randomly for each connection.
                return Reject.because(Reason.KEY_REUSED, "key used before", origin=decision.origin)
            return decision
        if value is _FAILED:
            return self._store_failed(policy, decision)
        if check == "connections":
            if value is not None:
                which = "overall" if value.endswith(":total") else "client"
                # RFC 9110 15.6.4: 503 with Retry-After (10.2.3) for a temporary overload.
                return Reject.because(
                    Reason.TOO_MANY_CONNECTIONS,
                    f"{which} connection cap reached",
                    origin=decision.origin,
                    headers=(("retry-after", str(policy.connections_retry_after)),),
                )
            self.lease = self.audit_id  # the audit id names the lease: unique, and greppable
            return decision
        if value:
            which = "client" if check == "client_rate" else "overall"
            # RFC 6585 4: 429 Too Many Requests MAY carry Retry-After (RFC 9110 10.2.3).
            return Reject.because(
                Reason.RATE_LIMITED,
                f"{which} handshake rate exceeded",
                origin=decision.origin,
                headers=(("retry-after", str(value)),),
            )
        return decision

    @staticmethod
    def _store_failed(policy: HandshakePolicy, decision: Accept) -> Decision:
        """Apply ``on_store_error`` to a check the store could not answer."""
        if policy.on_store_error == "open":
            return decision  # the audit event carries store_error=True
        return Reject.because(
            Reason.STORE_UNAVAILABLE, "the store did not answer", origin=decision.origin
        )

    def client_name(self, request: HandshakeRequest) -> str:
        """The route and client address that rates and caps are counted under."""
        client = request.client
        # scope["client"] (ASGI spec): the peer, or what uvicorn --proxy-headers put there.
        return f"{self.route}:client:{client[0] if client else '-'}"

    async def release(self, store: HandshakeStore) -> None:
        """Give back the connection lease, if one was taken (bounded in time; never raises)."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        try:
            answer = store.release(lease)
            if inspect.isawaitable(answer):
                async with asyncio.timeout(STORE_DEADLINE):
                    await answer
        except Exception:
            # An expiring store drops the lease by itself; a memory store never fails here.
            logger.warning("could not release connection lease %s", lease, exc_info=True)


class KeyBacklog:
    """Keys of handshakes that passed while the store could not remember them (``on_store_error
    = "open"``, or ``key_reuse = "flag"``), remembered once the store answers again.

    Without it a key accepted during an outage would be unknown afterwards, and its reuse
    would pass unflagged. Bounded: the newest ``maxlen`` keys, each for what is left of its
    TTL. The flush runs in one background task at a time, bounded per call like any other.
    """

    def __init__(self, maxlen: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        #: (key, expiry) pairs waiting for the store, oldest first.
        self.keys: collections.deque[tuple[str, float]] = collections.deque(maxlen=maxlen)
        self._clock = clock
        self._flushing: asyncio.Task[None] | None = None

    def answered(
        self, store: HandshakeStore, request: HandshakeRequest, policy: HandshakePolicy, ok: bool
    ) -> None:
        """The store answered a key check (``ok``), or could not: keep the key, or flush."""
        if not ok:
            if len(request.keys) == 1:
                self.keys.append((request.keys[0], self._clock() + policy.key_reuse_ttl))
        elif self.keys and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.ensure_future(self.flush(store))

    async def flush(self, store: HandshakeStore) -> None:
        """Remember the kept keys; stop (keeping the rest) at the first failure."""
        keys = self.keys
        while keys:
            key, expires = keys[0]
            ttl = expires - self._clock()
            if ttl > 0:
                try:
                    answer = store.remember_key(key, ttl)
                    if inspect.isawaitable(answer):
                        async with asyncio.timeout(STORE_DEADLINE):
                            await answer
                except Exception as exc:
                    logger.warning("the store could not take back missed keys yet: %s", exc)
                    return
            keys.popleft()
