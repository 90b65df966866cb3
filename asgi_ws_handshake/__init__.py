"""Guard the WebSocket handshake of ASGI apps: origin, version, key and subprotocol policy,
refusals with proper HTTP responses, and one audit event per handshake.
"""

from __future__ import annotations

from .audit import (
    AuditEvent,
    Auditor,
    AuditSink,
    JSONFormatter,
    JSONLinesSink,
    LoggingSink,
    MemorySink,
    Outcome,
    ThreadedSink,
)
from .config import PolicyFileError
from .decision import RESPONSES, Accept, Decision, Reason, Reject
from .key import GUID, accept_key, is_valid_key
from .middleware import (
    DEFAULT_REDACT,
    HandshakeDenied,
    HandshakeInfo,
    HandshakeMiddleware,
    get_handshake,
)
from .origin import Origin, parse_origin
from .policy import HandshakePolicy, SubprotocolSelector
from .request import HandshakeRequest
from .stores import HandshakeStore, MemoryStore, StoreError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REDACT",
    "GUID",
    "RESPONSES",
    "Accept",
    "AuditEvent",
    "AuditSink",
    "Auditor",
    "Decision",
    "HandshakeDenied",
    "HandshakeInfo",
    "HandshakeMiddleware",
    "HandshakePolicy",
    "HandshakeRequest",
    "HandshakeStore",
    "JSONFormatter",
    "JSONLinesSink",
    "LoggingSink",
    "MemorySink",
    "MemoryStore",
    "Origin",
    "Outcome",
    "PolicyFileError",
    "Reason",
    "Reject",
    "StoreError",
    "SubprotocolSelector",
    "ThreadedSink",
    "__version__",
    "accept_key",
    "get_handshake",
    "is_valid_key",
    "parse_origin",
]
