"""The README's quick start is exactly two commands: the demo, and the test command CI runs."""

from __future__ import annotations

import re

from tests.support import ROOT


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_two_commands_demo_then_tests() -> None:
    main_job, tests = quick_start_commands()
    assert main_job.endswith("asgi-ws-handshake demo")
    assert "pip install -e '.[demo]'" in main_job
    assert tests == "bash tests/run.sh"


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests.removeprefix("bash ") in ci


def test_demo_extra_provides_what_the_demo_imports() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    demo = pyproject.split("demo = [", 1)[1].split("]", 1)[0]
    assert "starlette" in demo
    assert "uvicorn" in demo
