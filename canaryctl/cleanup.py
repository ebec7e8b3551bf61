"""Carries out a finished rollout's clean-up tasks (``finish.py``) when they fall due.

Used by ``promote`` (which follows the clean-up after the rollout ended), ``reconcile`` and
``run`` (a finished rollout with pending clean-up is still due at its time), and ``undo``.
Every state change is one JSON patch of the VirtualService guarded by its resourceVersion, with
the same "someone else wrote meanwhile" check as the rollout's own writes; the actor holds the
rollout's Lease while it acts, so ``undo`` and a scale-down never race. Scaling goes through
``kube.py`` (the ``scale`` subresource); an HPA targeting the Deployment is never fought.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from canaryctl import finish
from canaryctl.controller import Controller, StateChangedError, read_state
from canaryctl.errors import (
    ClusterUnavailableError,
    ConflictError,
    InfraError,
    RolloutStateError,
)
from canaryctl.followers import destinations
from canaryctl.logs import get_logger
from canaryctl.mesh import Destination, Ops
from canaryctl.policy_base import format_duration
from canaryctl.rollout import ANNOTATION, RolloutState

log = get_logger("canaryctl.cleanup")


def owned(state: RolloutState) -> list[str]:
    """The VirtualServices whose routes the rollout moves: its followers, then the one holding
    its state (written last: its patch records the task as done)."""
    return [*state.followers, state.virtual_service]


Build = Callable[[dict[str, Any]], tuple[Ops, RolloutState]]


def write(
    ctl: Controller, state: RolloutState, build: Build, *, attempts: int = 10
) -> tuple[dict[str, Any], RolloutState]:
    """Patch the state's VirtualService with ``build(vs)``: (ops, new state), guarded by its
    resourceVersion. A write by another actor since ``state`` was read is a
    ``StateChangedError`` (nothing written); our own write whose answer was lost is recognised."""
    written: RolloutState | None = None
    for attempt in range(attempts):
        vs = ctl.read_vs(state)
        stored = read_state(vs)
        if written is not None and stored is not None and stored.to_json() == written.to_json():
            return vs, written
        if stored is None or stored.to_json() != state.to_json():
            raise StateChangedError(stored, vs)
        ops, written = build(vs)
        try:
            return ctl.router.patch(vs, ops, {ANNOTATION: written.to_json()}), written
        except ConflictError:
            ctl.sleep(min(0.05 * 2**attempt, 1.0))
    raise ClusterUnavailableError(
        f"{ctl.router.kind} {state.namespace}/{state.virtual_service} kept changing"
    )


def _settle(
    ctl: Controller,
    state: RolloutState,
    index: int,
    *,
    status: str,
    detail: str,
    route_ops: Callable[[dict[str, Any]], tuple[Ops, str, dict[str, Any]]] | None = None,
) -> RolloutState:
    """Write task ``index`` as settled (with ``route_ops(vs)``: ops, more detail, task fields),
    then tell: Event, log, notification."""
    now = ctl.clock()

    def build(vs: dict[str, Any]) -> tuple[Ops, RolloutState]:
        ops, more, extra = route_ops(vs) if route_ops else ([], "", {})
        tasks = finish.settle(
            state.cleanup, index, status=status, detail=detail + more, now=now, **extra
        )
        return ops, replace(state, cleanup=tasks, updated_at=now)

    vs, new = write(ctl, state, build)
    task = new.cleanup[index]
    reason = {"collapse": "RoutesCollapsed", "scale-down": "ScaledDown"}[task["task"]]
    if status == "skipped":
        reason = "CleanupSkipped"
    ctl.event(vs, reason, task["detail"], warning=status == "skipped")
    ctl.notifier.send("cleanup", new, message=task["detail"])
    (log.warning if status == "skipped" else log.info)(
        "cleanup", task=task["task"], target=task["target"], status=status, detail=task["detail"]
    )
    return new


def _collapse(ctl: Controller, state: RolloutState, index: int) -> RolloutState:
    """Every VirtualService the rollout owns: the others first, the one holding the state last
    (in the patch that records the task as done)."""
    previous, stable = destinations(state)
    routes: dict[str, list[int]] = {}

    def collapse(vs: dict[str, Any]) -> tuple[Ops, str]:
        found = ctl.router.collapse(vs, namespace=state.namespace, previous=previous, stable=stable)
        routes[str(vs["metadata"]["name"])] = list(found.routes)
        return found.ops, "".join(f"; {s}" for s in found.skipped)

    skipped = ""
    for name in owned(state)[:-1]:
        vs = ctl.router.read(state.namespace, name)
        ops, more = collapse(vs)
        skipped += more
        if ops:
            ctl.router.patch(vs, ops, {})

    def route_ops(vs: dict[str, Any]) -> tuple[Ops, str, dict[str, Any]]:
        ops, more = collapse(vs)
        count = sum(len(v) for v in routes.values())
        return (
            ops,
            f"{count} split route(s) now send only to {stable.label()}{skipped}{more}",
            {"routes": dict(routes)},
        )

    return _settle(ctl, state, index, status="done", detail="", route_ops=route_ops)


def hpa_for(ctl: Controller, namespace: str, deployment: str) -> str | None:
    """The HorizontalPodAutoscaler whose scaleTargetRef is ``deployment``, if any."""
    for hpa in ctl.kube.list_hpas(namespace):
        ref = (hpa.get("spec") or {}).get("scaleTargetRef")
        if ref and ref.get("kind") == "Deployment" and ref.get("name") == deployment:
            return str(hpa["metadata"]["name"])
    return None


def _still_routed(ctl: Controller, namespace: str, task: dict[str, Any]) -> list[str]:
    """The routes of the namespace still sending to the task's Deployment (a tester header
    route pinned to it, say). Tasks planned before ``destination`` was recorded: none known."""
    if not task.get("destination"):
        return []
    dest = Destination.of({"destination": task["destination"]})
    return [
        found
        for vs in ctl.router.list(namespace)
        for found in ctl.router.routes_to(vs, namespace=namespace, destination=dest)
    ]


def _scale_down(
    ctl: Controller, state: RolloutState, index: int, task: dict[str, Any]
) -> RolloutState:
    name, ns = task["target"], state.namespace
    hpa = hpa_for(ctl, ns, name)
    if hpa is not None:
        detail = (
            f"Deployment {name} not scaled to 0: HorizontalPodAutoscaler {hpa} targets it and "
            "canaryctl does not fight an HPA; scale it down through the HPA or delete the HPA"
        )
        return _settle(ctl, state, index, status="skipped", detail=detail)
    if task.get("idleFor"):
        idle_text = format_duration(task["idleFor"])
        provider = ctl.provider_for(ctl.policy_of(state).spec.prometheus)
        count = provider.request_count(namespace=ns, workload=name, window_seconds=task["idleFor"])
        idle = finish.judge_idle(count, workload=name, idle_for=idle_text)
        log.info("cleanup.idle", deployment=name, requests=count, idle=idle.ok, detail=idle.detail)
        if not idle.ok:
            return state  # re-checked at the next pass; nothing written (see finish.py)
        why = idle.detail
    else:
        why = "the rollback's delay has passed"
    routed = _still_routed(ctl, ns, task)  # last: listed once, when otherwise due
    if routed:
        detail = (
            f"Deployment {name} not scaled to 0: {', '.join(routed)} still sends traffic to "
            "it (its requests would fail); scale it down once no route names it"
        )
        return _settle(ctl, state, index, status="skipped", detail=detail)
    ctl.kube.scale_deployment(ns, name, 0)
    return _settle(ctl, state, index, status="done", detail=f"Deployment {name} scaled to 0: {why}")


def run_due(ctl: Controller, state: RolloutState) -> RolloutState:
    """Try every clean-up task that is due now; returns the state as written."""
    for index, task in finish.ready(state.cleanup, ctl.clock()):
        if task["task"] == "collapse":
            state = _collapse(ctl, state, index)
        else:
            state = _scale_down(ctl, state, index, task)
    return state


def due(state: RolloutState, now: float) -> bool:
    return not state.active and bool(finish.ready(state.cleanup, now))


def act(ctl: Controller, state: RolloutState) -> RolloutState:
    """``run_due`` under the rollout's Lease; the state as it stands after (a newer one when
    another actor wrote meanwhile, unchanged when another process holds the Lease)."""
    lease = ctl.lease_for(state)
    if not lease.acquire(ctl.clock()):
        log.info("cleanup.lease_busy", holder=lease.observed_holder)
        return state
    try:
        return run_due(ctl, state)
    except StateChangedError as exc:
        if exc.state is None:
            raise RolloutStateError("rollout state removed by another actor") from None
        return exc.state
    finally:
        lease.release()


def follow(ctl: Controller, state: RolloutState) -> RolloutState:
    """Carry out the clean-up to its end (``promote``): act when due, else wait and watch.
    Ctrl-C, or the cluster or Prometheus failing, leaves the rest to ``reconcile``/``run``
    (``status`` shows it): the rollout's outcome, and so ``promote``'s exit code, stands."""
    while not state.active and finish.pending(state.cleanup):
        if ctl.should_stop():
            return state
        try:
            if due(state, ctl.clock()):
                state = act(ctl, state)
            ctl.sleep(min(2.0, max(0.5, state.interval / 2)))
            state = ctl.refresh(state)
        except InfraError as exc:
            log.warning("cleanup.failed", error=exc.message, left_to="reconcile or run")
            return state
    return state
