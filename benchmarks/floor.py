"""A lower bound for the instruction counts: the mandatory steps, inlined, and nothing else.

NOT A USABLE MIDDLEWARE. It accepts exactly the benchmark's handshake and skips everything
that makes the real one safe: no refusal paths (it raises), no malformed-input handling, no
routes, no policing of the app's answer beyond adding the subprotocol, no client-gone or
exception handling, no store bounds, no sinks' error handling. What it does is the work
today's full policy needs on an accepted handshake, once each, in one coroutine: read the
five handshake fields in one pass over the headers, look the decision for the raw (Origin,
Host, version, protocol) values up in a dict (computed by the real ``evaluate`` on a miss),
check the key (strict base64 of 16 bytes), remember the key in a dict, read the clock once,
replay ``websocket.connect`` to the app, add the subprotocol to its accept, leave the record
in the connection's state and append an event tuple to a ring.

The gap between it and the middleware is what the middleware's safety and structure cost;
the gap between it and Channels' ``OriginValidator`` is how far below Channels plain Python
can go while doing this much.
"""

from __future__ import annotations

import binascii
import collections
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgi_ws_handshake import Accept, HandshakePolicy, HandshakeRequest

_FIELDS = {
    b"origin": 0,
    b"host": 1,
    b"sec-websocket-version": 2,
    b"sec-websocket-key": 3,
    b"sec-websocket-protocol": 4,
}
Message = dict[str, Any]


class _Answer:
    """The app's ``receive`` (replays connect) and ``send`` (adds the subprotocol)."""

    __slots__ = ("connect", "receive_", "send_", "subprotocol")

    def __init__(self, receive: Any, send: Any, connect: Message, subprotocol: str | None):
        self.receive_, self.send_ = receive, send
        self.connect: Message | None = connect
        self.subprotocol = subprotocol

    def receive(self) -> Awaitable[Message]:
        connect, self.connect = self.connect, None
        return self._replay(connect) if connect is not None else self.receive_()

    async def _replay(self, connect: Message) -> Message:
        return connect

    def send(self, message: Message) -> Awaitable[None]:
        if self.subprotocol is not None and message["type"] == "websocket.accept":
            message = {**message, "subprotocol": self.subprotocol}
            self.subprotocol = None
        return self.send_(message)  # type: ignore[no-any-return]


class Floor:
    """The mandatory steps around ``app``, for the benchmark's handshake only."""

    def __init__(self, app: Callable[..., Awaitable[None]], policy: HandshakePolicy) -> None:
        self.app = app
        self.policy = policy
        self.decisions: dict[tuple[Any, ...], str | None] = {}
        self.keys: dict[bytes, float] = {}
        self.events: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=1000)
        self.ids = itertools.count(1)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        found: list[Any] = [None, None, None, None, None]
        for name, value in scope["headers"]:
            index = _FIELDS.get(name)
            if index is not None:
                found[index] = value
        origin, host, version, key, protocol = found
        raw = (origin, host, version, protocol)
        if raw not in self.decisions:
            decision = self.policy.evaluate(HandshakeRequest.from_scope(scope))
            if type(decision) is not Accept:
                raise NotImplementedError("the floor only accepts the benchmark's handshake")
            self.decisions[raw] = decision.subprotocol
        subprotocol = self.decisions[raw]
        if len(binascii.a2b_base64(key, strict_mode=True)) != 16:
            raise NotImplementedError("the floor only accepts the benchmark's handshake")
        now = time.time()
        reused = key in self.keys
        self.keys[key] = now + 600.0
        connect = await receive()
        answer = _Answer(receive, send, connect, subprotocol)
        event = (next(self.ids), now, scope["client"], scope["path"], key, reused, subprotocol)
        scope["state"]["ws_handshake"] = event
        await self.app(scope, answer.receive, answer.send)
        self.events.append(event)
