"""``suggest-policy``: a policy file that would have accepted the legitimate traffic of a log.

Reads audit events as ``JSONLinesSink`` writes them (or ``JSONFormatter`` lines, whose
``event`` holds one), typically from a report-only rollout (``enforce = false``). The
legitimate traffic is what the guard let through (``accepted``, report-only passes included)
unless it was malformed: a malformed handshake is no client to accommodate. Per route, the
suggestion lists the origins seen (grouped into ``scheme://*.parent`` patterns where enough
subdomains of one parent appear), the subprotocols used, and handshake rates at the peak
seen times the headroom. Every event of the log is then judged by the suggested policy
itself (``HandshakePolicy.evaluate``), and what it would refuse is summarised by reason.
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from ..decision import Reject
from ..origin import parse_origin
from ..policy import HandshakePolicy
from ..request import HandshakeRequest, RawValues
from .render import toml_value

__all__ = ["Options", "Suggestion", "read_events", "render", "suggest"]

#: Reasons that say the handshake itself was broken: never traffic to accommodate.
MALFORMED = frozenset(
    {
        "version_missing",
        "version_unsupported",
        "key_missing",
        "key_malformed",
        "key_multiple",
        "origin_malformed",
        "origin_multiple",
        "host_malformed",
        "subprotocol_malformed",
    }
)
_MAX_LINE = 1024 * 1024
_WINDOW = 60.0  # rates are suggested per minute
_PLACEHOLDER_KEY = "AAAAAAAAAAAAAAAAAAAAAA=="  # a valid key, for events whose key was valid
#: Second-level labels under which names belong to different owners (co.uk, com.au, ...):
#: never a wildcard's parent.
_SHARED_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "net", "org", "ne", "or"})


@dataclass(frozen=True)
class Options:
    """How the suggestion is made (the command's options)."""

    headroom: float = 2.0
    min_handshakes: int = 1
    min_clients: int = 1
    wildcard_min: int = 3
    min_rate: int = 10
    rates: bool = True


@dataclass
class Route:
    """What one route's legitimate traffic showed, and the policy that fits it."""

    name: str
    handshakes: int = 0
    legitimate: int = 0
    report_only: int = 0
    origins: collections.Counter[str] = field(default_factory=collections.Counter)
    origin_clients: dict[str, set[str]] = field(default_factory=dict)
    missing_origin: int = 0
    selected: collections.Counter[str] = field(default_factory=collections.Counter)
    first_offered: collections.Counter[str] = field(default_factory=collections.Counter)
    offers: list[tuple[str, ...]] = field(default_factory=list)
    redacted: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Suggestion:
    routes: dict[str, Route]
    events: int
    skipped: int
    refused: collections.Counter[str]
    refused_origins: dict[str, collections.Counter[str]]


def read_events(lines: Iterable[str]) -> tuple[list[dict[str, Any]], int]:
    """The events of JSON lines, and how many lines were not events."""
    events: list[dict[str, Any]] = []
    skipped = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            data = json.loads(line) if len(line) <= _MAX_LINE else None
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("event"), dict):
            data = data["event"]  # a JSONFormatter line
        if isinstance(data, dict) and isinstance(data.get("outcome"), str):
            events.append(data)
        else:
            skipped += 1
    return events, skipped


def _client(event: dict[str, Any]) -> str:
    client = event.get("client")
    return client.rpartition(":")[0] if isinstance(client, str) and ":" in client else "-"


def _time(event: dict[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(str(event.get("time"))).timestamp()
    except ValueError:
        return None


def _legitimate(event: dict[str, Any]) -> bool:
    if event.get("outcome") != "accepted":
        return False
    spared = event.get("would_reject")
    if spared in MALFORMED:
        return False
    # A cross-site page without an Origin to vouch for it: never suggested away.
    return not (spared == "fetch_site_cross_site" and not event.get("origin"))


def _observe(route: Route, event: dict[str, Any]) -> None:
    route.legitimate += 1
    route.report_only += event.get("would_reject") is not None
    client = _client(event)
    origin = event.get("origin")
    if not origin:
        route.missing_origin += 1
    else:
        parsed = parse_origin(origin) if origin != "null" else None
        name = "null" if origin == "null" else parsed.serialized if parsed else None
        if name is not None:
            route.origins[name] += 1
            route.origin_clients.setdefault(name, set()).add(client)
    offered = tuple(p for p in event.get("subprotocols") or () if isinstance(p, str))
    route.redacted += "<redacted>" in offered
    offered = tuple(p for p in offered if p != "<redacted>")
    route.offers.append(offered)
    selected = event.get("subprotocol")
    if isinstance(selected, str) and selected != "<redacted>":
        route.selected[selected] += 1
    elif offered:
        route.first_offered[offered[0]] += 1
    when = _time(event)
    if when is not None:
        route.times.setdefault(client, []).append(when)


def _parent(host: str) -> str | None:
    """The parent domain a wildcard may cover, or None (an address, or a shared suffix)."""
    if host.startswith("[") or host.replace(".", "").isdigit() or host.endswith("."):
        return None
    labels = host.split(".")
    if len(labels) < 3:
        return None  # a.example's parent is a public suffix
    parent = labels[1:]
    if len(parent) == 2 and len(parent[1]) == 2 and parent[0] in _SHARED_SECOND_LEVEL:
        return None  # a.co.uk, b.co.uk: different owners
    return ".".join(parent)


def group_origins(origins: Iterable[str], wildcard_min: int) -> list[str]:
    """Exact origins, with ``scheme://*.parent[:port]`` for ``wildcard_min`` or more
    subdomains of one parent (same scheme and port); sorted, exact ones first."""
    groups: dict[tuple[str, str, int | None], set[str]] = collections.defaultdict(set)
    exact: set[str] = set()
    for origin in origins:
        parsed = parse_origin(origin) if origin != "null" else None
        parent = _parent(parsed.host) if parsed else None
        if parsed is None or parent is None:
            exact.add(origin)
        else:
            groups[(parsed.scheme, parent, parsed.port)].add(origin)
    wildcards: list[str] = []
    for (scheme, parent, port), members in groups.items():
        if len(members) < wildcard_min:
            exact.update(members)
            continue
        default = {"http": 80, "https": 443}.get(scheme)
        suffix = "" if port is None or port == default else f":{port}"
        wildcards.append(f"{scheme}://*.{parent}{suffix}")
    return sorted(exact - {"null"}) + sorted(wildcards)


def _peak(times: Iterable[float]) -> int:
    """The most events in any window of ``_WINDOW`` seconds."""
    ordered = sorted(times)
    best = start = 0
    for end, when in enumerate(ordered):
        while when - ordered[start] >= _WINDOW:
            start += 1
        best = max(best, end - start + 1)
    return best


def _fit(route: Route, options: Options) -> None:
    """Fill ``route.options`` with the policy that accepts its legitimate traffic."""
    kept = [
        origin
        for origin, count in route.origins.items()
        if count >= options.min_handshakes
        and len(route.origin_clients[origin]) >= options.min_clients
    ]
    patterns = group_origins(kept, options.wildcard_min)
    if patterns:
        route.options["allow_origins"] = patterns
    route.options["allow_missing_origin"] = route.missing_origin > 0
    if "null" in kept:
        route.options["allow_null_origin"] = True
    ranked = route.selected or route.first_offered
    supported = [name for name, _ in ranked.most_common()]
    if supported:
        route.options["subprotocols"] = supported
        chosen = set(supported)
        if route.offers and all(chosen.intersection(offer) for offer in route.offers):
            route.options["require_subprotocol"] = True
    if route.redacted:
        route.notes.append(
            f"{route.redacted} handshakes offered redacted subprotocols: add the ones your "
            "clients use by hand"
        )
    if options.rates and route.times:
        per_client = max(_peak(times) for times in route.times.values())
        total = _peak(t for times in route.times.values() for t in times)
        client_rate = max(options.min_rate, math.ceil(per_client * options.headroom))
        total_rate = max(options.min_rate, math.ceil(total * options.headroom))
        route.options["rate_limit"] = f"{client_rate}/minute"
        route.options["rate_limit_total"] = f"{total_rate}/minute"
        route.notes.append(
            f"rates: at most {per_client} handshakes a minute from one client and {total} "
            f"from all, times {options.headroom:g} (at least {options.min_rate})"
        )


def _judge(policy: HandshakePolicy, event: dict[str, Any]) -> str | None:
    """The reason the suggested policy refuses the event's handshake, or None."""
    spared = event.get("would_reject")
    recorded = event.get("reason") if event.get("outcome") == "rejected" else spared
    if recorded in MALFORMED:
        return str(recorded)
    origin = event.get("origin")
    host = event.get("host")
    fetch_site = event.get("fetch_site")
    hosts = (host,) if isinstance(host, str) else ()
    origins = (origin,) if isinstance(origin, str) and origin else ()
    offered = tuple(p for p in event.get("subprotocols") or () if isinstance(p, str))
    fetched = fetch_site if isinstance(fetch_site, str) else None
    request = HandshakeRequest(
        path=str(event.get("path") or "/"),
        hosts=hosts,
        origins=origins,
        keys=(_PLACEHOLDER_KEY,),
        subprotocols=offered,
        raw=RawValues(hosts, origins, ("13",), offered, fetch_site=fetched),
    )
    try:
        decision = policy.evaluate(request)
    except Exception:
        return "internal_error"
    return str(decision.reason) if type(decision) is Reject else None


def suggest(events: list[dict[str, Any]], skipped: int, options: Options) -> Suggestion:
    """The suggestion for these events (see the module docstring)."""
    routes: dict[str, Route] = {}
    for event in events:
        name = str(event.get("route") or "default")
        route = routes.setdefault(name, Route(name))
        route.handshakes += 1
        if _legitimate(event):
            _observe(route, event)
    for route in routes.values():
        _fit(route, options)
    refused: collections.Counter[str] = collections.Counter()
    refused_origins: dict[str, collections.Counter[str]] = {}
    policies = {name: _policy(route) for name, route in routes.items()}
    for event in events:
        if event.get("outcome") == "client_gone":
            continue
        reason = _judge(policies[str(event.get("route") or "default")], event)
        if reason is not None:
            refused[reason] += 1
            origin = str(event.get("origin") or "(none)")
            refused_origins.setdefault(reason, collections.Counter())[origin] += 1
    return Suggestion(routes, len(events), skipped, refused, refused_origins)


def _policy(route: Route) -> HandshakePolicy:
    """The suggested policy, judged without its rates (rates are fitted to the peaks)."""
    options = {k: v for k, v in route.options.items() if not k.startswith("rate_limit")}
    return HandshakePolicy(**options)


def render(suggestion: Suggestion, source: str) -> str:
    """The suggested policy file."""
    lines = [
        f"# suggested by asgi-ws-handshake suggest-policy from {source}:",
        f"# {suggestion.events} handshakes; review before use (see the summary on stderr).",
        "# Keep enforce = false on a route while you check what this would refuse.",
    ]
    routes = dict(suggestion.routes)
    default = routes.pop("default", None)
    if default is not None:
        lines += _table(default)
    for name, route in sorted(routes.items()):
        lines += ["", f"[routes.{json.dumps(name)}]", *_table(route)]
    return "\n".join(lines) + "\n"


def _table(route: Route) -> list[str]:
    return [f"{key} = {toml_value(value)}" for key, value in route.options.items()]


def summary(suggestion: Suggestion, out: TextIO) -> None:
    """What was read, what each route allows, and what the suggestion would refuse."""
    skipped = f" ({suggestion.skipped} lines were not events)" if suggestion.skipped else ""
    print(f"read {suggestion.events} handshakes{skipped}", file=out)
    for route in suggestion.routes.values():
        print(
            f"route {route.name}: {route.handshakes} handshakes, {route.legitimate} "
            f"legitimate ({route.report_only} let through by a report-only route)",
            file=out,
        )
        for origin, count in route.origins.most_common(10):
            clients = len(route.origin_clients[origin])
            plural = "" if clients == 1 else "s"
            print(f"  origin {origin}: {count} handshakes from {clients} client{plural}", file=out)
        for note in route.notes:
            print(f"  {note}", file=out)
    total = sum(suggestion.refused.values())
    print(f"the suggested policy would refuse {total} of {suggestion.events}:", file=out)
    for reason, count in suggestion.refused.most_common():
        origins = ", ".join(
            f"{origin} {n}" for origin, n in suggestion.refused_origins[reason].most_common(3)
        )
        print(f"  {reason:<24} {count:>6}  ({origins})", file=out)


def lines_of(paths: list[str]) -> Iterator[str]:
    """The lines of the files, in order ("-": standard input is not read: name files)."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as file:
            yield from file
