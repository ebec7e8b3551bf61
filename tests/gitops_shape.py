"""A small structural check of Argo CD ``Application`` and Flux ``Kustomization`` manifests.

Why this instead of a schema: both kinds are CRDs of their projects; no copy of them is pinned
in this repository and ``kubernetes_validate`` ships only built-in kinds, so the examples cannot
be checked against the real schema offline. This checks what canaryctl's documentation relies
on, as the API server would: every field used exists at its place (an unknown one, a typo, is
an error, as strict field validation would say), has the right type, and required ones are
present. It covers only the fields of those kinds that the examples use or might reasonably
use; a field outside that list is reported as unknown rather than trusted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Shape = Any  # a type, [Shape] (a list of it) or {key: Shape}; a key ending in "!" is required

_META = {"name!": str, "namespace": str, "labels": dict, "annotations": dict}
_SELECTOR = {
    "group": str,
    "version": str,
    "kind": str,
    "name": str,
    "namespace": str,
    "labelSelector": str,
    "annotationSelector": str,
}
SHAPES: dict[tuple[str, str], Shape] = {
    ("argoproj.io/v1alpha1", "Application"): {
        "metadata!": _META,
        "spec!": {
            "project!": str,
            "source!": {"repoURL!": str, "targetRevision": str, "path": str, "chart": str},
            "destination!": {"server": str, "name": str, "namespace": str},
            "syncPolicy": {
                "automated": {"prune": bool, "selfHeal": bool, "allowEmpty": bool},
                "syncOptions": [str],
            },
            "ignoreDifferences": [
                {
                    "group": str,
                    "kind!": str,
                    "name": str,
                    "namespace": str,
                    "jsonPointers": [str],
                    "jqPathExpressions": [str],
                    "managedFieldsManagers": [str],
                }
            ],
        },
    },
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): {
        "metadata!": _META,
        "spec!": {
            "interval!": str,
            "path": str,
            "prune!": bool,
            "sourceRef!": {"kind!": str, "name!": str, "namespace": str},
            "targetNamespace": str,
            "patches": [{"patch!": str, "target": _SELECTOR}],
        },
    },
}


def _errors(value: Any, shape: Shape, path: str) -> Iterator[str]:
    if isinstance(shape, dict):
        if not isinstance(value, Mapping):
            yield f"{path}: must be an object"
            return
        fields = {k.rstrip("!"): s for k, s in shape.items()}
        for key in (k.rstrip("!") for k in shape if k.endswith("!")):
            if key not in value:
                yield f"{path}.{key}: required"
        for key, sub in value.items():
            if key not in fields:
                yield f"{path}.{key}: unknown field"
            else:
                yield from _errors(sub, fields[key], f"{path}.{key}")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            yield f"{path}: must be a list"
            return
        for index, item in enumerate(value):
            yield from _errors(item, shape[0], f"{path}[{index}]")
    elif not isinstance(value, shape):
        yield f"{path}: must be {shape.__name__}, got {type(value).__name__}"


def handles(doc: Mapping[str, Any]) -> bool:
    """This module checks ``doc``'s kind."""
    return (doc.get("apiVersion"), doc.get("kind")) in SHAPES


def gitops_errors(doc: Mapping[str, Any]) -> list[str]:
    """Everything wrong with an Application or Kustomization, by the shapes above."""
    shape = SHAPES[(doc["apiVersion"], doc["kind"])]
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
    return list(_errors(body, shape, doc["kind"]))
