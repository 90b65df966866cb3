"""Who is connecting: ``Identity``, the ``authenticate`` hook's contract and its refusals.

Owns what an authenticator sees (``AuthRequest``: the parsed handshake plus the credential
sources a handshake can carry, read from the scope only when a policy authenticates), what
it returns (an ``Identity``, None, or a refusal) and how refusals map to responses
(RFC 9110 11.6.1 / RFC 6750 3: 401 with ``WWW-Authenticate`` where the scheme is known, 403
for an identity that may not connect). Running the hook is ``checks``'s; the ready-made
authenticators are in ``authenticators``. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote_plus

from .decision import Reason, Reject
from .request import CredentialFields, HandshakeRequest, credential_fields

if TYPE_CHECKING:
    from .stores import HandshakeStore

__all__ = [
    "ANONYMOUS",
    "AuthRefusal",
    "AuthRequest",
    "AuthScopes",
    "Authenticated",
    "Authenticator",
    "Identity",
    "LimitKey",
    "check_identity_options",
    "parse_source",
]

_MAX_SUBJECT = 256
_MAX_DETAIL = 200
_MAX_CREDENTIAL = 8192  # longer values are not credentials a handshake should carry
_EMPTY: Mapping[str, Any] = MappingProxyType({})
REDACTED = "<redacted>"


def _printable(text: str) -> bool:
    # No C0/C1 control characters or DEL: a subject is written to logs (it cannot forge a line).
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who opened the connection, as an authenticator established it.

    Also what Starlette's ``AuthenticationMiddleware`` users expect in ``scope["user"]``
    (``is_authenticated``, ``display_name``, ``identity``); ``scopes`` go to
    ``scope["auth"].scopes``, which Starlette's ``requires()`` reads.

    Args:
        subject: the stable id that audit events record and per-identity limits count under
            (1 to 256 printable characters).
        expires_at: when the credential expires, in seconds since the epoch; with
            ``close_on_expiry`` the guard closes the socket then.
        claims: anything else the authenticator knows (read-only).
        scopes: granted permissions (``"chat:write"``), for ``requires()``.

    Raises:
        ValueError: naming the bad value.
    """

    subject: str
    expires_at: float | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    scopes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        subject = self.subject
        if not isinstance(subject, str) or not 0 < len(subject) <= _MAX_SUBJECT:
            raise ValueError(f"invalid subject {subject!r}: a str of 1 to {_MAX_SUBJECT} chars")
        if not _printable(subject):
            raise ValueError(f"invalid subject {subject!r}: control characters")
        expires = self.expires_at
        if expires is not None and (
            isinstance(expires, bool)
            or not isinstance(expires, int | float)
            or not math.isfinite(expires)
        ):
            raise ValueError(f"invalid expires_at {expires!r}: seconds since the epoch or None")
        if not isinstance(self.claims, Mapping):
            raise ValueError(f"invalid claims {self.claims!r}: a mapping")
        if self.claims is not _EMPTY:
            object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))
        if isinstance(self.scopes, str) or not all(isinstance(s, str) for s in self.scopes):
            raise ValueError(f"invalid scopes {self.scopes!r}: a list of str")
        object.__setattr__(self, "scopes", tuple(self.scopes))

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.subject

    @property
    def identity(self) -> str:
        return self.subject


class _Anonymous:
    """``scope["user"]`` on a route that allows anonymous clients (Starlette's
    ``UnauthenticatedUser``, without importing Starlette)."""

    __slots__ = ()
    is_authenticated = False
    display_name = ""
    identity = ""
    subject = None
    expires_at = None

    def __repr__(self) -> str:
        return "ANONYMOUS"


ANONYMOUS = _Anonymous()


class AuthScopes:
    """``scope["auth"]``: what Starlette's ``AuthCredentials`` holds (``scopes``)."""

    __slots__ = ("scopes",)

    def __init__(self, scopes: tuple[str, ...] | list[str] = ()) -> None:
        self.scopes = list(scopes)

    def __repr__(self) -> str:
        return f"AuthScopes({self.scopes!r})"


class AuthRefusal(Exception):
    """A refusal an authenticator raises or returns.

    Args:
        reason: one of the ``auth_*`` reasons (or any ``Reason``); the status comes from the
            response table.
        detail: a short explanation for the audit event. Never put a credential in it
            (values the hook read through its ``AuthRequest`` are redacted all the same).
        challenge: the ``WWW-Authenticate`` value sent with a 401 (RFC 9110 11.6.1), e.g.
            ``'Bearer realm="chat", error="invalid_token"'`` (RFC 6750 3).
    """

    def __init__(
        self, reason: Reason = Reason.AUTH_INVALID, detail: str = "", challenge: str | None = None
    ) -> None:
        super().__init__(reason, detail)
        self.reason = Reason(reason)
        self.detail = detail
        self.challenge = challenge

    @classmethod
    def missing(cls, detail: str = "no credentials", challenge: str | None = None) -> AuthRefusal:
        return cls(Reason.AUTH_MISSING, detail, challenge)

    @classmethod
    def invalid(
        cls, detail: str = "invalid credentials", challenge: str | None = None
    ) -> AuthRefusal:
        return cls(Reason.AUTH_INVALID, detail, challenge)

    @classmethod
    def expired(
        cls, detail: str = "credentials expired", challenge: str | None = None
    ) -> AuthRefusal:
        return cls(Reason.AUTH_EXPIRED, detail, challenge)

    @classmethod
    def replayed(cls, detail: str = "credentials already used") -> AuthRefusal:
        return cls(Reason.AUTH_REPLAYED, detail)

    @classmethod
    def forbidden(cls, detail: str = "not allowed") -> AuthRefusal:
        return cls(Reason.AUTH_FORBIDDEN, detail)

    def reject(self, origin: str | None, scrub: Callable[[str], str] = str) -> Reject:
        """The ``Reject`` this refusal sends; the challenge only goes with a 401."""
        base = Reject.because(self.reason, scrub(str(self.detail))[:_MAX_DETAIL], origin=origin)
        challenge = self.challenge
        if base.status == 401 and challenge and challenge.isascii() and _printable(challenge):
            return base._replace(headers=(*base.headers, ("www-authenticate", challenge)))
        return base


def parse_source(source: str) -> tuple[str, str]:
    """``"query:ticket"`` -> ``("query", "ticket")``; ``"header"`` (``Authorization: Bearer``).

    Sources: ``header``, ``query:<parameter>``, ``cookie:<name>``, ``subprotocol:<marker>``
    (the offered item right after ``marker``: ``["access_token", "<token>"]``).

    Raises:
        ValueError: naming the source.
    """
    if source == "header":
        return "header", ""
    kind, sep, name = source.partition(":") if isinstance(source, str) else ("", "", "")
    if not sep or kind not in ("query", "cookie", "subprotocol") or not name:
        raise ValueError(
            f"invalid credential source {source!r}: expected 'header', 'query:<name>', "
            "'cookie:<name>' or 'subprotocol:<marker>'"
        )
    return kind, name


class AuthRequest:
    """What an ``authenticate`` hook sees: the handshake and its credential sources.

    Built only for a policy that authenticates; each source is parsed when first read.
    Whatever a read returns is remembered as a secret: it is redacted from refusal details,
    and a subprotocol token is consumed (never negotiated, never echoed, never audited).

    Attributes:
        handshake: the parsed ``HandshakeRequest`` (path, client, origins, offer, ...).
        route: the route pattern whose policy applies (``"default"`` without routes).
        origin: the normalised origin the policy accepted, or None.
        store: the middleware's ``HandshakeStore`` (one-time tickets are redeemed there).
    """

    __slots__ = (
        "_cookies",
        "_fields",
        "_query",
        "consumed",
        "handshake",
        "origin",
        "route",
        "secrets",
        "source",
        "store",
    )

    def __init__(
        self,
        handshake: HandshakeRequest,
        scope: Mapping[str, Any] | CredentialFields,
        *,
        route: str = "default",
        origin: str | None = None,
        store: HandshakeStore | None = None,
    ) -> None:
        self.handshake = handshake
        self._fields = scope if isinstance(scope, CredentialFields) else credential_fields(scope)
        self.route = route
        self.origin = origin
        self.store: Any = store
        self._cookies: dict[str, str] | None = None
        self._query: dict[str, str] | None = None
        #: The first source a value was read from (``"query:ticket"``), for the audit.
        self.source: str | None = None
        #: The subprotocol item consumed as a token, if any.
        self.consumed: str | None = None
        self.secrets: list[str] = []

    def _found(self, source: str, value: str | None) -> str | None:
        if value is None or len(value) > _MAX_CREDENTIAL:
            return None
        if self.source is None:
            self.source = source
        if value:
            self.secrets.append(value)
        return value

    def cookie(self, name: str) -> str | None:
        """The cookie ``name`` (RFC 6265 5.4: the first of repeated names, the most specific)."""
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = {}
            # RFC 9113 8.2.3: HTTP/2 may split the cookie field into several lines.
            for line in self._fields.cookies:
                for pair in line.split(";"):
                    key, sep, value = pair.strip().partition("=")
                    if sep and key and key not in cookies:
                        # RFC 6265 4.1.1: cookie-value may be wrapped in DQUOTEs.
                        if len(value) >= 2 and value[0] == value[-1] == '"':
                            value = value[1:-1]
                        cookies[key] = value
        return self._found(f"cookie:{name}", cookies.get(name))

    def query(self, name: str) -> str | None:
        """The first value of query parameter ``name``, percent-decoded."""
        query = self._query
        if query is None:
            query = self._query = {}
            for part in self._fields.query.split("&"):
                key, _, value = part.partition("=")
                key = unquote_plus(key, errors="replace")
                if key and key not in query:
                    query[key] = unquote_plus(value, errors="replace")
        return self._found(f"query:{name}", query.get(name))

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` value; None when absent or repeated (ambiguous)."""
        lines = self._fields.authorizations
        return self._found("header", lines[0]) if len(lines) == 1 else None

    def bearer(self) -> str | None:
        """The token of ``Authorization: Bearer <token>`` (RFC 6750 2.1; any case of scheme)."""
        lines = self._fields.authorizations
        if len(lines) != 1:
            return None
        scheme, _, token = lines[0].partition(" ")
        token = token.strip(" ")
        if scheme.lower() != "bearer" or not token or " " in token:
            return None
        return self._found("header", token)

    def subprotocol_token(self, marker: str) -> str | None:
        """The offered subprotocol right after ``marker`` (``["access_token", "<token>"]``,
        the graphql-ws / Kubernetes convention), consumed: the guard never negotiates or
        echoes it, and audit events show it redacted. None when ``marker`` is absent,
        repeated or last."""
        offered = self.handshake.subprotocols
        if offered.count(marker) != 1:
            return None
        index = offered.index(marker) + 1
        if index >= len(offered):
            return None
        token = self._found(f"subprotocol:{marker}", offered[index])
        if token is not None:
            self.consumed = token
        return token

    def credential(self, source: str) -> str | None:
        """Read one source in ``parse_source`` notation."""
        kind, name = parse_source(source)
        if kind == "header":
            return self.bearer()
        if kind == "query":
            return self.query(name)
        if kind == "cookie":
            return self.cookie(name)
        return self.subprotocol_token(name)

    def scrub(self, text: str) -> str:
        """``text`` with every credential value read so far redacted."""
        for secret in self.secrets:
            if len(secret) >= 4:  # shorter values would redact ordinary words
                text = text.replace(secret, REDACTED)
        return text


#: ``(request) -> Identity | None``, or a refusal (``AuthRefusal`` raised or returned, or a
#: ``Reject``); sync or async.
Authenticator = Callable[[AuthRequest], Any]
#: ``(handshake, identity) -> str``: the name per-identity limits count under.
LimitKey = Callable[[HandshakeRequest, "Identity | None"], str]


class Authenticated(NamedTuple):
    """What the authenticate step found, kept on the handshake's record."""

    #: The identity, or None for an anonymous client (``allow_anonymous``).
    identity: Identity | None
    #: Where the credential came from (``"query:ticket"``), never its value.
    source: str | None = None
    #: The subprotocol item consumed as a token (redacted whenever shown).
    consumed: str | None = None
    #: The name per-identity limits count under, or None for the client address.
    limit: str | None = None


def check_identity_options(policy: Any) -> None:
    """Validate a ``HandshakePolicy``'s ``authenticate`` and the options that go with it.

    Raises:
        ValueError: naming the option and the bad value.
    """
    if policy.authenticate is not None and not callable(policy.authenticate):
        raise ValueError(f"invalid authenticate {policy.authenticate!r}: must be callable")
    timeout = policy.authenticate_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"invalid authenticate_timeout {timeout!r}: must be > 0 seconds")
    key = policy.limit_key
    if not (key in ("client", "subject") or callable(key)):
        raise ValueError(f"invalid limit_key {key!r}: expected 'client', 'subject' or a callable")
    if key != "client" and policy.authenticate is None:
        raise ValueError(f"limit_key={key!r} needs authenticate (it keys on the identity)")
    if policy.allow_anonymous and policy.authenticate is None:
        raise ValueError("allow_anonymous=True needs authenticate")
    age = policy.max_connection_age
    if age is not None and (
        isinstance(age, bool) or not isinstance(age, int | float) or not age > 0
    ):
        raise ValueError(f"invalid max_connection_age {age!r}: seconds > 0, or None")
    code = policy.expiry_close_code
    # RFC 6455 7.4.1: 1008 is "policy violation"; 4000-4999 are for applications.
    if type(code) is not int or not (code == 1008 or 4000 <= code <= 4999):
        raise ValueError(f"invalid expiry_close_code {code!r}: 1008 or 4000-4999")
