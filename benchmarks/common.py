"""Shared benchmark plumbing: alternating rounds, medians, machine facts, tables and JSON.

Every benchmark compares variants inside one run: each round runs every variant once, in an
order that rotates from round to round, and results are medians over rounds (never a single
timing). Paired differences (variant minus baseline, same round) are reported too, since they
cancel most of the drift a shared machine adds between rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def alternate(variants: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Run each variant once per round, rotating the order; return every round's value."""
    names = list(variants)
    results: dict[str, list[T]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(variants[name]())
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired(values: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over rounds of (value - baseline) taken within the same round."""
    return statistics.median(a - b for a, b in zip(values, baseline, strict=True))


def spread(values: Sequence[float]) -> float:
    """Relative half-width of the interquartile range (0.01 = ±1 %), a noise indicator."""
    if len(values) < 4:
        return (max(values) - min(values)) / 2 / max(median(values), 1e-12)
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / 2 / max(median(values), 1e-12)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join([line, rule, *body])


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny counts: checks that it runs")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-': stdout)")
    return p


def emit(result: dict[str, Any], text: str, json_path: str | None) -> None:
    """Print the table (unless JSON goes to stdout) and write the JSON result."""
    result = {**result, "machine": machine()}
    if json_path == "-":
        print(json.dumps(result, indent=2))
        return
    print(text)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
