"""Ready-made ``authenticate`` hooks for the common cases, each small.

- ``Tickets``: a signed one-time ticket (HMAC-SHA256, standard library only). An HTTP endpoint
  that knows the user issues it; the handshake redeems it once through the middleware's store,
  so a replay is refused on every worker sharing that store (``RedisStore``).
- ``BearerToken``: a token from ``Authorization: Bearer``, a subprotocol
  (``["access_token", "<token>"]``) or the query, handed to your ``verify`` function.
- ``SessionCookie``: a cookie handed to your ``lookup`` function.
- ``jwt_verifier``: a ``verify`` for ``BearerToken`` through PyJWT (the ``jwt`` extra).

Each returns an ``Identity`` or raises an ``AuthRefusal``; running them is the middleware's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .identity import AuthRefusal, AuthRequest, Identity, parse_source

__all__ = ["BearerToken", "SessionCookie", "Tickets", "jwt_verifier"]

#: ``(credential) -> Identity | None``, sync or async.
Verify = Callable[[str], Any]
_MIN_SECRET = 32  # bytes: HMAC-SHA256 keys shorter than the hash add nothing (RFC 2104 3)
_MAX_TICKET = 4096
_VERSION = "v1"
_SLACK = 5.0  # seconds a redeemed ticket is remembered past its expiry (clock skew)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class Tickets:
    """Signed one-time tickets: ``issue`` them over HTTP, accept each at one handshake.

    A ticket is ``v1.<payload>.<mac>``: base64url JSON (subject, ticket id, expiry, the
    identity's own expiry, claims, scopes) and its HMAC-SHA256 under ``secret``
    (``hmac.compare_digest``; RFC 2104). It lives ``ttl`` seconds and is redeemed through the
    store (``redeem``) at the handshake: a second use, on any worker sharing the store, is
    refused with 401 ``auth_replayed``; when the store cannot answer, with 503.

    Args:
        secret: the signing key, at least 32 bytes; or several, the first signing and all
            verifying (key rotation).
        ttl: seconds a ticket may wait before its handshake (short: it rides in a URL).
        source: where the handshake carries it, in ``parse_source`` notation.
        clock: wall-clock seconds (injectable for tests).

    Raises:
        ValueError: naming the bad option.
    """

    def __init__(
        self,
        secret: bytes | str | Sequence[bytes | str],
        *,
        ttl: float = 30.0,
        source: str = "query:ticket",
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = [secret] if isinstance(secret, bytes | str) else list(secret)
        self._keys = [k.encode() if isinstance(k, str) else bytes(k) for k in keys]
        if not self._keys or any(len(k) < _MIN_SECRET for k in self._keys):
            raise ValueError(f"invalid secret: at least {_MIN_SECRET} bytes each")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 3600:
            raise ValueError(f"invalid ttl {ttl!r}: seconds, more than 0 and at most 3600")
        parse_source(source)
        self.ttl = float(ttl)
        self.source = source
        self.clock = clock

    def __repr__(self) -> str:
        return f"Tickets(ttl={self.ttl!r}, source={self.source!r})"

    def _mac(self, key: bytes, signed: str) -> str:
        return _b64(hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest())

    def issue(
        self,
        subject: str,
        *,
        expires_at: float | None = None,
        claims: Mapping[str, Any] | None = None,
        scopes: Iterable[str] = (),
        ttl: float | None = None,
    ) -> str:
        """A ticket for ``subject`` (call it from an endpoint that knows who the user is).

        Args:
            subject: the identity's subject.
            expires_at: when the identity itself expires (its session, say): the socket
                opened with the ticket is closed then (``close_on_expiry``).
            claims: JSON-serialisable facts for the app (``get_handshake(ws).identity``).
            scopes: permissions for ``scope["auth"].scopes``.
            ttl: this ticket's lifetime instead of the default (for tests and demos).
        """
        identity = Identity(subject, expires_at, claims or {}, tuple(scopes))  # validates
        now = self.clock()
        payload = {
            "sub": identity.subject,
            "jti": secrets.token_urlsafe(16),
            "exp": now + (self.ttl if ttl is None else ttl),
            "ide": identity.expires_at,
            "cl": dict(identity.claims),
            "sc": list(identity.scopes),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        signed = f"{_VERSION}.{body}"
        return f"{signed}.{self._mac(self._keys[0], signed)}"

    def verify(self, ticket: str) -> dict[str, Any]:
        """The payload of a well-signed, unexpired ticket (not redeemed: that is the store's).

        Raises:
            AuthRefusal: ``auth_invalid`` or ``auth_expired``.
        """
        version, _, rest = ticket.partition(".")
        body, _, mac = rest.partition(".")
        if len(ticket) > _MAX_TICKET or version != _VERSION or not body or not mac:
            raise AuthRefusal.invalid("malformed ticket")
        signed = f"{version}.{body}"
        if not any(hmac.compare_digest(self._mac(k, signed), mac) for k in self._keys):
            raise AuthRefusal.invalid("ticket signature does not verify")
        try:
            payload = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            raise AuthRefusal.invalid("malformed ticket") from None
        if not (
            isinstance(payload, dict)
            and isinstance(payload.get("sub"), str)
            and isinstance(payload.get("jti"), str)
            and isinstance(payload.get("exp"), int | float)
            and math.isfinite(payload["exp"])
        ):
            raise AuthRefusal.invalid("malformed ticket")
        if payload["exp"] <= self.clock():
            raise AuthRefusal.expired("ticket expired")
        return payload

    async def __call__(self, request: AuthRequest) -> Identity:
        ticket = request.credential(self.source)
        if not ticket:
            raise AuthRefusal.missing("no ticket")
        payload = self.verify(ticket)
        try:
            identity = Identity(
                payload["sub"],
                payload.get("ide"),
                payload.get("cl") or {},
                tuple(payload.get("sc") or ()),
            )
        except (TypeError, ValueError):
            raise AuthRefusal.invalid("malformed ticket") from None
        if request.store is None:
            raise AuthRefusal.invalid("no store to redeem the ticket")
        remaining = max(0.0, float(payload["exp"]) - self.clock())
        first = await _resolved(request.store.redeem(payload["jti"], remaining + _SLACK))
        if not first:
            raise AuthRefusal.replayed("ticket already used")
        return identity


class BearerToken:
    """A bearer token, wherever the client can put it, checked by your ``verify``.

    Args:
        verify: ``(token) -> Identity | None``, sync or async; None means the token is not
            valid (401 ``auth_invalid``). It may raise ``AuthRefusal`` (``expired``, say).
        sources: where to look, in order (``parse_source`` notation). Browsers cannot set
            ``Authorization`` on a WebSocket, so they use the subprotocol or the query.
        realm: the ``realm`` of the ``WWW-Authenticate: Bearer`` challenge (RFC 6750 3).

    Raises:
        ValueError: naming a bad source.
    """

    def __init__(
        self,
        verify: Verify,
        *,
        sources: Sequence[str] = ("header", "subprotocol:access_token"),
        realm: str = "websocket",
    ) -> None:
        if isinstance(sources, str):
            raise TypeError("sources must be a list of sources, not a str")
        if not sources:
            raise ValueError("sources must name at least one place to look")
        for source in sources:
            parse_source(source)
        if '"' in realm or "\\" in realm or not realm.isprintable() or not realm.isascii():
            raise ValueError(f"invalid realm {realm!r}: printable ASCII without quotes")
        self.verify = verify
        self.sources = tuple(sources)
        self.realm = realm

    def challenge(self, error: str | None = None) -> str:
        """The ``WWW-Authenticate`` value (RFC 6750 3: no error code when no token came)."""
        base = f'Bearer realm="{self.realm}"'
        return base if error is None else f'{base}, error="{error}"'

    async def __call__(self, request: AuthRequest) -> Identity:
        token = None
        for source in self.sources:
            token = request.credential(source)
            if token:
                break
        if not token:
            raise AuthRefusal.missing("no bearer token", self.challenge())
        try:
            identity = await _resolved(self.verify(token))
        except AuthRefusal as refusal:
            if refusal.challenge is None:
                refusal.challenge = self.challenge("invalid_token")
            raise
        if identity is None:
            raise AuthRefusal.invalid("bearer token rejected", self.challenge("invalid_token"))
        return _identity(identity, "verify")


class SessionCookie:
    """A session cookie, looked up by your ``lookup`` (your session store, your framework's).

    Args:
        name: the cookie's name.
        lookup: ``(value) -> Identity | None``, sync or async; None: 401 ``auth_invalid``.
    """

    def __init__(self, name: str, lookup: Verify) -> None:
        parse_source(f"cookie:{name}")
        self.name = name
        self.lookup = lookup

    async def __call__(self, request: AuthRequest) -> Identity:
        value = request.cookie(self.name)
        if not value:
            raise AuthRefusal.missing("no session cookie")
        identity = await _resolved(self.lookup(value))
        if identity is None:
            raise AuthRefusal.invalid("unknown session")
        return _identity(identity, "lookup")


def _identity(value: Any, what: str) -> Identity:
    if not isinstance(value, Identity):
        raise TypeError(f"{what} returned {type(value).__name__}, not an Identity or None")
    return value


def jwt_verifier(
    key: Any,
    *,
    algorithms: Sequence[str],
    audience: str | Sequence[str] | None = None,
    issuer: str | None = None,
    leeway: float = 0.0,
) -> Callable[[str], Identity | None]:
    """A ``verify`` for ``BearerToken`` that checks a JWT through PyJWT (``jwt`` extra).

    Signature, ``exp`` and ``nbf`` (and ``aud``/``iss`` when given) are PyJWT's to check
    (RFC 7519); ``sub`` is required. The identity expires with the token (``exp``), and its
    scopes come from ``scope`` (space-separated, RFC 8693 4.2) or ``scp``.

    Raises:
        ImportError: when PyJWT is missing.
        ValueError: when ``algorithms`` is empty (never let the token choose).
    """
    try:
        import jwt
    except ImportError as exc:
        raise ImportError("jwt_verifier needs PyJWT: pip install 'asgi-ws-handshake[jwt]'") from exc
    if isinstance(algorithms, str) or not algorithms:
        raise ValueError("algorithms must list the accepted algorithms, e.g. ['HS256']")
    allowed = list(algorithms)
    options: Any = {"require": ["exp", "sub"]}

    def verify(token: str) -> Identity | None:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=allowed,
                audience=audience,
                issuer=issuer,
                leeway=leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthRefusal.expired("token expired") from None
        except jwt.InvalidTokenError:
            return None
        scope = claims.get("scope")
        scopes = scope.split() if isinstance(scope, str) else claims.get("scp") or ()
        try:
            return Identity(str(claims["sub"]), float(claims["exp"]), claims, tuple(scopes))
        except (TypeError, ValueError):
            return None

    return verify
