"""tests.apps.main's downstream app, guarded with a logging sink too: what plain uvicorn users run.

Audit lines go to the ``asgi_ws_handshake.audit`` logger (uvicorn's ``--log-config`` decides
where they appear) and to the JSON Lines file named by ``WSH_AUDIT_FILE``.
"""

from __future__ import annotations

import os

from asgi_ws_handshake import (
    AuditSink,
    HandshakeMiddleware,
    HandshakePolicy,
    JSONLinesSink,
    LoggingSink,
)
from tests.apps.main import ALLOWED_ORIGIN, downstream

sinks: list[AuditSink] = [LoggingSink()]
if os.environ.get("WSH_AUDIT_FILE"):
    sinks.append(JSONLinesSink(os.environ["WSH_AUDIT_FILE"]))
app = HandshakeMiddleware(
    downstream, policy=HandshakePolicy(allow_origins=[ALLOWED_ORIGIN]), audit=sinks
)


def guarded_factory() -> HandshakeMiddleware:
    """An app factory whose app is already guarded (``serve --factory`` must refuse it)."""
    return app
