"""The soak and vanishing-client app: ``tests.apps.main`` plus a diagnostic endpoint.

``GET /__diag`` answers JSON about the server process: running asyncio tasks, pending audit
deliveries, traced Python memory (when ``WSH_TRACEMALLOC=1``), RSS and the key store's size.
Everything else goes to the very middleware and downstream app of ``tests.apps.main``, with two
knobs for the tests: ``WSH_SLOW_SINK`` (seconds) adds an async audit sink that takes that long,
and ``WSH_SOAK_LEAK=1`` adds a sink that keeps every event (a deliberate leak, to show that the
soak's memory check can fail).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tracemalloc
from typing import Any

from asgi_ws_handshake import AuditEvent, MemoryStore
from asgi_ws_handshake.middleware import Receive, Scope, Send
from tests.apps.main import build

#: Small enough that the key store is full long before the soak's first thousand is over, so
#: its (bounded, intended) growth does not show up as a difference between two thousands.
STORE_KEYS = 256


class SlowSink:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = 0

    async def __call__(self, event: AuditEvent) -> None:
        self.started += 1
        await asyncio.sleep(self.delay)


class LeakySink:
    def __init__(self) -> None:
        self.kept: list[dict[str, Any]] = []

    def __call__(self, event: AuditEvent) -> None:
        self.kept.append({**event.to_dict(), "padding": "x" * 2000})


guarded = build()
store = MemoryStore(max_keys=STORE_KEYS)
guarded.store = store
slow_sink: SlowSink | None = None
if os.environ.get("WSH_SLOW_SINK"):
    slow_sink = SlowSink(float(os.environ["WSH_SLOW_SINK"]))
    guarded.auditor.sinks = (*guarded.auditor.sinks, slow_sink)
if os.environ.get("WSH_SOAK_LEAK") == "1":
    guarded.auditor.sinks = (*guarded.auditor.sinks, LeakySink())
if os.environ.get("WSH_TRACEMALLOC") == "1":
    tracemalloc.start()


def _rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        return 0


def diagnostics() -> dict[str, Any]:
    gc.collect()
    return {
        # The diagnostic request's own task is counted too: compare, don't expect zero.
        "tasks": len(asyncio.all_tasks()),
        "pending_audits": len(guarded.auditor._pending),
        "audit_failures": guarded.auditor.failures,
        "slow_sink_started": slow_sink.started if slow_sink else 0,
        "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
        "rss": _rss(),
        "store": len(store),
        "store_bound": store.max_keys,
    }


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == "/__diag":
        body = json.dumps(diagnostics()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await guarded(scope, receive, send)
