"""What the policy decided: ``Accept`` or ``Reject``, the reason codes and the response table.

Reason codes are stable strings (logs, metrics and dashboards key on them). The table maps
each to the HTTP status and headers a refused client receives (RFC 6455 4.2.2 / 4.4), and
``refusal`` turns a ``Reject`` into the response a server sends. Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["RESPONSES", "Accept", "Decision", "Reason", "Reject", "refusal"]


class Reason(enum.StrEnum):
    """Why a handshake was refused."""

    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    ORIGIN_MISSING = "origin_missing"
    ORIGIN_NULL = "origin_null"
    ORIGIN_MALFORMED = "origin_malformed"
    ORIGIN_MULTIPLE = "origin_multiple"
    HOST_NOT_ALLOWED = "host_not_allowed"
    HOST_MALFORMED = "host_malformed"
    #: A browser said the page is of another site (Sec-Fetch-Site) and no Origin vouched.
    FETCH_SITE_CROSS_SITE = "fetch_site_cross_site"
    VERSION_MISSING = "version_missing"
    VERSION_UNSUPPORTED = "version_unsupported"
    KEY_MISSING = "key_missing"
    KEY_MALFORMED = "key_malformed"
    KEY_MULTIPLE = "key_multiple"
    KEY_REUSED = "key_reused"
    SUBPROTOCOL_MALFORMED = "subprotocol_malformed"
    SUBPROTOCOL_REQUIRED = "subprotocol_required"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    STORE_UNAVAILABLE = "store_unavailable"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    APP_SUBPROTOCOL_NOT_OFFERED = "app_subprotocol_not_offered"
    #: The downstream app refused the handshake itself (close or its own HTTP response).
    APP_REJECTED = "app_rejected"
    #: The downstream app raised, or returned without answering, before accepting.
    APP_ERROR = "app_error"
    #: The client went away before the handshake was answered.
    CLIENT_GONE = "client_gone"
    #: A bug or misconfiguration on the server side (for example a raising selector).
    INTERNAL_ERROR = "internal_error"
    # Who is connecting (the policy's ``authenticate``).
    #: No credential where the authenticator looks for one.
    AUTH_MISSING = "auth_missing"
    #: A credential that does not verify (bad signature, unknown session, malformed).
    AUTH_INVALID = "auth_invalid"
    #: A credential past its expiry.
    AUTH_EXPIRED = "auth_expired"
    #: A one-time credential (a ticket) presented again.
    AUTH_REPLAYED = "auth_replayed"
    #: An authenticated identity that may not connect.
    AUTH_FORBIDDEN = "auth_forbidden"
    #: The authenticate hook raised or returned something it may not.
    AUTH_ERROR = "auth_error"
    #: The authenticate hook did not answer within ``authenticate_timeout``.
    AUTH_TIMEOUT = "auth_timeout"


_VERSION_13 = (("sec-websocket-version", "13"),)

#: reason -> (status, extra headers). RFC 6455 4.2.2 / 4.4: a bad version gets 426 (or 400 when
#: absent) with the versions we speak; malformed requests 400; policy refusals 403.
RESPONSES: dict[Reason, tuple[int, tuple[tuple[str, str], ...]]] = {
    Reason.ORIGIN_NOT_ALLOWED: (403, ()),
    Reason.ORIGIN_MISSING: (403, ()),
    Reason.ORIGIN_NULL: (403, ()),
    Reason.ORIGIN_MALFORMED: (403, ()),
    Reason.ORIGIN_MULTIPLE: (403, ()),
    Reason.HOST_NOT_ALLOWED: (403, ()),
    Reason.HOST_MALFORMED: (400, ()),
    Reason.FETCH_SITE_CROSS_SITE: (403, ()),
    Reason.VERSION_MISSING: (400, _VERSION_13),
    Reason.VERSION_UNSUPPORTED: (426, _VERSION_13),
    Reason.KEY_MISSING: (400, ()),
    Reason.KEY_MALFORMED: (400, ()),
    Reason.KEY_MULTIPLE: (400, ()),
    Reason.KEY_REUSED: (400, ()),
    Reason.SUBPROTOCOL_MALFORMED: (400, ()),
    Reason.SUBPROTOCOL_REQUIRED: (400, ()),
    Reason.RATE_LIMITED: (429, ()),
    Reason.TOO_MANY_CONNECTIONS: (503, ()),
    Reason.STORE_UNAVAILABLE: (503, ()),
    Reason.AUDIT_UNAVAILABLE: (503, ()),
    Reason.APP_SUBPROTOCOL_NOT_OFFERED: (500, ()),
    Reason.APP_REJECTED: (403, ()),
    Reason.APP_ERROR: (500, ()),
    Reason.CLIENT_GONE: (0, ()),
    Reason.INTERNAL_ERROR: (500, ()),
    # RFC 9110 15.5.2: 401 when credentials are missing or wrong (the authenticator adds the
    # WWW-Authenticate challenge where its scheme is known, 11.6.1); 15.5.4: 403 for an
    # identity that may not connect. A hook that fails is the server's fault (500, or 503
    # when it timed out: 15.6.4).
    Reason.AUTH_MISSING: (401, ()),
    Reason.AUTH_INVALID: (401, ()),
    Reason.AUTH_EXPIRED: (401, ()),
    Reason.AUTH_REPLAYED: (401, ()),
    Reason.AUTH_FORBIDDEN: (403, ()),
    Reason.AUTH_ERROR: (500, ()),
    Reason.AUTH_TIMEOUT: (503, ()),
}


class Accept(NamedTuple):
    """The handshake may proceed to the app.

    Decisions hold nothing of the key: the same decision serves every handshake with the same
    Origin, Host and offer (see ``HandshakePolicy.evaluate``), and the expected
    ``Sec-WebSocket-Accept`` is derived from the key by whoever needs it (the audit event).
    """

    #: The negotiated subprotocol, or None.
    subprotocol: str | None = None
    #: The normalised origin, "null", or None when the client sent none.
    origin: str | None = None
    #: On a report-only route (``enforce=False``): the refusal this handshake was spared.
    would_reject: Reject | None = None


class Reject(NamedTuple):
    """The handshake is refused with ``status`` and ``headers``."""

    reason: Reason
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    origin: str | None = None
    #: A short human explanation for logs; never contains request bytes.
    detail: str = ""

    @classmethod
    def because(
        cls,
        reason: Reason,
        detail: str = "",
        *,
        origin: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Reject:
        """Build a refusal with the status and headers of the response table."""
        status, table_headers = RESPONSES[reason]
        return cls(reason, status, table_headers + headers, origin, detail)


Decision = Accept | Reject

_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")


def refusal(reject: Reject) -> tuple[dict[str, object], dict[str, object]]:
    """The ``websocket.http.response.start`` and ``.body`` messages that send ``reject``.

    ASGI ``websocket.http.response`` extension. The body names the reason code and never
    echoes request bytes.
    """
    body = f"{reject.reason}\n".encode()
    headers = [_TEXT_PLAIN, (b"content-length", b"%d" % len(body))]
    headers.extend((n.encode("latin-1"), v.encode("latin-1")) for n, v in reject.headers)
    start = {"type": "websocket.http.response.start", "status": reject.status, "headers": headers}
    return start, {"type": "websocket.http.response.body", "body": body}
