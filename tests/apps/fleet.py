"""The ASGI app the Redis integration tests run under real uvicorn processes.

Configured from the environment so that several processes share one redis-server:
``WSH_REDIS_URL``, ``WSH_REDIS_PREFIX``, ``WSH_LEASE_TTL``, ``WSH_STORE_TIMEOUT`` and
``WSH_POLICY`` (JSON keyword arguments of ``HandshakePolicy``). Audit events go to the JSON
Lines file named by ``WSH_AUDIT_FILE``. The downstream app is ``tests.apps.main``'s, plus two ways
for an accepted connection to end from the server side.
"""

from __future__ import annotations

import json
import os

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, JSONLinesSink
from asgi_ws_handshake.middleware import Receive, Scope, Send
from asgi_ws_handshake.stores.redis import RedisStore
from tests.apps.main import downstream


async def endings(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope.get("path", "")
    if scope["type"] == "websocket" and path.startswith(("/server-close", "/raise-after")):
        await receive()
        await send({"type": "websocket.accept"})
        if path.startswith("/raise-after"):
            raise RuntimeError("the app fails after accepting")
        await send({"type": "websocket.close", "code": 1000})
        return
    await downstream(scope, receive, send)


def build() -> HandshakeMiddleware:
    env = os.environ
    store = RedisStore(
        env["WSH_REDIS_URL"],
        prefix=env.get("WSH_REDIS_PREFIX", "wsh:"),
        timeout=float(env.get("WSH_STORE_TIMEOUT", "0.5")),
        lease_ttl=float(env.get("WSH_LEASE_TTL", "30")),
        retry_interval=float(env.get("WSH_RETRY_INTERVAL", "1")),
    )
    policy = HandshakePolicy(allow_any_origin=True, **json.loads(env.get("WSH_POLICY", "{}")))
    audit = env.get("WSH_AUDIT_FILE")
    return HandshakeMiddleware(
        endings, policy=policy, store=store, audit=[JSONLinesSink(audit)] if audit else []
    )


app = build()
