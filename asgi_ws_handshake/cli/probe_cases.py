"""The probe's battery: which raw handshakes are sent, and how each request is written.

Owns the cases (the valid handshake, a foreign origin, ``null``, the lookalikes from
``probe_origins``, versions, keys, subprotocols), what a protected server answers to each,
the message a 101 earns, and the request bytes (secrets redacted when shown). Judging the
answers is ``probe_judge``'s; sockets are ``probe_wire``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from .probe_origins import FOREIGN_ORIGIN, Origin, Skipped, lookalikes
from .probe_wire import ProbeOptions, Target, new_key

__all__ = ["VERSION_CASES", "Case", "Expect", "battery", "render_request", "shown"]

#: ``accept``: a 101 is expected; ``must_refuse``: a 101 fails; ``should_refuse``: a 101
#: warns; ``either``: both answers are fine.
Expect = Literal["accept", "must_refuse", "should_refuse", "either"]
VERSION_CASES = ("version_99", "version_8", "version_list", "version_missing")
_SECRET_HEADERS = ("cookie", "authorization", "proxy-authorization")
# RFC 6455 4.2.1 (400 for a malformed handshake), 4.2.2 /version/ ("such as 426"), 4.4 (400).
_REFUSE_VERSION = (400, 426)


@dataclass(frozen=True, slots=True)
class Case:
    """One handshake of the battery. A header tuple repeats the line; None omits it."""

    name: str
    group: str
    title: str
    expect: Expect
    #: Statuses a well-behaved server refuses with.
    statuses: tuple[int, ...]
    summary: str
    origin: tuple[str, ...] | None
    #: None: one fresh key at send time.
    keys: tuple[str, ...] | None
    version: tuple[str, ...] | None
    protocol: tuple[str, ...] | None
    #: The verdict's message when the server answers 101 where it should refuse.
    why_accept: str = ""
    #: Stable code of the weak check a 101 reveals (lookalike origins).
    pattern: str = ""
    #: The parent domain (the suffix and sibling lookalikes).
    parent: str = ""


def battery(
    valid_origin: str, parsed: Origin | None, offered: Sequence[str], valid_key: str
) -> tuple[list[Case], list[Skipped]]:
    """Every case for this target, in sending order, and the lookalikes skipped."""
    first = offered[0] if offered else "chat"
    valid = Case(
        name="valid",
        group="handshake",
        title="a valid handshake",
        expect="accept",
        statuses=(),
        summary=f"Origin: {valid_origin}",
        origin=(valid_origin,),
        keys=(valid_key,),
        version=("13",),
        protocol=(", ".join(offered),) if offered else None,
    )

    def origin(name: str, title: str, expect: Expect, value: str, why: str, pattern: str) -> Case:
        return replace(
            valid, name=name, group="origin", title=title, expect=expect, statuses=(403,),
            summary=f"Origin: {value}", origin=(value,), keys=None, why_accept=why,
            pattern=pattern,
        )  # fmt: skip

    def version(name: str, title: str, expect: Expect, value: str | None, why: str) -> Case:
        return replace(
            valid, name=name, group="version", title=title, expect=expect,
            statuses=_REFUSE_VERSION, summary=f"Version: {value}" if value else "no version",
            keys=None, version=None if value is None else (value,), why_accept=why,
        )  # fmt: skip

    def key(name: str, title: str, expect: Expect, keys: tuple[str, ...], why: str) -> Case:
        summary = " + ".join(f"Key: {k}" for k in keys) if keys else "no key"
        if keys == (valid_key,):
            summary = f"Origin: {valid_origin} (same key again)"
        return replace(
            valid, name=name, group="key", title=title, expect=expect, statuses=(400,),
            summary=summary, keys=keys, why_accept=why,
        )  # fmt: skip

    def protocol(name: str, title: str, expect: Expect, value: str, why: str = "") -> Case:
        return replace(
            valid, name=name, group="subprotocol", title=title, expect=expect, statuses=(400,),
            summary=f"Protocol: {value}", keys=None, protocol=(value,), why_accept=why,
        )  # fmt: skip

    found, skipped = lookalikes(parsed)
    no_origin = origin("no_origin", "no Origin (a non-browser client)", "either", "", "", "")
    two_origins = (valid_origin, FOREIGN_ORIGIN)
    cases = [
        valid,
        origin(
            "foreign_origin", "a cross-site page (CSWSH)", "must_refuse", FOREIGN_ORIGIN,
            "accepted a foreign origin: no origin check, open to cross-site WebSocket "
            "hijacking", "no_origin_check",
        ),
        origin(
            "null_origin", "Origin: null (sandboxed iframe, file://)", "must_refuse", "null",
            "accepted Origin: null, which any page can send from a sandboxed iframe: as open "
            "as accepting every origin", "null_allowed",
        ),
        *(
            replace(
                origin(o.name, o.title, o.expect, o.origin, o.why_accept, o.pattern),
                parent=o.parent,
            )
            for o in found
        ),
        replace(no_origin, summary="no Origin", origin=None),
        replace(
            origin(
                "two_origins", "two Origin lines", "should_refuse", FOREIGN_ORIGIN,
                "accepted two Origin headers (smuggling: which one did it check?)", "",
            ),
            statuses=(400, 403), summary=" + ".join(f"Origin: {o}" for o in two_origins),
            origin=two_origins,
        ),
        version(
            "version_99", "Sec-WebSocket-Version: 99", "must_refuse", "99",
            "accepted version 99, which no WebSocket protocol defines (RFC 6455 11.6 "
            "registry: 13, and 0-8 for drafts)",
        ),
        # A 101 to version 8 is judged against what the server advertises (probe_judge).
        version(
            "version_8", "Sec-WebSocket-Version: 8 (drafts 08-12)", "should_refuse", "8",
            "accepted version 8",
        ),
        version(
            "version_list", "Sec-WebSocket-Version: 13, 8 (one line)", "must_refuse", "13, 8",
            "accepted 'Sec-WebSocket-Version: 13, 8': a client sends exactly one version "
            "(RFC 6455 4.3 Sec-WebSocket-Version-Client = version; 11.3.5)",
        ),
        version(
            "version_missing", "no Sec-WebSocket-Version", "must_refuse", None,
            "accepted a handshake without a version (RFC 6455 4.2.1 item 6)",
        ),
        key(
            "key_missing", "no Sec-WebSocket-Key", "must_refuse", (),
            "accepted a handshake without a key (RFC 6455 4.2.1 item 5)",
        ),
        key(
            "key_short", "a key of 5 bytes", "must_refuse", ("c2hvcnQ=",),
            "accepted a key that is not 16 bytes (RFC 6455 4.2.1 item 5)",
        ),
        key(
            "key_not_base64", "a key that is not base64", "must_refuse",
            ("!!this-is-not-base64!!==",),
            "accepted a key that is not base64 (RFC 6455 4.2.1 item 5)",
        ),
        key(
            "two_keys", "two Sec-WebSocket-Key lines", "must_refuse", (new_key(), new_key()),
            "accepted two keys: which one did the Accept answer? (RFC 6455 11.3.1)",
        ),
        key(
            "reused_key", "the valid case's key again", "should_refuse", (valid_key,),
            "accepted a reused key (RFC 6455 4.1: a fresh nonce per connection)",
        ),
        protocol(
            "subprotocol_bad_token", "a subprotocol that is not a token", "should_refuse",
            f"{first}, bad@token",
            "accepted a malformed Sec-WebSocket-Protocol (RFC 9110 5.6.2 token)",
        ),
        protocol(
            "subprotocol_duplicate", "the same subprotocol twice", "should_refuse",
            f"{first}, {first}",
            "accepted a repeated subprotocol (RFC 6455 4.1 item 10: unique)",
        ),
        protocol(
            "subprotocol_unsupported", "only an unknown subprotocol", "either",
            "x-probe-unsupported",
        ),
    ]  # fmt: skip
    return cases, skipped


def render_request(target: Target, case: Case, keys: Sequence[str], options: ProbeOptions) -> bytes:
    """The raw HTTP/1.1 upgrade request for ``case`` (RFC 6455 4.1)."""
    lines = [
        f"GET {target.resource} HTTP/1.1",
        f"Host: {target.host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
    ]
    lines += [f"Sec-WebSocket-Key: {k}" for k in keys]
    lines += [f"Sec-WebSocket-Version: {v}" for v in case.version or ()]
    lines += [f"Origin: {o}" for o in case.origin or ()]
    lines += [f"Sec-WebSocket-Protocol: {p}" for p in case.protocol or ()]
    lines += [f"{name}: {value}" for name, value in options.headers]
    lines.append("User-Agent: asgi-ws-handshake-probe")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def shown(request: bytes) -> list[str]:
    """The request's lines for a report: Cookie and Authorization values redacted."""
    out = []
    for line in request.decode("latin-1").split("\r\n"):
        if not line:
            continue
        name, sep, _ = line.partition(":")
        if sep and name.lower() in _SECRET_HEADERS:
            line = f"{name}: <redacted>"
        out.append(line)
    return out
