"""Guard the WebSocket handshake of ASGI apps: origin, version, key and subprotocol policy,
refusals with proper HTTP responses, and one audit event per handshake.

The public names are imported when first used (PEP 562), so importing one module of the
package (``asgi_ws_handshake.request``, say) loads only what that module needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: public name -> the module that defines it
_EXPORTS = {
    "DEFAULT_REDACT": "record",
    "AuditEvent": "audit",
    "AuditSink": "audit",
    "Auditor": "delivery",
    "CloseEvent": "audit",
    "HandshakeInfo": "record",
    "Outcome": "audit",
    "JSONFormatter": "sinks",
    "JSONLinesSink": "sinks",
    "LoggingSink": "sinks",
    "MemorySink": "sinks",
    "ThreadedSink": "sinks",
    "PolicyFileError": "config",
    "RESPONSES": "decision",
    "Accept": "decision",
    "Decision": "decision",
    "Reason": "decision",
    "Reject": "decision",
    "GUID": "key",
    "accept_key": "key",
    "is_valid_key": "key",
    "HandshakeDenied": "guard",
    "HandshakeMiddleware": "middleware",
    "get_handshake": "middleware",
    "Origin": "origin",
    "parse_origin": "origin",
    "HandshakePolicy": "policy",
    "SubprotocolSelector": "policy",
    "HandshakeRequest": "request",
    "ANONYMOUS": "identity",
    "AuthRefusal": "identity",
    "AuthRequest": "identity",
    "Identity": "identity",
    "BearerToken": "authenticators",
    "SessionCookie": "authenticators",
    "Tickets": "authenticators",
    "jwt_verifier": "authenticators",
    "HandshakeGuard": "dependency",
    "PrometheusSink": "metrics",
    "OpenTelemetrySink": "otel",
    "HandshakeStore": "stores",
    "MemoryStore": "stores",
    "StoreError": "stores",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from .audit import (
        AuditEvent as AuditEvent,
    )
    from .audit import (
        AuditSink as AuditSink,
    )
    from .audit import (
        CloseEvent as CloseEvent,
    )
    from .audit import (
        Outcome as Outcome,
    )
    from .authenticators import (
        BearerToken as BearerToken,
    )
    from .authenticators import (
        SessionCookie as SessionCookie,
    )
    from .authenticators import (
        Tickets as Tickets,
    )
    from .authenticators import (
        jwt_verifier as jwt_verifier,
    )
    from .config import (
        PolicyFileError as PolicyFileError,
    )
    from .decision import (
        RESPONSES as RESPONSES,
    )
    from .decision import (
        Accept as Accept,
    )
    from .decision import (
        Decision as Decision,
    )
    from .decision import (
        Reason as Reason,
    )
    from .decision import (
        Reject as Reject,
    )
    from .delivery import (
        Auditor as Auditor,
    )
    from .dependency import (
        HandshakeGuard as HandshakeGuard,
    )
    from .guard import (
        HandshakeDenied as HandshakeDenied,
    )
    from .identity import (
        ANONYMOUS as ANONYMOUS,
    )
    from .identity import (
        AuthRefusal as AuthRefusal,
    )
    from .identity import (
        AuthRequest as AuthRequest,
    )
    from .identity import (
        Identity as Identity,
    )
    from .key import (
        GUID as GUID,
    )
    from .key import (
        accept_key as accept_key,
    )
    from .key import (
        is_valid_key as is_valid_key,
    )
    from .metrics import (
        PrometheusSink as PrometheusSink,
    )
    from .middleware import (
        HandshakeMiddleware as HandshakeMiddleware,
    )
    from .middleware import (
        get_handshake as get_handshake,
    )
    from .origin import (
        Origin as Origin,
    )
    from .origin import (
        parse_origin as parse_origin,
    )
    from .otel import (
        OpenTelemetrySink as OpenTelemetrySink,
    )
    from .policy import (
        HandshakePolicy as HandshakePolicy,
    )
    from .policy import (
        SubprotocolSelector as SubprotocolSelector,
    )
    from .record import (
        DEFAULT_REDACT as DEFAULT_REDACT,
    )
    from .record import (
        HandshakeInfo as HandshakeInfo,
    )
    from .request import (
        HandshakeRequest as HandshakeRequest,
    )
    from .sinks import (
        JSONFormatter as JSONFormatter,
    )
    from .sinks import (
        JSONLinesSink as JSONLinesSink,
    )
    from .sinks import (
        LoggingSink as LoggingSink,
    )
    from .sinks import (
        MemorySink as MemorySink,
    )
    from .sinks import (
        ThreadedSink as ThreadedSink,
    )
    from .stores import (
        HandshakeStore as HandshakeStore,
    )
    from .stores import (
        MemoryStore as MemoryStore,
    )
    from .stores import (
        StoreError as StoreError,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
