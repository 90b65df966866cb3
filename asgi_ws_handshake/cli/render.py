"""Policy files written back as TOML: ``check-policy``'s effective policy and ``suggest-policy``.

Only the subset of TOML the policy file uses: strings, booleans, numbers, arrays and inline
tables. A number that is whole prints as an integer (``key_reuse_ttl = 600``, not ``600.0``):
a policy file accepts either where a number is expected.
"""

from __future__ import annotations

import json
from typing import Any

from ..config import PolicyFile

__all__ = ["render_policy_file", "toml_table", "toml_value"]


def toml_value(value: Any) -> str:
    """One value as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def toml_table(data: dict[str, Any]) -> list[str]:
    """``key = value`` lines; a None value is written as a comment (TOML has no null)."""
    return [
        f"# {key}: not set" if value is None else f"{key} = {toml_value(value)}"
        for key, value in data.items()
    ]


def render_policy_file(config: PolicyFile) -> str:
    """The effective configuration as TOML, every option explicit (a valid policy file)."""
    described = config.describe()
    lines = [f"# effective policy from {described['source']}", "# default policy"]
    lines += toml_table(described["policy"])
    lines.append(f"store = {toml_value(described['store'])}")
    if not described["audit"]:
        lines.append("audit = []  # no sinks")
    for glob, policy in described["routes"].items():
        lines += ["", f"[routes.{json.dumps(glob)}]", *toml_table(policy)]
    for sink in described["audit"]:
        lines += ["", "[[audit]]", *toml_table(sink)]
    lines += ["", "[middleware]", *toml_table(described["middleware"])]
    return "\n".join(lines)
