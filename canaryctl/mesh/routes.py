"""Pure VirtualService / DestinationRule logic: find the canary split, build the JSON patch.

Why pure: "only the weights of the split routes change, every other field stays as it was" is
the product's main safety promise. Without I/O (no ``kubernetes``, no clock) that logic is tested
exhaustively against Istio's own samples and CRD schema. Objects are plain API dicts. Decisions:

- A VirtualService whose ``metadata.namespace`` differs from ``namespace`` is ignored; one
  without a namespace (a manifest not yet applied) counts as in it. Hosts compare lowercased
  (DNS); ``.NS``/``.NS.svc``/``.NS.svc.cluster.local`` are stripped for that namespace only.
- A route holding two or more distinct destinations of the app must have exactly two (subset
  level: host APP, two subsets; host level: two ``APP``/``APP-*`` hosts). Three-way splits, a
  foreign third destination or a subset split with one subset missing are a ``PreflightError``
  rather than skipped: they carry app traffic that canaryctl could not weight correctly.
- Errors: what a flag resolves (``--virtual-service``, ``--canary``) is a ``UsageError``; a
  shape canaryctl cannot drive (mismatched pairs, routes disagreeing on the stable, a rollout's
  known pair gone) is a ``PreflightError``; nothing to drive is a ``TargetNotFoundError``.
- Roles from weights: each split route votes for its heavier side, tied routes abstain;
  conflicting votes are a ``PreflightError``. If all tie, ``canary`` must name one of the two
  sides (a third name cannot tell which side to replace).
- ``canary_weight`` is the *maximum* canary weight of the split routes (they normally agree):
  callers judge "new weight >= current" and the maximum never under-states the exposure.
- Host mode: ``canary`` must be ``APP``/``APP-*``; only ``destination.host`` is replaced.
- ``weight_patch`` without ``vs`` uses what ``find_target`` recorded (existing weight keys and
  annotations); it belongs to ``resource_version``, the patch's precondition, so a stale patch
  gets a 409 rather than being misapplied. An empty resourceVersion is refused (the API server
  would read it as "no precondition").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import jsonpatch

from canaryctl.errors import PreflightError, TargetNotFoundError, UsageError

Obj = Mapping[str, Any]
Key = tuple[str, str | None]


def normalise_host(host: str, namespace: str) -> str:
    """Short name of ``host`` when it is a Service of ``namespace``; else the host lowercased."""
    name = host.strip().lower().rstrip(".")
    ns = namespace.lower()
    for suffix in (f".{ns}.svc.cluster.local", f".{ns}.svc", f".{ns}"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Destination:
    host: str  # as written in the VirtualService (short or FQDN)
    subset: str | None = None

    def key(self, namespace: str) -> Key:
        """(short host, subset): what two destinations are compared by."""
        return normalise_host(self.host, namespace), self.subset

    def label(self) -> str:
        return f"{self.host}/{self.subset}" if self.subset else self.host

    @classmethod
    def of(cls, entry: Obj) -> Destination:
        """The destination of one ``route`` entry (``{destination: {...}, weight: N}``)."""
        dest = entry.get("destination") or {}
        subset = dest.get("subset")
        return cls(str(dest.get("host", "")), str(subset) if subset else None)


Known = tuple[Destination, Destination] | None  # (stable, canary) of a rollout in progress


@dataclass(frozen=True)
class SplitRoute:
    http_index: int  # index in spec.http
    stable_index: int  # index in that route's `route` list
    canary_index: int
    stable_has_weight: bool = True  # False: the weight key is absent (patch must "add" it)
    canary_has_weight: bool = True
    add_canary: Mapping[str, Any] | None = None  # a plain route: the canary entry to insert


@dataclass(frozen=True)
class Target:
    vs_name: str
    namespace: str
    app: str
    mode: Literal["subset", "host"]
    stable: Destination
    canary: Destination
    routes: tuple[SplitRoute, ...]
    canary_weight: int  # current
    resource_version: str
    canary_rewritten: bool  # True when `canary` replaced the destination (a patch must write it)
    annotation_keys: frozenset[str] | None = frozenset()  # None: no metadata.annotations map


def _at(obj: Any, *path: str) -> Any:
    """``obj[p0][p1]...``, None where anything on the way is missing."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def _name(obj: Obj) -> str:
    return str(_at(obj, "metadata", "name") or "")


def _http(vs: Obj) -> list[Obj]:
    return list(_at(vs, "spec", "http") or [])


def _entries(http: Obj) -> list[Obj]:
    return list(http.get("route") or [])


def _weight(entry: Obj) -> int:
    return int(entry.get("weight") or 0)


def _annotation_keys(obj: Obj) -> frozenset[str] | None:
    annotations = _at(obj, "metadata", "annotations")
    return None if annotations is None else frozenset(annotations)


def _csv(names: Sequence[str]) -> str:
    return ", ".join(names) or "none"


def _belongs(short: str, app: str) -> bool:
    return short == app or short.startswith(app + "-")


def _fmt(keys: Sequence[Key]) -> str:
    return " / ".join(f"{h}/{s}" if s else h for h, s in keys)


def route_indexes(vs: Obj, route_names: Sequence[str] | None) -> list[int]:
    """Indexes of the HTTP routes of ``vs`` named in ``route_names`` (all when None)."""
    return [
        i
        for i, http in enumerate(_http(vs))
        if route_names is None or http.get("name") in route_names
    ]


def _candidates(vs: Obj, app: str, namespace: str, route_names: Sequence[str] | None) -> list[int]:
    """Indexes of HTTP routes holding two or more distinct destinations of the app."""
    found = []
    http_routes = _http(vs)
    for index in route_indexes(vs, route_names):
        http = http_routes[index]
        keys = {Destination.of(e).key(namespace) for e in _entries(http)}
        hosts = {h for h, _ in keys if _belongs(h, app)}
        mine = [k for k in keys if k[0] in hosts]
        if len(mine) >= 2 and (app in hosts or len(hosts) >= 2):
            found.append(index)
    return found


def _mode(vs_name: str, index: int, http: Obj, app: str, ns: str) -> Literal["subset", "host"]:
    entries = _entries(http)
    keys = [Destination.of(e).key(ns) for e in entries]
    where = f"VirtualService {vs_name} http[{index}]"
    if len(entries) != 2:
        raise PreflightError(
            f"{where} splits {app} across {len(entries)} destinations ({_fmt(keys)}); "
            "canaryctl weights routes with exactly two"
        )
    if keys[0][0] != keys[1][0]:
        return "host"
    if keys[0][1] and keys[1][1]:
        return "subset"
    raise PreflightError(f"{where} sends to {_fmt(keys)}: give both destinations a subset")


def find_target(
    virtual_services: Sequence[Obj],
    *,
    app: str,
    namespace: str,
    vs_name: str | None = None,
    canary: str | None = None,
    known: tuple[Destination, Destination] | None = None,
    route_names: Sequence[str] | None = None,
) -> Target:
    """The split to drive for ``app``. ``known`` = (stable, canary) of a rollout in progress;
    ``route_names`` (``--route``) limits it to the HTTP routes of those names."""
    in_ns = [v for v in virtual_services if _at(v, "metadata", "namespace") in (None, namespace)]
    names = _csv([_name(vs) for vs in in_ns])
    if vs_name is not None:
        in_ns = [vs for vs in in_ns if _name(vs) == vs_name][:1]
        if not in_ns:
            raise TargetNotFoundError(
                f"VirtualService {vs_name} not found in namespace {namespace} (found: {names}); "
                "check --virtual-service"
            )
    candidates = [
        (vs, idx) for vs in in_ns if (idx := _candidates(vs, app, namespace, route_names))
    ]
    if not candidates:
        raise TargetNotFoundError(
            f"no HTTP route splits {app} between two subsets or two {app}-* hosts in "
            f"{'VirtualService ' + vs_name if vs_name else 'any VirtualService'} of namespace "
            f"{namespace} (inspected: {names}); add "
            "a weighted two-destination route (e.g. v1 100 / v2 0) or use --virtual-service"
        )
    if len(candidates) > 1:
        raise UsageError(
            f"several VirtualServices in namespace {namespace} split traffic for {app} "
            f"({_csv([_name(vs) for vs, _ in candidates])}); choose one with --virtual-service"
        )
    vs, indexes = candidates[0]
    return _target(vs, indexes, app, namespace, canary, known)


def _target(
    vs: Obj, indexes: list[int], app: str, ns: str, canary: str | None, known: Known
) -> Target:
    name, http = _name(vs), _http(vs)
    modes = {_mode(name, i, http[i], app, ns) for i in indexes}
    groups: dict[frozenset[Key], list[int]] = {}
    for i in indexes:
        pair = frozenset(Destination.of(e).key(ns) for e in _entries(http[i]))
        groups.setdefault(pair, []).append(i)
    if len(groups) > 1:
        detail = "; ".join(f"http{idx} splits {_fmt(sorted(p))}" for p, idx in groups.items())
        raise PreflightError(
            f"VirtualService {name}: split routes for {app} do not split the same two "
            f"destinations ({detail}); make them agree"
        )
    mode = modes.pop()
    first = [Destination.of(e) for e in _entries(http[indexes[0]])]
    keys = [d.key(ns) for d in first]

    def side(key: Key) -> str:
        return str(key[1]) if mode == "subset" else key[0]

    def canary_key(value: str) -> Key:
        if mode == "subset":
            return keys[0][0], value
        short = normalise_host(value, ns)
        if not _belongs(short, app):
            raise UsageError(f"--canary {value} is not a host of app {app} ({app} or {app}-*)")
        return short, next((k[1] for k in keys if k[0] == short), None)

    if known is not None:
        stable_key = known[0].key(ns)
        if {stable_key, known[1].key(ns)} != set(keys):
            raise PreflightError(
                f"VirtualService {name} no longer splits "
                f"{_fmt([k.key(ns) for k in known])} (the rollout in progress) but "
                f"{_fmt(keys)}"
            )
    else:
        votes = set()
        for i in indexes:
            a, b = _entries(http[i])
            if _weight(a) != _weight(b):
                votes.add(Destination.of(a if _weight(a) > _weight(b) else b).key(ns))
        if len(votes) > 1:
            raise PreflightError(
                f"VirtualService {name}: split routes http{indexes} disagree on which of "
                f"{_fmt(keys)} has the larger weight (the stable)"
            )
        named = canary_key(canary) if canary is not None and not votes else None
        if not votes and named not in keys:
            w = _weight(_entries(http[indexes[0]])[0])
            raise UsageError(
                f"VirtualService {name} splits {_fmt(keys)} {w}/{w}: stable and canary cannot "
                f"be told apart; name the canary ({' or '.join(map(side, keys))}) with --canary"
            )
        stable_key = votes.pop() if votes else keys[1] if named == keys[0] else keys[0]
    canary_now = keys[1] if stable_key == keys[0] else keys[0]
    new_canary = first[keys.index(canary_now)]
    rewritten = False
    if canary is not None:
        wanted = canary_key(canary)
        if side(wanted) == side(stable_key):
            raise UsageError(
                f"--canary {canary} is the stable {mode} of VirtualService {name}; "
                "a rollout cannot target the stable"
            )
        if side(wanted) != side(canary_now):
            rewritten = True
            new_canary = replace(new_canary, **{mode: canary})  # mode names the field
    routes = []
    for i in indexes:
        entries = _entries(http[i])
        order = [Destination.of(e).key(ns) for e in entries]
        si, ci = order.index(stable_key), order.index(canary_now)
        routes.append(SplitRoute(i, si, ci, "weight" in entries[si], "weight" in entries[ci]))
    return Target(
        vs_name=name,
        namespace=ns,
        app=app,
        mode=mode,
        stable=first[keys.index(stable_key)],
        canary=new_canary,
        routes=tuple(routes),
        canary_weight=max(_weight(_entries(http[r.http_index])[r.canary_index]) for r in routes),
        resource_version=str(_at(vs, "metadata", "resourceVersion") or ""),
        canary_rewritten=rewritten,
        annotation_keys=_annotation_keys(vs),
    )


def weight_patch(
    target: Target,
    *,
    canary_weight: int,
    annotations: Mapping[str, str | None] | None = None,
    vs: Obj | None = None,
) -> list[dict[str, Any]]:
    """RFC 6902 patch: resourceVersion precondition, weights, canary rewrite, annotations.

    ``vs`` (the object ``target`` was found in) tells which weight keys and annotations exist;
    without it, what ``find_target`` recorded is used. An annotation set to None is removed.
    """
    if type(canary_weight) is not int or not 0 <= canary_weight <= 100:
        raise ValueError(f"canary weight must be an integer in 0..100, got {canary_weight!r}")
    rv = target.resource_version
    if not rv:
        raise ValueError(f"VirtualService {target.vs_name} has no resourceVersion to patch against")
    if vs is not None and str(_at(vs, "metadata", "resourceVersion") or "") != rv:
        raise ValueError(f"vs is not the object target was found in (resourceVersion {rv})")
    keys = target.annotation_keys if vs is None else _annotation_keys(vs)
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": rv}
    ]
    for r in target.routes:
        base = f"/spec/http/{r.http_index}/route"
        has = [r.stable_has_weight, r.canary_has_weight]
        if vs is not None:
            entries = _entries(_http(vs)[r.http_index])
            has = ["weight" in entries[r.stable_index], r.canary_has_weight]
            if r.add_canary is None:
                has[1] = "weight" in entries[r.canary_index]
        sides = ((r.stable_index, 100 - canary_weight), (r.canary_index, canary_weight))
        for present, (index, weight) in zip(has, sides, strict=True):
            if index == r.canary_index and r.add_canary is not None:  # a plain route is split
                entry = {**r.add_canary, "weight": weight}
                ops.append({"op": "add", "path": f"{base}/{index}", "value": entry})
                continue
            op = "replace" if present else "add"
            ops.append({"op": op, "path": f"{base}/{index}/weight", "value": weight})
        if target.canary_rewritten:
            path = f"{base}/{r.canary_index}/destination/{target.mode}"  # subset or host
            ops.append(
                {"op": "replace", "path": path, "value": getattr(target.canary, target.mode)}
            )
    return ops + annotation_ops(keys, annotations or {})


def annotation_patch(vs: Obj, annotations: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """RFC 6902 patch changing only annotations, guarded by the resourceVersion of ``vs``:
    what a pause writes when another writer changed the weights (they are left alone)."""
    rv = str(_at(vs, "metadata", "resourceVersion") or "")
    if not rv:
        raise ValueError(f"VirtualService {_name(vs)} has no resourceVersion to patch against")
    guard = {"op": "replace", "path": "/metadata/resourceVersion", "value": rv}
    return [guard, *annotation_ops(_annotation_keys(vs), annotations)]


def annotation_ops(
    keys: frozenset[str] | None, changes: Mapping[str, str | None]
) -> list[dict[str, Any]]:
    """RFC 6902 ops setting ``changes`` (None removes) on an object whose annotation keys are
    ``keys`` (None: it has no ``metadata.annotations`` map)."""
    ops: list[dict[str, Any]] = []
    if keys is None and any(v is not None for v in changes.values()):
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    for key, value in changes.items():
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")  # RFC 6901
        if value is not None:
            ops.append({"op": "add", "path": path, "value": value})
        elif keys is not None and key in keys:
            ops.append({"op": "remove", "path": path})
    return ops


def apply_patch(doc: Obj, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply an RFC 6902 patch to a copy of ``doc``; ValueError when it does not apply."""
    try:
        result = jsonpatch.apply_patch(copy.deepcopy(dict(doc)), ops, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise ValueError(f"JSON patch does not apply: {exc}") from exc
    if not isinstance(result, dict):
        raise ValueError("JSON patch did not produce an object")
    return result


def weights_of(vs: Obj, target: Target) -> list[tuple[int, int]]:
    """(stable, canary) weight of every split route of ``target`` in ``vs``; missing = 0, and
    a plain route not split yet is (100, 0): its one destination receives all its traffic."""
    found = [(_entries(_http(vs)[r.http_index]), r) for r in target.routes]
    return [
        (_weight(e[r.stable_index]), _weight(e[r.canary_index]))
        if len(e) > r.canary_index
        else (100, 0)
        for e, r in found
    ]


def destination_rule_subsets(
    destination_rules: Sequence[Obj], *, host: str, namespace: str
) -> dict[str, dict[str, str]]:
    """Subset name -> labels for ``host`` from the DestinationRule(s) in ``namespace``.

    Several rules for one host are merged as Istio does: oldest first (creationTimestamp, then
    name), the first definition of a subset name wins.
    """
    short = normalise_host(host, namespace)
    in_ns = [d for d in destination_rules if _at(d, "metadata", "namespace") in (None, namespace)]
    mine = [dr for dr in in_ns if normalise_host(str(_at(dr, "spec", "host")), namespace) == short]
    if not mine:
        raise TargetNotFoundError(
            f"no DestinationRule for host {host} in namespace {namespace} (inspected: "
            f"{_csv([_name(dr) for dr in in_ns])}); the subsets must be defined in one"
        )
    mine.sort(key=lambda dr: (str(_at(dr, "metadata", "creationTimestamp") or ""), _name(dr)))
    subsets: dict[str, dict[str, str]] = {}
    for subset in (s for dr in mine for s in _at(dr, "spec", "subsets") or []):
        name, labels = str(subset.get("name") or ""), subset.get("labels") or {}
        if name and name not in subsets:
            subsets[name] = {str(k): str(v) for k, v in labels.items()}
    return subsets


def preflight_subsets(
    subsets: Mapping[str, Mapping[str, str]], target: Target, *, destination_rule: str = ""
) -> tuple[dict[str, str], dict[str, str]]:
    """Labels of the stable and canary subsets (host mode has none: ValueError)."""
    if target.mode != "subset":
        raise ValueError("preflight_subsets applies to subset-level splits only")
    where = f"DestinationRule {destination_rule or 'for host ' + target.stable.host}"
    found: list[dict[str, str]] = []
    for role, dest in (("stable", target.stable), ("canary", target.canary)):
        subset = str(dest.subset)
        if subset not in subsets:
            raise PreflightError(
                f"subset {subset} ({role}) is not defined in {where} "
                f"(defined: {_csv(sorted(subsets))}); add it before the rollout"
            )
        if not subsets[subset]:
            raise PreflightError(f"subset {subset} ({role}) in {where} has no labels")
        found.append(dict(subsets[subset]))
    if found[0] == found[1]:
        raise PreflightError(
            f"subsets {target.stable.subset} and {target.canary.subset} in {where} select the "
            f"same pods ({found[0]}); the canary cannot be told apart from the stable"
        )
    return found[0], found[1]


def select_deployments(
    deployments: Sequence[Obj], labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Deployments whose pod template carries every label of ``labels``.

    Subset labels alone (``version: v1``) match every app's v1: the caller adds the Service's
    selector (e.g. ``app``). Empty ``labels`` would match everything: ValueError.
    """
    if not labels:
        raise ValueError("select_deployments needs at least one label")
    return [
        dict(d)
        for d in deployments
        if labels.items() <= dict(_at(d, "spec", "template", "metadata", "labels") or {}).items()
    ]


def deployment_available(deployment: Obj) -> tuple[bool, str]:
    """(ok, reason): the Available condition is True and at least one replica is available."""
    wanted = _at(deployment, "spec", "replicas")
    replicas = 1 if wanted is None else int(wanted)  # the API server defaults replicas to 1
    if replicas == 0:
        return False, "scaled to 0"
    available = int(_at(deployment, "status", "availableReplicas") or 0)
    reason = f"{available}/{replicas} replicas available"
    conditions = _at(deployment, "status", "conditions") or []
    cond = next((c for c in conditions if c.get("type") == "Available"), None)
    if cond is None:
        return False, reason if available < 1 else f"{reason}, but no Available condition yet"
    if cond.get("status") != "True":
        why = ": ".join(str(cond[k]) for k in ("reason", "message") if cond.get(k))
        reason += f", Available={cond.get('status')}" + (
            f" ({' '.join(why.split())})" if why else ""
        )
    return available >= 1 and cond.get("status") == "True", reason


def app_of_hosts(shorts: Sequence[str]) -> str | None:
    """The app that every one of ``shorts`` (short host names) belongs to, by the same rule
    ``find_target`` uses (the app's own host, or ``APP-something``): the longest such name.
    ``reviews-v1``/``reviews-v2`` -> ``reviews``; ``web-primary``/``web-canary`` -> ``web``."""
    if not shorts:
        return None
    parts = shorts[0].split("-")
    for end in range(len(parts), 0, -1):
        app = "-".join(parts[:end])
        if all(_belongs(short, app) for short in shorts):
            return app
    return None


def infer_app(vs: Obj) -> str | None:
    """The app of a VirtualService for a declarative start (``canaryctl.io/promote`` without
    ``canaryctl.io/app``): from its first route split between two destinations of one app, else
    from its first route with a single destination. Hosts outside the namespace are not apps."""
    ns = str(_at(vs, "metadata", "namespace") or "")
    for wanted in (2, 1):
        for http in _http(vs):
            entries = _entries(http)
            shorts = [normalise_host(Destination.of(e).host, ns) for e in entries]
            local = len(entries) == wanted and not any("." in h for h in shorts)
            if local and (app := app_of_hosts(shorts)):
                return app
    return None
