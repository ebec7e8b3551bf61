"""Finishing a release on ONE VirtualService (pure): collapse the split, or undo it.

Kept beside ``routes.py`` and as pure as it: each function takes one VirtualService and the
rollout's pair of destinations, and returns RFC 6902 ops guarded by the object's
resourceVersion. A rollout that owns several VirtualServices applies them to each.

- ``collapse_ops``: after a promotion, every HTTP route that splits exactly the rollout's pair
  with all traffic on the new stable becomes a plain route to it (the one entry kept with its
  own fields, without ``weight``), so the next release starts from a plain route. A route of
  the pair at any other weights was changed by someone else since the promotion: it is left as
  it is and reported, never collapsed (that would move traffic).
- ``undo_ops``: all traffic back to the previous version in one patch. Routes collapsed by this
  rollout (recorded indexes) get their destination's subset (or host) set back; routes still
  split get previous 100 / new 0. A recorded route that no longer sends only to the new
  version was edited since: ``PreflightError`` naming it (nothing is written).
- ``routes_to``: the routes still sending traffic to a destination, so that no Deployment is
  scaled to 0 while a route names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from canaryctl.errors import PreflightError
from canaryctl.mesh.routes import Destination, Obj, annotation_ops

Ops = list[dict[str, Any]]


def _routes(vs: Obj) -> list[Obj]:
    return list((vs.get("spec") or {}).get("http") or [])


def _name(vs: Obj) -> str:
    return str((vs.get("metadata") or {}).get("name") or "")


def _keys(http: Obj, namespace: str) -> list[tuple[str, str | None]]:
    return [Destination.of(e).key(namespace) for e in http.get("route") or []]


def _weight(entry: Obj) -> int:
    return int(entry.get("weight") or 0)


@dataclass(frozen=True)
class Collapse:
    routes: tuple[int, ...]  # http indexes made plain
    skipped: tuple[str, ...]  # why a route of the pair was left split
    ops: Ops  # empty when there is nothing to collapse


def guard(vs: Obj, ops: Ops, annotations: Mapping[str, str | None]) -> Ops:
    """``ops`` preceded by the resourceVersion precondition, followed by the annotations."""
    meta = vs.get("metadata") or {}
    rv = str(meta.get("resourceVersion") or "")
    if not rv:
        raise ValueError(f"VirtualService {_name(vs)} has no resourceVersion to patch against")
    keys = None if meta.get("annotations") is None else frozenset(meta["annotations"])
    head = [{"op": "replace", "path": "/metadata/resourceVersion", "value": rv}]
    return head + ops + annotation_ops(keys, annotations)


def collapse_ops(
    vs: Obj, *, namespace: str, previous: Destination, stable: Destination
) -> Collapse:
    """Plain routes to ``stable`` (just promoted) where the pair is split 0/100."""
    pair = {previous.key(namespace), stable.key(namespace)}
    done: list[int] = []
    skipped: list[str] = []
    ops: Ops = []
    for index, http in enumerate(_routes(vs)):
        keys = _keys(http, namespace)
        if len(keys) != 2 or set(keys) != pair:
            continue
        entries = list(http.get("route") or [])
        new = entries[keys.index(stable.key(namespace))]
        weights = [_weight(e) for e in entries]
        if _weight(new) != 100:
            skipped.append(
                f"VirtualService {_name(vs)} http[{index}] is at {weights[0]}/{weights[1]}, "
                f"not all on {stable.label()}: left split"
            )
            continue
        plain = {k: v for k, v in new.items() if k != "weight"}
        ops.append({"op": "replace", "path": f"/spec/http/{index}/route", "value": [plain]})
        done.append(index)
    return Collapse(tuple(done), tuple(skipped), ops)


def undo_ops(
    vs: Obj,
    *,
    namespace: str,
    previous: Destination,
    current: Destination,
    collapsed: Sequence[int],
) -> Ops:
    """All traffic of the rollout's routes back to ``previous`` (see the module docstring)."""
    field = "subset" if previous.subset else "host"
    routes = _routes(vs)
    ops: Ops = []
    for index in collapsed:
        keys = _keys(routes[index], namespace) if index < len(routes) else []
        if keys != [current.key(namespace)]:
            raise PreflightError(
                f"VirtualService {_name(vs)} http[{index}] no longer sends only to "
                f"{current.label()} (edited since the promotion); undo it by hand"
            )
        path = f"/spec/http/{index}/route/0/destination/{field}"
        ops.append({"op": "replace", "path": path, "value": getattr(previous, field)})
    pair = {previous.key(namespace), current.key(namespace)}
    for index, http in enumerate(routes):
        keys = _keys(http, namespace)
        if len(keys) == 2 and set(keys) == pair:
            entries = list(http.get("route") or [])
            for i, key in enumerate(keys):
                op = "replace" if "weight" in entries[i] else "add"
                value = 100 if key == previous.key(namespace) else 0
                ops.append(
                    {"op": op, "path": f"/spec/http/{index}/route/{i}/weight", "value": value}
                )
    if not ops:
        raise PreflightError(
            f"VirtualService {_name(vs)} has no route of this rollout to {current.label()}; "
            "nothing to undo"
        )
    return ops


def routes_to(vs: Obj, *, namespace: str, destination: Destination) -> list[str]:
    """``VirtualService NAME http[i]`` for each HTTP route of ``vs`` that sends traffic to
    ``destination``: an entry of it with a weight above 0, or the only entry (weight implied)."""
    key = destination.key(namespace)
    found = []
    for index, http in enumerate(_routes(vs)):
        entries = list(http.get("route") or [])
        for entry in entries:
            sends = len(entries) == 1 or _weight(entry) > 0
            if sends and Destination.of(entry).key(namespace) == key:
                found.append(f"VirtualService {_name(vs)} http[{index}]")
                break
    return found
