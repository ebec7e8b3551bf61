"""The traffic-router protocol and its factory.

A router finds where an app's traffic is split, checks that both sides exist, and writes
weights (together with the rollout state) in one guarded write. Istio is the only router
today; Linkerd or Gateway API would be one module here and one line in ``get_router``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from canaryctl.mesh.routes import Target


@dataclass(frozen=True)
class Workloads:
    """The Deployments behind the stable and canary destinations (names reach PromQL)."""

    stable: str
    canary: str


class TrafficRouter(Protocol):
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
        """Every VirtualService to move (``mesh.group``), the primary first, among
        ``candidates`` (fetched by ``candidates()`` if None)."""
        ...

    def app_of(self, route_object: dict[str, Any]) -> str | None:
        """The app a routing object sends to, by this router's host rule (None: unknown)."""
        ...

    def preflight(self, target: Target) -> Workloads: ...

    def canary_available(self, target: Target, workload: str) -> tuple[bool, str]: ...

    def write(
        self,
        target: Target,
        vs: dict[str, Any],
        *,
        canary_weight: int,
        annotations: dict[str, str | None],
    ) -> dict[str, Any]: ...

    def annotate(
        self, vs: dict[str, Any], annotations: dict[str, str | None]
    ) -> dict[str, Any]: ...


def get_router(name: str, kube: Any) -> TrafficRouter:
    if name == "istio":
        from canaryctl.mesh.istio import IstioRouter

        return IstioRouter(kube)
    raise ValueError(f"unknown traffic router {name!r}")
