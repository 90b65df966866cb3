"""The README's quick start is exactly two commands: the demo, and the test command CI runs."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import sys
import tomllib

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy
from asgi_ws_handshake.config import load_policy_file, parse_policy_file
from asgi_ws_handshake.options import MIDDLEWARE, POLICY, markdown_table
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


def readme_blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def test_the_option_tables_are_generated_from_the_option_definitions() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, options in (("policy", POLICY), ("middleware", MIDDLEWARE)):
        section = readme.split(f"<!-- options:{name}:start -->\n", 1)[1]
        table = section.split(f"\n<!-- options:{name}:end -->", 1)[0]
        assert table == markdown_table(options), f"regenerate the {name} table"


def test_the_option_definitions_match_the_classes() -> None:
    fields = {f.name: f for f in dataclasses.fields(HandshakePolicy) if f.init}
    assert [o.name for o in POLICY] == list(fields)
    for option in POLICY:
        assert ast.literal_eval(option.default) == fields[option.name].default, option.name
    signature = inspect.signature(HandshakeMiddleware.__init__)
    assert [o.name for o in MIDDLEWARE] == [
        p for p in signature.parameters if p not in ("self", "app")
    ]


def test_the_readme_policy_files_are_valid() -> None:
    blocks = readme_blocks("toml")
    assert blocks
    for block in blocks:
        parse_policy_file(tomllib.loads(block), source="README.md")


def test_the_readme_python_blocks_compile_and_use_real_names() -> None:
    known = {o.name for o in POLICY}
    middleware = {o.name for o in MIDDLEWARE}
    blocks = readme_blocks("python")
    assert blocks
    for block in blocks:
        tree = ast.parse(block)  # a SyntaxError fails the test
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asgi_ws"):
                module = importlib.import_module(node.module or "")
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                names = {k.arg for k in node.keywords if k.arg}
                if node.func.id == "HandshakePolicy":
                    assert names <= known, names - known
                if node.func.id == "HandshakeMiddleware":
                    assert names <= middleware, names - middleware


def test_the_demo_extra_installs_what_the_examples_import() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    demo = pyproject["project"]["optional-dependencies"]["demo"]
    provided = {re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0] for requirement in demo}
    for path in (ROOT / "examples").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top = node.module.split(".")[0]
            elif isinstance(node, ast.Import):
                top = node.names[0].name.split(".")[0]
            else:
                continue
            if top in sys.stdlib_module_names or top in ("asgi_ws_handshake", "__future__"):
                continue
            assert top in provided, f"{path.name} imports {top}, not in the demo extra"


def test_the_example_policy_file_is_valid() -> None:
    config = load_policy_file(ROOT / "examples" / "policy.toml")
    assert config.routes["/admin/*"].enforce is False


def test_the_test_command_waits_for_apt_and_says_what_it_changes() -> None:
    script = (ROOT / "tests" / "run.sh").read_text()
    calls = [
        line
        for line in script.splitlines()
        if "apt-get" in line and not line.strip().startswith(("echo", "#"))
    ]
    assert calls
    for call in calls:
        assert "DPkg::Lock::Timeout" in call, call
    assert "system change: adding the bookworm-backports apt source" in script
    assert "mkdocs build --strict" in script
