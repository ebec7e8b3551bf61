"""The local stand-in world behind ``canaryctl demo`` and the integration/e2e tests.

A strict Kubernetes API emulator (``emulator``), a traffic simulator that follows the
VirtualService weights and serves Istio's metrics (``traffic``), a real Prometheus on loopback
(``prometheus``), and the three composed into the rest-apl demo (``world``).

Nothing heavy is imported here: ``kmock`` is only in the ``sandbox``/``test`` extras, and the
CLI imports this package to find the manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import canaryctl


def manifests_dir() -> Path:
    """The rest-apl seed manifests: packaged in the wheel, else ``examples/`` of the checkout."""
    packaged = Path(canaryctl.__file__).parent / "sandbox" / "manifests" / "rest-apl"
    if packaged.is_dir():
        return packaged
    return Path(canaryctl.__file__).resolve().parents[1] / "examples" / "rest-apl"


def load_manifests(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every YAML document of every ``*.yaml`` file in ``directory`` (sorted by file name)."""
    directory = directory if directory is not None else manifests_dir()
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs
