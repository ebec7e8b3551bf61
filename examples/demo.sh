#!/usr/bin/env bash
# `canaryctl demo` on a fresh Debian/Ubuntu machine: installs what it needs (tests/setup.sh:
# python3-venv and prometheus from Debian, the project into .venv), then runs the demo.
# Usage: bash examples/demo.sh [--scenario healthy|errors|latency] [-o json]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
exec "${CANARYCTL_VENV:-.venv}/bin/canaryctl" demo "$@"
