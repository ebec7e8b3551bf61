"""``canaryctl undo``: within the policy's ``undoWindow`` after a promotion, all traffic back
to the previous version at once (``finish.py``, ``mesh/collapse.py``).

Decisions: undo is a rollback after the fact, so the state becomes RolledBack and the clean-up
scales the undone version down after ``abortScaleDownDelay``, as after any rollback. It runs
under the rollout's Lease, so a scale-down of the previous version cannot happen between the
"still available" check and the patch. Undo of a rollback, or outside the window, is refused:
start a new rollout instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canaryctl import cleanup, finish, followers, rollout
from canaryctl.controller import Controller, StateChangedError
from canaryctl.errors import EXIT_OK, PreflightError, RolloutStateError, UsageError
from canaryctl.followers import destinations
from canaryctl.hooks import dest
from canaryctl.logs import get_logger
from canaryctl.operations import Result, locate
from canaryctl.rollout import REF_ANNOTATION, RolloutState

log = get_logger("canaryctl")


def undo(ctl: Controller, *, app: str, namespace: str, vs_names: list[str]) -> Result:
    """All traffic back to the previous version at once, within the policy's ``undoWindow``
    after a promotion, provided that version is still available (else exit 2 naming its
    Deployment). One guarded patch: routes collapsed by the rollout get the previous subset (or
    host) back, routes still split go to previous 100 / new 0; the state becomes RolledBack, so
    the clean-up now scales the undone version down (``abortScaleDownDelay``). The rollout's
    other VirtualServices are undone first, each in its own guarded patch that also moves its
    pointer to weight 0; after a crash between two patches, ``finish_interrupted`` (run by
    ``reconcile``, or this command again) completes the undo."""
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
        return _undo(ctl, state, by="operator")
    finally:
        lease.release()


def finish_interrupted(
    ctl: Controller, state: RolloutState, listed: Mapping[str, Mapping[str, Any]]
) -> Result | None:
    """Complete an ``undo`` interrupted between a follower's patch and the primary's (a
    follower in ``listed``, name -> object, is ``followers.undone``); None when there is none,
    or another actor holds the Lease. Decision: the operator's last word wins over the
    primary's stale Promoted, so the undo is finished (window not re-checked: it was open when
    the undo began), not reverted; re-promoting the follower would send its callers back to
    the version just undone. If the previous version is no longer available,
    ``PreflightError`` names it and nothing is written."""
    if not any(followers.undone(state, listed[n]) for n in state.followers if n in listed):
        return None
    lease = ctl.lease_for(state)
    if not lease.acquire(ctl.clock()):
        return None
    try:
        return _undo(ctl, state, by="reconcile, finishing an interrupted undo")
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


def _undo(ctl: Controller, state: RolloutState, *, by: str) -> Result:
    _require_previous(ctl, state)  # again under the Lease: no scale-down can come between
    previous, current = destinations(state)
    collapsed = [t for t in state.cleanup if t["task"] == "collapse" and t["status"] == "done"]
    routes: dict[str, list[int]] = (collapsed[0].get("routes") or {}) if collapsed else {}
    now = ctl.clock()
    reason = f"undone by {by} {now - (state.finished_at or now):.0f}s after the promotion"
    new = rollout.rollback(state, reason=reason, now=now)

    def ops_for(vs: dict[str, Any]) -> list[dict[str, Any]]:
        indexes = routes.get(str(vs["metadata"]["name"]), [])
        return ctl.router.undo(
            vs, namespace=state.namespace, previous=previous, current=current, collapsed=indexes
        )

    pointer = {REF_ANNOTATION: followers.ref_value(new)}
    for name in state.followers:
        vs = ctl.router.read(state.namespace, name)
        if not followers.undone(state, vs):  # else done before an interruption
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
    return Result("undone", state.app, state.namespace, EXIT_OK, new, reason)
