"""Every VirtualService routing an app moves together; plain routes become splits (pure).

Why: real setups route one host through several VirtualServices (one bound to the ingress
gateway for outside traffic, one for in-mesh callers), and before a release their routes send
everything to stable. ``routes.find_target`` drives the split of one object; this module picks
the objects, turns a plain route into a split in the first patch, and says when in-mesh
callers bypass all of them. Decisions (README "How it works"):

- Members: the VirtualServices of the namespace with an HTTP route to a destination of the app
  (host ``APP`` or ``APP-*``), or exactly those named with ``--virtual-service``. A member with
  nothing to drive (say, only a tester route to v2) is left alone unless it was named.
- A *plain* route sends to one destination of the app. With ``--canary`` (or the canary of a
  split found in another member, or of the rollout in progress), every plain route to the
  stable gets a second entry: a copy of the stable's (host, port, headers) with the subset (or,
  when the stable has no subset, the host) swapped, written with the first step's weights.
  Plain routes to anything else (bookinfo's ``jason`` -> v2) stay exactly as they are, and so
  do plain routes that match on the caller (``headers``, ``queryParams``, ``withoutHeaders``,
  ``sourceLabels``, ``sourceNamespace``) unless ``--route`` names them: they pin chosen users
  (testers) to a version, and the release after the one that collapsed onto v2 must not move
  bookinfo's ``jason`` route from v2 to v3 (a general route's uri/method/port match is moved).
- The stable of plain routes: the destination of the catch-all route (the last one without
  ``match``), else the one destination all of them share; otherwise name them with ``--route``.
- All members must agree on (stable, canary). The primary (which carries the rollout state)
  is ``primary`` when given (a declarative start's), else the first that already splits (in
  ``--virtual-service`` order, else by name), else the first.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from canaryctl.errors import PreflightError, TargetNotFoundError, UsageError
from canaryctl.mesh.routes import (
    Destination,
    Known,
    Obj,
    Target,
    _at,
    _belongs,
    _http,
    _name,
    find_target,
    normalise_host,
    route_indexes,
    weights_of,
)

Member = tuple[Target, Obj]  # the split to drive and the object it was found in


def _of_app(dest: Destination, app: str, namespace: str) -> bool:
    return _belongs(dest.key(namespace)[0], app)


def routes_app(vs: Obj, *, app: str, namespace: str) -> bool:
    """``vs`` has an HTTP route to a destination of ``app``."""
    return any(
        _of_app(Destination.of(e), app, namespace) for h in _http(vs) for e in h.get("route") or []
    )


def _plain(vs: Obj, app: str, ns: str, route_names: Sequence[str] | None) -> dict[int, Destination]:
    """http index -> destination of the routes sending everything to one destination of app."""
    found = {}
    for i in route_indexes(vs, route_names):
        entries = _http(vs)[i].get("route") or []
        if len(entries) == 1 and _of_app(dest := Destination.of(entries[0]), app, ns):
            found[i] = dest
    return found


_CALLER_FIELDS = ("headers", "queryParams", "withoutHeaders", "sourceLabels", "sourceNamespace")


def _pins_callers(http: Obj) -> bool:
    """Every match of the route selects callers (a tester header, a query parameter...)."""
    matches = http.get("match") or []
    return bool(matches) and all(any(k in m for k in _CALLER_FIELDS) for m in matches)


def _plain_stable(vs: Obj, plain: Mapping[int, Destination], app: str, ns: str) -> Destination:
    catch_all = [i for i in plain if not _http(vs)[i].get("match")]
    if catch_all:
        return plain[catch_all[-1]]
    keys = {d.key(ns) for d in plain.values()}
    if len(keys) == 1:
        return next(iter(plain.values()))
    shown = ", ".join(f"http[{i}] -> {d.label()}" for i, d in plain.items())
    raise UsageError(
        f"VirtualService {_name(vs)} routes {app} to several destinations ({shown}) and has no "
        "catch-all route to tell the stable; choose the routes with --route"
    )


def _split_plain(
    vs: Obj,
    *,
    app: str,
    namespace: str,
    canary: str | None,
    known: Known,
    route_names: Sequence[str] | None,
) -> Target:
    """The target of a member whose routes of ``app`` are plain: found in a view of ``vs``
    where each plain route to the stable already holds the canary (weight 0); the patch inserts
    that entry (``SplitRoute.add_canary``) instead of changing a weight."""
    name = _name(vs)
    plain = _plain(vs, app, namespace, route_names)
    if not plain:
        raise TargetNotFoundError(f"VirtualService {name} has no HTTP route to {app}")
    if known is not None:
        stable, wanted = known[0], known[1].subset or known[1].host
    elif canary is None:
        shown = ", ".join(f"http[{i}] -> {d.label()}" for i, d in plain.items())
        raise TargetNotFoundError(
            f"VirtualService {name} sends {app} to one destination per route ({shown}) and no "
            "route splits it; give --canary SUBSET (or host) to split the route to the stable"
        )
    else:
        stable, wanted = _plain_stable(vs, plain, app, namespace), canary
    view = copy.deepcopy(dict(vs))
    split = [
        i
        for i, d in plain.items()
        if d.key(namespace) == stable.key(namespace)
        and (route_names or not _pins_callers(_http(vs)[i]))
    ]
    if not split:
        raise TargetNotFoundError(f"VirtualService {name} has no route of {app} to {stable}")
    for i in split:
        entries = view["spec"]["http"][i]["route"]
        entry = {k: v for k, v in entries[0].items() if k != "weight"}
        entry["destination"] = {
            **entry["destination"],
            ("subset" if stable.subset else "host"): wanted,
        }
        entries[0] = {**entries[0], "weight": 100}
        entries.append({**entry, "weight": 0})
    target = find_target(
        [view],
        app=app,
        namespace=namespace,
        vs_name=name,
        canary=None if known is not None else wanted,
        known=known,
        route_names=route_names,
    )
    originals = _http(vs)
    routes = []
    for r in target.routes:
        if r.http_index in split:
            added = {
                k: v for k, v in _http(view)[r.http_index]["route"][1].items() if k != "weight"
            }
            had = "weight" in originals[r.http_index]["route"][0]
            r = replace(r, add_canary=added, stable_has_weight=had, canary_has_weight=False)
        routes.append(r)
    return replace(target, routes=tuple(routes))


def resolve(
    vs: Obj,
    *,
    app: str,
    namespace: str,
    canary: str | None = None,
    known: Known = None,
    route_names: Sequence[str] | None = None,
) -> Target:
    """The split to drive in one member (``routes.find_target``, else its plain routes)."""
    args: dict[str, Any] = {"app": app, "namespace": namespace, "route_names": route_names}
    try:
        return find_target([vs], vs_name=_name(vs), canary=canary, known=known, **args)
    except TargetNotFoundError:
        if not _plain(vs, app, namespace, route_names):
            raise
    return _split_plain(vs, canary=canary, known=known, **args)


def find_group(
    virtual_services: Sequence[Obj],
    *,
    app: str,
    namespace: str,
    names: Sequence[str] = (),
    canary: str | None = None,
    route_names: Sequence[str] | None = None,
    primary: str | None = None,
) -> list[Member]:
    """Every member's split, the primary first (``primary``: the one to carry the state)."""
    in_ns = [v for v in virtual_services if _at(v, "metadata", "namespace") in (None, namespace)]
    by_name = {_name(v): v for v in in_ns}
    for n in names:
        if n not in by_name:
            raise TargetNotFoundError(
                f"VirtualService {n} not found in namespace {namespace} "
                f"(found: {', '.join(sorted(by_name)) or 'none'}); check --virtual-service"
            )
    members = [by_name[n] for n in names] or [
        v for v in sorted(in_ns, key=_name) if routes_app(v, app=app, namespace=namespace)
    ]
    if not members:
        raise TargetNotFoundError(
            f"no VirtualService in namespace {namespace} routes {app} "
            f"(inspected: {', '.join(sorted(by_name)) or 'none'})"
        )
    named_routes = {h.get("name") for vs in members for h in _http(vs)}
    for route in route_names or ():
        if route not in named_routes:
            raise UsageError(
                f"--route {route}: no HTTP route of that name in "
                f"{', '.join(_name(v) for v in members)}"
            )

    def member(vs: Obj, **how: Any) -> Member:
        return resolve(vs, app=app, namespace=namespace, route_names=route_names, **how), vs

    found: list[Member] = []
    missing: list[tuple[Obj, TargetNotFoundError]] = []
    for vs in members:
        try:
            found.append(member(vs, canary=canary))
        except TargetNotFoundError as not_found:
            missing.append((vs, not_found))
    if not found:
        raise missing[0][1]
    pair = (found[0][0].stable, found[0][0].canary)
    for vs, first_error in missing:  # plain routes only: split with the others' canary
        try:
            found.append(member(vs, known=pair))
        except TargetNotFoundError:
            if names:
                raise first_error from None  # a member named with --virtual-service must be driven
    keys = {(t.stable.key(namespace), t.canary.key(namespace)) for t, _ in found}
    if len(keys) > 1:
        shown = "; ".join(
            f"{t.vs_name}: {t.stable.label()} -> {t.canary.label()}" for t, _ in found
        )
        raise PreflightError(
            f"the VirtualServices routing {app} disagree on the stable and canary ({shown}); "
            "make them agree or choose them with --virtual-service"
        )
    order = {n: i for i, n in enumerate(names)}

    def rank(m: Member) -> tuple[bool, bool, int, str]:
        t = m[0]
        splits = all(r.add_canary is None for r in t.routes)
        return t.vs_name != primary, not splits, order.get(t.vs_name, 0), t.vs_name

    return sorted(found, key=rank)


def weights_drift(vs: Obj, target: Target, weight: int) -> str | None:
    """What differs between the split routes of ``vs`` and ``weight`` (the canary weight
    canaryctl last wrote there), or None when they agree."""
    want = (100 - weight, weight)
    found = zip(target.routes, weights_of(vs, target), strict=True)
    bad = [f"http[{r.http_index}] {s}/{c}" for r, (s, c) in found if (s, c) != want]
    if not bad:
        return None
    return (
        f"VirtualService {target.vs_name} has {', '.join(bad)} (stable/canary) where canaryctl "
        f"wrote {want[0]}/{want[1]}"
    )


def mesh_warning(members: Sequence[Obj], *, app: str, namespace: str) -> str | None:
    """A warning when in-mesh callers of ``app`` pass through none of ``members``: every one
    is bound to gateways only (``gateways`` set, without ``mesh``)."""
    gateways = [list((vs.get("spec") or {}).get("gateways") or []) for vs in members]
    if not members or any(not g or "mesh" in g for g in gateways):
        return None
    host = normalise_host(app, namespace)
    names = ", ".join(_name(vs) for vs in members)
    return (
        f"in-mesh traffic to {host} passes through none of the VirtualServices moved ({names}: "
        f"bound to gateways {sorted({x for g in gateways for x in g})} only): in-mesh callers "
        "reach the stable and canary pods through the Service, spread by replica count, not by "
        f"the canary weights; add a VirtualService for host {host} without gateways (or with "
        "`mesh` among them) so that canaryctl moves that traffic too"
    )
