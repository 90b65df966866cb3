"""Origin and Host parsing (RFC 6454, RFC 9110 7.2) and origin patterns.

Owns turning header text into normalised (scheme, host, port) values and matching them
against configured patterns. It does not decide what is allowed: that is the policy's job.

Header values must already be ASCII, as browsers send them (RFC 6454 6.2): a raw Unicode
Origin or Host is malformed. Configured patterns may name hosts in Unicode; they are encoded
as browsers encode hosts (UTS #46 non-transitional processing, the WHATWG URL standard's
"domain to ASCII") through the ``idna`` package (the ``idna`` extra). Python's built-in
``idna`` codec is IDNA 2003, which maps ``ß`` to ``ss``: it is never used here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "Origin",
    "OriginMatcher",
    "parse_host",
    "parse_origin",
    "parse_host_pattern",
    "same_origin_problem",
]

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.\-]*")
# After IDNA and lowercasing, a registered name is dot-separated labels of these characters.
# "_" is not valid in DNS host names but real intranets use it and browsers serialise it.
_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?")
_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")
# RFC 1035 2.3.4: a name is at most 253 characters; with brackets, a port and a scheme, no
# real Host or Origin is longer. Longer values are malformed before any parsing.
_MAX_HOST = 253 + len("[]:65535")
_MAX_ORIGIN = 32 + len("://") + _MAX_HOST


class Origin(NamedTuple):
    """A normalised origin: RFC 6454 4, with the default port made explicit."""

    scheme: str
    host: str
    #: The effective port: the explicit one, else the scheme's default, else None.
    port: int | None
    #: RFC 6454 6.2 serialisation, lowercase, default port omitted.
    serialized: str


def _normalise_hostname(host: str) -> str | None:
    """Lowercase, IDNA-encode and validate a host; None when it is not a valid host."""
    if not host:
        return None
    if host[0] == "[":
        # RFC 3986 3.2.2: IP-literal. Only IPv6 (no IPvFuture), normalised to its short form.
        if host[-1] != "]":
            return None
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return f"[{address.compressed}]"
    if not host.isascii():
        # Callers hand over ASCII only: header values are refused before, patterns encoded.
        return None
    host = host.lower()
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        # A trailing dot is kept (browsers treat "example.com." as another origin) but its
        # empty last label is not an error.
        labels.pop()
    for label in labels:
        if len(label) > 63 or _LABEL_RE.fullmatch(label) is None:
            return None
    return host


def _split_authority(authority: str) -> tuple[str, int | None] | None:
    """Split ``host[:port]``; None when malformed. The port is None when absent."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        host, rest = authority[: end + 1], authority[end + 1 :]
        if not rest:
            port_text = None
        elif rest[0] == ":":
            port_text = rest[1:]
        else:
            return None
    else:
        host, colon, port_text_ = authority.rpartition(":")
        if not colon:
            host, port_text = authority, None
        else:
            port_text = port_text_
    port: int | None = None
    if port_text is not None:
        # RFC 3986 3.2.3 allows an empty port and leading zeros; no browser sends either,
        # so both are treated as malformed (fail closed on ambiguity).
        if _PORT_RE.fullmatch(port_text) is None:
            return None
        port = int(port_text)
        if port > 65535:
            return None
    normalised = _normalise_hostname(host)
    if normalised is None:
        return None
    return normalised, port


def _serialise(scheme: str, host: str, port: int | None) -> str:
    if port is None or DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def parse_origin(value: str) -> Origin | None:
    """Parse an ``Origin`` header value (RFC 6454 7.1) other than ``null``.

    Args:
        value: the header value, surrounding whitespace already removed.

    Returns:
        The normalised origin, or None when the value is not a serialised origin: it has a
        path (even "/"), query, fragment, userinfo, percent-encoding, whitespace or control
        characters, a bad or out-of-range port, or an invalid host.
    """
    if len(value) > _MAX_ORIGIN or not value.isascii():
        # RFC 6454 6.2: browsers send the ASCII serialisation (punycode hosts). Other bytes
        # would need guessing (IDNA maps "\xaapp" to "app"): fail closed instead.
        return None
    scheme, sep, authority = value.partition("://")
    if not sep:
        return None
    scheme = scheme.lower()
    if _SCHEME_RE.fullmatch(scheme) is None:
        return None
    # RFC 6454 6.2: scheme "://" host [":" port], nothing else.
    for char in "/?#@\\%":
        if char in authority:
            return None
    parts = _split_authority(authority)
    if parts is None:
        return None
    host, port = parts
    if port is None:
        port = DEFAULT_PORTS.get(scheme)
    return Origin(scheme, host, port, _serialise(scheme, host, port))


def parse_host(value: str) -> tuple[str, int | None] | None:
    """Parse a ``Host`` header value (RFC 9110 7.2) into (host, port or None); None if malformed.

    RFC 9110 7.2 / RFC 3986 3.2.2: an ASCII uri-host, so other characters are malformed.
    """
    if len(value) > _MAX_HOST or not value.isascii():
        return None
    for char in "/?#@\\% \t":
        if char in value:
            return None
    return _split_authority(value)


_WEB_SCHEMES = frozenset({"http", "https"})


def same_origin_problem(
    origin: Origin, host: tuple[str, int | None], scheme: str | None
) -> str | None:
    """Why ``origin`` is not the same origin as ``host`` (RFC 6454 5), or None when it is.

    ``scheme`` is the site's public scheme when known (a ``wss`` scope, a trusted proxy's
    proto): it must match too, or an ``http://`` page of the same host would pass for the
    ``https://`` site's. Unknown, host and port decide (a TLS-ending proxy may not say).
    """
    if scheme is not None and origin.scheme != scheme:
        return f"Origin's scheme is not the site's ({scheme})"
    host_name, host_port = host
    if not (
        origin.scheme in _WEB_SCHEMES
        and origin.host == host_name
        and origin.port == (DEFAULT_PORTS[origin.scheme] if host_port is None else host_port)
    ):
        return "Origin is not the same origin as Host"
    return None


def to_ascii(host: str, option: str) -> str:
    """A configured host name as browsers encode it (UTS #46 non-transitional, WHATWG URL).

    ASCII names are returned as they are. Unicode ones need the ``idna`` package.

    Raises:
        ValueError: naming ``option``, when the name is not a valid IDNA name, or when the
            ``idna`` extra is missing (the message names the punycode form to write instead).
    """
    if host.isascii():
        return host
    try:
        import idna
    except ImportError:
        raise ValueError(
            f"invalid {option} {host!r}: a Unicode host name needs the idna extra "
            f"(pip install 'asgi-ws-handshake[idna]'), or write it in its ASCII form "
            f"{_punycode_hint(host)!r}"
        ) from None
    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"invalid {option} {host!r}: {exc}") from None


def _punycode_hint(host: str) -> str:
    """The ASCII form of a lowercase, already-normalised Unicode name (RFC 3492 per label).

    Without the ``idna`` package this skips UTS #46 mapping, which for a name written in
    lowercase, normalised form gives the same result (``ß`` stays, as non-transitional).
    """
    labels = host.lower().split(".")
    return ".".join(
        label if label.isascii() else "xn--" + label.encode("punycode").decode() for label in labels
    )


def parse_host_pattern(pattern: str) -> tuple[str, bool]:
    """Validate an ``allow_hosts`` entry: ``name`` or ``*.name``; return (name or suffix, wildcard).

    Raises:
        ValueError: naming the pattern when it is not a host name or a wildcard-subdomain one.
    """
    wildcard = pattern.startswith("*.")
    name = pattern[2:] if wildcard else pattern
    if "*" not in name and ":" not in name:
        name = to_ascii(name, "host pattern")
        normalised = _normalise_hostname(name)
    else:
        normalised = None
    if normalised is None:
        raise ValueError(f"invalid host pattern {pattern!r}: expected 'name' or '*.name', no port")
    return ("." + normalised if wildcard else normalised), wildcard


def _ascii_pattern(pattern: str) -> str:
    """Configured origin patterns may name hosts in Unicode: encode them as browsers do."""
    if pattern.isascii():
        return pattern
    scheme, sep, authority = pattern.partition("://")
    host, colon, port = authority.rpartition(":")
    if not colon or not port.isdigit():
        host, colon, port = authority, "", ""
    wildcard = host.startswith("*.")
    ascii_host = to_ascii(host[2:] if wildcard else host, "origin pattern")
    return f"{scheme}{sep}{'*.' if wildcard else ''}{ascii_host}{colon}{port}"


class OriginMatcher:
    """Precompiled origin patterns: exact origins, wildcard subdomains and one regex.

    ``https://*.example.com`` matches any origin whose host ends with ``.example.com`` on a
    label boundary, at any depth, with the same scheme and port; never ``example.com`` itself.
    """

    __slots__ = ("_exact", "_regex", "_wildcards")

    def __init__(self, patterns: Iterable[str], regex: str | re.Pattern[str] | None) -> None:
        exact: set[str] = set()
        wildcards: list[tuple[str, int | None, str]] = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise TypeError(f"origin patterns must be str, got {pattern!r}")
            if pattern == "*":
                raise ValueError("invalid origin pattern '*': use allow_any_origin=True")
            if pattern.strip().lower() == "null":
                raise ValueError("invalid origin pattern 'null': use allow_null_origin=True")
            pattern = _ascii_pattern(pattern)
            scheme, sep, authority = pattern.partition("://")
            if sep and authority.startswith("*."):
                # Validate the rest by parsing it with a stand-in first label.
                parsed = parse_origin(f"{scheme}://x{authority[1:]}")
                if parsed is None or "*" in authority[1:] or parsed.host.startswith("["):
                    raise ValueError(
                        f"invalid origin pattern {pattern!r}: expected 'scheme://*.host[:port]'"
                    )
                wildcards.append((parsed.scheme, parsed.port, parsed.host[1:]))
                continue
            parsed = parse_origin(pattern) if "*" not in pattern else None
            if parsed is None:
                raise ValueError(
                    f"invalid origin pattern {pattern!r}: expected 'scheme://host[:port]' "
                    "with no path, or 'scheme://*.host[:port]'"
                )
            exact.add(parsed.serialized)
        self._exact = frozenset(exact)
        self._wildcards = tuple(wildcards)
        if isinstance(regex, str):
            try:
                regex = re.compile(regex)
            except re.error as exc:
                raise ValueError(f"invalid allow_origin_regex {regex!r}: {exc}") from None
        self._regex = regex

    def __bool__(self) -> bool:
        return bool(self._exact or self._wildcards or self._regex is not None)

    def matches(self, origin: Origin) -> bool:
        """Tell whether a parsed origin matches any pattern."""
        if origin.serialized in self._exact:
            return True
        host = origin.host
        for scheme, port, suffix in self._wildcards:
            if (
                origin.scheme == scheme
                and origin.port == port
                and host.endswith(suffix)
                and len(host) > len(suffix)
            ):
                return True
        regex = self._regex
        return regex is not None and regex.fullmatch(origin.serialized) is not None
