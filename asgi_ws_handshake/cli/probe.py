"""A handshake probe for any WebSocket endpoint: raw HTTP/1.1 upgrades over sockets, judged.

Owns building the battery of handshakes, sending them (plain or TLS, bounded in time and
bytes), verifying ``Sec-WebSocket-Accept`` and giving each case a verdict. Standard library
only, so it runs wherever the package is installed; the CLI prints what ``run_probe`` returns.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from ..key import accept_key

__all__ = [
    "FOREIGN_ORIGIN",
    "CaseResult",
    "ProbeError",
    "ProbeOptions",
    "ProbeReport",
    "Target",
    "format_report",
    "parse_target",
    "run_probe",
]

Verdict = Literal["pass", "warn", "fail"]
#: An origin no real server allows: the cross-site page of a CSWSH attack.
FOREIGN_ORIGIN = "https://cswsh-probe.invalid"
MAX_HEAD = 16 * 1024  # bytes of response head read at most
MAX_BODY = 2 * 1024  # bytes of response body kept at most
_RELEVANT = (
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "upgrade",
    "connection",
    "content-type",
    "retry-after",
)
_MANAGED = ("host", "upgrade", "connection", "origin", "sec-websocket-")
_SECRET_HEADERS = ("cookie", "authorization", "proxy-authorization")


class ProbeError(Exception):
    """The probe could not get an HTTP answer: ``kind`` is one of ``unreachable``, ``tls``,
    ``timeout``, ``closed``, ``not_http``, ``too_large`` or ``usage``."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to probe, parsed from a ``ws://`` or ``wss://`` URL."""

    url: str
    secure: bool
    host: str
    port: int
    #: Path and query, as sent in the request line.
    resource: str
    #: The Host header value (default port omitted).
    host_header: str
    #: The same-origin Origin a browser page on this host would send.
    origin: str


def parse_target(url: str) -> Target:
    """Parse a ``ws://`` / ``wss://`` URL.

    Raises:
        ProbeError: ``usage`` when the URL is not a WebSocket URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ProbeError("usage", f"expected a ws:// or wss:// URL, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ProbeError("usage", f"bad port in {url!r}") from None
    host = parts.hostname
    if not host:
        raise ProbeError("usage", f"no host in {url!r}")
    secure = parts.scheme == "wss"
    default = 443 if secure else 80
    port = port or default
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default else f"{shown}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    origin = f"{'https' if secure else 'http'}://{authority}"
    return Target(url, secure, host, port, resource, authority, origin)


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """How to probe.

    Args:
        origin: the Origin the server should accept (default: the target's own origin).
        subprotocols: subprotocols to offer in every case not about subprotocols.
        headers: extra request headers (cookies, tokens) sent in every case.
        timeout: seconds each connection may take, connect to last byte.
        insecure: skip TLS certificate verification.
        cafile: trust these CA certificates instead of the system store.
    """

    origin: str | None = None
    subprotocols: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0
    insecure: bool = False
    cafile: str | None = None


@dataclass(slots=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


@dataclass(slots=True)
class CaseResult:
    """One handshake of the battery: what was sent, what came back, the verdict."""

    name: str
    title: str
    #: Short form of what makes this case special (for the table).
    sent_summary: str
    #: The request's header lines, secrets redacted.
    sent: list[str]
    status: int | None = None
    reason: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    verdict: Verdict = "pass"
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "sent_summary": self.sent_summary,
            "sent": self.sent,
            "status": self.status,
            "reason": self.reason,
            "headers": self.headers,
            "body": self.body,
            "verdict": self.verdict,
            "why": self.why,
        }


@dataclass(slots=True)
class ProbeReport:
    """All cases against one target; ``ok`` when none failed."""

    target: Target
    origin: str
    cases: list[CaseResult]

    @property
    def ok(self) -> bool:
        return all(case.verdict != "fail" for case in self.cases)

    def counts(self) -> dict[str, int]:
        counts = {"pass": 0, "warn": 0, "fail": 0}
        for case in self.cases:
            counts[case.verdict] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.url,
            "origin": self.origin,
            "ok": self.ok,
            "summary": self.counts(),
            "cases": [case.to_dict() for case in self.cases],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def ssl_context(options: ProbeOptions) -> ssl.SSLContext:
    """The client TLS context: the system trust store unless ``cafile`` or ``insecure``."""
    context = ssl.create_default_context(cafile=options.cafile)
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])  # RFC 6455 is HTTP/1.1 only
    return context


def _close_frame() -> bytes:
    # RFC 6455 5.5.1: a masked close frame, status 1000, so the server is not left hanging.
    mask = os.urandom(4)
    payload = (1000).to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b"\x88\x82" + mask + masked


def exchange(
    target: Target, request: bytes, options: ProbeOptions, context: ssl.SSLContext | None
) -> Answer:
    """Send one raw request and read one response head (and a bounded body).

    Raises:
        ProbeError: unreachable, TLS failure, timeout, closed, not HTTP, head too large.
    """
    timeout = options.timeout
    deadline = time.monotonic() + timeout
    where = f"{target.host}:{target.port}"
    try:
        raw = socket.create_connection((target.host, target.port), timeout=timeout)
    except TimeoutError:
        raise ProbeError("timeout", f"no connection to {where} within {timeout:g}s") from None
    except socket.gaierror as exc:
        raise ProbeError("unreachable", f"cannot resolve {target.host!r}: {exc.strerror}") from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ProbeError("unreachable", f"cannot connect to {where}: {why}") from None
    sock: socket.socket = raw
    try:

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            return remaining

        try:
            if context is not None:
                raw.settimeout(left())
                sock = context.wrap_socket(raw, server_hostname=target.host)
            sock.settimeout(left())
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                sock.settimeout(left())
                chunk = sock.recv(4096)
                if not chunk:
                    if not data:
                        raise ProbeError("closed", f"{where} closed the connection unanswered")
                    break
                data += chunk
                if len(data) >= 8 and not data.startswith(b"HTTP/1."):
                    break
                if len(data) > MAX_HEAD:
                    raise ProbeError("too_large", f"{where} sent a head over {MAX_HEAD} bytes")
            answer = _parse_head(where, data)
            if answer.status == 101:
                try:
                    sock.settimeout(min(left(), 1.0))
                    sock.sendall(_close_frame())
                except OSError:
                    pass
                return answer
            rest = data.partition(b"\r\n\r\n")[2]
            length = answer.all("content-length")
            if len(length) == 1 and length[0].isdigit():
                wanted = min(int(length[0]), MAX_BODY)
                try:
                    while len(rest) < wanted:
                        sock.settimeout(left())
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        rest += chunk
                except (TimeoutError, OSError):
                    pass  # the head is what matters; a short body is kept as it is
                rest = rest[:wanted]
            answer.body = rest[:MAX_BODY]
            return answer
        except ssl.SSLCertVerificationError as exc:
            raise ProbeError(
                "tls",
                f"TLS certificate of {where} not trusted: {exc.verify_message}"
                " (use --cafile, or --insecure to skip verification)",
            ) from None
        except ssl.SSLError as exc:
            hint = " (not a TLS port? try ws://)" if exc.reason == "WRONG_VERSION_NUMBER" else ""
            raise ProbeError(
                "tls", f"TLS handshake with {where} failed: {exc.reason}{hint}"
            ) from None
        except TimeoutError:
            raise ProbeError("timeout", f"no answer from {where} within {timeout:g}s") from None
        except ConnectionError as exc:
            raise ProbeError("closed", f"{where} reset the connection: {exc}") from None
    finally:
        sock.close()


def _parse_head(where: str, data: bytes) -> Answer:
    head = data.partition(b"\r\n\r\n")[0]
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProbeError("not_http", f"{where} did not answer in HTTP/1.1: {data[:60]!r}")
    if b"\r\n\r\n" not in data:
        raise ProbeError("closed", f"{where} closed the connection mid-answer: {data[:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return Answer(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


# ---- the battery --------------------------------------------------------------------------

Expect = Literal["accept", "must_refuse", "should_refuse", "either"]


@dataclass(frozen=True, slots=True)
class _Case:
    name: str
    title: str
    expect: Expect
    #: Statuses a well-behaved server refuses with.
    statuses: tuple[int, ...]
    #: Fields: origin, key, version, protocol; a list repeats the header, None omits it.
    fields: dict[str, list[str] | None]
    why_refuse: str = ""
    why_accept: str = ""


def _battery(origin: str, offered: Sequence[str], valid_key: str) -> list[_Case]:
    protocols: list[str] | None = [", ".join(offered)] if offered else None
    base: dict[str, list[str] | None] = {
        "origin": [origin],
        "key": None,  # fresh per case
        "version": ["13"],
        "protocol": protocols,
    }
    first = offered[0] if offered else "chat"

    def case(
        name: str,
        title: str,
        expect: Expect,
        statuses: tuple[int, ...],
        why_accept: str = "",
        **changes: list[str] | None,
    ) -> _Case:
        return _Case(name, title, expect, statuses, {**base, **changes}, why_accept=why_accept)

    return [
        case("valid", "a valid handshake", "accept", ()),
        case(
            "foreign_origin",
            "a cross-site page (CSWSH)",
            "must_refuse",
            (403,),
            "accepted a foreign origin: open to cross-site WebSocket hijacking",
            origin=[FOREIGN_ORIGIN],
        ),
        case(
            "null_origin",
            "Origin: null (sandboxed iframe, file://)",
            "should_refuse",
            (403,),
            "accepts Origin: null, which any sandboxed iframe can send",
            origin=["null"],
        ),
        case("no_origin", "no Origin (a non-browser client)", "either", (403,), origin=None),
        case(
            "two_origins",
            "two Origin lines",
            "should_refuse",
            (400, 403),
            "accepted two Origin headers (smuggling: which one did it check?)",
            origin=[origin, FOREIGN_ORIGIN],
        ),
        case(
            "version_8",
            "Sec-WebSocket-Version: 8",
            "must_refuse",
            (426,),
            "accepted version 8; RFC 6455 4.2.2 requires 13",
            version=["8"],
        ),
        case(
            "version_missing",
            "no Sec-WebSocket-Version",
            "must_refuse",
            (400, 426),
            "accepted a handshake without a version",
            version=None,
        ),
        case(
            "key_missing",
            "no Sec-WebSocket-Key",
            "must_refuse",
            (400,),
            "accepted a handshake without a key",
            key=[],
        ),
        case(
            "key_short",
            "a key of 5 bytes",
            "must_refuse",
            (400,),
            "accepted a key that is not 16 bytes (RFC 6455 4.2.1 item 5)",
            key=["c2hvcnQ="],
        ),
        case(
            "key_not_base64",
            "a key that is not base64",
            "must_refuse",
            (400,),
            "accepted a key that is not base64 (RFC 6455 4.2.1 item 5)",
            key=["!!this-is-not-base64!!=="],
        ),
        case(
            "two_keys",
            "two Sec-WebSocket-Key lines",
            "must_refuse",
            (400,),
            "accepted two keys: which one did the Accept answer?",
            key=[_new_key(), _new_key()],
        ),
        case(
            "reused_key",
            "the valid case's key again",
            "should_refuse",
            (400,),
            "accepted a reused key (RFC 6455 4.1: a fresh nonce per connection)",
            key=[valid_key],
        ),
        case(
            "subprotocol_bad_token",
            "a subprotocol that is not a token",
            "should_refuse",
            (400,),
            "accepted a malformed Sec-WebSocket-Protocol (RFC 9110 5.6.2 token)",
            protocol=[f"{first}, bad@token"],
        ),
        case(
            "subprotocol_duplicate",
            "the same subprotocol twice",
            "should_refuse",
            (400,),
            "accepted a repeated subprotocol (RFC 6455 4.1 item 10: unique)",
            protocol=[f"{first}, {first}"],
        ),
        case(
            "subprotocol_unsupported",
            "only an unknown subprotocol",
            "either",
            (400,),
            protocol=["x-probe-unsupported"],
        ),
    ]


def _request(target: Target, case: _Case, key_list: list[str], options: ProbeOptions) -> bytes:
    fields = case.fields
    lines = [
        f"GET {target.resource} HTTP/1.1",
        f"Host: {target.host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
    ]
    lines += [f"Sec-WebSocket-Key: {k}" for k in key_list]
    lines += [f"Sec-WebSocket-Version: {v}" for v in fields["version"] or ()]
    lines += [f"Origin: {o}" for o in fields["origin"] or ()]
    lines += [f"Sec-WebSocket-Protocol: {p}" for p in fields["protocol"] or ()]
    lines += [f"{name}: {value}" for name, value in options.headers]
    lines.append("User-Agent: asgi-ws-handshake-probe")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _shown(request: bytes) -> list[str]:
    shown = []
    for line in request.decode("latin-1").split("\r\n"):
        if not line:
            continue
        name, sep, _ = line.partition(":")
        if sep and name.lower() in _SECRET_HEADERS:
            line = f"{name}: <redacted>"
        shown.append(line)
    return shown


def _summary(case: _Case, keys: list[str]) -> str:
    f = case.fields
    if case.name in ("valid", "reused_key"):
        return f"Origin: {(f['origin'] or ['-'])[0]}" + (
            " (same key again)" if case.name == "reused_key" else ""
        )
    if "origin" in case.name:
        values = f["origin"]
        return "no Origin" if values is None else " + ".join(f"Origin: {o}" for o in values)
    if "version" in case.name:
        return "no version" if f["version"] is None else f"Version: {f['version'][0]}"
    if "key" in case.name:
        return "no key" if not keys else " + ".join(f"Key: {k}" for k in keys)
    return f"Protocol: {(f['protocol'] or [''])[0]}"


def _judge_upgrade(answer: Answer, keys: list[str], offered: list[str]) -> tuple[Verdict, str]:
    """Check a 101 the way a client must (RFC 6455 4.1, the client's checks)."""
    accepts = answer.all("sec-websocket-accept")
    if len(keys) == 1:
        expected = accept_key(keys[0])
        if len(accepts) != 1:
            return "fail", f"{len(accepts)} Sec-WebSocket-Accept headers, expected 1"
        if accepts[0] != expected:
            return "fail", f"wrong Sec-WebSocket-Accept {accepts[0]!r}, expected {expected!r}"
    chosen = answer.all("sec-websocket-protocol")
    if chosen and (len(chosen) != 1 or chosen[0] not in offered):
        return "fail", f"selected subprotocol {', '.join(chosen)!r} was never offered"
    if [v.lower() for v in answer.all("upgrade")] != ["websocket"]:
        return "warn", "101 without 'Upgrade: websocket'"
    return "pass", ""


def _judge(case: _Case, answer: Answer, keys: list[str]) -> tuple[Verdict, str]:
    offered: list[str] = []
    for line in case.fields["protocol"] or ():
        offered += [p.strip() for p in line.split(",") if p.strip()]
    if answer.status == 101:
        verdict, problem = _judge_upgrade(answer, keys, offered)
        if case.expect == "must_refuse":
            return "fail", case.why_accept
        if verdict != "pass" and case.name != "two_keys":
            return verdict, problem
        if case.expect == "should_refuse":
            return "warn", case.why_accept
        if case.name == "valid":
            return "pass", "accepted; Sec-WebSocket-Accept matches the key sent"
        if case.name == "no_origin":
            return "pass", "accepted without Origin (non-browser clients; RFC 6455 4.1)"
        return "pass", "accepted without selecting the unknown subprotocol"
    refused = f"refused with {answer.status}"
    body = answer.body.decode("utf-8", "replace").strip().splitlines()
    if body and len(body[0]) <= 40:
        refused += f" ({body[0]})"
    if case.expect == "accept":
        return "fail", (
            f"the valid handshake was {refused}; other verdicts mean little: "
            "pass the --origin, --subprotocol or --header the server expects"
        )
    if case.expect == "either":
        return "pass", refused
    if answer.status in case.statuses:
        if case.name == "version_8" and answer.all("sec-websocket-version") != ["13"]:
            return "warn", f"{refused} without 'Sec-WebSocket-Version: 13' (RFC 6455 4.4)"
        return "pass", refused
    expected = " or ".join(map(str, case.statuses))
    return "warn", f"{refused}; {expected} expected"


def run_probe(url: str, options: ProbeOptions | None = None) -> ProbeReport:
    """Probe ``url`` with the whole battery.

    Raises:
        ProbeError: the target could not be probed at all (bad URL, unreachable, TLS failure,
            timeout or a non-HTTP answer to the valid handshake).
    """
    options = options or ProbeOptions()
    target = parse_target(url)
    for name, _ in options.headers:
        if name.lower().startswith(_MANAGED) or not name or ":" in name:
            raise ProbeError(
                "usage",
                f"header {name!r} is set by the probe (use --origin or --subprotocol)",
            )
    for protocol in options.subprotocols:
        if not protocol or "," in protocol:
            raise ProbeError("usage", f"bad subprotocol {protocol!r}")
    context = ssl_context(options) if target.secure else None
    origin = options.origin or target.origin
    valid_key = _new_key()
    results: list[CaseResult] = []
    for case in _battery(origin, options.subprotocols, valid_key):
        if case.name == "valid":
            keys = [valid_key]
        elif case.fields["key"] is not None:
            keys = list(case.fields["key"])
        else:
            keys = [_new_key()]
        request = _request(target, case, keys, options)
        result = CaseResult(case.name, case.title, _summary(case, keys), _shown(request))
        try:
            answer = exchange(target, request, options, context)
        except ProbeError as exc:
            if case.name == "valid":
                raise
            result.verdict, result.why = "warn", f"no answer: {exc}"
            results.append(result)
            continue
        result.status, result.reason = answer.status, answer.reason
        result.headers = {name: values for name in _RELEVANT if (values := answer.all(name))}
        result.body = answer.body[:200].decode("utf-8", "replace")
        result.verdict, result.why = _judge(case, answer, keys)
        results.append(result)
    return ProbeReport(target, origin, results)


def format_report(report: ProbeReport) -> str:
    """The report as a table for people."""
    rows = [("CASE", "SENT", "STATUS", "VERDICT", "WHY")]
    for case in report.cases:
        sent = case.sent_summary
        if len(sent) > 44:
            sent = sent[:41] + "..."
        status = "-" if case.status is None else str(case.status)
        rows.append((case.name, sent, status, case.verdict.upper(), case.why))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"probe {report.target.url}  (valid Origin: {report.origin})", ""]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:4])]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    counts = report.counts()
    verdict = "OK" if report.ok else "FAILED"
    lines.append("")
    lines.append(
        f"{len(report.cases)} cases: {counts['pass']} pass, {counts['warn']} warn, "
        f"{counts['fail']} fail: {verdict}"
    )
    return "\n".join(lines)
