"""The traffic-router protocol and its factory.

A router finds where an app's traffic is split between two destinations, checks that both
exist, and writes weights (together with the rollout state) in one guarded write. The engine
speaks only this protocol: destinations, weights, the routing objects it owns (the primary,
which carries the state, and its followers) and opaque JSON patches built by the router. Which
fields of which kind carry the weights is each router's business.

Adding a router (Linkerd/SMI, Contour) is one module in this package and one line in
``ROUTERS``. ``detect`` picks the router for an app from what exists: the first router in
``ROUTERS`` order with an object routing the app, so Istio keeps priority where both exist
(a VirtualService then decides the traffic of an in-mesh caller).
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from canaryctl.errors import InputError, NotFoundError, PermissionDeniedError, UsageError
from canaryctl.mesh.collapse import Collapse, Ops
from canaryctl.mesh.routes import Destination, Known, Target

# name -> "module:class"; the module is imported only when the router is chosen
ROUTERS: dict[str, str] = {
    "istio": "canaryctl.mesh.istio:IstioRouter",
    "gateway-api": "canaryctl.mesh.gateway:GatewayRouter",
}
AUTO = "auto"


@dataclass(frozen=True)
class Workloads:
    """The Deployments behind the stable and canary destinations (names reach PromQL)."""

    stable: str
    canary: str


class TrafficRouter(Protocol):
    name: str  # its key in ROUTERS
    kind: str  # the kind of its routing objects, for messages ("VirtualService")

    # --- reading the routing objects ------------------------------------------------------
    def read(self, namespace: str, name: str) -> dict[str, Any]: ...

    def list(self, namespace: str | None) -> list[dict[str, Any]]: ...

    def candidates(
        self, namespace: str, names: Sequence[str] = ()
    ) -> builtins.list[dict[str, Any]]: ...

    def find(
        self,
        *,
        app: str,
        namespace: str,
        names: Sequence[str] = (),
        canary: str | None = None,
        route_names: Sequence[str] | None = None,
        primary: str | None = None,
        candidates: Sequence[dict[str, Any]] | None = None,
    ) -> builtins.list[tuple[Target, dict[str, Any]]]:
        """Every object to move, the primary first, among ``candidates`` (fetched by
        ``candidates()`` if None)."""
        ...

    def resolve(
        self,
        obj: Mapping[str, Any],
        *,
        app: str,
        namespace: str,
        canary: str | None = None,
        known: Known = None,
        route_names: Sequence[str] | None = None,
    ) -> Target:
        """The split to drive in one object: ``known`` = (stable, canary) of a rollout."""
        ...

    def routes_app(self, obj: Mapping[str, Any], *, app: str, namespace: str) -> bool: ...

    def app_of(self, route_object: dict[str, Any]) -> str | None:
        """The app a routing object sends to, by this router's host rule (None: unknown)."""
        ...

    def weights(self, obj: Mapping[str, Any], target: Target) -> builtins.list[tuple[int, int]]:
        """(stable, canary) of every split route of ``target`` in ``obj``."""
        ...

    def drift(self, obj: Mapping[str, Any], target: Target, weight: int) -> str | None:
        """How the split routes of ``obj`` differ from ``weight`` (None: they agree)."""
        ...

    def bypass_warning(
        self, objs: Sequence[Mapping[str, Any]], *, app: str, namespace: str
    ) -> str | None:
        """A warning when some callers of the app pass through none of ``objs``."""
        ...

    # --- the workloads behind the destinations --------------------------------------------
    def preflight(self, target: Target) -> Workloads: ...

    def canary_available(self, target: Target, workload: str) -> tuple[bool, str]: ...

    def workload_available(self, namespace: str, name: str) -> tuple[bool, str]: ...

    # --- writing ----------------------------------------------------------------------------
    def weight_ops(
        self,
        target: Target,
        obj: Mapping[str, Any],
        *,
        canary_weight: int,
        annotations: Mapping[str, str | None],
    ) -> Ops:
        """The guarded JSON patch ``write`` sends (what a dry run shows)."""
        ...

    def write(
        self,
        target: Target,
        obj: dict[str, Any],
        *,
        canary_weight: int,
        annotations: dict[str, str | None],
    ) -> dict[str, Any]: ...

    def annotate(
        self, obj: dict[str, Any], annotations: dict[str, str | None]
    ) -> dict[str, Any]: ...

    def patch(
        self, obj: Mapping[str, Any], ops: Ops, annotations: Mapping[str, str | None]
    ) -> dict[str, Any]:
        """Write ``ops`` (from ``collapse``/``undo``) and ``annotations`` to ``obj``, guarded
        by its resourceVersion (409: ``ConflictError``)."""
        ...

    def routes_to(
        self, obj: Mapping[str, Any], *, namespace: str, destination: Destination
    ) -> builtins.list[str]:
        """Where ``obj`` still sends traffic to ``destination`` ("KIND NAME route[i]" each)."""
        ...

    def collapse(
        self, obj: Mapping[str, Any], *, namespace: str, previous: Destination, stable: Destination
    ) -> Collapse:
        """After a promotion: the split routes all on ``stable`` become plain routes."""
        ...

    def undo(
        self,
        obj: Mapping[str, Any],
        *,
        namespace: str,
        previous: Destination,
        current: Destination,
        collapsed: Sequence[int],
    ) -> Ops:
        """All traffic of the rollout's routes back to ``previous``."""
        ...


def get_router(name: str, kube: Any) -> TrafficRouter:
    """The router called ``name`` (a key of ``ROUTERS``); ``UsageError`` otherwise."""
    if name not in ROUTERS:
        raise UsageError(f"--router: must be one of {', '.join([AUTO, *ROUTERS])}, got {name!r}")
    module, cls = ROUTERS[name].split(":")
    router: TrafficRouter = getattr(importlib.import_module(module), cls)(kube)
    return router


def detect(kube: Any, *, app: str | None, namespace: str | None) -> TrafficRouter:
    """The first router (``ROUTERS`` order) with an object in ``namespace`` (None: all)
    routing ``app`` (None: any object at all, for ``reconcile``/``run``/``list``); Istio when
    none has one (its error then names what was inspected). A router whose API is not installed
    is skipped, and so is one we may not read (a Role for HTTPRoutes only), unless no router is
    found: then that denial is the error. A cluster running rollouts on both kinds runs one
    ``reconcile`` per router (``--router``)."""
    denied: PermissionDeniedError | None = None
    for name in ROUTERS:
        router = get_router(name, kube)
        try:
            found = router.list(namespace)
        except (NotFoundError, InputError):  # the API of that router is not installed
            continue
        except PermissionDeniedError as exc:
            denied = denied or exc
            continue
        ns = namespace or ""
        if any(app is None or router.routes_app(o, app=app, namespace=ns) for o in found):
            return router
    if denied is not None:
        raise denied
    return get_router("istio", kube)
