"""Gateway API router: HTTPRoutes (``gateway.networking.k8s.io/v1``) through ``kube.py``.

Rules with two weighted ``backendRefs`` of the app (``APP-primary``/``APP-canary``, or
``APP``/``APP-canary``) are stepped like VirtualService routes: the split is found, the patch
built and the clean-up planned by the same pure logic, on a view of the HTTPRoute
(``httproute.py``); every other field of the object is kept. The rollout state lives in the
same annotation on the HTTPRoute, written in the same resourceVersion-guarded JSON patch.

The destinations are Services, so the workloads behind them are found as for an Istio
host-level split (each Service's selector -> one Deployment): that part is inherited from
``IstioRouter``, which only reads VirtualServices/DestinationRules for subset-level splits, a
mode an HTTPRoute never has. Least privilege: ``get/list/patch httproutes`` instead of
VirtualServices; no DestinationRules.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from canaryctl.errors import InputError, NotFoundError, TargetNotFoundError
from canaryctl.mesh import collapse, group, httproute, routes
from canaryctl.mesh.collapse import Collapse, Ops
from canaryctl.mesh.httproute import GROUP_VERSION, KIND, PLURAL, view
from canaryctl.mesh.istio import IstioRouter
from canaryctl.mesh.routes import Destination, Known, Target

T = TypeVar("T")


def _worded(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except InputError as exc:
        raise type(exc)(httproute.reword(exc.message)) from None  # same class: same exit


class GatewayRouter(IstioRouter):
    name = "gateway-api"
    kind = KIND

    # --- reading ----------------------------------------------------------------------------
    def read(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.kube.get_custom(GROUP_VERSION, PLURAL, namespace, name)
        except NotFoundError:
            raise TargetNotFoundError(
                f"HTTPRoute {name!r} not found in namespace {namespace!r}"
            ) from None

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        return self.kube.list_custom(GROUP_VERSION, PLURAL, namespace)

    def candidates(
        self, namespace: str, names: Sequence[str] = ()
    ) -> builtins.list[dict[str, Any]]:
        if names:
            return [self.read(namespace, name) for name in names]
        try:
            return self.list(namespace)
        except NotFoundError:
            raise TargetNotFoundError(
                f"namespace {namespace!r} has no HTTPRoutes (is the Gateway API installed?)"
            ) from None

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
        if candidates is None:
            candidates = self.candidates(namespace, names)
        by_name = {str(c["metadata"]["name"]): c for c in candidates}
        found = _worded(
            lambda: group.find_group(
                [view(c) for c in candidates],
                app=app,
                namespace=namespace,
                names=names,
                canary=canary,
                route_names=route_names,
                primary=primary,
            )
        )
        return [(target, dict(by_name[target.vs_name])) for target, _ in found]

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
        return _worded(
            lambda: group.resolve(
                view(obj),
                app=app,
                namespace=namespace,
                canary=canary,
                known=known,
                route_names=route_names,
            )
        )

    def routes_app(self, obj: Mapping[str, Any], *, app: str, namespace: str) -> bool:
        return group.routes_app(view(obj), app=app, namespace=namespace)

    def app_of(self, route_object: dict[str, Any]) -> str | None:
        return routes.infer_app(view(route_object))

    def weights(self, obj: Mapping[str, Any], target: Target) -> builtins.list[tuple[int, int]]:
        return routes.weights_of(view(obj), target)

    def drift(self, obj: Mapping[str, Any], target: Target, weight: int) -> str | None:
        found = group.weights_drift(view(obj), target, weight)
        return None if found is None else httproute.reword(found)

    def bypass_warning(
        self, objs: Sequence[Mapping[str, Any]], *, app: str, namespace: str
    ) -> str | None:
        """In-mesh callers pass through an HTTPRoute only when it is attached to a Service
        (GAMMA ``parentRefs``); routes attached to Gateways only move north-south traffic."""
        if not objs or any(httproute.parent_services(o) for o in objs):
            return None
        names = ", ".join(str(o["metadata"]["name"]) for o in objs)
        return (
            f"in-mesh traffic to {app} passes through none of the HTTPRoutes moved ({names}: "
            "attached to Gateways only): in-mesh callers reach the stable and canary pods "
            "through their Services, not by the canary weights; attach an HTTPRoute to the "
            f"Service {app} (parentRefs kind Service) so that canaryctl moves that traffic too"
        )

    # --- writing ----------------------------------------------------------------------------
    def weight_ops(
        self,
        target: Target,
        obj: Mapping[str, Any],
        *,
        canary_weight: int,
        annotations: Mapping[str, str | None],
    ) -> Ops:
        return httproute.ops(
            routes.weight_patch(
                target, canary_weight=canary_weight, annotations=annotations, vs=view(obj)
            )
        )

    def _send(self, obj: Mapping[str, Any], ops: Ops) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.kube.patch_custom(
            GROUP_VERSION, PLURAL, namespace=meta["namespace"], name=meta["name"], ops=ops
        )

    def collapse(
        self, obj: Mapping[str, Any], *, namespace: str, previous: Destination, stable: Destination
    ) -> Collapse:
        found = collapse.collapse_ops(
            view(obj), namespace=namespace, previous=previous, stable=stable
        )
        skipped = tuple(httproute.reword(s) for s in found.skipped)
        return Collapse(found.routes, skipped, httproute.ops(found.ops))

    def undo(
        self,
        obj: Mapping[str, Any],
        *,
        namespace: str,
        previous: Destination,
        current: Destination,
        collapsed: Sequence[int],
    ) -> Ops:
        return httproute.ops(
            _worded(
                lambda: collapse.undo_ops(
                    view(obj),
                    namespace=namespace,
                    previous=previous,
                    current=current,
                    collapsed=collapsed,
                )
            )
        )
