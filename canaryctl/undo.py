"""``canaryctl undo``: within the policy's ``undoWindow`` after a promotion, all traffic back
to the previous version at once (``finish.py``, ``mesh/collapse.py``).

Decisions: undo is a rollback after the fact, so the state becomes RolledBack and the clean-up
scales the undone version down after ``abortScaleDownDelay``, as after any rollback. It runs
under the rollout's Lease, so a scale-down of the previous version cannot happen between the
"still available" check and the patch. Undo of a rollback, or outside the window, is refused:
start a new rollout instead.
"""

from __future__ import annotations

from typing import Any

import structlog

from canaryctl import cleanup, finish, followers, rollout
from canaryctl.controller import Controller, StateChangedError
from canaryctl.errors import EXIT_OK, PreflightError, RolloutStateError, UsageError
from canaryctl.followers import destinations
from canaryctl.hooks import dest
from canaryctl.operations import Result, locate
from canaryctl.rollout import REF_ANNOTATION, RolloutState

log = structlog.get_logger("canaryctl")


def undo(ctl: Controller, *, app: str, namespace: str, vs_names: list[str]) -> Result:
    """All traffic back to the previous version at once, within the policy's ``undoWindow``
    after a promotion, provided that version is still available (else exit 2 naming its
    Deployment). One guarded patch: routes collapsed by the rollout get the previous subset (or
    host) back, routes still split go to previous 100 / new 0; the state becomes RolledBack, so
    the clean-up now scales the undone version down (``abortScaleDownDelay``). The rollout's
    other VirtualServices are undone first, each in its own guarded patch that also moves its
    pointer to weight 0, so a crash between two patches leaves a follower that ``reconcile``
    repairs like any other."""
    _, state = locate(ctl, app=app, namespace=namespace, vs_names=vs_names)
    if state is None or state.phase != "Promoted":
        shown = "no rollout" if state is None else f"the rollout is {state.phase}"
        raise RolloutStateError(f"undo: {shown} of {app} in {namespace}; undo follows a promotion")
    deadline = finish.undo_deadline(state.policy["spec"], state.finished_at)
    now = ctl.clock()
    if deadline is None:
        raise UsageError("undo: not enabled by the rollout's policy (spec.finish.undoWindow)")
    if now > deadline:
        window = state.policy["spec"]["finish"]["undoWindow"]
        raise UsageError(
            f"undo: the undo window ({window}) closed {now - deadline:.0f}s ago; "
            "start a new rollout instead"
        )
    _require_previous(ctl, state)  # before any write, the Lease included
    lease = ctl.lease_for(state)
    if not lease.acquire(now):
        raise RolloutStateError(f"undo: {lease.observed_holder} is acting on {app}; try again")
    try:
        return _undo(ctl, state, app)
    finally:
        lease.release()


def _require_previous(ctl: Controller, state: RolloutState) -> None:
    """The previous version's Deployment exists and has an available replica (else exit 2)."""
    name = state.stable_workload
    ok, why = ctl.router.workload_available(state.namespace, name)
    if not ok:
        raise PreflightError(
            f"undo: the previous version's Deployment {name} is not available ({why}); "
            f"traffic left on {dest(state.canary)}"
        )


def _undo(ctl: Controller, state: RolloutState, app: str) -> Result:
    _require_previous(ctl, state)  # again under the Lease: no scale-down can come between
    previous, current = destinations(state)
    collapsed = [t for t in state.cleanup if t["task"] == "collapse" and t["status"] == "done"]
    routes: dict[str, list[int]] = (collapsed[0].get("routes") or {}) if collapsed else {}
    now = ctl.clock()
    reason = f"undone by operator {now - (state.finished_at or now):.0f}s after the promotion"
    new = rollout.rollback(state, reason=reason, now=now)

    def ops_for(vs: dict[str, Any]) -> list[dict[str, Any]]:
        indexes = routes.get(str(vs["metadata"]["name"]), [])
        return ctl.router.undo(
            vs, namespace=state.namespace, previous=previous, current=current, collapsed=indexes
        )

    pointer = {REF_ANNOTATION: followers.ref_value(new)}
    for name in state.followers:
        vs = ctl.router.read(state.namespace, name)
        ctl.router.patch(vs, ops_for(vs), pointer)

    def build(vs: dict[str, Any]) -> tuple[list[dict[str, Any]], RolloutState]:
        return ops_for(vs), new

    try:
        vs, new = cleanup.write(ctl, state, build)
    except StateChangedError:
        raise RolloutStateError("undo: the rollout changed meanwhile; try again") from None
    ctl.event(vs, "Undone", f"{reason}: all traffic to {dest(state.stable)}", warning=True)
    ctl.notifier.send("rollback", new, message=reason)
    log.info("undone", vs=state.virtual_service, previous=dest(state.stable))
    return Result("undone", app, state.namespace, EXIT_OK, new, reason)
