"""The ASGI apps the end-to-end benchmarks run under uvicorn: ``bare``, ``guarded``, ``channels``.

``bare`` accepts every socket and echoes each message; ``guarded`` is the same app behind the
full policy (origin patterns, subprotocol negotiation, key-reuse store, audit to a memory
sink); ``channels`` is the same app behind Django Channels' ``OriginValidator`` (origin only,
the same origins), the reference point. All answer ``GET /cpu`` with the server process's CPU
seconds, so the client can report server CPU per handshake or message next to the rate.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, MemorySink, MemoryStore
from asgi_ws_handshake.middleware import Receive, Scope, Send

ALLOWED = ["https://app.example.com", "https://*.example.com"]
SUBPROTOCOLS = ["graphql-transport-ws", "graphql-ws"]


async def _cpu(send: Send) -> None:
    body = b"%.9f" % time.process_time()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        await _cpu(send)
        return
    if kind != "websocket":  # lifespan: not supported, uvicorn carries on
        raise RuntimeError(f"unsupported scope {kind!r}")
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


guarded = HandshakeMiddleware(
    bare,
    policy=HandshakePolicy(allow_origins=ALLOWED, subprotocols=SUBPROTOCOLS, key_reuse="flag"),
    audit=MemorySink(),
    store=MemoryStore(),
)


#: Whether Django Channels is installed (the ``channels`` app exists only then).
HAVE_CHANNELS = importlib.util.find_spec("channels") is not None
CHANNELS_ALLOWED = ["https://app.example.com", "https://.example.com"]  # Channels' spelling


def _channels() -> tuple[Any, Any]:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(ALLOWED_HOSTS=["*"], INSTALLED_APPS=[], USE_TZ=True)
        django.setup()
    from channels.security.websocket import OriginValidator

    validator = OriginValidator(bare, CHANNELS_ALLOWED)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # OriginValidator refuses non-websocket scopes: GET /cpu goes around it (one call
        # more on the websocket path, a fraction of a microsecond).
        if scope["type"] == "websocket":
            await validator(scope, receive, send)
        else:
            await bare(scope, receive, send)

    return app, validator


if HAVE_CHANNELS:
    # Built at import by every server, whichever app it serves: the processes then differ
    # only in the app they run (importing Django changes the C heap's layout enough to move
    # uvicorn's own malloc costs by some 10,000 instructions per connection).
    channels, channels_validator = _channels()
    #: ``channels_validator`` is the OriginValidator alone (no ``GET /cpu``): what the server
    #: instruction count runs, so Channels is not charged for the /cpu detour's extra call.
