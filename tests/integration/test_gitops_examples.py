"""examples/gitops/: the Argo CD Application and the Flux Kustomization are well formed (a small
structural check, ``tests/gitops_shape.py``: no schema of those CRDs is available offline) and
leave to canaryctl exactly the fields it writes, checked on VirtualServices as canaryctl writes
them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.mesh.group import find_group
from canaryctl.mesh.routes import apply_patch, weight_patch
from canaryctl.rollout import ANNOTATION, REF_ANNOTATION
from tests import gitops_shape, istio_schema

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "examples" / "gitops"


def _doc(file: str) -> dict[str, Any]:
    doc = yaml.safe_load((GITOPS / file).read_text())
    assert isinstance(doc, dict)
    return doc


def _vs(folder: str) -> dict[str, Any]:
    [path] = (REPO / "examples" / folder).glob("virtualservice*.yaml")
    vs = yaml.safe_load(path.read_text())
    vs["metadata"]["resourceVersion"] = "5"
    return vs


def _jq_pointers(doc: Any, expr: str) -> list[str]:
    """JSON pointers selected by a jq path of the form ``.a.b[].c`` (what the example uses)."""
    found: list[tuple[str, Any]] = [("", doc)]
    for part in expr.strip(".").split("."):
        key, iterate = part.removesuffix("[]"), part.endswith("[]")
        found = [(f"{p}/{key}", v[key]) for p, v in found if isinstance(v, dict) and key in v]
        if iterate:
            found = [(f"{p}/{i}", item) for p, v in found for i, item in enumerate(v)]
    return [p for p, _ in found]


def _ignored(app: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """The JSON pointers Argo CD does not compare in ``live`` (a VirtualService)."""
    out: list[str] = []
    for rule in app["spec"]["ignoreDifferences"]:
        if (rule.get("group"), rule["kind"]) == ("networking.istio.io", "VirtualService"):
            out += rule.get("jsonPointers", [])
            out += [p for e in rule.get("jqPathExpressions", []) for p in _jq_pointers(live, e)]
    return out


def _leaves(doc: Any, path: str = "") -> dict[str, Any]:
    """JSON pointer -> value of every scalar in ``doc``."""
    if isinstance(doc, dict):
        items = [(k.replace("~", "~0").replace("/", "~1"), v) for k, v in doc.items()]
    elif isinstance(doc, list):
        items = [(str(i), v) for i, v in enumerate(doc)]
    else:
        return {path: doc}
    return {p: v for k, sub in items for p, v in _leaves(sub, f"{path}/{k}").items()}


def _covered(path: str, ignored: list[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in ignored)


@pytest.mark.parametrize("file", ["argocd-application.yaml", "flux-kustomization.yaml"])
def test_gitops_manifests_have_the_shape_of_their_kind(file: str) -> None:
    doc = _doc(file)
    assert gitops_shape.handles(doc)
    assert gitops_shape.gitops_errors(doc) == []
    path = doc["spec"].get("source", doc["spec"]).get("path")
    assert (REPO / path).is_dir(), path  # it deploys a folder that exists


def test_gitops_shape_check_is_not_vacuous() -> None:
    app = _doc("argocd-application.yaml")
    bad = copy.deepcopy(app)
    bad["spec"]["ignoreDiferences"] = bad["spec"].pop("ignoreDifferences")
    bad["spec"]["syncPolicy"]["automated"]["selfHeal"] = "yes"
    del bad["spec"]["project"]
    assert gitops_shape.gitops_errors(bad) == [
        "Application.spec.project: required",
        "Application.spec.syncPolicy.automated.selfHeal: must be bool, got str",
        "Application.spec.ignoreDiferences: unknown field",
    ]
    flux = _doc("flux-kustomization.yaml")
    flux["spec"]["patches"][0]["target"]["kinds"] = "VirtualService"
    assert gitops_shape.gitops_errors(flux) == [
        "Kustomization.spec.patches[0].target.kinds: unknown field"
    ]


def _writes() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(as in git, as canaryctl leaves it): rest-apl-vs at a step with its state; the plain
    rest-apl-mesh split with its pointer; rest-apl-vs with the canary swapped for v3."""
    out = []
    for folder, canary, annotation in [
        ("rest-apl", None, ANNOTATION),
        ("rest-apl-mesh", "v2", REF_ANNOTATION),
        ("rest-apl", "v3", ANNOTATION),
    ]:
        vs = _vs(folder)
        [(target, _)] = find_group([vs], app="rest-apl", namespace="istio-apl", canary=canary)
        ops = weight_patch(target, canary_weight=40, annotations={annotation: json.dumps({})})
        written = apply_patch(vs, ops)
        istio_schema.validate_virtual_service(written)
        out.append((vs, written))
    return out


def test_argocd_ignores_every_field_canaryctl_writes_and_nothing_else_of_the_route() -> None:
    app = _doc("argocd-application.yaml")
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert app["spec"]["syncPolicy"]["automated"]["selfHeal"] is True
    for before, after in _writes():
        old, new = _leaves(before), _leaves(after)
        changed = [p for p in old.keys() | new.keys() if old.get(p) != new.get(p)]
        assert changed
        for live in (before, after):
            ignored = _ignored(app, live)
            assert all(_covered(p, ignored) for p in changed), (changed, ignored)
            for managed in ("/spec/hosts", "/spec/gateways", "/spec/http/0/match"):
                assert not _covered(managed, ignored)


def test_flux_leaves_the_virtual_services_to_canaryctl_after_creating_them() -> None:
    flux = _doc("flux-kustomization.yaml")
    [patch] = flux["spec"]["patches"]
    assert patch["target"] == {"group": "networking.istio.io", "kind": "VirtualService"}
    body = yaml.safe_load(patch["patch"])
    assert (body["apiVersion"], body["kind"]) == ("networking.istio.io/v1", "VirtualService")
    assert body["metadata"]["annotations"] == {"kustomize.toolkit.fluxcd.io/ssa": "IfNotPresent"}
    vs = _vs("rest-apl")
    vs["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
    istio_schema.validate_virtual_service(vs)  # the patched object is still a valid one
