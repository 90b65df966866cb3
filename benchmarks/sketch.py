"""A lower bound for the in-process benchmark: the mandatory steps, inlined, and nothing else.

Not a middleware anyone should use. It accepts exactly the benchmark's handshake shape and
skips everything that makes the real one safe: no refusal paths, no malformed-input handling,
no policing of the app's answer beyond adding the subprotocol, no client-gone or exception
handling, no routes. What it does do is the work the issue's "full policy" names, once each:
find the five header values in one pass, look the (Origin, Host, protocol) decision up in a
memo, check the version and the key, compute the SHA-1 accept value, remember the key in an
ordered dict, replay ``websocket.connect`` to the app, copy the scope with the result, and
append a 21-field audit tuple to a ring. The gap between it and the real middleware is what
the middleware's safety costs; the gap between it and Channels is what CPython costs.
"""

from __future__ import annotations

import binascii
import collections
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgi_ws_handshake import Accept, HandshakePolicy
from asgi_ws_handshake.audit import AuditEvent

_FIELDS = {
    b"origin": 0,
    b"host": 1,
    b"sec-websocket-version": 2,
    b"sec-websocket-key": 3,
    b"sec-websocket-protocol": 4,
}
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ids = itertools.count(1)

Message = dict[str, Any]


class _Guard:
    __slots__ = ("connect", "event", "ring", "send_", "subprotocol", "upstream")

    def __init__(
        self,
        receive: Any,
        send: Any,
        connect: Message,
        subprotocol: str | None,
        ring: collections.deque[AuditEvent],
    ) -> None:
        self.upstream = receive
        self.send_ = send
        self.connect: Message | None = connect
        self.subprotocol = subprotocol
        self.ring = ring
        self.event: AuditEvent | None = None

    def receive(self) -> Awaitable[Message]:
        if self.connect is None:
            return self.upstream()  # type: ignore[no-any-return]
        return self._connect()

    async def _connect(self) -> Message:
        connect, self.connect = self.connect, None
        assert connect is not None
        return connect

    def send(self, message: Message) -> Awaitable[None]:
        if self.event is None:
            return self.send_(message)  # type: ignore[no-any-return]
        return self._accept(message)

    async def _accept(self, message: Message) -> None:
        if message.get("subprotocol") is None and self.subprotocol is not None:
            message = {**message, "subprotocol": self.subprotocol}
        await self.send_(message)
        event, self.event = self.event, None
        if event is not None:
            self.ring.append(event)


class Sketch:
    """The mandatory steps around ``app``, for the benchmark's handshake only."""

    def __init__(self, app: Callable[..., Awaitable[None]], policy: HandshakePolicy) -> None:
        self.app = app
        self.policy = policy
        self.keys: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.ring: collections.deque[AuditEvent] = collections.deque(maxlen=1000)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        found: list[Any] = [None, None, None, None, None]
        for name, value in scope["headers"]:
            index = _FIELDS.get(name)
            if index is not None:
                found[index] = value
        origin, host, version, key, protocol = found
        entry = self.policy.plain(origin, host, protocol)  # memoised
        if entry is None or version != b"13" or len(binascii.a2b_base64(key)) != 16:
            raise NotImplementedError("the sketch only accepts the benchmark's handshake")
        accepted = entry.decision
        if not isinstance(accepted, Accept):
            raise NotImplementedError("the sketch only accepts the benchmark's handshake")
        accept = binascii.b2a_base64(hashlib.sha1(key + _GUID).digest(), newline=False).decode()
        text = key.decode("latin-1")
        now = time.monotonic()
        reused = text in self.keys
        self.keys[text] = now + 600.0
        connect = await receive()
        guard = _Guard(receive, send, connect, accepted.subprotocol, self.ring)
        client = scope["client"]
        guard.event = tuple.__new__(
            AuditEvent,
            (
                f"sketch-{next(_ids):x}",
                time.time(),
                time.perf_counter() - started,
                f"{client[0]}:{client[1]}",
                scope["path"],
                "default",
                entry.hosts[0],
                entry.origins[0],
                entry.subprotocols,
                accepted.subprotocol,
                "13",
                text,
                True,
                accept,
                reused,
                "accepted",
                None,
                101,
                None,
                "",
                False,
            ),
        )
        child = {**scope, "state": {**scope["state"], "ws_handshake": entry}}
        await self.app(child, guard.receive, guard.send)
