"""The record of one handshake: what the app (``get_handshake``) and its audit events read.

Owns ``HandshakeInfo`` (set before the handshake's outcome and never changed after; the
middleware's per-connection state extends it), the audit ids (a random per-process prefix
and a counter, made into text only when read) and the redaction of credential-carrying
subprotocols (``Redactor``).
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
from collections.abc import Iterable

from .decision import Accept, Decision
from .identity import REDACTED, Authenticated, Identity
from .request import HandshakeRequest

__all__ = ["DEFAULT_REDACT", "IDS", "HandshakeInfo", "Redactor"]

#: Subprotocols that carry credentials are redacted in audit events (case-insensitive globs);
#: values longer than 64 characters are redacted too.
DEFAULT_REDACT = ("*bearer*", "*token*", "*authorization*", "*secret*", "*password*", "eyj*")
_REDACT_LONGER_THAN = 64
_REDACT_CACHE = 1024


class Redactor:
    """Tell credential-carrying subprotocols (case-insensitive globs, or over 64 characters).

    Remembers its answers for short values only, bounded in entries.
    """

    __slots__ = ("_known", "_regex")

    def __init__(self, patterns: Iterable[str] = DEFAULT_REDACT) -> None:
        parts = [fnmatch.translate(pattern.lower()) for pattern in patterns]
        self._regex = (
            re.compile("|".join(f"(?:{part})" for part in parts), re.IGNORECASE) if parts else None
        )
        self._known: dict[str, str] = {}

    def marks(self, value: str) -> bool:
        """Whether a glob matches ``value`` (a marker such as ``access_token``: the item
        after it carries the secret)."""
        regex = self._regex
        return regex is not None and len(value) <= _REDACT_LONGER_THAN and bool(regex.match(value))

    def __call__(self, value: str) -> str:
        """``value``, or ``"<redacted>"`` when it looks like it carries a secret."""
        known = self._known.get(value)
        if known is not None:
            return known
        if len(value) > _REDACT_LONGER_THAN:
            return REDACTED  # (not remembered: the cache holds short values only)
        regex = self._regex
        result = REDACTED if regex is not None and regex.match(value) else value
        if len(self._known) >= _REDACT_CACHE:
            self._known.clear()  # bounded: random values cannot grow it
        self._known[value] = result
        return result


class _Ids:
    """Audit ids: a random per-process prefix and a counter (unique across workers, cheap).

    The hot path takes a number; the text is made when an id is read.
    """

    def __init__(self) -> None:
        self.reseed()
        if hasattr(os, "register_at_fork"):  # POSIX: a fresh prefix in each forked worker
            os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(6).hex() + "-"
        self.next = itertools.count(1).__next__

    def text(self, serial: int) -> str:
        return self.prefix + format(serial, "x")


IDS = _Ids()


class HandshakeInfo:
    """One handshake as the guard recorded it: what the app and the audit event read.

    ``get_handshake(websocket)`` returns it downstream. Everything here is set before the
    handshake's outcome and never changed after; the middleware's own per-connection state
    extends this class.
    """

    __slots__ = (
        "_serial",
        "auth",
        "decision",
        "key_reused",
        "lease",
        "redact",
        "request",
        "route",
        "store_error",
    )

    def __init__(
        self,
        request: HandshakeRequest,
        *,
        route: str = "default",
        redact: Redactor | None = None,
    ) -> None:
        self.request = request
        self.route = route
        self.redact = redact if redact is not None else _DEFAULT_REDACTOR
        self._serial = IDS.next()
        #: The policy's decision (the app only ever sees an ``Accept``).
        self.decision: Decision | None = None
        #: True or False once the key was checked against the store; None when it was not.
        self.key_reused: bool | None = None
        #: True when a store call failed during the checks (and the policy let it pass).
        self.store_error = False
        #: The connection lease taken under the route's caps, until it is released.
        self.lease: str | None = None
        # ``auth`` (an ``identity.Authenticated``) is set only by the authenticate step and
        # left unset otherwise, so handshakes on routes without ``authenticate`` pay nothing
        # for it: read it through ``authenticated``.

    @property
    def authenticated(self) -> Authenticated | None:
        """What the authenticate step found, or None when the route does not authenticate."""
        return getattr(self, "auth", None)

    @property
    def identity(self) -> Identity | None:
        """Who connected (``authenticate``'s ``Identity``), or None."""
        auth: Authenticated | None = getattr(self, "auth", None)
        return None if auth is None else auth.identity

    @property
    def subject(self) -> str | None:
        """The identity's subject, or None."""
        identity = self.identity
        return None if identity is None else identity.subject

    @property
    def audit_id(self) -> str:
        """The id of the handshake's audit event."""
        return IDS.text(self._serial)

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol (the app may still pick another offered one)."""
        decision = self.decision
        return decision.subprotocol if type(decision) is Accept else None

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """What the client offered, in its order."""
        return self.request.subprotocols

    @property
    def origin(self) -> str | None:
        """The normalised origin, "null", or None when the client sent none."""
        decision = self.decision
        return decision.origin if decision is not None else None

    def __repr__(self) -> str:
        return (
            f"HandshakeInfo(audit_id={self.audit_id!r}, route={self.route!r}, "
            f"subprotocol={self.subprotocol!r}, origin={self.origin!r}, "
            f"subject={self.subject!r})"
        )


_DEFAULT_REDACTOR = Redactor()
