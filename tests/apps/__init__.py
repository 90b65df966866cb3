"""The ASGI apps the server tests run, and what they share."""

from __future__ import annotations

from asgi_ws_handshake.middleware import Receive, Send


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer the lifespan protocol: startup, then shutdown (the test apps' one handler)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
