"""Run every benchmark, print their tables, and optionally write README's performance section.

    python -m benchmarks.run_all [--quick] [--json PATH] [--readme [PATH]]

``--readme`` rewrites only the text between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` (default: this checkout's README.md) with a summary table, the
machine and the command that reproduces it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import (
    handshakes,
    inprocess,
    instructions,
    memory,
    messages,
    server_instructions,
)
from benchmarks.common import ROOT, machine, parser, table, verdict

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
COMMAND = "python -m benchmarks.run_all --readme"


#: name -> (run with the module's full or quick settings, render)
STEPS: dict[str, tuple[Callable[[bool], dict[str, Any]], Callable[[dict[str, Any]], str]]] = {
    "inprocess": (
        lambda quick: inprocess.run(*(inprocess.QUICK if quick else inprocess.FULL)),
        inprocess.render,
    ),
    "instructions": (
        lambda quick: instructions.run(
            *(instructions.QUICK if quick else instructions.FULL),
            instructions.QUICK_VARIANTS if quick else tuple(instructions.VARIANTS),
        ),
        instructions.render,
    ),
    "server_instructions": (
        lambda quick: server_instructions.run(
            *(server_instructions.QUICK if quick else server_instructions.FULL)
        ),
        server_instructions.render,
    ),
    "handshakes": (
        lambda quick: handshakes.run(*(handshakes.QUICK if quick else handshakes.FULL)),
        handshakes.render,
    ),
    "messages": (
        lambda quick: messages.run(*(messages.QUICK if quick else messages.FULL)),
        messages.render,
    ),
    "memory": (
        lambda quick: memory.run(*(memory.QUICK if quick else memory.FULL)),
        memory.render,
    ),
}


def run_all(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "quick": quick}
    for name, (step, render) in STEPS.items():
        result = step(quick)
        results[name] = result
        print(render(result), end="\n\n", flush=True)
    return results


def reference_rows(result: dict[str, Any], what: str) -> list[list[str]]:
    """Channels' ratio in the same run, and the control's (the same app twice)."""
    rows = []
    if "channels_rate_ratio" in result:
        rows.append(
            [
                f"  {what}, Channels OriginValidator / bare (same run)",
                f"paired ratio {result['channels_rate_ratio']:.3f}, "
                f"server CPU x{result['channels_cpu_ratio']:.3f}",
                "",
            ]
        )
    rows.append(
        [
            f"  {what}, control: bare / bare (the run's resolution)",
            f"paired ratio {result['control_rate_ratio']:.3f}, "
            f"server CPU x{result['control_cpu_ratio']:.3f}",
            "",
        ]
    )
    return rows


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _at_most(value: float, target: float) -> str:
    return f"<= {target}: {verdict(value <= target)}"


def instruction_rows(ins: dict[str, Any], ip: dict[str, Any]) -> list[list[str]]:
    """The in-process rows: instructions (deterministic) with the wall clock of the same run."""
    added, med = ins["added"], ip["us_per_call"]
    rows: list[list[str]] = [
        [
            "added per accepted handshake: asgi-ws-handshake (full policy, key store, "
            "event kept in a MemorySink)",
            f"{_n(added['ours'])} instructions; {ip['ours_added_us']:.2f} µs",
            "",
        ]
    ]
    if "channels" in added:
        rows.append(
            [
                "added per accepted handshake: Channels' OriginValidator (origin only)",
                f"{_n(added['channels'])} instructions; {ip['channels_added_us']:.2f} µs",
                "",
            ]
        )
        ratio = ins["ratio_to_channels"]
        rows.append(
            [
                "**ours / Channels, instructions**",
                f"**{ratio:.2f}**",
                _at_most(ratio, 0.5),
            ]
        )
        wall = ip["ratio_to_channels"]
        rows.append(
            [
                "ours / Channels, wall clock (same run)",
                f"{wall:.2f}",
                f"<= 0.5: {verdict(wall <= 0.5)}",
            ]
        )
    if "fresh_ratio_to_channels" in ins:
        rows.append(
            [
                "the same, fresh header objects as servers build them: ours, Channels",
                f"{_n(added['fresh_ours'])} and {_n(added['fresh_channels'])} instructions "
                f"= {ins['fresh_ratio_to_channels']:.2f}x; wall clock "
                f"{ip['fresh_ratio_to_channels']:.2f}x",
                "",
            ]
        )
    if "channels_cold" in med:
        rows.append(
            [
                "the same, wall clock with cold CPU caches: ours, Channels",
                f"{ip['ours_cold_added_us']:.1f} µs, {ip['channels_cold_added_us']:.1f} µs "
                f"= {ip['ratio_to_channels_cold']:.2f}x",
                "",
            ]
        )
    if "floor_ratio_to_channels" in ins:
        rows.append(
            [
                "floor: the mandatory steps inlined, no safety (benchmarks/floor.py, not usable)",
                f"{_n(added['floor'])} instructions = {ins['floor_ratio_to_channels']:.2f}x "
                "Channels",
                "",
            ]
        )
    if "ours_refused" in added:
        rows.append(
            [
                "refused handshake (403, app not called), over the bare app's accept",
                f"{_n(added['ours_refused'])} instructions; {med['ours_refused']:.2f} µs in all",
                "",
            ]
        )
    if "http_ratio_to_class" in ins:
        ratio = ins["http_ratio_to_class"]
        rows.append(
            [
                "http scope passing through, added",
                f"{_n(added['http_ours'])} instructions = {ratio:.2f}x a do-nothing "
                f"middleware class ({_n(added['http_class'])}); {ip['http_added_us']:.2f} µs",
                f"<= one class: {verdict(ratio <= 1.0)}",
            ]
        )
    return rows


def server_rows(si: dict[str, Any], hs: dict[str, Any]) -> list[list[str]]:
    """End to end through uvicorn: server instructions per connection, then the wall clock."""
    per, added = si["per_connection"], si.get("added", {})
    rows: list[list[str]] = [
        [
            f"server instructions per connection through {si['server']}: bare app "
            "(uvicorn's own work)",
            _n(per["bare"]),
            "",
        ]
    ]
    for name, label in (("guarded", "asgi-ws-handshake"), ("channels", "Channels")):
        if name in added:
            rows.append(
                [
                    f"  added by {label}",
                    f"{_n(added[name])} (+{si['added_fraction'][name]:.1%} of uvicorn's)",
                    "",
                ]
            )
    if "ratio_to_channels" in si:
        ratio = si["ratio_to_channels"]
        rows.append(
            [
                "  ours / Channels, server instructions",
                f"{ratio:.2f}",
                f"<= 0.5: {verdict(ratio <= 0.5)}",
            ]
        )
    rows.append(
        [
            f"handshakes/s through {hs['server']}, guarded / bare",
            f"{hs['per_second']['guarded']:.0f} and {hs['per_second']['bare']:.0f}/s (medians); "
            f"paired ratio {hs['rate_ratio']:.3f}, server CPU x{hs['cpu_ratio']:.3f} "
            f"({hs['server_cpu_us']['guarded']:.0f} and {hs['server_cpu_us']['bare']:.0f} µs "
            "per handshake)",
            f">= 0.98: {verdict(hs['rate_ratio'] >= 0.98)}",
        ]
    )
    rows.extend(reference_rows(hs, "handshakes/s"))
    return rows


def summary(results: dict[str, Any]) -> str:
    """The README table: one row per target, plus the facts behind it."""
    rows = instruction_rows(results["instructions"], results["inprocess"])
    rows.extend(server_rows(results["server_instructions"], results["handshakes"]))
    ms = results["messages"]
    rows.append(
        [
            "echo messages/s after accept, guarded / bare",
            f"{ms['per_second']['guarded']:.0f} and {ms['per_second']['bare']:.0f}/s (medians); "
            f"paired ratio {ms['rate_ratio']:.3f}, server CPU x{ms['cpu_ratio']:.3f}",
            f">= 0.99: {verdict(ms['rate_ratio'] >= 0.99)}",
        ]
    )
    rows.extend(reference_rows(ms, "messages/s"))
    burst = results["memory"]["burst"]
    rows.append(
        [
            f"MemoryStore at its bound after churn (max_keys={burst['max_keys']:,}, "
            f"{burst['keys_sent']:,} distinct keys)",
            f"{burst['held']:,} keys held in {burst['retained_bytes'] / 2**20:.1f} MiB = "
            f"{burst['bytes_per_held_key']:.0f} B per key (key string included)",
            "",
        ]
    )
    return table(["measure", "result", "target"], rows)


def breakdown(ins: dict[str, Any]) -> str | None:
    """Where an accepted handshake's instructions go (``benchmarks.steps``), when measured."""
    added = ins["added"]
    if "ours" not in added or "middleware_own" not in ins:
        return None
    total = added["ours"]
    parts = [
        ("reading the scope: `HandshakeRequest.from_scope`", added["step_scope"]),
        ("the policy: `evaluate`", added["step_evaluate"]),
        ("the record and the key store: `StoreChecks.check`", added["step_store"]),
        ("the clock and the event: `AuditEvent.build` into the `MemorySink`", added["step_event"]),
        ("the middleware's own (everything else in `middleware.py`)", ins["middleware_own"]),
    ]
    rows = [[label, _n(value), f"{value / total:.0%}"] for label, value in parts]
    rows.append(["total added (ours, above)", _n(total), "100%"])
    return table(["step of an accepted handshake", "instructions", "share"], rows)


def readme_section(results: dict[str, Any]) -> str:
    m = results["machine"]
    return "\n".join(
        [
            f"Measured on {m['cpu']}, {m['cores']} cores, {m['implementation']} {m['python']}, "
            f"{m['system']}; a shared machine, so ratios (variants alternated within one run, "
            "paired medians over rounds; end to end, fresh server processes per session and a "
            "control server) mean more than absolute numbers.",
            "",
            summary(results),
            "",
            *(
                [
                    "Where an accepted handshake's instructions go (the same run's `step_*` "
                    "variants: the middleware's steps added to the bare app one at a time, "
                    "each counted against the one before; see below):",
                    "",
                    part,
                    "",
                ]
                if (part := breakdown(results["instructions"])) is not None
                else []
            ),
            f"Reproduce with `{COMMAND}` (each `benchmarks/*.py` also runs alone, "
            "`--quick` for a smoke run, `--json PATH` for raw numbers).",
        ]
    )


def write_readme(path: Path, section: str) -> None:
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: markers {START} ... {END} not found")
    path.write_text(text[: start + len(START)] + "\n" + section + "\n" + text[end:])


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument(
        "--readme", nargs="?", const=str(ROOT / "README.md"), help="rewrite README's section"
    )
    args = p.parse_args(argv)
    results = run_all(args.quick)
    section = readme_section(results)
    print(section)
    if args.json:
        if args.json == "-":
            json.dump(results, sys.stdout, indent=2)
        else:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.readme:
        write_readme(Path(args.readme), section)


if __name__ == "__main__":
    main()
