"""Gateway API router: HTTPRoutes (``gateway.networking.k8s.io/v1``) through ``kube.py``.

Rules with two weighted ``backendRefs`` of the app (``APP-primary``/``APP-canary``, or
``APP``/``APP-canary``) are stepped like VirtualService routes: the split is found, the patch
built and the clean-up planned by the same pure logic, on a view of the HTTPRoute
(``httproute.py``); every other field of the object is kept. The rollout state lives in the
same annotation on the HTTPRoute, written in the same resourceVersion-guarded JSON patch.

Everything but the objects' I/O and words is inherited from ``IstioRouter`` through its hooks
(``_view``, ``_ops``, ``_words``). The destinations are Services, so the workloads behind them
are found as for an Istio host-level split (each Service's selector -> one Deployment);
DestinationRules are only read for subset-level splits, a mode an HTTPRoute never has. Least
privilege: ``get/list/patch httproutes`` instead of VirtualServices; no DestinationRules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from canaryctl.errors import NotFoundError, TargetNotFoundError
from canaryctl.mesh import httproute
from canaryctl.mesh.collapse import Ops
from canaryctl.mesh.httproute import GROUP_VERSION, KIND, PLURAL
from canaryctl.mesh.istio import IstioRouter


class GatewayRouter(IstioRouter):
    name = "gateway-api"
    kind = KIND
    api = "the Gateway API"

    def _view(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        return httproute.view(obj)

    def _ops(self, ops: Ops) -> Ops:
        return httproute.ops(ops)

    def _words(self, text: str) -> str:
        return httproute.reword(text)

    def read(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.kube.get_custom(GROUP_VERSION, PLURAL, namespace, name)
        except NotFoundError:
            raise TargetNotFoundError(
                f"HTTPRoute {name!r} not found in namespace {namespace!r}"
            ) from None

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        return self.kube.list_custom(GROUP_VERSION, PLURAL, namespace)

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

    def _send(self, obj: Mapping[str, Any], ops: Ops) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.kube.patch_custom(
            GROUP_VERSION, PLURAL, namespace=meta["namespace"], name=meta["name"], ops=ops
        )
