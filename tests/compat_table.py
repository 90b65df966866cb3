"""Regenerate the README's server compatibility table from what the servers actually do.

    python -m tests.compat_table            # run every server, observe, rewrite README.md
    python -m tests.compat_table --check    # exit 1 when README.md is out of date

Every case of ``tests/compat.py`` is sent to each server (real processes on 127.0.0.1) and the
table is rendered from the observations. ``tests/servers/test_servers.py`` asserts the same cases
against the per-server expectations, and ``test_readme_table_matches_expectations`` keeps the
README in step with them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tests.compat import (
    BASE,
    CASES,
    DENIAL_EXTENSION,
    DROPS_APP_HEADERS,
    MIDDLEWARE_DIFFERS,
    SERVER_NAMES,
    UPGRADE_HEADERS_ON_DENIAL,
    Summary,
    expected,
    observe,
)
from tests.support import ROOT, running, server_argv

README = ROOT / "README.md"
START, END = "<!-- compat:start -->", "<!-- compat:end -->"
VERSION_ROW = "| server version |"

Cells = Mapping[tuple[str, str], Summary]

_PACKAGES = {
    "uvicorn-websockets-sansio": ("uvicorn", "websockets"),
    "uvicorn-websockets": ("uvicorn", "websockets"),
    "uvicorn-wsproto": ("uvicorn", "wsproto"),
    "hypercorn": ("hypercorn",),
    "daphne": ("daphne",),
    "granian": ("granian",),
}
_HEADINGS = {
    "uvicorn-websockets-sansio": "uvicorn `--ws websockets-sansio`",
    "uvicorn-websockets": "uvicorn `--ws websockets`",
    "uvicorn-wsproto": "uvicorn `--ws wsproto`",
    "hypercorn": "hypercorn",
    "daphne": "daphne",
    "granian": "granian `--interface asgi`",
}


def versions() -> dict[str, str]:
    def one(package: str) -> str:
        try:
            return f"{package} {importlib.metadata.version(package)}"
        except importlib.metadata.PackageNotFoundError:
            return f"{package} (not installed)"

    return {name: ", ".join(map(one, _PACKAGES[name])) for name in SERVER_NAMES}


def decided(summary: Summary) -> str:
    if summary.status == 101:
        return f"accept `{summary.subprotocol}`" if summary.subprotocol else "accept"
    return f"`{summary.reason}` {summary.status}"


def render(cells: Cells, extension: Mapping[str, bool], server_versions: Mapping[str, str]) -> str:
    """The markdown between the compat markers."""
    row = "| {} |".format
    lines = [
        row(" | ".join(["handshake", "middleware decides", *(_HEADINGS[n] for n in SERVER_NAMES)])),
        row(" | ".join(["---"] * (len(SERVER_NAMES) + 2))),
        row(" | ".join(["server version", "", *(server_versions[n] for n in SERVER_NAMES)])),
        row(
            " | ".join(
                [
                    "denial extension",
                    "",
                    *("yes" if extension[n] else "**no**" for n in SERVER_NAMES),
                ]
            )
        ),
    ]
    for case in CASES:
        values = [cells[name, case.name].cell() for name in SERVER_NAMES]
        lines.append(row(" | ".join([case.title, decided(BASE[case.name]), *values])))
    notes = [
        "",
        "A cell is the status the client received: a plain status is the middleware's own "
        "response (body: the reason code); *close* means a `websocket.close` refusal, which the "
        "server sends as 403 without a body; *server* means the server refused before the app "
        "(and so the middleware) ran, with its own body and no audit event; *+V13* means the "
        "response carries `Sec-WebSocket-Version: 13`. Every 101 carries exactly one correct "
        "`Sec-WebSocket-Accept`.",
        "",
    ]
    for name in SERVER_NAMES:
        quirks = [
            *(why for _, why in MIDDLEWARE_DIFFERS.get(name, {}).values()),
            *([DROPS_APP_HEADERS[name]] if name in DROPS_APP_HEADERS else []),
            *([UPGRADE_HEADERS_ON_DENIAL[name]] if name in UPGRADE_HEADERS_ON_DENIAL else []),
        ]
        if not extension[name]:
            quirks.insert(
                0,
                "no `websocket.http.response` extension: every refusal of the middleware is a 403",
            )
        if quirks:
            notes.append(f"- {_HEADINGS[name]}: " + "; ".join(quirks) + ".")
    return "\n".join(lines + notes)


def expected_table() -> str:
    cells = {(n, c.name): expected(n, c.name)[0] for n in SERVER_NAMES for c in CASES}
    return render(cells, DENIAL_EXTENSION, versions())


def observed_table() -> tuple[str, list[str]]:
    """Run every server, send every case; return the table and the differences from the
    expectations of ``tests/compat.py``."""
    cells: dict[tuple[str, str], Summary] = {}
    extension: dict[str, bool] = {}
    differences = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in SERVER_NAMES:
            with running(name, server_argv(name), Path(tmp)) as server:
                for case in CASES:
                    seen = observe(server, case)
                    cells[name, case.name] = summary = seen.summary()
                    if summary.denial is not None:
                        extension[name] = summary.denial == "http_response"
                    want, _ = expected(name, case.name)
                    if summary != want:
                        differences.append(f"{name} {case.name}: saw {summary}, want {want}")
    return render(cells, extension, versions()), differences


def readme_section(text: str) -> str:
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n")


def replace_section(text: str, table: str) -> str:
    start, end = text.index(START) + len(START), text.index(END)
    return text[:start] + "\n" + table + "\n" + text[end:]


def same_but_versions(a: str, b: str) -> bool:
    """Equal tables, ignoring the row of installed versions (a fresh install may differ)."""

    def strip(table: str) -> list[str]:
        return [line for line in table.splitlines() if not line.startswith(VERSION_ROW)]

    return strip(a) == strip(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args(argv)
    table, differences = observed_table()
    for line in differences:
        print(f"differs from tests/compat.py: {line}", file=sys.stderr)
    text = README.read_text()
    if args.check:
        if not same_but_versions(readme_section(text), table):
            print("README.md compatibility table is stale", file=sys.stderr)
            return 1
        return 0
    README.write_text(replace_section(text, table))
    print(table)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
