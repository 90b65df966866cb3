"""``HandshakePolicy``: what a route allows, validated once, and ``evaluate()``, the pure core.

``evaluate`` turns a ``HandshakeRequest`` into an ``Accept`` or a ``Reject``: it is the one
place each rule lives. It performs no I/O, reads no clock and logs nothing; the checks that
need a store (reused keys, rates, connection caps) are ``checks``'s, which reads their
settings from the policy.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .decision import Accept, Decision, Reason, Reject
from .identity import Authenticator, LimitKey, check_identity_options
from .key import is_valid_key
from .origin import (
    OriginMatcher,
    parse_host,
    parse_host_pattern,
    parse_origin,
    same_origin_problem,
)
from .request import HandshakeRequest, RawValues
from .stores.rates import Rate, parse_rate
from .subprotocol import find_malformed, is_token, select_subprotocol

__all__ = ["HandshakePolicy", "Rate", "SubprotocolSelector", "parse_rate"]

#: ``(request, offered) -> chosen or None``; must return one of ``offered`` or None.
SubprotocolSelector = Callable[[HandshakeRequest, tuple[str, ...]], "str | None"]

_V13 = ("13",)
_NO_KEY_VERSIONS = frozenset({"2", "3"})  # RFC 8441 5 / RFC 9220 3: no key, no accept


_MEMO_POLICIES = 16  # policies' verdicts remembered per set of raw values
_TOKENS = itertools.count()


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakePolicy:
    """The handshake rules for one route.

    With no ``allow_origins``, ``allow_origin_regex`` or ``allow_any_origin`` the policy is
    same-origin: the Origin's host and port must equal the Host header's.

    Args:
        allow_origins: exact origins (``https://app.example.com``) or wildcard-subdomain ones
            (``https://*.example.com``, which never matches ``example.com`` itself).
        allow_origin_regex: a regex that must match the whole normalised origin.
        allow_any_origin: switch origin checks off (any single well-formed or ``null`` origin).
            Malformed and repeated Origin headers are still refused.
        allow_missing_origin: accept handshakes without Origin (non-browser clients; browsers
            always send one, RFC 6455 4.1 item 8).
        allow_null_origin: accept ``Origin: null`` (sandboxed iframes, ``file://`` pages).
        allow_hosts: a Host allowlist (``example.com``, ``*.example.com``; ports ignored). Set
            it with same-origin to defeat DNS rebinding.
        subprotocols: supported subprotocols in server preference order.
        require_subprotocol: refuse handshakes that negotiate no subprotocol.
        subprotocol_preference: ``"server"`` (default) or ``"client"`` order.
        select_subprotocol: a callable replacing the built-in negotiation.
        key_reuse: ``"ignore"``, ``"flag"`` (audit only) or ``"reject"`` (400 key_reused).
        key_reuse_ttl: seconds a key is remembered.
        rate_limit: handshakes allowed per client address (``scope["client"]``, so the proxy's
            address unless uvicorn runs with ``--proxy-headers``), in the ``limits`` notation
            (``"30/minute"``); counted in a moving window. Refusals: 429 ``rate_limited``.
        rate_limit_total: handshakes allowed from all clients together, same notation.
        max_connections: open connections allowed on this route at once, across every process
            sharing the store. Refusals: 503 ``too_many_connections``.
        max_connections_per_client: open connections allowed per client address.
        connections_retry_after: the ``Retry-After`` seconds sent with
            ``too_many_connections`` (RFC 9110 10.2.3).
        on_store_error: when the store cannot answer a check that could refuse the handshake:
            ``"closed"`` (default) refuses with 503 ``store_unavailable``; ``"open"`` lets the
            handshake proceed and marks its audit event ``store_error``. A check that cannot
            refuse (``key_reuse="flag"``) always proceeds, marked.
        authenticate: who is connecting: a callable, sync or async, taking an
            ``identity.AuthRequest`` and returning an ``Identity``, None (no credentials:
            401 ``auth_missing``) or a refusal (``AuthRefusal`` raised or returned). Runs
            after the rules above accepted and before the store checks. A hook that raises
            fails closed (500 ``auth_error``), one slower than ``authenticate_timeout``
            too (503 ``auth_timeout``).
        authenticate_timeout: seconds an async ``authenticate`` may take.
        allow_anonymous: let handshakes for which ``authenticate`` returns None through,
            with no identity.
        limit_key: what ``rate_limit`` and ``max_connections_per_client`` count under:
            ``"client"`` (the address), ``"subject"`` (the identity's; the address for
            anonymous clients) or ``(request, identity) -> str``.
        max_connection_age: seconds after which the guard closes an accepted connection.
        close_on_expiry: close the connection when the identity's ``expires_at`` passes.
        expiry_close_code: the close code for both: 1008 (policy violation) or 4000-4999.
        allow_cross_site: accept handshakes a browser marks ``Sec-Fetch-Site: cross-site``
            although no allowance vouches for their Origin (none sent, or only the same-origin
            rule). Off by default: such a handshake comes from another site's page, its Origin
            stripped on the way (403 ``fetch_site_cross_site``).
        enforce: ``False`` makes the route report-only: a handshake the policy (or a store
            check) would refuse is let through, its audit event marked ``would_reject``.

    Raises:
        ValueError: at construction, naming the option and the bad value.
    """

    allow_origins: Sequence[str] = ()
    allow_origin_regex: str | re.Pattern[str] | None = None
    allow_any_origin: bool = False
    allow_missing_origin: bool = True
    allow_null_origin: bool = False
    allow_hosts: Sequence[str] | None = None
    subprotocols: Sequence[str] = ()
    require_subprotocol: bool = False
    subprotocol_preference: Literal["server", "client"] = "server"
    select_subprotocol: SubprotocolSelector | None = None
    key_reuse: Literal["ignore", "flag", "reject"] = "flag"
    key_reuse_ttl: float = 600.0
    rate_limit: str | None = None
    rate_limit_total: str | None = None
    max_connections: int | None = None
    max_connections_per_client: int | None = None
    connections_retry_after: int = 5
    on_store_error: Literal["open", "closed"] = "closed"
    # -- who is connecting (see "Args" above; validated by identity.check_identity_options)
    authenticate: Authenticator | None = None
    authenticate_timeout: float = 5.0
    allow_anonymous: bool = False
    limit_key: Literal["client", "subject"] | LimitKey = "client"
    max_connection_age: float | None = None
    close_on_expiry: bool = True
    expiry_close_code: int = 1008
    allow_cross_site: bool = False
    enforce: bool = True

    _client_rate: Rate | None = field(init=False, repr=False, compare=False)
    _total_rate: Rate | None = field(init=False, repr=False, compare=False)
    _origin_matcher: OriginMatcher = field(init=False, repr=False, compare=False)
    _same_origin: bool = field(init=False, repr=False, compare=False)
    #: The checks that need the store, in the order they run: ``"client_rate"``,
    #: ``"total_rate"``, ``"key_reuse"``, ``"connections"`` (those this policy enables).
    store_checks: tuple[str, ...] = field(init=False, repr=False, compare=False)
    #: Whether accepted connections carry more than the handshake: an identity
    #: (``authenticate``) or a deadline (``max_connection_age``).
    sessions: bool = field(init=False, repr=False, compare=False)
    #: Whether the handshake goes on to step 5: the store checks (rates, reused keys,
    #: connection caps), ``authenticate`` or a connection deadline.
    stateful: bool = field(init=False, repr=False, compare=False)
    _host_names: frozenset[str] = field(init=False, repr=False, compare=False)
    _host_suffixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _token: int = field(init=False, repr=False, compare=False)
    _cross_site_check: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.allow_origins, str):
            raise TypeError("allow_origins must be a list of origins, not a str")
        set_(self, "allow_origins", tuple(self.allow_origins))
        matcher = OriginMatcher(self.allow_origins, self.allow_origin_regex)
        if self.allow_any_origin and matcher:
            raise ValueError(
                "allow_any_origin=True conflicts with allow_origins/allow_origin_regex: choose one"
            )
        set_(self, "_origin_matcher", matcher)
        set_(self, "_same_origin", not (self.allow_any_origin or matcher))

        names: set[str] = set()
        suffixes: list[str] = []
        if self.allow_hosts is not None:
            if isinstance(self.allow_hosts, str):
                raise TypeError("allow_hosts must be a list of host names, not a str")
            set_(self, "allow_hosts", tuple(self.allow_hosts))
            for pattern in self.allow_hosts:
                name, wildcard = parse_host_pattern(pattern)
                (suffixes.append(name) if wildcard else names.add(name))
        set_(self, "_host_names", frozenset(names))
        set_(self, "_host_suffixes", tuple(suffixes))

        if isinstance(self.subprotocols, str):
            raise TypeError("subprotocols must be a list of tokens, not a str")
        set_(self, "subprotocols", tuple(self.subprotocols))
        for name in self.subprotocols:
            if not isinstance(name, str) or not is_token(name):
                raise ValueError(f"invalid subprotocol {name!r}: not an RFC 9110 token")
        if len(set(self.subprotocols)) != len(self.subprotocols):
            raise ValueError(f"subprotocols repeat an entry: {list(self.subprotocols)!r}")
        if self.require_subprotocol and not (self.subprotocols or self.select_subprotocol):
            raise ValueError("require_subprotocol=True needs subprotocols or select_subprotocol")
        if self.subprotocol_preference not in ("server", "client"):
            raise ValueError(
                f"invalid subprotocol_preference {self.subprotocol_preference!r}: "
                "expected 'server' or 'client'"
            )
        if self.key_reuse not in ("ignore", "flag", "reject"):
            raise ValueError(
                f"invalid key_reuse {self.key_reuse!r}: expected 'ignore', 'flag' or 'reject'"
            )
        if not self.key_reuse_ttl > 0:
            raise ValueError(f"invalid key_reuse_ttl {self.key_reuse_ttl!r}: must be > 0")
        for option in ("rate_limit", "rate_limit_total"):
            value = getattr(self, option)
            rate = None if value is None else parse_rate(value, option)
            set_(self, "_client_rate" if option == "rate_limit" else "_total_rate", rate)
        for option in ("max_connections", "max_connections_per_client"):
            value = getattr(self, option)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"invalid {option} {value!r}: must be an int >= 1 or None")
        retry = self.connections_retry_after
        if type(retry) is not int or retry < 0:
            raise ValueError(f"invalid connections_retry_after {retry!r}: must be an int >= 0")
        if self.on_store_error not in ("open", "closed"):
            raise ValueError(
                f"invalid on_store_error {self.on_store_error!r}: expected 'open' or 'closed'"
            )
        set_(self, "_token", next(_TOKENS))  # names this policy in RawValues.memo
        set_(self, "_cross_site_check", not (self.allow_cross_site or self.allow_any_origin))
        checks = (
            ("client_rate", self._client_rate is not None),
            ("total_rate", self._total_rate is not None),
            ("key_reuse", self.key_reuse != "ignore"),
            ("connections", bool(self.max_connections or self.max_connections_per_client)),
        )
        set_(self, "store_checks", tuple(name for name, on in checks if on))
        check_identity_options(self)
        sessions = self.authenticate is not None or self.max_connection_age is not None
        set_(self, "sessions", sessions)
        set_(self, "stateful", bool(self.store_checks) or sessions)

    @property
    def client_rate(self) -> Rate | None:
        """``rate_limit`` parsed."""
        return self._client_rate

    @property
    def total_rate(self) -> Rate | None:
        """``rate_limit_total`` parsed."""
        return self._total_rate

    @property
    def same_origin(self) -> bool:
        """True when the policy falls back to the same-origin rule."""
        return self._same_origin

    def _host_allowed(self, host: str) -> bool:
        if host in self._host_names:
            return True
        return any(
            host.endswith(suffix) and len(host) > len(suffix) for suffix in self._host_suffixes
        )

    def evaluate(self, request: HandshakeRequest) -> Decision:
        """Judge a handshake. Pure: same request, same decision; never raises on request data.

        Checks run in this order, the first failure deciding: version, key, Host, Origin,
        subprotocols. Everything after the key depends only on the Host, Origin and offered
        subprotocols, so its verdict is remembered with the request's decoded raw values
        (``RawValues.memo``) and reused for every handshake that has the same ones.

        Raises:
            Exception: whatever a ``select_subprotocol`` callable raises.
        """
        # RFC 6455 4.2.1 item 6 and 4.4: exactly one version, "13"; otherwise answer with the
        # versions we support (400 when the header is absent, 426 Upgrade Required otherwise).
        versions = request.versions
        if versions != _V13:
            if not versions:
                return Reject.because(Reason.VERSION_MISSING, "no Sec-WebSocket-Version header")
            return Reject.because(Reason.VERSION_UNSUPPORTED, "Sec-WebSocket-Version must be 13")

        # RFC 6455 4.2.1 item 5: exactly one key, base64 of 16 bytes. RFC 8441 / RFC 9220
        # handshakes (HTTP/2, HTTP/3) carry neither key nor accept.
        if request.http_version not in _NO_KEY_VERSIONS:
            keys = request.keys
            if len(keys) != 1:
                if not keys:
                    return Reject.because(Reason.KEY_MISSING, "no Sec-WebSocket-Key header")
                return Reject.because(Reason.KEY_MULTIPLE, "more than one Sec-WebSocket-Key")
            if not is_valid_key(keys[0]):
                return Reject.because(
                    Reason.KEY_MALFORMED, "Sec-WebSocket-Key is not base64 of 16 bytes"
                )

        raw = request.raw
        if (
            raw is not None
            and (memo := raw.memo) is not None
            # The very values decoded from the raw ones (not a request rebuilt with _replace).
            and raw.hosts is request.hosts
            and raw.origins is request.origins
            and raw.subprotocols is request.subprotocols
        ):
            verdict = memo.get(self._token)
            if verdict is None:
                verdict = self._judge(raw)
                if len(memo) >= _MEMO_POLICIES:
                    memo.clear()
                memo[self._token] = verdict
        else:
            verdict = self._judge(
                RawValues(
                    request.hosts,
                    request.origins,
                    request.versions,
                    request.subprotocols,
                    site=None if raw is None else raw.site,
                    fetch_site=None if raw is None else raw.fetch_site,
                )
            )
        if self.select_subprotocol is None or type(verdict) is not Accept:
            return verdict
        return self._select(request, verdict)

    def report_only(self, request: HandshakeRequest, reject: Reject) -> Accept:
        """What a report-only route (``enforce=False``) lets through in place of ``reject``.

        The subprotocol is negotiated as if the refused check had passed (none when the offer
        is malformed); the ``Accept`` carries ``reject`` as ``would_reject`` for the audit.
        """
        offered = request.subprotocols
        chosen: str | None = None
        if offered and find_malformed(offered) is None:
            if self.select_subprotocol is not None:
                try:
                    chosen = self.select_subprotocol(request, offered)
                except Exception:
                    chosen = None
                chosen = chosen if chosen in offered else None
            else:
                chosen = select_subprotocol(
                    offered, self.subprotocols, prefer=self.subprotocol_preference
                )
        return Accept(chosen, reject.origin, reject)

    def _select(self, request: HandshakeRequest, verdict: Accept) -> Decision:
        """The choice of a ``select_subprotocol`` callable (which may read anything)."""
        assert self.select_subprotocol is not None
        offered = request.subprotocols
        chosen = self.select_subprotocol(request, offered)
        if chosen is not None and chosen not in offered:
            return Reject.because(
                Reason.INTERNAL_ERROR,
                "select_subprotocol chose a subprotocol not offered",
                origin=verdict.origin,
            )
        if chosen is None and self.require_subprotocol:
            return Reject.because(
                Reason.SUBPROTOCOL_REQUIRED,
                "no supported subprotocol offered",
                origin=verdict.origin,
            )
        return Accept(chosen, verdict.origin)

    def _judge(self, raw: RawValues) -> Decision:
        """The Host, Origin and subprotocol rules: a pure function of ``raw`` and the policy."""
        # RFC 9110 7.2: one Host. Needed for the same-origin rule and the Host allowlist.
        # Behind a trusted proxy, the host the client asked for is the one it forwarded
        # (RFC 7239 5.3); with public_origins the same-origin rule needs no host at all.
        host: tuple[str, int | None] | None = None
        same_origin = self._same_origin
        site = raw.site
        hosts = raw.hosts if site is None or site.host is None else (site.host,)
        public = None if site is None else site.origins
        if (same_origin and public is None) or self.allow_hosts is not None:
            if len(hosts) != 1:
                return Reject.because(Reason.HOST_MALFORMED, "exactly one Host header is required")
            host = parse_host(hosts[0])
            if host is None:
                return Reject.because(Reason.HOST_MALFORMED, "Host is not host[:port]")
            if self.allow_hosts is not None and not self._host_allowed(host[0]):
                return Reject.because(Reason.HOST_NOT_ALLOWED, "Host is not in allow_hosts")

        # RFC 6455 4.2.2 item 4 / 10.2: the server decides whether it accepts this origin.
        origin_value: str | None = None
        origins = raw.origins
        if not origins:
            if not self.allow_missing_origin:
                return Reject.because(Reason.ORIGIN_MISSING, "no Origin header")
        elif len(origins) != 1:
            return Reject.because(Reason.ORIGIN_MULTIPLE, "more than one Origin")
        elif origins[0] == "null":
            # RFC 6454 7.3: privacy-sensitive contexts send "null".
            if not (self.allow_null_origin or self.allow_any_origin):
                return Reject.because(Reason.ORIGIN_NULL, "Origin is null", origin="null")
            origin_value = "null"
        else:
            origin = parse_origin(origins[0])
            if origin is None:
                return Reject.because(Reason.ORIGIN_MALFORMED, "Origin is not a serialised origin")
            origin_value = origin.serialized
            if self.allow_any_origin:
                pass
            elif not same_origin:
                if not self._origin_matcher.matches(origin):
                    return Reject.because(
                        Reason.ORIGIN_NOT_ALLOWED, "Origin is not allowed", origin=origin_value
                    )
            elif public is not None:
                if origin.serialized not in public:
                    return Reject.because(
                        Reason.ORIGIN_NOT_ALLOWED,
                        "Origin is not one of public_origins",
                        origin=origin_value,
                    )
            else:
                assert host is not None  # checked above whenever same_origin
                problem = same_origin_problem(origin, host, None if site is None else site.scheme)
                if problem is not None:
                    return Reject.because(Reason.ORIGIN_NOT_ALLOWED, problem, origin=origin_value)

        # Fetch Metadata (W3C, Sec-Fetch-Site 2.1): a browser says the page is another site's.
        # Refused unless an allowance vouches for the Origin (as Go's CrossOriginProtection),
        # so a cross-site page whose Origin a proxy stripped is still refused.
        fetch_site = raw.fetch_site
        if (
            fetch_site is not None
            and self._cross_site_check
            and _cross_site(fetch_site)
            and (origin_value is None or (same_origin and origin_value != "null"))
        ):
            return Reject.because(
                Reason.FETCH_SITE_CROSS_SITE,
                "Sec-Fetch-Site is cross-site and no allowed Origin vouches for it",
                origin=origin_value,
            )

        # RFC 6455 4.1 item 10 / 4.2.2 item 5.4: offered tokens, unique; pick one of them.
        offered = raw.subprotocols
        if offered:
            problem = find_malformed(offered)
            if problem is not None:
                return Reject.because(Reason.SUBPROTOCOL_MALFORMED, problem, origin=origin_value)
        if self.select_subprotocol is not None:
            return Accept(None, origin_value)  # chosen per handshake, by _select
        chosen = select_subprotocol(offered, self.subprotocols, prefer=self.subprotocol_preference)
        if chosen is None and self.require_subprotocol:
            return Reject.because(
                Reason.SUBPROTOCOL_REQUIRED, "no supported subprotocol offered", origin=origin_value
            )
        return Accept(chosen, origin_value)


def _cross_site(fetch_site: str) -> bool:
    """Whether a ``Sec-Fetch-Site`` value (lines comma-joined) says ``cross-site``."""
    if "," in fetch_site:
        return "cross-site" in [item.strip(" \t") for item in fetch_site.split(",")]
    return fetch_site == "cross-site"
