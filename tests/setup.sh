#!/usr/bin/env bash
# Installs what canaryctl's tests and demo need on a fresh Debian/Ubuntu machine: python3 with
# venv, and the `prometheus` Debian package when the binary is missing; then the project with
# its test extras into a virtualenv (CANARYCTL_VENV, default .venv). Sourced by tests/run.sh and
# examples/demo.sh; prints the venv path on success.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

VENV="${CANARYCTL_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# pip takes ~14 s even when everything is installed: skip it while pyproject.toml is unchanged
# since the last successful install (the project is installed editable, so code changes need none)
stamp="$VENV/.canaryctl-pyproject.sha256"
if ! sha256sum --status -c "$stamp" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,dev]' 2>&1 \
    | grep -v '^WARNING: Location' >&2 || true
  "$VENV/bin/python" -c 'import canaryctl, kmock, pytest' && sha256sum pyproject.toml >"$stamp"
fi
"$VENV/bin/python" -c 'import canaryctl, kmock, pytest'  # fail early if the install failed
