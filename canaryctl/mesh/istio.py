"""Istio router: VirtualService / DestinationRule / Deployment access through ``kube.py``.

The decisions (which routes, which destination is stable, what the patch is) are pure and live
in ``routes.py``/``group.py``/``collapse.py``; this module only reads the objects they need and
writes the patch. Three hooks (``_view``, ``_ops``, ``_words``) let a router whose objects say
the same thing in other fields reuse all of it (``gateway.py``: HTTPRoutes); for Istio they are
the identity.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from canaryctl.errors import InputError, NotFoundError, PreflightError, TargetNotFoundError
from canaryctl.kube import KubeClient
from canaryctl.mesh import collapse, group, routes
from canaryctl.mesh._base import Workloads
from canaryctl.mesh.collapse import Collapse, Ops
from canaryctl.mesh.routes import Destination, Known, Target

T = TypeVar("T")


class IstioRouter:
    name = "istio"
    kind = "VirtualService"
    api = "Istio"  # what must be installed for ``kind`` to exist

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    # --- the hooks: the object as the split logic reads it, its patches, its words ----------
    def _view(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        return obj

    def _ops(self, ops: Ops) -> Ops:
        return ops

    def _words(self, text: str) -> str:
        return text

    def _worded(self, fn: Callable[[], T]) -> T:
        """``fn()``, its input errors in this router's words (same class: same exit code)."""
        try:
            return fn()
        except InputError as exc:
            worded = self._words(exc.message)
            if worded == exc.message:
                raise
            raise type(exc)(worded) from None

    def read(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.kube.get_virtual_service(namespace, name)
        except NotFoundError:
            raise TargetNotFoundError(
                f"VirtualService {name!r} not found in namespace {namespace!r}"
            ) from None

    def app_of(self, route_object: dict[str, Any]) -> str | None:
        return routes.infer_app(self._view(route_object))

    def routes_app(self, obj: Mapping[str, Any], *, app: str, namespace: str) -> bool:
        return group.routes_app(self._view(obj), app=app, namespace=namespace)

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
        view = self._view(obj)
        return self._worded(
            lambda: group.resolve(
                view,
                app=app,
                namespace=namespace,
                canary=canary,
                known=known,
                route_names=route_names,
            )
        )

    def weights(self, obj: Mapping[str, Any], target: Target) -> builtins.list[tuple[int, int]]:
        return routes.weights_of(self._view(obj), target)

    def drift(self, obj: Mapping[str, Any], target: Target, weight: int) -> str | None:
        found = group.weights_drift(self._view(obj), target, weight)
        return None if found is None else self._words(found)

    def bypass_warning(
        self, objs: Sequence[Mapping[str, Any]], *, app: str, namespace: str
    ) -> str | None:
        return group.mesh_warning(objs, app=app, namespace=namespace)

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        return self.kube.list_istio("virtualservices", namespace)

    def candidates(
        self, namespace: str, names: Sequence[str] = ()
    ) -> builtins.list[dict[str, Any]]:
        """The routing objects named ``names``, or all of the namespace."""
        if names:
            return [self.read(namespace, name) for name in names]
        try:
            return self.list(namespace)
        except NotFoundError:
            raise TargetNotFoundError(
                f"namespace {namespace!r} has no {self.kind}s (is {self.api} installed?)"
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
        found = self._worded(
            lambda: group.find_group(
                [self._view(c) for c in candidates],
                app=app,
                namespace=namespace,
                names=names,
                canary=canary,
                route_names=route_names,
                primary=primary,
            )
        )
        return [(target, dict(by_name[target.vs_name])) for target, _ in found]

    @staticmethod
    def _deployment(
        deployments: Sequence[dict[str, Any]], namespace: str, labels: dict[str, str], what: str
    ) -> dict[str, Any]:
        found = routes.select_deployments(deployments, labels)
        shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        if not found:
            raise PreflightError(
                f"no Deployment for the {what} in namespace {namespace!r} (selector {shown})"
            )
        if len(found) > 1:
            names = ", ".join(sorted(d["metadata"]["name"] for d in found))
            raise PreflightError(
                f"several Deployments match the {what} (selector {shown}): {names}"
            )
        return found[0]

    def _service_selector(self, namespace: str, host: str) -> dict[str, str]:
        name = routes.normalise_host(host, namespace)
        try:
            svc = self.kube.get_service(namespace, name)
        except NotFoundError:
            raise TargetNotFoundError(
                f"Service {name!r} not found in namespace {namespace!r}"
            ) from None
        return dict((svc.get("spec") or {}).get("selector") or {})

    def _subset_labels(self, target: Target) -> tuple[dict[str, str], dict[str, str]]:
        """The DestinationRule labels of both subsets (``PreflightError`` if one is gone)."""
        ns = target.namespace
        drs = self.kube.list_istio("destinationrules", ns)
        subsets = routes.destination_rule_subsets(drs, host=target.stable.host, namespace=ns)
        return routes.preflight_subsets(subsets, target)

    def _labels(self, target: Target) -> tuple[dict[str, str], dict[str, str]]:
        ns = target.namespace
        if target.mode == "subset":
            stable_labels, canary_labels = self._subset_labels(target)
            selector = self._service_selector(ns, target.stable.host)
            return {**selector, **stable_labels}, {**selector, **canary_labels}
        return (
            self._service_selector(ns, target.stable.host),
            self._service_selector(ns, target.canary.host),
        )

    def preflight(self, target: Target) -> Workloads:
        """Both destinations resolve to one Deployment each; the canary is available."""
        stable_labels, canary_labels = self._labels(target)
        ns = target.namespace
        deployments = self.kube.list_deployments(ns)
        stable = self._deployment(deployments, ns, stable_labels, f"stable {target.stable.label()}")
        canary = self._deployment(deployments, ns, canary_labels, f"canary {target.canary.label()}")
        ok, why = routes.deployment_available(canary)
        if not ok:
            raise PreflightError(
                f"canary Deployment {canary['metadata']['name']!r} is not available: {why}"
            )
        return Workloads(stable=stable["metadata"]["name"], canary=canary["metadata"]["name"])

    def canary_available(self, target: Target, workload: str) -> tuple[bool, str]:
        """Re-checked before every analysis: a canary scaled to 0, or whose DestinationRule
        subset was removed, mid-rollout is rolled back (never promoted to a void). The Service
        is not read again: its selector only chose the Deployments at preflight, and a Service
        deleted mid-rollout shows as missing traffic (inconclusive, never a pass)."""
        if target.mode == "subset":
            try:
                self._subset_labels(target)
            except PreflightError as exc:
                return False, exc.message
        for d in self.kube.list_deployments(target.namespace):
            if d["metadata"]["name"] == workload:
                return routes.deployment_available(d)
        return False, f"Deployment {workload!r} no longer exists"

    def workload_available(self, namespace: str, name: str) -> tuple[bool, str]:
        found = [d for d in self.kube.list_deployments(namespace) if d["metadata"]["name"] == name]
        return routes.deployment_available(found[0]) if found else (False, "it does not exist")

    def weight_ops(
        self,
        target: Target,
        obj: Mapping[str, Any],
        *,
        canary_weight: int,
        annotations: Mapping[str, str | None],
    ) -> Ops:
        return self._ops(
            routes.weight_patch(
                target, canary_weight=canary_weight, annotations=annotations, vs=self._view(obj)
            )
        )

    def write(
        self,
        target: Target,
        obj: dict[str, Any],
        *,
        canary_weight: int,
        annotations: dict[str, str | None],
    ) -> dict[str, Any]:
        ops = self.weight_ops(target, obj, canary_weight=canary_weight, annotations=annotations)
        return self._send(obj, ops)

    def annotate(self, obj: dict[str, Any], annotations: dict[str, str | None]) -> dict[str, Any]:
        return self._send(obj, routes.annotation_patch(obj, annotations))

    def patch(
        self, obj: Mapping[str, Any], ops: Ops, annotations: Mapping[str, str | None]
    ) -> dict[str, Any]:
        return self._send(obj, collapse.guard(obj, ops, annotations))

    def _send(self, obj: Mapping[str, Any], ops: Ops) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.kube.patch_virtual_service(meta["namespace"], meta["name"], ops)

    def routes_to(
        self, obj: Mapping[str, Any], *, namespace: str, destination: Destination
    ) -> builtins.list[str]:
        found = collapse.routes_to(self._view(obj), namespace=namespace, destination=destination)
        return [self._words(where) for where in found]

    def collapse(
        self, obj: Mapping[str, Any], *, namespace: str, previous: Destination, stable: Destination
    ) -> Collapse:
        found = collapse.collapse_ops(
            self._view(obj), namespace=namespace, previous=previous, stable=stable
        )
        skipped = tuple(self._words(s) for s in found.skipped)
        return Collapse(found.routes, skipped, self._ops(found.ops))

    def undo(
        self,
        obj: Mapping[str, Any],
        *,
        namespace: str,
        previous: Destination,
        current: Destination,
        collapsed: Sequence[int],
    ) -> Ops:
        view = self._view(obj)
        return self._ops(
            self._worded(
                lambda: collapse.undo_ops(
                    view,
                    namespace=namespace,
                    previous=previous,
                    current=current,
                    collapsed=collapsed,
                )
            )
        )
