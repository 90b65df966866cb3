"""Counting CPU instructions with valgrind: the command, its total, and runs side by side.

``cachegrind --cache-sim=no`` counts every instruction the process executes in user space
(no cache simulation, so it runs about 20-50 times slower than the process alone). A count
does not depend on the machine's load, so runs may go in parallel; the benchmarks take the
difference of two runs with the same layout (N operations and none) over N.

With ``--callgrind DIR`` the benchmarks run callgrind instead (about twice as slow, the same
totals give or take a fraction of a percent) and keep each run's profile in ``DIR``, named
``<variant>.<operations>.out``: ``callgrind_annotate DIR/ours.3000.out`` against
``DIR/ours.0.out`` shows which C functions (the interpreter loop, dict lookups, the
collector, allocation, hashing) the difference is spent in.
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from benchmarks.common import ROOT

K = TypeVar("K")

_IREFS = re.compile(r"I\s+refs:\s+([\d,]+)")


#: Where ``--callgrind DIR`` writes its profiles (None: cachegrind, totals only).
PROFILES: Path | None = None


def command(name: str, log_file: str | None = None) -> list[str]:
    """The valgrind prefix for the run ``name``: cachegrind's total only, or (``PROFILES``
    set) a callgrind profile ``PROFILES/name.out`` for ``callgrind_annotate``. Valgrind's
    report goes to ``log_file`` or stderr."""
    require()
    if PROFILES is None:
        argv = [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
        ]
    else:
        PROFILES.mkdir(parents=True, exist_ok=True)
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={PROFILES / name}.out"]
    if log_file is not None:
        argv.append(f"--log-file={log_file}")
    return argv


def require() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit(
            "valgrind is not installed: the instruction counts need it "
            "(Debian: apt-get install valgrind; tests/run.sh installs it)"
        )


def environment() -> dict[str, str]:
    """The measured process's environment: a fixed hash seed, no bytecode written."""
    return {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


def precompile() -> None:
    """Write the bytecode of this checkout's modules before counting: every measured run
    then loads the same ``.pyc`` files (the runs themselves write none), rather than one run
    compiling what the next loads."""
    for folder in ("asgi_ws_handshake", "benchmarks"):
        compileall.compile_dir(str(ROOT / folder), quiet=2)


def total(output: str) -> int | None:
    """The instruction total valgrind reported (``I refs``), or None."""
    found = _IREFS.search(output)
    return None if found is None else int(found.group(1).replace(",", ""))


def side_by_side(jobs: Mapping[K, Callable[[], int]]) -> dict[K, int]:
    """Run the counting jobs two at a time (counts do not depend on load); their totals."""
    workers = max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def count_driver(name: str, module: str, arguments: list[str]) -> int:
    """Total instructions of ``python -m module --driver ...arguments`` under valgrind (the
    in-process benchmarks' measured process), named ``name`` for ``--callgrind``."""
    argv = [*command(name), sys.executable, "-m", module, "--driver", *arguments]
    done = subprocess.run(
        argv, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=900
    )
    found = total(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run {name!r} failed:\n{done.stderr[-2000:]}")
    return found
