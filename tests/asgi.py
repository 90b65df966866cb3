"""The suite's one scope factory and one scripted ASGI harness, for core and adapter tests.

- ``make_request(**overrides)``: a ``HandshakeRequest`` as the policy sees it (core tables);
  ``reason_of(policy, request)`` reads the verdict.
- ``ws_scope(...)``: a ``websocket`` scope as a server hands it over (every test that needs a
  scope builds it here, down to a bare ``{"type", "headers"}``).
- ``Script``: one client connection: a ``receive`` that plays messages, then a disconnect or a
  wait; a ``send`` that records (or fails, or never returns).
- ``run(app_body, scope, ...)``: one connection through ``HandshakeMiddleware`` around an app
  that records what it was given, to the end.
- ``run_sync(coro)``: the one way a synchronous test body awaits, where the sync boundary is
  inherent: Hypothesis ``@given`` bodies (they cannot be coroutines under pytest-asyncio) and
  tests of behaviour outside any event loop. Every other test that awaits is ``async def``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from asgi_ws_handshake import (
    HandshakeMiddleware,
    HandshakePolicy,
    HandshakeRequest,
    MemorySink,
    Reason,
    Reject,
)
from asgi_ws_handshake.middleware import Message, Receive, Scope, Send
from tests.support import GOOD_KEY

T = TypeVar("T")
App = Callable[[Scope, Receive, Send], Awaitable[None]]
#: The denial-response extension (uvicorn, hypercorn, granian offer it; daphne does not).
DENIAL: dict[str, Any] = {"websocket.http.response": {}}
CONNECT: Message = {"type": "websocket.connect"}
#: A client that went away without a close frame (RFC 6455 7.4.1: 1006).
DISCONNECT: Message = {"type": "websocket.disconnect", "code": 1006}
#: Every key of an ASGI ``websocket`` scope (ASGI spec 2.4, "WebSocket").
SCOPE_KEYS = frozenset(
    {
        "asgi",
        "http_version",
        "scheme",
        "path",
        "raw_path",
        "query_string",
        "root_path",
        "client",
        "server",
        "subprotocols",
        "extensions",
        "state",
    }
)


def make_request(**overrides: Any) -> HandshakeRequest:
    """A valid, same-origin handshake request as the policy sees it; override any field."""
    fields: dict[str, Any] = {
        "path": "/ws",
        "hosts": ("app.example.com",),
        "origins": ("https://app.example.com",),
        "versions": ("13",),
        "keys": (GOOD_KEY,),
        "subprotocols": (),
    }
    fields.update(overrides)
    return HandshakeRequest(**fields)


def reason_of(policy: HandshakePolicy, request: HandshakeRequest) -> Reason | None:
    """The reason ``policy`` refuses ``request`` for, or None if it accepts it."""
    decision = policy.evaluate(request)
    return decision.reason if isinstance(decision, Reject) else None


def ws_scope(
    *,
    origin: str | None = "https://app.test",
    host: str | None = "app.test",
    key: str | None = GOOD_KEY,
    version: str | None = "13",
    protocols: str | None = None,
    cookie: str | None = None,
    authorization: str | None = None,
    extra: Sequence[tuple[bytes, bytes]] = (),
    headers: Sequence[tuple[bytes, bytes]] | None = None,
    bare: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """A ``websocket`` scope: a valid same-origin handshake to ``app.test`` unless told otherwise.

    Args:
        origin, host, key, version, protocols, cookie, authorization: header values (latin-1
            text); None leaves the header out.
        extra: raw header lines appended after those.
        headers: the whole raw header list instead (any bytes, any order, repeats kept).
        bare: only ``type``, ``headers`` and the ``fields`` given, as the sparest server
            sends; otherwise every key a server fills in (``subprotocols`` from ``protocols``).
        fields: scope keys (see ``SCOPE_KEYS``), e.g. ``path``, ``root_path``, ``client``,
            ``query_string``, ``scheme``, ``http_version``; None leaves the key out (ASGI reads
            a missing optional key as None). ``extensions`` defaults to the denial extension,
            ``state`` to a lifespan namespace.
    """
    unknown = set(fields) - SCOPE_KEYS
    if unknown:
        raise TypeError(f"not a websocket scope key: {sorted(unknown)}")
    if headers is None:
        lines = [
            (b"host", host),
            (b"upgrade", "websocket"),
            (b"connection", "Upgrade"),
            (b"sec-websocket-key", key),
            (b"sec-websocket-version", version),
            (b"origin", origin),
            (b"sec-websocket-protocol", protocols),
            (b"cookie", cookie),
            (b"authorization", authorization),
        ]
        raw = [(name, value.encode("latin-1")) for name, value in lines if value is not None]
        raw.extend(extra)
    else:
        raw = list(headers)
    scope: dict[str, Any] = {"type": "websocket", "headers": raw}
    if not bare:
        path = fields.get("path", "/ws")
        scope |= {
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode() if isinstance(path, str) else None,
            "query_string": b"",
            "root_path": "",
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "subprotocols": [p.strip() for p in protocols.split(",")] if protocols else [],
            "extensions": copy.deepcopy(DENIAL),
            "state": {"from_lifespan": 1},
        }
    scope |= fields
    return {name: value for name, value in scope.items() if value is not None}


@dataclass
class Script:
    """One client connection as the server presents it to the app.

    ``receive`` hands out ``incoming`` in order; when they run out it returns a disconnect
    (``then_disconnect``) or waits for ``push``; with ``receive_error`` set it raises that
    instead (the transport broke). ``send`` records each message in ``sent``,
    unless ``send_error`` is set (the transport is gone: it raises) or ``block_send`` (it never
    returns). ``returned`` keeps every awaitable the two handed out, so a test can tell the
    server's own awaitables from wrappers. ``start`` runs an app on this connection as a task
    (as a server would), ``close`` ends it from the client's side.
    """

    incoming: list[Message] = field(default_factory=lambda: [dict(CONNECT)])
    then_disconnect: bool = True
    receive_error: BaseException | None = None
    send_error: BaseException | None = None
    #: Only messages of this type meet ``send_error`` (None: every message).
    send_error_on: str | None = None
    block_send: bool = False
    sent: list[Message] = field(default_factory=list, init=False)
    #: How many times ``receive`` was called.
    receiving: int = field(default=0, init=False)
    returned: list[object] = field(default_factory=list, init=False, repr=False)
    task: asyncio.Task[None] | None = field(default=None, init=False)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _answered: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def receive(self) -> Awaitable[Message]:
        awaitable = self._receive()
        self.returned.append(awaitable)
        return awaitable

    def send(self, message: Message) -> Awaitable[None]:
        awaitable = self._send(message)
        self.returned.append(awaitable)
        return awaitable

    async def _receive(self) -> Message:
        self.receiving += 1
        if self.receive_error is not None:
            raise self.receive_error
        while not self.incoming:
            if self.then_disconnect:
                return dict(DISCONNECT)
            self._arrived.clear()
            await self._arrived.wait()
        return self.incoming.pop(0)

    async def _send(self, message: Message) -> None:
        if self.send_error is not None and self.send_error_on in (None, message["type"]):
            raise self.send_error
        if self.block_send:
            await asyncio.Event().wait()
        self.sent.append(dict(message))
        self._answered.set()

    def push(self, message: Message) -> None:
        """Hand ``message`` to the next (or a waiting) ``receive``."""
        self.incoming.append(message)
        self._arrived.set()

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]

    async def answer(self) -> Message:
        """The first message sent (the handshake's answer), waiting for it at most 5 s."""
        await asyncio.wait_for(self._answered.wait(), 5)
        return self.sent[0]

    async def status(self) -> int:
        """The HTTP status the client got: 101, the refusal's, or 403 for a close (servers send
        a close before accept as 403)."""
        first = await self.answer()
        if first["type"] == "websocket.accept":
            return 101
        if first["type"] == "websocket.close":
            return 403
        return int(first["status"])

    def start(self, app: App, scope: Scope | None = None) -> asyncio.Task[None]:
        """Run ``app`` on this connection in a task, as a server does."""

        async def connection() -> None:
            await app(ws_scope() if scope is None else scope, self.receive, self.send)

        self.task = asyncio.ensure_future(connection())
        return self.task

    async def close(self, code: int = 1000) -> None:
        """The client leaves; wait (at most 5 s) for the connection's task to end."""
        assert self.task is not None, "start() first"
        self.push({"type": "websocket.disconnect", "code": code})
        await asyncio.wait_for(self.task, 5)


async def accepting_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then read until the client leaves."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


@dataclass
class Run:
    script: Script
    sink: MemorySink
    middleware: HandshakeMiddleware
    scope: dict[str, Any]
    scope_before: dict[str, Any]
    app_scopes: list[Scope]
    app_received: list[Message]
    #: What the middleware raised, when ``run`` was told to expect it.
    error: BaseException | None = None


async def run(
    app_body: App | None,
    scope: dict[str, Any] | None = None,
    *,
    policy: HandshakePolicy | None = None,
    script: Script | None = None,
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    **middleware_kwargs: Any,
) -> Run:
    """Run one connection through the middleware around ``app_body`` (None: an accepting app).

    The app records the scopes and messages it was given. ``raises``: the exception the
    connection must end with (kept in ``Run.error``); otherwise anything raised propagates.
    The audit goes to a fresh ``MemorySink`` unless ``audit=`` says otherwise.
    """
    scope = scope if scope is not None else ws_scope()
    script = script or Script()
    sink = MemorySink()
    app_scopes: list[Scope] = []
    app_received: list[Message] = []

    async def app(child: Scope, receive: Receive, send: Send) -> None:
        app_scopes.append(child)

        async def recording_receive() -> Message:
            message = await receive()
            app_received.append(message)
            return message

        if app_body is None:
            await recording_receive()
            await send({"type": "websocket.accept"})
        else:
            await app_body(child, recording_receive, send)

    middleware_kwargs.setdefault("audit", sink)
    middleware = HandshakeMiddleware(
        app,
        policy=policy or HandshakePolicy(subprotocols=["chat.v2", "chat.v1"]),
        **middleware_kwargs,
    )
    before = copy.deepcopy(scope)
    result = Run(script, sink, middleware, scope, before, app_scopes, app_received)
    if raises is None:
        await middleware(scope, script.receive, script.send)
    else:
        with pytest.raises(raises) as caught:
            await middleware(scope, script.receive, script.send)
        result.error = caught.value
    return result


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` from a synchronous test body, in a fresh event loop.

    Only for bodies that cannot be coroutines: Hypothesis ``@given`` tests (pytest-asyncio
    does not run them as coroutines), and tests that check what happens outside any running
    loop as well as inside one. Everything else awaits in an ``async def`` test.
    """
    return asyncio.run(coro)
