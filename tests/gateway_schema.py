"""Check HTTPRoutes the way a real API server would, from Gateway API's own CRD (tests only).

The sibling of ``istio_schema`` for the pinned ``tests/data/gateway-api`` (v1.6.1, standard
channel; see that directory's README). Checked as there: the structural OpenAPI v3 schema
(Draft 4: types, ``required``, ``enum``, ``minimum``/``maximum``, ``maxItems``, patterns),
unknown fields (what the server would prune) and ObjectMeta's labels/annotations.

Not evaluated: the CRD's ``x-kubernetes-validations`` (CEL). Its rules constrain filters, path
values, matches and the uniqueness of parentRefs/hostnames, none of which canaryctl writes: it
only changes ``backendRefs[].weight``/``name`` and inserts or removes a whole backendRef copied
from one already accepted. ``CEL_RULES`` counts the rules so that a newer CRD adding one (say,
on backendRefs) changes the count and this decision is made again.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.istio_schema import _metadata_errors, _nullable, _unknown

GATEWAY_DIR = Path(__file__).resolve().parent / "data" / "gateway-api"
CRD_FILE = GATEWAY_DIR / "gateway.networking.k8s.io_httproutes.yaml"
EXAMPLES = GATEWAY_DIR / "examples"
CEL_RULES = 89  # in the v1 schema of v1.6.1 (see the module docstring)


class HTTPRouteInvalid(AssertionError):
    """The object would be rejected (or silently pruned) by the API server."""


@functools.cache
def _crd() -> dict[str, Any]:
    with CRD_FILE.open() as fh:
        crd: dict[str, Any] = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return crd


def schema(version: str = "v1") -> dict[str, Any]:
    """A copy of the HTTPRoute ``openAPIV3Schema`` of ``version``."""
    for v in _crd()["spec"]["versions"]:
        if v["name"] == version:
            return copy.deepcopy(_nullable(v["schema"]["openAPIV3Schema"]))
    raise ValueError(f"unknown HTTPRoute version {version!r}")


def cel_rules(node: Any) -> int:
    """How many CEL rules ``node`` holds (all depths)."""
    if isinstance(node, dict):
        own = len(node.get("x-kubernetes-validations") or [])
        return own + sum(cel_rules(v) for k, v in node.items() if k != "x-kubernetes-validations")
    if isinstance(node, list):
        return sum(cel_rules(v) for v in node)
    return 0


def http_route_errors(obj: Mapping[str, Any], version: str = "v1") -> list[str]:
    """Everything the API server would reject or prune in an HTTPRoute (CEL aside)."""
    root = schema(version)
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft4Validator(root).iter_errors(body)
    ]
    errors += _metadata_errors(obj.get("metadata", {}))
    errors += [f"{p}: unknown field (pruned by the API server)" for p in _unknown(body, root, "")]
    return errors


def validate_http_route(obj: Mapping[str, Any], version: str = "v1") -> None:
    """Raise ``HTTPRouteInvalid`` listing every problem of ``obj``."""
    errors = http_route_errors(obj, version)
    if errors:
        raise HTTPRouteInvalid(f"HTTPRoute ({version}) invalid: " + "; ".join(errors))


def examples() -> dict[str, dict[str, Any]]:
    """The pinned traffic-split samples, by file name."""
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))}
