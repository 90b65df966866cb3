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

from benchmarks import handshakes, inprocess, memory, messages
from benchmarks.common import ROOT, machine, parser, table, verdict

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
COMMAND = "python -m benchmarks.run_all --readme"


def run_all(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "quick": quick}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("inprocess", lambda: inprocess.run(*(inprocess.QUICK if quick else inprocess.FULL))),
        ("handshakes", lambda: handshakes.run(*(handshakes.QUICK if quick else handshakes.FULL))),
        ("messages", lambda: messages.run(*(messages.QUICK if quick else messages.FULL))),
        ("memory", lambda: memory.run(*(memory.QUICK if quick else memory.FULL))),
    ]
    renders = {
        "inprocess": inprocess.render,
        "handshakes": handshakes.render,
        "messages": messages.render,
        "memory": memory.render,
    }
    for name, step in steps:
        result = step()
        results[name] = result
        print(renders[name](result), end="\n\n", flush=True)
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


def summary(results: dict[str, Any]) -> str:
    """The README table: one row per target, plus the facts behind it."""
    rows: list[list[str]] = []
    ip = results["inprocess"]
    med = ip["us_per_call"]
    rows.append(
        [
            "added per accepted handshake (full policy + audit + key store)",
            f"{ip['ours_added_us']:.1f} µs",
            "",
        ]
    )
    if "channels_added_us" in ip:
        rows.append(
            [
                "added by Channels' OriginValidator (origin only)",
                f"{ip['channels_added_us']:.1f} µs",
                "",
            ]
        )
        ratio = ip["ratio_to_channels"]
        rows.append(["ours / Channels", f"{ratio:.2f}", f"<= 0.5: {verdict(ratio <= 0.5)}"])
        rows.append(
            [
                "the same with cold caches (as between a server's handshakes): ours, Channels",
                f"{ip['ours_cold_added_us']:.1f} µs, {ip['channels_cold_added_us']:.1f} µs "
                f"= {ip['ratio_to_channels_cold']:.2f}x",
                "",
            ]
        )
    rows.append(["refused handshake (403, app not called)", f"{med['ours_refused']:.1f} µs", ""])
    closure, klass = ip["http_ratio_to_one_call"], ip["http_ratio_to_class_call"]
    rows.append(
        [
            "http scope passing through, added",
            f"{ip['http_added_us']:.2f} µs = {closure:.2f}x a pass-through closure, "
            f"{klass:.2f}x a pass-through middleware class",
            f"<= one call: {verdict(closure <= 1.0)} (closure), {verdict(klass <= 1.0)} (class)",
        ]
    )
    hs = results["handshakes"]
    rows.append(
        [
            f"handshakes/s through {hs['server']}, guarded / bare",
            f"{hs['per_second']['guarded']:.0f} and {hs['per_second']['bare']:.0f}/s (medians); "
            f"paired ratio {hs['rate_ratio']:.3f} (median over rounds), "
            f"server CPU x{hs['cpu_ratio']:.3f}",
            f">= 0.98: {verdict(hs['rate_ratio'] >= 0.98)}",
        ]
    )
    rows.extend(reference_rows(hs, "handshakes/s"))
    ms = results["messages"]
    rows.append(
        [
            "echo messages/s after accept, guarded / bare",
            f"{ms['per_second']['guarded']:.0f} and {ms['per_second']['bare']:.0f}/s (medians); "
            f"paired ratio {ms['rate_ratio']:.3f} (median over rounds), "
            f"server CPU x{ms['cpu_ratio']:.3f}",
            f">= 0.99: {verdict(ms['rate_ratio'] >= 0.99)}",
        ]
    )
    rows.extend(reference_rows(ms, "messages/s"))
    mem = results["memory"]
    burst = mem["burst"]
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
