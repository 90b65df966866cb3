"""The benchmarks' quick modes run and print well-formed tables and JSON (never timed).

The instruction counts run under valgrind (tests/run.sh installs it); without it these tests
fail and say so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import costs, instructions, run_all
from tests.support import ROOT

END_TO_END = [
    "per_second",
    "server_cpu_us",
    "rate_ratio",
    "cpu_ratio",
    "control_rate_ratio",
    "channels_rate_ratio",
]
BENCHMARKS = {
    "inprocess": [
        "us_per_call",
        "ours_added_us",
        "refused_us",
        "http_added_us",
        "ours_cold_added_us",
    ],
    "handshakes": END_TO_END,
    "messages": END_TO_END,
    "memory": ["bytes_per_key", "burst"],
    "instructions": ["per_call", "added", "ratio_to_channels"],
    "server_instructions": ["per_connection", "added", "added_fraction", "ratio_to_channels"],
    "costs": ["per_op"],
}
VALGRIND = "valgrind is not installed: tests/run.sh installs it (Debian: apt-get install valgrind)"


def run_quick(name: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def assert_table(text: str) -> None:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) >= 3, text
    widths = {len(row) for row in rows}
    assert len(widths) == 1, f"ragged table:\n{text}"
    assert set(rows[1]) <= {"|", "-"}, rows[1]
    columns = rows[0].count("|")
    assert all(row.count("|") == columns for row in rows), text


def numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    return []


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict[str, Any]]]:
    assert shutil.which("valgrind"), VALGRIND
    tmp = tmp_path_factory.mktemp("bench")
    return {name: run_quick(name, tmp) for name in BENCHMARKS}


def test_valgrind_is_installed() -> None:
    assert shutil.which("valgrind"), VALGRIND


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_quick_mode_prints_a_table_and_json(
    name: str, results: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    stdout, data = results[name]
    assert_table(stdout)
    assert data["benchmark"] == name
    for key in BENCHMARKS[name]:
        assert key in data, key
        values = numbers(data[key])
        assert values, key
        assert all(v >= 0 and v == v for v in values), (key, data[key])
    assert {"cpu", "cores", "python"} <= set(data["machine"])


def test_inprocess_compares_with_channels(
    results: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    _, data = results["inprocess"]
    assert {"bare", "ours", "channels", "ours_refused", "http_ours"} <= set(data["us_per_call"])
    assert {"ours_cold", "channels_cold"} <= set(data["us_per_call"])
    assert {"ratio_to_channels", "ratio_to_channels_cold"} <= set(data)


@pytest.mark.parametrize("name", ["handshakes", "messages"])
def test_end_to_end_runs_a_control_and_channels(
    name: str, results: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    stdout, data = results[name]
    assert {"bare", "control", "guarded", "channels"} == set(data["per_second"])
    assert "control: bare again / bare" in stdout
    assert "Channels OriginValidator" in stdout


def test_readme_section_goes_between_the_markers_only(
    results: dict[str, tuple[str, dict[str, Any]]], tmp_path: Path
) -> None:
    combined: dict[str, Any] = {name: data for name, (_, data) in results.items()}
    combined["machine"] = combined["memory"]["machine"]
    readme = tmp_path / "README.md"
    before, after = "# x\n\nintro\n\n", "\n\n## Next\n\ntext\n"
    readme.write_text(f"{before}{run_all.START}\nold\n{run_all.END}{after}")
    section = run_all.readme_section(combined)
    run_all.write_readme(readme, section)
    run_all.write_readme(readme, section)  # idempotent
    text = readme.read_text()
    assert text == f"{before}{run_all.START}\n{section}\n{run_all.END}{after}"
    assert_table(section)
    assert run_all.COMMAND in section


def test_instruction_counts_compare_ours_with_the_bare_app_and_channels(
    results: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    stdout, data = results["instructions"]
    per, added = data["per_call"], data["added"]
    assert set(per) == set(instructions.QUICK_VARIANTS)
    # A handshake through either guard costs many times the bare app's few thousand.
    assert per["ours"] > 5 * per["bare"] > 0, per
    assert per["channels"] > 5 * per["bare"], per
    assert added["ours"] == pytest.approx(per["ours"] - per["bare"])
    assert data["ratio_to_channels"] == pytest.approx(added["ours"] / added["channels"])
    assert "ours / Channels added" in stdout


def test_server_instruction_counts_report_uvicorns_own_and_the_guards(
    results: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    stdout, data = results["server_instructions"]
    per, added = data["per_connection"], data["added"]
    assert set(per) == {"bare", "guarded", "channels"}
    # uvicorn's own work per connection is far above the guard's (hundreds of thousands).
    assert per["bare"] > 300_000, per
    assert 0 < added["guarded"] < per["bare"], added
    assert data["added_fraction"]["guarded"] == pytest.approx(added["guarded"] / per["bare"])
    assert "uvicorn's own work per connection" in stdout


def test_every_instruction_variant_runs_and_answers_as_labelled() -> None:
    """Each registered variant, driven without valgrind: accepts, refuses or passes through."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.instructions", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert set(lines) == set(instructions.VARIANTS)
    assert all(line.endswith(" ok") for line in lines.values()), proc.stdout
    assert lines["ours_refused"].startswith("websocket.http.response.start 403")


def test_readme_breakdown_adds_up_to_ours() -> None:
    """The steps table: each step's share, the middleware's own the rest, summing to ours."""
    per = {
        "bare": 1000.0,
        "ours": 9000.0,
        "step_scope": 3000.0,
        "step_evaluate": 4000.0,
        "step_store": 5500.0,
        "step_event": 7000.0,
    }
    baselines = {name: spec.baseline for name, spec in instructions.VARIANTS.items()}
    added = {
        name: per[name] - per[base] for name, base in baselines.items() if name in per and base
    }
    text = run_all.breakdown({"added": added, "middleware_own": per["ours"] - per["step_event"]})
    assert text is not None
    assert_table(text)
    cells = [row.split("|")[2].strip() for row in text.splitlines()[2:]]
    assert cells == ["2,000", "1,000", "1,500", "1,500", "2,000", "8,000"]
    assert run_all.breakdown({"added": {"ours": 1.0}}) is None


def test_costs_price_every_operation(results: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """The price list: a row per operation, the empty loop taken off each."""
    stdout, data = results["costs"]
    per_op = data["per_op"]
    assert set(per_op) == set(costs.OPERATIONS) - {"loop"}
    # CPython's prices, in instructions (deterministic): an object of eleven fields costs
    # several calls, and reading 14 header lines several objects' worth of dict lookups.
    assert per_op["named_tuple"] > 3 * per_op["call"] > 0, per_op
    assert per_op["header_loop"] > 10 * per_op["c_method"] > 0, per_op
    assert "budget" not in data  # --quick skips the Channels and floor counts
    assert "the empty loop subtracted" in stdout
