"""mkdocs hooks: the generated parts of the documentation, each from its one source.

``<!-- options:policy -->`` / ``<!-- options:middleware -->``: the option tables, from
``asgi_ws_handshake/options.py`` (the definitions the policy file is validated with).
``<!-- readme:## Heading -->``: that section of README.md, its heading left out (the page has
its own), links to repository files turned into plain names. ``<!-- file:NAME -->``: a file of
the repository, its first heading left out. An unknown marker fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from asgi_ws_handshake.options import MIDDLEWARE, POLICY, markdown_table

ROOT = Path(__file__).resolve().parent.parent
_MARKER = re.compile(r"<!-- (options|readme|file):(.+?) -->")
_RELATIVE_LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#)([^)]+)\)")


def _section(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0]
    start = text.find(f"\n{heading}\n")
    if start < 0:
        raise ValueError(f"README.md has no section {heading!r}")
    body = text[start + len(heading) + 2 :]
    end = re.search(rf"\n{level} ", body)
    body = body[: end.start()] if end else body
    return _RELATIVE_LINK.sub(r"\1 (`\2`)", body.strip())


def _expand(match: re.Match[str]) -> str:
    kind, argument = match.group(1), match.group(2).strip()
    if kind == "options":
        options = {"policy": POLICY, "middleware": MIDDLEWARE}.get(argument)
        if options is None:
            raise ValueError(f"unknown option table {argument!r}")
        return markdown_table(options)
    if kind == "readme":
        return _section(argument)
    text = (ROOT / argument).read_text(encoding="utf-8")
    return text.split("\n", 1)[1] if text.startswith("# ") else text


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Expand the markers of a page."""
    return _MARKER.sub(_expand, markdown)
