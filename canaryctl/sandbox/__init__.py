"""The local stand-in world behind ``canaryctl demo`` and the integration/e2e tests.

A strict Kubernetes API emulator (``emulator``), a traffic simulator that follows the
VirtualService weights and serves Istio's metrics (``traffic``), a real Prometheus on loopback
(``prometheus``), and the three composed into the rest-apl demo (``world``).

Nothing heavy is imported here: ``kmock`` is only in the ``sandbox``/``test`` extras, and the
CLI imports this package to find the manifests.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

import canaryctl


def manifests_dir(name: str = "rest-apl") -> Path:
    """The seed manifests ``name`` (``rest-apl``: Istio, ``gateway-api``: Gateway API):
    packaged in the wheel, else ``examples/`` of the checkout."""
    packaged = Path(canaryctl.__file__).parent / "sandbox" / "manifests" / name
    if packaged.is_dir():
        return packaged
    return Path(canaryctl.__file__).resolve().parents[1] / "examples" / name


def load_manifests(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every YAML document of every ``*.yaml`` file in ``directory`` (sorted by file name)."""
    directory = directory if directory is not None else manifests_dir()
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def rest_apl_fleet(
    namespaces: list[str], *, policy: dict[str, Any], started_at: float
) -> list[dict[str, Any]]:
    """rest-apl in each namespace, each with a rollout (of ``policy``, a snapshot) begun at
    ``started_at`` and recorded on its VirtualService: the world of the scale benchmark and
    of the daemon's scale tests."""
    from canaryctl import rollout

    base = load_manifests()
    docs = []
    for ns in namespaces:
        state = rollout.begin(
            app="rest-apl",
            namespace=ns,
            virtual_service="rest-apl-vs",
            mode="subset",
            stable={"host": "rest-apl", "subset": "v1"},
            canary={"host": "rest-apl", "subset": "v2"},
            stable_workload="rest-apl-v1",
            canary_workload="rest-apl-v2",
            policy=policy,
            current_canary_weight=20,
            now=started_at,
        )
        for doc in copy.deepcopy(base):
            meta = doc["metadata"]
            if doc["kind"] == "Namespace":
                meta["name"] = ns
            else:
                meta["namespace"] = ns
            if doc["kind"] == "VirtualService":
                meta.setdefault("annotations", {})[rollout.ANNOTATION] = state.to_json()
            docs.append(doc)
    return docs
