#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs, then runs
# lint, type checks and pytest. Usage: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

VENV="${CANARYCTL_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,dev]' 2>&1 \
  | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c 'import canaryctl, kmock, pytest' # fail early if the install failed

"$VENV/bin/ruff" check canaryctl tests benchmarks
"$VENV/bin/mypy" canaryctl
"$VENV/bin/hadolint" Dockerfile
exec "$VENV/bin/python" -m pytest -q "$@"
