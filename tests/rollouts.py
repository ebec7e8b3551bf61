"""A rollout as ``rollout.begin`` starts it, for unit tests: app ``APP`` in namespace ``shop``,
VirtualService named like the app, subsets v1 (stable) and v2 (canary), Deployments
``APP-v1`` / ``APP-v2``."""

from __future__ import annotations

from typing import Any

from canaryctl import rollout
from canaryctl.rollout import RolloutState


def begin_rollout(
    policy: dict[str, Any], *, app: str = "web", current: int = 0, now: float
) -> RolloutState:
    return rollout.begin(
        app=app,
        namespace="shop",
        virtual_service=app,
        mode="subset",
        stable={"host": app, "subset": "v1"},
        canary={"host": app, "subset": "v2"},
        stable_workload=f"{app}-v1",
        canary_workload=f"{app}-v2",
        policy=policy,
        current_canary_weight=current,
        now=now,
    )
