"""Where a handshake's instructions go: the middleware's steps, added one at a time.

``pipeline(upto)`` is the bare app (read ``websocket.connect``, send the accept) with the
first ``upto`` steps of an accepted handshake done before it, each through the library's
own public functions, as the middleware calls them:

1. ``scope``: ``HandshakeRequest.from_scope`` (the header read and the raw-value cache);
2. ``evaluate``: ``HandshakePolicy.evaluate`` (version, key, and the Host/Origin/offer
   verdict remembered per raw values);
3. ``store``: the per-connection record (``StoreChecks``, an audit id) and its
   ``check`` against a ``MemoryStore`` (the reused-key check);
4. ``event``: the clock read, ``AuditEvent.build`` and the ``MemorySink`` keeping it.

``benchmarks.instructions`` counts each against the one before; what the full middleware
adds over step 4 is the middleware's own work (its coroutine, the connection's state, the
replayed ``websocket.connect``, guarding the accept, the record in the scope's state).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from asgi_ws_handshake import AuditEvent, HandshakeRequest, MemorySink, MemoryStore, Outcome
from asgi_ws_handshake.checks import StoreChecks
from asgi_ws_handshake.decision import Accept
from benchmarks.inprocess import full_policy

_ACCEPT = {"type": "websocket.accept"}


def pipeline(upto: int) -> Callable[..., Any]:
    """The bare app after the first ``upto`` steps (1 to 4) of an accepted handshake."""
    policy, store, sink = full_policy(), MemoryStore(), MemorySink()
    perf, clock = time.perf_counter, time.time

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started = perf() if upto > 3 else 0.0
        request = HandshakeRequest.from_scope(scope)
        if upto > 1:
            decision = policy.evaluate(request)
            if type(decision) is not Accept:
                raise RuntimeError(f"the steps expect an accepted handshake: {decision}")
            if upto > 2:
                record = StoreChecks(request)
                record.decision = decision
                checked = record.check(store, policy, decision, request)
                if type(checked) is not Accept:
                    raise RuntimeError(f"the store refused: {checked}")
                if upto > 3:
                    sink(
                        AuditEvent.build(
                            handshake=record,
                            outcome=Outcome.ACCEPTED,
                            status=101,
                            selected=decision.subprotocol,
                            time=clock(),
                            duration=perf() - started,
                        )
                    )
        await receive()
        await send(_ACCEPT)

    return app
