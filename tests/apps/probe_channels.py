"""Django Channels' ``OriginValidator`` in front of an echo consumer, for daphne.

daphne (autobahn) speaks Sec-WebSocket-Version 8 beside 13 on purpose and advertises both;
the probe must call that a warning, not a hole. Run as ``tests.apps.probe_channels:app``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import django
from django.conf import settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

ALLOWED = ["http://allowed.test"]

if not settings.configured:
    settings.configure(ALLOWED_HOSTS=["*"], INSTALLED_APPS=[], USE_TZ=True)
    django.setup()

from channels.security.websocket import OriginValidator  # noqa: E402 (needs settings)


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        await send({k: v for k, v in message.items() if k != "type"} | {"type": "websocket.send"})


app = OriginValidator(echo, ALLOWED)
