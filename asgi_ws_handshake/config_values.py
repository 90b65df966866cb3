"""Checking one value of a policy file against its kind, with errors that name the key.

``config`` reads the file and builds the pieces; this module owns what a value of each kind
(``options.Option.kind``) may be, and ``PolicyFileError``: the file, the dotted key and the
problem, with the offending value.
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["PolicyFileError", "check_value", "describe_value", "import_target", "unknown_key"]

_IMPORT_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class PolicyFileError(ValueError):
    """A policy file (or mapping) that cannot be used.

    Attributes:
        source: the file path, or ``"<mapping>"``.
        key: the dotted key that is wrong (``routes."/admin/*".key_reuse``), or None for the
            file as a whole (unreadable, not TOML).
        problem: what is wrong, lowercase, with the offending value.
    """

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


def describe_value(value: object) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number"}
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return names.get(type(value), type(value).__name__)


def import_target(spec: str) -> Any:
    """Import ``module:attr.attr``."""
    module_name, _, attrs = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attrs.split("."):
        obj = getattr(obj, attr)
    return obj


def check_value(source: str, key: str, kind: str, nullable: bool, value: object) -> Any:
    """Return ``value`` converted for ``kind``, or raise naming the key."""

    def bad(problem: str) -> PolicyFileError:
        return PolicyFileError(source, key, problem)

    if value is None and nullable:
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad(f"expected true or false, got {describe_value(value)} {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad(f"expected a string, got {describe_value(value)} {value!r}")
        return value
    if kind in ("float", "int"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if kind == "int":
            ok = ok and isinstance(value, int)
        if not ok:
            expected = "an integer" if kind == "int" else "a number"
            raise bad(f"expected {expected}, got {describe_value(value)} {value!r}")
        assert isinstance(value, int | float)
        if isinstance(value, float) and not math.isfinite(value):
            raise bad(f"expected a finite number, got {value!r}")
        return float(value) if kind == "float" else value
    if kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(f"expected an array of strings, got {describe_value(value)} {value!r}")
        return list(value)
    if kind == "table":
        if not isinstance(value, dict):
            raise bad(f"expected a table, got {describe_value(value)} {value!r}")
        return dict(value)
    if kind.startswith("choice:"):
        choices = kind.removeprefix("choice:").split("|")
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise bad(f"expected one of {listed}, got {value!r}")
        return value
    if kind == "callable":
        if not isinstance(value, str) or not _IMPORT_RE.fullmatch(value):
            raise bad(f"expected 'module:attribute', got {value!r}")
        try:
            obj = import_target(value)
        except Exception as exc:  # ImportError, AttributeError, or the module raised
            raise bad(f"cannot import {value!r}: {type(exc).__name__}: {exc}") from exc
        if not callable(obj):
            raise bad(f"{value!r} is not callable")
        return obj
    raise AssertionError(kind)


def unknown_key(source: str, prefix: str, key: str, known: Iterable[str]) -> PolicyFileError:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(known)
    return PolicyFileError(source, prefix + key, f"unknown key; {hint}expected one of: {listed}")
