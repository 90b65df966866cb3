"""The probe's verdicts: each answer judged on its own, then against the other answers.

Owns the verdict of every case (``judge``), the second look across answers (``explain``: a
lookalike accepted by a server that accepts every origin reveals no particular weak check, a
version is weighed against what the server advertises) and the reason nothing can be judged
when the valid handshake is not accepted (``unjudgeable``). The cases are ``probe_cases``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..key import accept_key
from .probe_cases import VERSION_CASES, Case, Expect
from .probe_wire import Answer, ProbeError

__all__ = [
    "CaseResult",
    "Verdict",
    "advertised_versions",
    "explain",
    "judge",
    "unanswered",
    "unjudgeable",
]

#: "error" only on the valid case, when the answer to it leaves nothing to judge.
Verdict = Literal["pass", "warn", "fail", "error"]
# Statuses WebSocket servers refuse a handshake with (RFC 6455 4.2.1, 4.2.2, 10.2; RFC 6585).
_REFUSALS = (400, 401, 403, 426, 429, 503)


@dataclass(slots=True)
class CaseResult:
    """One handshake of the battery: what was sent, what came back, the verdict."""

    name: str
    group: str
    title: str
    expect: Expect
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
    #: The weak check a 101 revealed (a stable code), or "".
    pattern: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "title": self.title,
            "expect": self.expect,
            "sent_summary": self.sent_summary,
            "sent": self.sent,
            "status": self.status,
            "reason": self.reason,
            "headers": self.headers,
            "body": self.body,
            "verdict": self.verdict,
            "why": self.why,
            "pattern": self.pattern or None,
        }


def _judge_upgrade(answer: Answer, keys: Sequence[str], offered: list[str]) -> tuple[Verdict, str]:
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


def _body_line(answer: Answer) -> str:
    """The first line of a short plain-text body (a reason code, a status text), else ""."""
    kind = answer.all("content-type")
    if kind and not kind[0].lower().startswith("text/plain"):
        return ""
    body = answer.body.decode("utf-8", "replace").strip().splitlines()
    return body[0] if body and len(body[0]) <= 40 else ""


def _refused(answer: Answer) -> str:
    """``refused with 403 (origin_not_allowed)``: the status and a short first body line."""
    line = _body_line(answer)
    return f"refused with {answer.status}" + (f" ({line})" if line else "")


def _versions(values: Sequence[str]) -> list[str]:
    """The versions listed in response ``Sec-WebSocket-Version`` lines (RFC 6455 4.3
    ``Sec-WebSocket-Version-Server = 1#version``), in order, once each."""
    out: list[str] = []
    for value in values:
        out += [v for v in (p.strip() for p in value.split(",")) if v and v not in out]
    return out


def judge(case: Case, answer: Answer, keys: Sequence[str]) -> tuple[Verdict, str, str]:
    """The verdict, its reason and the weak-check pattern for one answer, on its own."""
    offered: list[str] = []
    for line in case.protocol or ():
        offered += [p.strip() for p in line.split(",") if p.strip()]
    if answer.status == 101:
        verdict, problem = _judge_upgrade(answer, keys, offered)
        if case.expect == "must_refuse":
            return "fail", case.why_accept, case.pattern
        if verdict != "pass" and case.name != "two_keys":
            return verdict, problem, ""
        if case.expect == "should_refuse":
            return "warn", case.why_accept, case.pattern
        if case.name == "valid":
            return "pass", "accepted; Sec-WebSocket-Accept matches the key sent", ""
        if case.name == "no_origin":
            return "pass", "accepted without Origin (non-browser clients; RFC 6455 4.1)", ""
        return "pass", "accepted without selecting the unknown subprotocol", ""
    text = _refused(answer)
    if case.expect == "either":
        return "pass", text, ""
    if answer.status not in case.statuses:
        expected = " or ".join(map(str, case.statuses))
        return "warn", f"{text}; {expected} expected", ""
    if case.name in ("version_99", "version_8"):
        advertised = _versions(answer.all("sec-websocket-version"))
        if not advertised:
            # RFC 6455 4.2.2 /version/ and 4.4: a server refusing a version MUST list the
            # versions it speaks.
            return "warn", f"{text} without the Sec-WebSocket-Version it speaks (RFC 6455 4.4)", ""
        if "13" not in advertised:
            return "warn", f"{text}, advertising {', '.join(advertised)} but not 13", ""
        return "pass", f"{text}, advertising {', '.join(advertised)}", ""
    return "pass", text, ""


def advertised_versions(results: Sequence[CaseResult]) -> list[str]:
    """What the server says it speaks, from its refusals of the version cases."""
    values: list[str] = []
    for result in results:
        if result.name in VERSION_CASES and result.status not in (None, 101):
            values += result.headers.get("sec-websocket-version", [])
    return _versions(values)


def explain(cases: Sequence[Case], results: list[CaseResult]) -> None:
    """Judge accepted cases against the other answers, in place.

    A server that accepts a foreign origin accepts every lookalike for that reason alone; a
    suffix lookalike under a parent domain whose other hosts are accepted too reveals a
    wildcard, not a missing dot; version 8 is weighed against what the server advertises.
    """
    by_name = {result.name: result for result in results}
    why_accept = {case.name: case.why_accept for case in cases}

    def accepted(name: str) -> bool:
        # A 101 judged as an acceptance (not as a broken 101: a wrong Accept stays a fail).
        found = by_name.get(name)
        return found is not None and found.status == 101 and found.why == why_accept[name]

    if accepted("foreign_origin"):
        for result in results:
            if result.pattern and result.name != "foreign_origin" and accepted(result.name):
                result.pattern = "no_origin_check"
                result.why = "accepted, as it accepts any origin (see foreign_origin)"
    elif accepted("origin_suffix") and accepted("origin_sibling"):
        suffix = by_name["origin_suffix"]
        parent = next(case.parent for case in cases if case.name == "origin_suffix")
        # evil<host> lies under <parent>, which the server accepts hosts under anyway.
        suffix.verdict, suffix.pattern = "warn", "parent_wildcard"
        suffix.why = (
            f"accepted, as is any host under {parent} (see origin_sibling): a wildcard over "
            "the parent domain, or a suffix check without a dot boundary"
        )
    if accepted("version_8"):
        result = by_name["version_8"]
        advertised = advertised_versions(results)
        if "8" in advertised:
            said = f"which it advertises ({', '.join(advertised)})"
        elif advertised:
            said = f"though it advertises only {', '.join(advertised)}"
        else:
            said = "advertising nothing"
        result.verdict, result.pattern = "warn", ""
        result.why = (
            f"accepted version 8 (hybi drafts 08-12), {said}: RFC 6455 4.4 lets a server "
            "speak several versions; fine if it speaks that draft's framing"
        )


def unjudgeable(url: str, answer: Answer) -> tuple[str, str]:
    """Why nothing can be judged when the valid handshake got ``answer`` instead of a 101:
    ``(kind, message)``, kind ``refused`` (a WebSocket server said no) or ``not_websocket``."""
    head = f"{url} answered the valid handshake with {answer.status} {answer.reason}".rstrip()
    if line := _body_line(answer):
        head += f" ({line})"
    advertised = _versions(answer.all("sec-websocket-version"))
    if answer.status == 426 and advertised and "13" not in advertised:
        return "refused", f"{head}: it speaks version {', '.join(advertised)}, not 13"
    websocket_headers = any(name.lower().startswith("sec-websocket-") for name, _ in answer.headers)
    if answer.status in _REFUSALS or websocket_headers:
        return "refused", (
            f"{head}: pass the --origin, --subprotocol or --header (cookie, token) it expects; "
            "no other answer can be judged before it accepts one handshake"
        )
    where = answer.all("location")
    moved = f"; it redirects to {where[0]!r}" if 300 <= answer.status < 400 and where else ""
    return "not_websocket", (
        f"{head}, not 101 Switching Protocols: not a WebSocket endpoint (a plain HTTP server, "
        f"or the wrong path?){moved}"
    )


def unanswered(error: ProbeError) -> tuple[Verdict, str]:
    """The verdict on a case (not the valid one) that got no HTTP answer."""
    if error.kind == "closed":
        # RFC 6455 10.7: a server MAY drop the connection of a handshake it does not expect.
        return "pass", f"closed without an answer, a refusal (RFC 6455 10.7): {error}"
    return "warn", f"no answer: {error}"
