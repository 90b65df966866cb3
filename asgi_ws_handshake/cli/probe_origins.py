"""Lookalike origins: derived from the origin a server accepts, each one passing a weak check.

Owns parsing the valid origin (RFC 6454 6.2: scheme "://" host [":" port], nothing else) and
building the origins a careless comparison lets through: the host as a prefix of another
domain, as a suffix without a label boundary, the same host on another port or scheme, a
subdomain, a sibling under the parent domain, userinfo tricks. Only lookalikes that mean
something for the host are built (an IP address has no subdomain); the others are skipped
with the reason. Pure: no sockets, no verdicts (``probe_cases`` judges).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "EVIL_DOMAIN",
    "FOREIGN_ORIGIN",
    "Lookalike",
    "Origin",
    "Skipped",
    "lookalikes",
    "parse_origin",
]

#: An origin no real server allows: the cross-site page of a CSWSH attack.
FOREIGN_ORIGIN = "https://cswsh-probe.invalid"
#: The attacker's domain in lookalikes (RFC 2606 reserves ``.example``).
EVIL_DOMAIN = "evil.example"
_LABEL = "cswsh-probe"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_OTHER_SCHEME = {"http": "https", "https": "http"}
#: ``must_refuse``: a 101 is a failure; ``should_refuse``: a warning (a policy choice).
Refuse = Literal["must_refuse", "should_refuse"]


@dataclass(frozen=True, slots=True)
class Origin:
    """A parsed tuple origin (RFC 6454 4): lowercase scheme and host, ``port`` None when it
    is the scheme's default."""

    scheme: str
    host: str
    port: int | None

    def serialise(self, host: str | None = None, port: int | None = 0) -> str:
        """RFC 6454 6.2, with ``host`` or ``port`` replaced when given (None: no port)."""
        host = self.host if host is None else host
        port = self.port if port == 0 else port
        shown = f"[{host}]" if ":" in host else host
        if port is None or port == _DEFAULT_PORTS.get(self.scheme):
            return f"{self.scheme}://{shown}"
        return f"{self.scheme}://{shown}:{port}"

    @property
    def is_ip(self) -> bool:
        """An IP address, or a name that browsers parse as one (WHATWG URL: a host whose
        last label is a number is an IPv4 address, or invalid)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            last = self.host.rstrip(".").rpartition(".")[2]
            return last.isdigit() or last.startswith("0x")
        return True


def parse_origin(value: str) -> Origin | None:
    """Parse the valid origin; None for the opaque origin ``null``.

    Raises:
        ValueError: the value is not ``scheme://host[:port]`` (a path, query, fragment,
            userinfo or a bad port), naming what is wrong.
    """
    if value == "null":
        return None
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin (scheme://host[:port])")
    if parts.path or parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError(f"{value!r} has a path, query or fragment; an origin has none")
    if "@" in parts.netloc:
        raise ValueError(f"{value!r} has userinfo; an origin has none")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has a bad port") from None
    scheme = parts.scheme.lower()
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return Origin(scheme, parts.hostname.lower(), port)


@dataclass(frozen=True, slots=True)
class Lookalike:
    """One origin to send in place of the valid one, and what a 101 to it reveals."""

    name: str
    title: str
    origin: str
    expect: Refuse
    #: Stable code of the weak check a 101 reveals (JSON ``pattern``).
    pattern: str
    #: The verdict's message when the server answers 101.
    why_accept: str
    #: The parent domain, for the suffix and sibling cases.
    parent: str = ""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A case the probe did not send, and why it means nothing for this target."""

    name: str
    title: str
    why: str


def _other_port(valid: Origin) -> int:
    if valid.port is None:
        return 8443 if valid.scheme == "https" else 8080
    return valid.port + 1 if valid.port < 65535 else valid.port - 1


def lookalikes(valid: Origin | None) -> tuple[list[Lookalike], list[Skipped]]:
    """The lookalikes of ``valid`` that make sense for its host, and the skipped ones."""
    titles = {
        "origin_prefix": "the host as a prefix of another domain",
        "origin_suffix": "the host as a suffix, no dot boundary",
        "origin_sibling": "another host under the parent domain",
        "origin_subdomain": "a subdomain of the host",
        "origin_other_port": "the same host on another port",
        "origin_other_scheme": "the same host with the other scheme",
        "origin_userinfo": "the valid origin as userinfo (an @ trick)",
    }
    if valid is None:
        why = "the valid origin is null: there is no host to imitate"
        return [], [Skipped(name, title, why) for name, title in titles.items()]
    found: list[Lookalike] = []
    skipped: list[Skipped] = []

    def add(
        name: str, origin: str, expect: Refuse, pattern: str, why: str, parent: str = ""
    ) -> None:
        found.append(Lookalike(name, titles[name], origin, expect, pattern, why, parent))

    def skip(name: str, why: str) -> None:
        skipped.append(Skipped(name, titles[name], why))

    host = valid.host
    labels = host.rstrip(".").split(".")
    parent = ".".join(labels[1:])
    ipv6 = ":" in host
    if ipv6:
        skip("origin_prefix", f"the IPv6 address {host} cannot begin a domain name")
    else:
        prefix = valid.serialise(host=f"{host}.{EVIL_DOMAIN}")
        add(
            "origin_prefix",
            prefix,
            "must_refuse",
            "prefix_check",
            f"prefix check: accepted {prefix!r}, which only starts with {host!r}; "
            f"whoever owns {EVIL_DOMAIN} can hijack sockets",
        )
    if valid.is_ip:
        skip("origin_suffix", f"{host} is an IP address: evil{host} is no host a browser sends")
        skip("origin_sibling", f"{host} is an IP address: it has no parent domain")
        skip("origin_subdomain", f"{host} is an IP address: it has no subdomains")
    else:
        suffix = valid.serialise(host=f"evil{host}")
        add(
            "origin_suffix",
            suffix,
            "must_refuse",
            "suffix_without_dot",
            f"suffix check without a dot boundary: accepted {suffix!r}, which only ends "
            f"with {host!r}; whoever registers such a name can hijack sockets",
            parent if len(labels) > 2 else "",
        )
        if len(labels) > 2:
            # evil<host> lies under <parent> too: a wildcard over <parent> accepts it
            # without a suffix bug. A sibling tells the two apart.
            sibling = valid.serialise(host=f"{_LABEL}.{parent}")
            add(
                "origin_sibling",
                sibling,
                "should_refuse",
                "parent_wildcard",
                f"accepts another host under {parent} ({sibling!r}): a wildcard over the "
                f"parent domain; fine only if every host under {parent} is yours",
                parent,
            )
        else:
            skip("origin_sibling", f"{host} has no parent domain below the top level")
        subdomain = valid.serialise(host=f"{_LABEL}.{host}")
        add(
            "origin_subdomain",
            subdomain,
            "should_refuse",
            "subdomain_wildcard",
            f"accepts a subdomain of {host} ({subdomain!r}): a wildcard or dotted suffix "
            "check; fine only if every subdomain is yours (takeovers, user content)",
        )
    port = _other_port(valid)
    other_port = valid.serialise(port=port)
    add(
        "origin_other_port",
        other_port,
        "must_refuse",
        "port_blind",
        f"port-blind check: accepted {other_port!r}, the same host on another port, which "
        "is another origin (RFC 6454 5); any service on that port can hijack sockets",
    )
    other = _OTHER_SCHEME.get(valid.scheme)
    if other is None:
        skip("origin_other_scheme", f"the scheme {valid.scheme!r} has no http/https twin")
    else:
        flipped = Origin(other, host, valid.port).serialise()
        said = f"scheme-blind check: accepted {flipped!r} for a {valid.scheme}:// origin, "
        if other == "http":
            # A downgrade: anyone on the network can forge an http:// page.
            why = f"{said}another origin (RFC 6454 5) that a network attacker can forge"
            add("origin_other_scheme", flipped, "must_refuse", "scheme_blind", why)
        else:
            # Only the host's owner can serve its https:// pages: harmless for an http:// site.
            why = f"{said}harmless here, but it lets forgeable http:// pages into an https:// site"
            add("origin_other_scheme", flipped, "should_refuse", "scheme_blind", why)
    userinfo = f"{valid.serialise()}@{EVIL_DOMAIN}"
    add(
        "origin_userinfo",
        userinfo,
        "must_refuse",
        "raw_prefix_match",
        f"prefix match on the raw header: accepted {userinfo!r}, whose host is "
        f"{EVIL_DOMAIN} (an origin has no userinfo, RFC 6454 6.2)",
    )
    return found, skipped
