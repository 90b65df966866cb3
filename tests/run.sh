#!/usr/bin/env bash
# The project's test command (README "Quick start"): installs everything the tests need on a
# fresh Debian machine, then runs ruff, mypy --strict and the whole pytest suite.
# Extra arguments go to pytest, e.g. `bash tests/run.sh --slow` or `bash tests/run.sh -k origin`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# Wait (up to 10 minutes) for another apt or dpkg run to let go of its locks, instead of
# failing at once under `set -e`.
apt_get() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }

# System packages: redis-server and valkey-server for the Redis store tests (their -tools
# packages, which the servers depend on, bring redis-cli and valkey-cli to create clusters;
# Sentinels run as `redis-server --sentinel`), chromium for the browser tests, valgrind for
# the benchmarks' instruction counts (tests/test_benchmarks.py runs their quick modes). What
# this changes on the machine is printed before it is done.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
if [ ${#missing[@]} -gt 0 ]; then
  echo "system change: installing ${missing[*]} from Debian's packages (apt-get install)"
  apt_get update -qq
  apt_get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v valkey-server >/dev/null 2>&1; then
  # Debian 13 ships valkey-server; Debian 12 has it in its backports suite, enabled here from
  # the machine's own Debian source (same mirror, same keyring).
  release=""
  [ -r /etc/os-release ] && release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  suite=()
  if [ "$release" = bookworm ]; then
    echo "system change: adding the bookworm-backports apt source (kept in" \
      "/etc/apt/sources.list.d/; remove it to undo) for valkey-server"
    as_root python3 tests/apt_backports.py bookworm
    suite=(-t bookworm-backports)
  fi
  echo "system change: installing valkey-server from Debian's packages (apt-get install)"
  apt_get update -qq
  apt_get install -y -qq "${suite[@]}" valkey-server >/dev/null
fi

# Python packages, in a project virtualenv.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
  | grep -v '^WARNING: Location' || true

echo "== ruff check";  .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy";        .venv/bin/mypy
echo "== docs"; export NO_MKDOCS_2_WARNING=1
site=$(mktemp -d)
.venv/bin/mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
echo "== pytest"
.venv/bin/python -m pytest --cov=asgi_ws_handshake --cov-branch --cov-report=term \
  --cov-fail-under=95 "$@"
