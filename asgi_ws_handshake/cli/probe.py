"""A handshake probe for any WebSocket endpoint: raw HTTP/1.1 upgrades over sockets, judged.

Owns running the battery against one target and the report: its overall result, its exit
status under ``--fail-on``, the table for people and the versioned JSON for machines
(``SCHEMA``). The cases are ``probe_cases``'s (lookalike origins: ``probe_origins``), the
verdicts ``probe_judge``'s, the sockets ``probe_wire``'s. Standard library only, so it runs
wherever the package is installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .probe_cases import battery, render_request, shown
from .probe_judge import (
    CaseResult,
    advertised_versions,
    explain,
    judge,
    unanswered,
    unjudgeable,
)
from .probe_origins import FOREIGN_ORIGIN, Skipped, parse_origin
from .probe_wire import (
    ProbeError,
    ProbeOptions,
    Target,
    exchange,
    new_key,
    parse_target,
    ssl_context,
)

__all__ = [
    "FOREIGN_ORIGIN",
    "SCHEMA",
    "CaseResult",
    "FailOn",
    "ProbeError",
    "ProbeOptions",
    "ProbeReport",
    "Target",
    "error_document",
    "format_report",
    "parse_target",
    "run_probe",
]

#: The JSON document's ``schema``; the number changes when a field changes meaning or goes.
SCHEMA = "asgi-ws-handshake/probe/2"
#: The least verdict that makes the exit status 1.
FailOn = Literal["warn", "fail"]
Result = Literal["pass", "warn", "fail", "error"]
_MANAGED = ("host", "upgrade", "connection", "origin", "sec-websocket-")
_RELEVANT = (
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "upgrade",
    "connection",
    "content-type",
    "location",
    "retry-after",
)


@dataclass(frozen=True, slots=True)
class Unjudged:
    """Why nothing could be judged: ``kind`` ``refused`` or ``not_websocket``."""

    kind: str
    message: str


@dataclass(slots=True)
class ProbeReport:
    """All cases against one target.

    ``error`` is set when the valid handshake was not accepted: then ``cases`` holds only
    the valid case and nothing else was sent.
    """

    target: Target
    origin: str
    cases: list[CaseResult]
    skipped: list[Skipped] = field(default_factory=list)
    #: What the server listed in Sec-WebSocket-Version when refusing a version case.
    advertised_versions: list[str] = field(default_factory=list)
    error: Unjudged | None = None

    @property
    def ok(self) -> bool:
        """Judged, and no case failed."""
        return self.result in ("pass", "warn")

    @property
    def result(self) -> Result:
        """``error`` when nothing could be judged, else the worst verdict."""
        if self.error is not None:
            return "error"
        verdicts = {case.verdict for case in self.cases}
        return "fail" if "fail" in verdicts else "warn" if "warn" in verdicts else "pass"

    def exit_status(self, fail_on: FailOn = "fail") -> int:
        """0, 1 when a verdict at or above ``fail_on`` was given, 2 when nothing was judged."""
        result = self.result
        if result == "error":
            return 2
        return 1 if result == "fail" or (result == "warn" and fail_on == "warn") else 0

    def counts(self) -> dict[str, int]:
        counts = {"pass": 0, "warn": 0, "fail": 0, "error": 0}
        for case in self.cases:
            counts[case.verdict] += 1
        return counts

    def to_dict(self, fail_on: FailOn = "fail") -> dict[str, Any]:
        """The JSON document (README "probe", schema ``asgi-ws-handshake/probe/2``)."""
        error = self.error
        return {
            "schema": SCHEMA,
            "target": self.target.url,
            "origin": self.origin,
            "fail_on": fail_on,
            "result": self.result,
            "exit_status": self.exit_status(fail_on),
            "error": None if error is None else {"kind": error.kind, "message": error.message},
            "advertised_versions": self.advertised_versions,
            "summary": {**self.counts(), "skipped": len(self.skipped)},
            "cases": [case.to_dict() for case in self.cases],
            "skipped": [
                {"name": skip.name, "title": skip.title, "why": skip.why} for skip in self.skipped
            ],
        }

    def to_json(self, fail_on: FailOn = "fail") -> str:
        return json.dumps(self.to_dict(fail_on), indent=2)


def error_document(url: str, error: ProbeError, fail_on: FailOn = "fail") -> dict[str, Any]:
    """The JSON document when the target could not be probed at all (same fields)."""
    return {
        "schema": SCHEMA,
        "target": url,
        "origin": None,
        "fail_on": fail_on,
        "result": "error",
        "exit_status": 2,
        "error": {"kind": error.kind, "message": str(error)},
        "advertised_versions": [],
        "summary": {"pass": 0, "warn": 0, "fail": 0, "error": 0, "skipped": 0},
        "cases": [],
        "skipped": [],
    }


def run_probe(url: str, options: ProbeOptions | None = None) -> ProbeReport:
    """Probe ``url`` with the whole battery.

    Returns:
        The report; with ``error`` set (and only the valid case) when the valid handshake
        was answered with something else than 101.

    Raises:
        ProbeError: the target could not be probed at all (bad URL or options, unreachable,
            TLS failure, timeout or a non-HTTP answer to the valid handshake).
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
    origin = options.origin or target.origin
    try:
        parsed = parse_origin(origin)
    except ValueError as exc:
        raise ProbeError("usage", f"bad --origin: {exc}") from None
    context = ssl_context(options) if target.secure else None
    cases, skipped = battery(origin, parsed, options.subprotocols, new_key())
    results: list[CaseResult] = []
    for case in cases:
        keys = list(case.keys) if case.keys is not None else [new_key()]
        request = render_request(target, case, keys, options)
        result = CaseResult(
            case.name, case.group, case.title, case.expect, case.summary, shown(request)
        )
        results.append(result)
        try:
            answer = exchange(target, request, options, context)
        except ProbeError as exc:
            if case.name == "valid":
                raise
            result.verdict, result.why = unanswered(exc)
            continue
        result.status, result.reason = answer.status, answer.reason
        result.headers = {name: values for name in _RELEVANT if (values := answer.all(name))}
        result.body = answer.body[:200].decode("utf-8", "replace")
        if case.name == "valid" and answer.status != 101:
            # Every other verdict compares against an accepted valid handshake.
            kind, message = unjudgeable(target.url, answer)
            result.verdict, result.why = "error", message
            return ProbeReport(target, origin, results, error=Unjudged(kind, message))
        result.verdict, result.why, result.pattern = judge(case, answer, keys)
    explain(cases, results)
    return ProbeReport(target, origin, results, skipped, advertised_versions(results))


def format_report(report: ProbeReport, fail_on: FailOn = "fail") -> str:
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
    lines.append("")
    lines += [f"skipped {skip.name}: {skip.why}" for skip in report.skipped]
    if report.advertised_versions:
        lines.append(f"advertised versions: {', '.join(report.advertised_versions)}")
    counts = report.counts()
    if report.error is not None:
        verdict = f"CANNOT JUDGE ({report.error.kind})"
    elif report.exit_status(fail_on) == 1:
        verdict = "FAILED" + (" (--fail-on warn)" if report.result == "warn" else "")
    else:
        verdict = "OK"
    total = len(report.cases)
    lines.append(
        f"{total} case{'s' if total != 1 else ''}: {counts['pass']} pass, {counts['warn']} warn, "
        f"{counts['fail']} fail: {verdict}"
    )
    return "\n".join(lines)
