"""Gateway API HTTPRoute <-> the split logic of ``routes``/``group``/``collapse`` (pure).

Why a view and not a second copy of that logic: "find the split, keep every other field, guard
the patch by resourceVersion" is the product's main safety promise, tested against Istio's
samples by the hundred. An HTTPRoute rule with weighted ``backendRefs`` is the same thing as a
VirtualService HTTP route with weighted destinations, so ``view`` shows an HTTPRoute in that
shape (``spec.rules[i].backendRefs[j]`` as ``spec.http[i].route[j]``), the shared logic decides
on it, and ``ops`` turns its JSON patch back into HTTPRoute paths. Decisions:

- A backendRef is a destination when it is a Service (no ``group``/``kind``, or core
  ``Service``): its host is its ``name`` (``name.NAMESPACE`` when it names another namespace,
  which never belongs to the app). Other backends get a host no app matches.
- A missing ``weight`` is 1 (the Gateway API default), not 0 as in Istio. Weight ops are
  written as ``add``, which sets a member whether or not it exists (RFC 6902).
- A rule without ``matches`` is a catch-all (Gateway API's default match is ``PathPrefix /``).
- A backendRef inserted by a first step (a plain rule becoming a split) is a copy of the
  stable's (port, filters, ...) with the canary's ``name``; a collapsed rule keeps the
  remaining backendRef with all its fields and without ``weight``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from canaryctl.errors import InputError

GROUP_VERSION = "gateway.networking.k8s.io/v1"
KIND = "HTTPRoute"
PLURAL = "httproutes"
_REF = "backendRef"  # in a view entry: the backendRef it stands for (never written)
_PATH = re.compile(r"/spec/http/(\d+)/route(?:/(\d+)(/weight|/destination/host)?)?")

Obj = Mapping[str, Any]
Ops = list[dict[str, Any]]


def _is_service(ref: Obj) -> bool:
    return ref.get("group") in (None, "", "core") and ref.get("kind") in (None, "Service")


def _entry(ref: Obj) -> dict[str, Any]:
    name = str(ref.get("name") or "")
    if not _is_service(ref):
        host = f"{ref.get('group') or 'core'}/{ref.get('kind')}/{name}"  # never an app's host
    else:
        host = f"{name}.{ref['namespace']}" if ref.get("namespace") else name
    return {"destination": {"host": host}, "weight": int(ref.get("weight", 1)), _REF: dict(ref)}


def view(route: Obj) -> dict[str, Any]:
    """``route`` in the VirtualService shape (same metadata: same resourceVersion guard)."""
    http = []
    for rule in (route.get("spec") or {}).get("rules") or []:
        entry: dict[str, Any] = {"route": [_entry(r) for r in rule.get("backendRefs") or []]}
        if rule.get("matches"):
            entry["match"] = rule["matches"]
        if rule.get("name"):
            entry["name"] = rule["name"]
        http.append(entry)
    return {"metadata": route.get("metadata") or {}, "spec": {"http": http}}


def backend_ref(entry: Obj) -> dict[str, Any]:
    """The backendRef a view entry stands for, with the entry's host (name) and weight."""
    ref = {k: v for k, v in dict(entry.get(_REF) or {}).items() if k != "weight"}
    ref["name"] = str(entry["destination"]["host"]).split(".")[0]
    if "weight" in entry:
        ref["weight"] = entry["weight"]
    return ref


def ops(view_ops: Ops) -> Ops:
    """A JSON patch on ``view(route)`` as the same patch on ``route``."""
    out: Ops = []
    for op in view_ops:
        path = str(op["path"])
        if not path.startswith("/spec/"):  # resourceVersion guard, annotations
            out.append(op)
            continue
        match = _PATH.fullmatch(path)
        if match is None:
            raise InputError(f"an HTTPRoute has no equivalent of {path} (Istio subsets)")
        rule, index, leaf = match.groups()
        base = f"/spec/rules/{rule}/backendRefs"
        if index is None:  # a whole rule's route (collapse)
            out.append({**op, "value": [backend_ref(e) for e in op["value"]]})
            out[-1]["path"] = base
        elif leaf == "/weight":
            out.append({"op": "add", "path": f"{base}/{index}/weight", "value": op["value"]})
        elif leaf is not None:  # the canary's (or, on undo, the previous) Service
            name = str(op["value"]).split(".")[0]
            out.append({"op": "replace", "path": f"{base}/{index}/name", "value": name})
        else:  # a backendRef inserted into a plain rule
            out.append({**op, "path": f"{base}/{index}", "value": backend_ref(op["value"])})
    return out


def reword(text: str) -> str:
    """A message of the shared logic in HTTPRoute words."""
    text = text.replace("VirtualServices", "HTTPRoutes").replace("VirtualService", KIND)
    text = text.replace(" http[", " rules[").replace("HTTP route", "rule")
    return text.replace("--virtual-service", "--http-route")


def parent_services(route: Obj) -> list[str]:
    """The Services ``route`` is attached to (GAMMA: in-mesh, east-west traffic)."""
    refs = (route.get("spec") or {}).get("parentRefs") or []
    return [str(p.get("name")) for p in refs if p.get("kind") == "Service"]
