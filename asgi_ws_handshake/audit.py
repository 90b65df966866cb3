"""Audit events: one ``AuditEvent`` per handshake, what it records, redaction, and delivery.

Owns the events' fields and their JSON form (``AuditEvent`` for a handshake, ``CloseEvent``
for the end of an accepted connection); the record they read is ``record.HandshakeInfo``.
Delivery is ``delivery.Auditor``'s, the sinks are in ``sinks``; what happened is decided by
the middleware.

An event is cheap to build: it holds its handshake's record and the outcome; everything a
reader derives (the id's text, the client's ``host:port``, the capped header values, the
redacted subprotocols, the expected ``Sec-WebSocket-Accept``) is computed when read.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .decision import Accept
from .identity import REDACTED
from .key import accept_key, is_valid_key
from .record import DEFAULT_REDACT, IDS, HandshakeInfo, Redactor
from .request import HandshakeRequest

__all__ = [
    "DEFAULT_REDACT",
    "IDS",
    "AuditEvent",
    "AuditSink",
    "CloseEvent",
    "HandshakeInfo",
    "Outcome",
    "Redactor",
]  # (DEFAULT_REDACT, IDS, HandshakeInfo and Redactor are record's, named here too)

#: A sink is any callable taking an event; it may return an awaitable.
AuditSink = Callable[["AuditEvent"], "Awaitable[None] | None"]

_CAP = 256  # the most characters of a header value an event keeps
_NO_KEY_VERSIONS = ("2", "3")


class Outcome(enum.StrEnum):
    """How a handshake ended."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # refused by the policy (or a store, rate or audit check)
    APP_REJECTED = "app_rejected"  # the app closed or sent its own response before accepting
    APP_ERROR = "app_error"  # the app raised, returned without answering, or answered wrongly
    CLIENT_GONE = "client_gone"  # the client left before the handshake was answered


def _cap(values: tuple[str, ...]) -> str | None:
    """The first value, capped (repeated values are judged by the policy, not kept here)."""
    if not values:
        return None
    value = values[0]
    return value if len(value) <= _CAP else value[:_CAP] + "..."


class AuditEvent(NamedTuple):
    """What one handshake was and how it ended. Holds no header outside an allowlist.

    Built from the handshake's record and its outcome; the other fields are read from the
    record when asked for (``to_dict()`` gives them all as JSON-safe values).
    """

    handshake: HandshakeInfo
    outcome: Outcome
    #: The HTTP status the client was given: 101 when accepted, None when it got nothing.
    status: int | None
    reason: str | None = None
    #: How a refusal was delivered: "http_response", "close", or None.
    denial: str | None = None
    detail: str = ""
    #: The subprotocol the handshake was accepted with, as sent (redacted when read as
    #: ``subprotocol``).
    selected: str | None = None
    #: Seconds since the epoch (UTC) when the outcome was known.
    time: float = 0.0
    #: Seconds from the websocket.connect message to the outcome.
    duration: float = 0.0

    @classmethod
    def build(
        cls,
        *,
        handshake: HandshakeInfo,
        outcome: Outcome,
        status: int | None,
        reason: str | None = None,
        denial: str | None = None,
        detail: str = "",
        selected: str | None = None,
        time: float = 0.0,
        duration: float = 0.0,
    ) -> AuditEvent:
        """Build an event by keyword (the fields in order, checked by a test).

        The same as calling the class with keywords, several times cheaper: a class call
        with keywords builds a dict of them first, on a path every handshake takes.
        """
        return cls(handshake, outcome, status, reason, denial, detail, selected, time, duration)

    @property
    def id(self) -> str:
        return self.handshake.audit_id

    @property
    def request(self) -> HandshakeRequest:
        return self.handshake.request

    @property
    def client(self) -> str | None:
        client = self.handshake.request.client
        return f"{client[0]}:{client[1]}" if client else None

    @property
    def path(self) -> str:
        return self.handshake.request.path

    @property
    def route(self) -> str:
        return self.handshake.route

    @property
    def host(self) -> str | None:
        return _cap(self.handshake.request.hosts)

    @property
    def origin(self) -> str | None:
        """The Origin as sent (first value, capped), "null", or None."""
        return _cap(self.handshake.request.origins)

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """Offered subprotocols, secret-looking ones redacted: those the redaction globs
        match, the item right after one of them (``["access_token", "<token>"]``: the token),
        and the token the authenticator consumed."""
        redact = self.handshake.redact
        auth = self.handshake.authenticated
        consumed = None if auth is None else auth.consumed
        shown: list[str] = []
        marker = False
        for value in self.handshake.request.subprotocols:
            if marker or value == consumed:
                shown.append(REDACTED)
                marker = False
            else:
                shown.append(redact(value))
                marker = redact.marks(value)
        return tuple(shown)

    @property
    def subprotocol(self) -> str | None:
        selected = self.selected
        return None if selected is None else self.handshake.redact(selected)

    @property
    def version(self) -> str | None:
        versions = self.handshake.request.versions
        if not versions:
            return None
        return versions[0] if len(versions) == 1 else _cap((", ".join(versions),))

    @property
    def key(self) -> str | None:
        """The Sec-WebSocket-Key as sent (first value, capped)."""
        return _cap(self.handshake.request.keys)

    @property
    def key_valid(self) -> bool | None:
        request = self.handshake.request
        keys = request.keys
        if not keys:
            return None if request.http_version in _NO_KEY_VERSIONS else False
        return len(keys) == 1 and is_valid_key(keys[0])

    @property
    def expected_accept(self) -> str | None:
        """base64(SHA-1(key + GUID)) for a valid key (RFC 6455 4.2.2), computed when read."""
        if not self.key_valid:
            return None
        return accept_key(self.handshake.request.keys[0])

    @property
    def key_reused(self) -> bool | None:
        return self.handshake.key_reused

    @property
    def store_error(self) -> bool:
        return self.handshake.store_error

    @property
    def would_reject(self) -> str | None:
        """On a report-only route: the reason the handshake would have been refused."""
        decision = self.handshake.decision
        spared = decision.would_reject if type(decision) is Accept else None
        return None if spared is None else str(spared.reason)

    @property
    def fetch_site(self) -> str | None:
        """``Sec-Fetch-Site`` as sent (capped)."""
        fetch_site = self.handshake.request.fetch_site
        return None if fetch_site is None else _cap((fetch_site,))

    @property
    def public_host(self) -> str | None:
        """The host a trusted proxy forwarded (judged in place of Host), or None."""
        site = self.handshake.request.site
        return None if site is None or site.host is None else _cap((site.host,))

    @property
    def public_scheme(self) -> str | None:
        """The public scheme the same-origin rule compared ("https" under wss), or None."""
        site = self.handshake.request.site
        return None if site is None or site.scheme is None else _cap((site.scheme,))

    @property
    def subject(self) -> str | None:
        """Who connected (the identity's subject), never the credential."""
        return self.handshake.subject

    @property
    def credential(self) -> str | None:
        """Where the credential came from (``"query:ticket"``, ``"cookie:session"``,
        ``"subprotocol:access_token"``, ``"header"``), never its value."""
        auth = self.handshake.authenticated
        return None if auth is None else auth.source

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-safe values (``time`` as ISO 8601 UTC)."""
        return {
            "id": self.id,
            "time": datetime.fromtimestamp(self.time, UTC).isoformat(),
            "duration": self.duration,
            "client": self.client,
            "path": self.path,
            "route": self.route,
            "host": self.host,
            "origin": self.origin,
            "subprotocols": list(self.subprotocols),
            "subprotocol": self.subprotocol,
            "version": self.version,
            "key": self.key,
            "key_valid": self.key_valid,
            "expected_accept": self.expected_accept,
            "key_reused": self.key_reused,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "status": self.status,
            "denial": self.denial,
            "detail": self.detail,
            "store_error": self.store_error,
            "would_reject": self.would_reject,
            "fetch_site": self.fetch_site,
            "public_host": self.public_host,
            "public_scheme": self.public_scheme,
            "subject": self.subject,
            "credential": self.credential,
        }

    def __repr__(self) -> str:
        return f"AuditEvent({self.to_dict()!r})"


class CloseEvent(NamedTuple):
    """How an accepted connection ended: one per accepted handshake, after its ``AuditEvent``.

    Delivered only to sinks that take them (a ``closed(event)`` method). Known from how the
    app's coroutine ended, so it costs nothing per message: ``closed_by`` is ``"client"`` (the
    app saw the client leave: an exception with a close ``code``), ``"app"`` (it returned),
    ``"error"`` (it raised), ``"server"`` (the task was cancelled: shutdown) or ``"guard"``
    (the middleware closed it, e.g. a deadline).
    """

    handshake: HandshakeInfo
    closed_by: str
    #: The WebSocket close code when known (RFC 6455 7.4), else None.
    code: int | None
    #: Why, in words of ours (never request bytes).
    reason: str
    #: Seconds from the accept to the end.
    lifetime: float
    #: Seconds since the epoch (UTC) when it ended.
    time: float

    @property
    def id(self) -> str:
        """The id of the handshake's ``AuditEvent``."""
        return self.handshake.audit_id

    @property
    def route(self) -> str:
        return self.handshake.route

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe values (``time`` as ISO 8601 UTC); ``event`` tells it from a handshake."""
        return {
            "event": "closed",
            "id": self.id,
            "time": datetime.fromtimestamp(self.time, UTC).isoformat(),
            "route": self.route,
            "path": self.handshake.request.path,
            "subject": self.handshake.subject,
            "closed_by": self.closed_by,
            "code": self.code,
            "reason": self.reason,
            "lifetime": self.lifetime,
        }
