#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs (tests/setup.sh),
# then lint, type checks, import contracts, Dockerfile lint and pytest.
# Usage: bash tests/run.sh [pytest args]
#        bash tests/run.sh --quick [pytest args]   the inner loop: lint, contracts, unit tests
# docs/testing.md: how the suite is organised, and its measured times
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
VENV="${CANARYCTL_VENV:-.venv}"
quick=false
if [ "${1:-}" = "--quick" ]; then quick=true; shift; fi

"$VENV/bin/ruff" check canaryctl tests benchmarks
"$VENV/bin/ruff" format --check canaryctl tests benchmarks
$quick || "$VENV/bin/mypy" canaryctl
# the dependency direction of docs/architecture.md (contracts in pyproject.toml); its banner is noise
"$VENV/bin/lint-imports" --no-cache | sed -n '/^Contracts:/p;/BROKEN/,$p'
if $quick; then
  exec "$VENV/bin/python" -m pytest -q -n 2 tests/unit "$@"
fi
"$VENV/bin/hadolint" Dockerfile
# 6 workers on 2 cores: the end-to-end tests mostly wait (analysis intervals, scrapes); each
# worker starts its own sandboxes and canaryctl zygote once (tests/sandboxes.py, tests/forkcli.py);
# worksteal keeps the longest tests (the sequential judge's) from ending up last on one worker
exec "$VENV/bin/python" -m pytest -q -n "${CANARYCTL_TEST_WORKERS:-6}" --dist worksteal \
  --durations=15 "$@"
