"""Enable a Debian release's backports suite from the machine's own Debian apt source.

Used by tests/run.sh to install valkey-server on Debian 12 (it is in bookworm-backports). The
new source copies the URIs, components and keyring of the existing stanza for the release, so
it names no mirror of its own. Does nothing when a backports source is already there.
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCES = Path("/etc/apt/sources.list.d")


def stanzas(text: str) -> list[dict[str, str]]:
    found = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            name, sep, value = line.partition(":")
            if sep and not line.startswith(("#", " ")):
                fields[name.strip()] = value.strip()
        if fields:
            found.append(fields)
    return found


def main(release: str) -> int:
    target = SOURCES / f"{release}-backports.sources"
    backports = f"{release}-backports"
    for path in [
        *SOURCES.glob("*.sources"),
        *SOURCES.glob("*.list"),
        Path("/etc/apt/sources.list"),
    ]:
        if path.exists() and backports in path.read_text():
            return 0  # already enabled
    for path in sorted(SOURCES.glob("*.sources")):
        for fields in stanzas(path.read_text()):
            if release in fields.get("Suites", "").split() and "URIs" in fields:
                lines = [
                    "Types: deb",
                    f"URIs: {fields['URIs']}",
                    f"Suites: {backports}",
                    f"Components: {fields.get('Components', 'main')}",
                ]
                if "Signed-By" in fields:
                    lines.append(f"Signed-By: {fields['Signed-By']}")
                target.write_text("\n".join(lines) + "\n")
                return 0
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["deb"] and release in parts:
            index = parts.index(release)
            parts[index] = backports
            (SOURCES / f"{backports}.list").write_text(" ".join(parts) + "\n")
            return 0
    print(f"no Debian source for {release!r} found; valkey-server stays missing", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
