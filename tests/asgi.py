"""Scripted ASGI plumbing for adapter tests: a receive that plays messages, a send that records."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, HandshakeRequest, MemorySink
from asgi_ws_handshake.middleware import Message, Receive, Scope, Send
from tests.support import GOOD_KEY

App = Callable[[Scope, Receive, Send], Awaitable[None]]
DENIAL: dict[str, Any] = {"websocket.http.response": {}}


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


def ws_scope(
    *,
    origin: str | None = "https://app.test",
    host: str = "app.test",
    key: str = GOOD_KEY,
    version: str = "13",
    protocols: str | None = None,
    extensions: dict[str, Any] | None = DENIAL,
    path: str = "/ws",
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> dict[str, Any]:
    headers = [
        (b"host", host.encode()),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", key.encode()),
        (b"sec-websocket-version", version.encode()),
    ]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if protocols is not None:
        headers.append((b"sec-websocket-protocol", protocols.encode()))
    headers.extend(extra)
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [p.strip() for p in protocols.split(",")] if protocols else [],
        "state": {"from_lifespan": 1},
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


@dataclass
class Script:
    """Messages the 'server' hands to receive, then an endless wait (or disconnect)."""

    incoming: list[Message] = field(default_factory=lambda: [{"type": "websocket.connect"}])
    sent: list[Message] = field(default_factory=list)
    then_disconnect: bool = True
    send_error: BaseException | None = None

    async def receive(self) -> Message:
        if self.incoming:
            return self.incoming.pop(0)
        if self.then_disconnect:
            return {"type": "websocket.disconnect", "code": 1006}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append(message)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


@dataclass
class Run:
    script: Script
    sink: MemorySink
    middleware: HandshakeMiddleware
    scope: dict[str, Any]
    scope_before: dict[str, Any]
    app_scopes: list[Scope]
    app_received: list[Message]


async def run(
    app_body: Callable[[Scope, Receive, Send], Awaitable[None]] | None,
    scope: dict[str, Any] | None = None,
    *,
    policy: HandshakePolicy | None = None,
    script: Script | None = None,
    **middleware_kwargs: Any,
) -> Run:
    """Run one connection through the middleware around ``app_body`` (None: an accepting app)."""
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
    await middleware(scope, script.receive, script.send)
    return Run(script, sink, middleware, scope, before, app_scopes, app_received)
