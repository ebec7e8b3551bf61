"""The user-facing verbs: promote (start or attach), rollback, pause, resume, status, list.

Each verb returns a ``Result``; the CLI renders it as text or JSON and maps it to an exit code.
Input is validated and preflight checks run before the first write, so an input error (exit 2)
never leaves anything changed in the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from canaryctl import cleanup, finish, followers, rollout
from canaryctl.controller import Controller, Interrupted, StateChangedError, read_state
from canaryctl.errors import (
    EXIT_INFRA,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_ROLLED_BACK,
    PolicyError,
    PreflightError,
    RolloutStateError,
    UsageError,
)
from canaryctl.hooks import UrlFileError, dest, target_url
from canaryctl.logs import get_logger
from canaryctl.mesh import Target, TrafficRouter, Workloads, apply_patch
from canaryctl.metrics._base import QueryContext
from canaryctl.policy import AnalysisPolicy
from canaryctl.policy_hooks import UrlSource
from canaryctl.rollout import ANNOTATION, RolloutState

log = get_logger("canaryctl")
Member = tuple[Target, dict[str, Any]]  # the split to drive and the object it was found in

_EXIT = {"Promoted": EXIT_OK, "RolledBack": EXIT_ROLLED_BACK, "Failed": EXIT_INFRA}
RESULTS = {"Promoted": "promoted", "RolledBack": "rolled_back", "Failed": "failed"}


@dataclass
class Result:
    result: str
    app: str
    namespace: str
    exit_code: int = EXIT_OK
    state: RolloutState | None = None
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "result": self.result,
            "app": self.app,
            "namespace": self.namespace,
            "message": self.message,
        }
        s = self.state
        if s is not None:
            out.update(
                virtualService=s.virtual_service,
                followers=s.followers,
                stable=dest(s.stable),
                canary=dest(s.canary),
                stableWorkload=s.stable_workload,
                canaryWorkload=s.canary_workload,
                phase=s.phase,
                reason=s.reason,
                weight=s.weight,
                step=s.step_index + 1,
                stepsTotal=len(s.steps),
                judge=s.policy["spec"].get("judge", "threshold"),
                failedAnalyses=s.failed,
                inconclusiveInARow=s.inconclusive,
                forced=s.forced,
                steps=s.history,
                historyDropped=s.history_dropped,
                cleanup=s.cleanup,
                undoUntil=finish.undo_deadline(s.policy["spec"], s.finished_at)
                if s.phase == "Promoted"
                else None,
            )
        out.update(self.extra)
        return out


def from_state(state: RolloutState, app: str) -> Result:
    if state.phase == "Paused":  # only a pause decided by the analysis ends a `promote`
        hint = "`canaryctl resume` re-measures the step, `canaryctl rollback` ends it"
        return Result("paused", app, state.namespace, EXIT_PAUSED, state, f"paused; {hint}")
    if state.active:
        return Result("in_progress", app, state.namespace, EXIT_OK, state, state.reason)
    return Result(
        RESULTS[state.phase], app, state.namespace, _EXIT[state.phase], state, state.reason
    )


def locate(
    ctl: Controller,
    *,
    app: str,
    namespace: str,
    vs_names: Sequence[str],
    candidates: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any] | None, RolloutState | None]:
    """The VirtualService carrying this app's rollout state, if any (active ones first),
    among ``candidates`` (read now if None) and the primaries their pointers name (a verb
    given only a follower with ``--virtual-service`` finds the rollout it belongs to)."""
    if candidates is None:
        candidates = ctl.router.candidates(namespace, vs_names)
    names = {vs["metadata"]["name"] for vs in candidates}
    pointed = {str(followers.read_ref(vs).get("virtualService", "")) for vs in candidates}
    extra = [ctl.router.read(namespace, n) for n in sorted(pointed - names - {""})]
    found: list[tuple[dict[str, Any], RolloutState]] = []
    for vs in [*candidates, *extra]:
        st = read_state(vs)
        if st is not None and st.app == app:
            found.append((vs, st))
    found.sort(key=lambda p: (not p[1].active, -p[1].updated_at))
    return found[0] if found else (None, None)


def promote(
    ctl: Controller,
    *,
    app: str,
    namespace: str,
    policy: AnalysisPolicy,
    vs_names: Sequence[str] = (),
    canary: str | None = None,
    route_names: Sequence[str] | None = None,
    primary: str | None = None,
    dry_run: bool = False,
    wait: bool = True,
    force: bool = False,
) -> Result:
    """Start a rollout (or attach to the one in progress) and follow it to its end.
    ``primary``: the VirtualService to carry the state (a declarative start's)."""
    candidates = ctl.router.candidates(namespace, vs_names)
    _, state = locate(ctl, app=app, namespace=namespace, vs_names=vs_names, candidates=candidates)
    before = state  # a finished rollout's pending clean-up is carried into the next one
    if state is not None and state.active:
        if canary and canary not in (state.canary.get("subset"), state.canary.get("host")):
            raise UsageError(
                f"--canary {canary}: a rollout of {dest(state.canary)} is already in progress "
                f"on {state.virtual_service}; roll it back first"
            )
        if force:
            return force_promote(ctl, state)
        if dry_run:
            return Result("planned", app, namespace, EXIT_OK, state, "rollout already in progress")
        if not wait:
            return Result("in_progress", app, namespace, EXIT_OK, state, state.reason)
        log.info("attach", vs=state.virtual_service, phase=state.phase, weight=state.weight)
        return _follow(ctl, state, app)
    if force:
        raise RolloutStateError(f"--force: no rollout of {app} in progress in {namespace}")

    _check_url_files(policy)
    members = ctl.router.find(
        app=app,
        namespace=namespace,
        names=vs_names,
        canary=canary,
        route_names=route_names,
        primary=primary,
        candidates=candidates,
    )
    target = members[0][0]
    warnings = _warnings(ctl.router, members, app=app, namespace=namespace)
    workloads = ctl.router.preflight(target)
    spec = policy.spec
    provider = ctl.provider_for(spec.prometheus)
    provider.check()
    for metric in spec.metrics:
        if not metric.builtin:
            ctx = QueryContext(
                namespace=namespace,
                app=app,
                canary_workload=workloads.canary,
                stable_workload=workloads.stable,
                window_seconds=spec.interval_seconds,
            )
            provider.validate_query(provider.render(metric, ctx, workloads.canary))
    now = ctl.clock()
    state = begin_rollout(
        members, workloads=workloads, policy=policy, route_names=route_names, now=now
    )
    if before is not None and before.virtual_service == target.vs_name:
        mine = {workloads.stable, workloads.canary}
        state = replace(state, cleanup=finish.carry(before.cleanup, workloads=mine))
    if dry_run:
        plans = []
        for t, obj in members:
            ann = {ANNOTATION: state.to_json()} if t is target else {}
            ops = ctl.router.weight_ops(t, obj, canary_weight=state.weight, annotations=ann)
            plans.append(
                {
                    "virtualService": t.vs_name,
                    "mode": t.mode,
                    "currentWeights": ctl.router.weights(obj, t),
                    "firstPatch": ops,
                    "weightsAfterFirstPatch": ctl.router.weights(apply_patch(obj, ops), t),
                }
            )
        plan = {**plans[0], "steps": state.steps, "interval": spec.interval, "followers": plans[1:]}
        extra = {"plan": plan, **warnings}
        return Result("planned", app, namespace, EXIT_OK, state, "dry run: nothing written", extra)
    failure = ctl.hooks.pre_rollout(state)
    if failure is not None:
        raise PreflightError(
            f"pre-rollout webhook {failure.name} failed ({failure.error}); nothing was changed"
        )
    if ctl.should_stop():  # Ctrl-C during preflight: nothing was written, keep it that way
        return Result("interrupted", app, namespace, 130, None, "interrupted before any change")
    lease = ctl.lease_for(state)
    if not lease.acquire(now):
        log.info("lease.busy", holder=lease.observed_holder)
        return _attach_existing(ctl, app=app, namespace=namespace, vs_name=target.vs_name)
    try:
        try:
            written = ctl.commit(state, expect=None, canary_override=canary)
        except StateChangedError as exc:
            lease.release()
            if exc.state is None:
                raise
            return _follow(ctl, exc.state, app)
        ctl.event(
            written,
            "RolloutStarted",
            f"canary {dest(state.canary)} at {state.weight}% "
            f"(stable {dest(state.stable)}), steps {state.steps}",
        )
        log.info(
            "started",
            vs=state.virtual_service,
            weight=state.weight,
            steps=state.steps,
            canary=dest(state.canary),
            stable=dest(state.stable),
        )
        if not wait:
            msg = "started; `canaryctl reconcile` or `canaryctl run` continues it"
            return Result("started", app, namespace, EXIT_OK, state, msg, warnings)
        try:
            final = ctl.drive(state, lease)
        except Interrupted:
            return _interrupted(ctl, state, app)
    finally:
        lease.release()
    res = from_state(cleanup.follow(ctl, final), app)
    res.extra.update(warnings)
    return res


def begin_rollout(
    members: Sequence[Member],
    *,
    workloads: Workloads,
    policy: AnalysisPolicy,
    route_names: Sequence[str] | None,
    now: float,
) -> RolloutState:
    """The state of a new rollout of ``members`` (the primary first), before its first write."""
    target = members[0][0]
    state = rollout.begin(
        app=target.app,
        namespace=target.namespace,
        virtual_service=target.vs_name,
        mode=target.mode,
        stable={"host": target.stable.host, "subset": target.stable.subset},
        canary={"host": target.canary.host, "subset": target.canary.subset},
        stable_workload=workloads.stable,
        canary_workload=workloads.canary,
        policy=policy.snapshot(),
        current_canary_weight=max(t.canary_weight for t, _ in members),
        now=now,
    )
    return replace(
        state,
        followers=[t.vs_name for t, _ in members[1:]],
        routes=list(route_names) if route_names else None,
    )


def _warnings(
    router: TrafficRouter, members: Sequence[Member], *, app: str, namespace: str
) -> dict[str, list[str]]:
    """``{"warnings": [...]}`` for the result (and logged) when in-mesh callers bypass the
    VirtualServices moved; ``{}`` otherwise. A warning, not an error: the gateway traffic is
    still shifted and judged."""
    text = router.bypass_warning([vs for _, vs in members], app=app, namespace=namespace)
    if text is None:
        return {}
    log.warning("mesh.bypassed", detail=text)
    return {"warnings": [text]}


def _interrupted(ctl: Controller, state: RolloutState, app: str) -> Result:
    latest = ctl.refresh(state)
    return Result(
        "interrupted",
        app,
        state.namespace,
        130,
        latest,
        "stopped waiting; the rollout continues in the cluster "
        "(`canaryctl promote` attaches to it, `canaryctl rollback` ends it)",
    )


def _attach_existing(ctl: Controller, *, app: str, namespace: str, vs_name: str) -> Result:
    """Follow the rollout another process holds the lease of. It may not have written its
    first step yet (it took the lease a moment ago, on a loaded machine seconds ago): look
    again for a few seconds before giving up."""
    for _ in range(20):
        _, state = locate(ctl, app=app, namespace=namespace, vs_names=[vs_name])
        if state is not None:
            return _follow(ctl, state, app)
        ctl.sleep(0.5)
    raise RolloutStateError(f"another process is starting a rollout of {app}; try again")


def _follow(ctl: Controller, state: RolloutState, app: str) -> Result:
    """Attach to a rollout in progress (driving it once its lease is free) until it ends."""
    try:
        final = ctl.follow(state)
    except Interrupted:
        return _interrupted(ctl, state, app)
    return from_state(cleanup.follow(ctl, final), app)


def _require_active(
    ctl: Controller, app: str, namespace: str, vs_names: Sequence[str], verb: str
) -> RolloutState:
    _, state = locate(ctl, app=app, namespace=namespace, vs_names=vs_names)
    if state is None or not state.active:
        raise RolloutStateError(f"{verb}: no rollout of {app} in progress in {namespace}")
    return state


def _operate(
    ctl: Controller, state: RolloutState, new: RolloutState, reason: str, warning: bool
) -> RolloutState:
    """Write an operator's change, retrying on races with the driving process."""
    for _ in range(10):
        try:
            return ctl.finish(new, expect=state, event=(reason, warning))
        except StateChangedError as exc:
            if exc.state is None or not exc.state.active:
                raise RolloutStateError("the rollout ended meanwhile") from None
            state = exc.state
            new = _rebase(state, new)
    raise RolloutStateError("the rollout kept changing; try again")


def _check_url_files(policy: AnalysisPolicy) -> None:
    """Every ``urlFile`` of the policy holds a URL now (exit 2 before anything is written).
    Not ``policy validate``'s job: the files exist where the rollout runs, not where the
    policy is written."""
    sources: list[tuple[str, int, UrlSource]]
    sources = [("webhooks", i, h) for i, h in enumerate(policy.spec.webhooks)]
    sources += [("notify", i, n) for i, n in enumerate(policy.spec.notify)]
    for where, i, source in sources:
        if source.urlFile is not None:
            try:
                target_url(source)
            except UrlFileError as exc:
                raise PolicyError(f"spec.{where}[{i}].urlFile: {exc}") from None


def _rebase(state: RolloutState, new: RolloutState) -> RolloutState:
    now = new.updated_at
    if new.phase == "Paused":
        return rollout.pause(state, reason=new.reason, now=now)
    if new.phase == "Progressing":
        return rollout.resume(state, now=now)
    if new.phase == "Promoted":
        return rollout.force_promote(state, reason=new.reason, now=now)
    return rollout.rollback(state, reason=new.reason, now=now)


def force_promote(ctl: Controller, state: RolloutState) -> Result:
    new = rollout.force_promote(
        state, reason="promoted with --force: remaining analysis skipped", now=ctl.clock()
    )
    new = _operate(ctl, state, new, "PromotedForced", True)
    return from_state(new, state.app)


def pause(ctl: Controller, *, app: str, namespace: str, vs_names: Sequence[str]) -> Result:
    state = _require_active(ctl, app, namespace, vs_names, "pause")
    if state.phase == "Paused":
        return Result("paused", app, namespace, EXIT_OK, state, "already paused")
    new = rollout.pause(state, reason=f"paused by operator at {state.weight}%", now=ctl.clock())
    return Result("paused", app, namespace, EXIT_OK, _operate(ctl, state, new, "Paused", False))


def resume(ctl: Controller, *, app: str, namespace: str, vs_names: Sequence[str]) -> Result:
    state = _require_active(ctl, app, namespace, vs_names, "resume")
    if state.phase != "Paused":
        return Result("resumed", app, namespace, EXIT_OK, state, "not paused")
    new = rollout.resume(state, now=ctl.clock())
    return Result("resumed", app, namespace, EXIT_OK, _operate(ctl, state, new, "Resumed", False))


def rollback(ctl: Controller, *, app: str, namespace: str, vs_names: Sequence[str]) -> Result:
    """All traffic to stable now. With a rollout in progress its state records the rollback;
    without one, the split routes found by weight are set to stable 100 / canary 0."""
    candidates = ctl.router.candidates(namespace, vs_names)
    _, state = locate(ctl, app=app, namespace=namespace, vs_names=vs_names, candidates=candidates)
    if state is not None and state.active:
        new = rollout.rollback(state, reason="rolled back by operator", now=ctl.clock())
        new = _operate(ctl, state, new, "RolledBack", True)
        return Result("rolled_back", app, namespace, EXIT_OK, new, new.reason)
    members = ctl.router.find(app=app, namespace=namespace, names=vs_names, candidates=candidates)
    moved = [(t, vs) for t, vs in members if t.canary_weight > 0]
    for target, vs in moved:
        ctl.router.write(target, vs, canary_weight=0, annotations={})
    if not moved:
        return Result("rolled_back", app, namespace, EXIT_OK, state, "traffic already on stable")
    msg = "; ".join(
        f"{t.vs_name}: traffic moved to {t.stable.label()} (was {100 - t.canary_weight}%)"
        for t, _ in moved
    )
    return Result("rolled_back", app, namespace, EXIT_OK, state, msg)


def status(ctl: Controller, *, app: str, namespace: str, vs_names: Sequence[str]) -> Result:
    """The rollout recorded for ``app`` (or, without one, how its routes split), with the
    warning when in-mesh callers bypass the VirtualServices moved."""
    candidates = ctl.router.candidates(namespace, vs_names)
    _, state = locate(ctl, app=app, namespace=namespace, vs_names=vs_names, candidates=candidates)
    if state is not None:
        names = {state.virtual_service, *state.followers}
        moved = [v for v in candidates if v["metadata"]["name"] in names]
        res = from_state(state, app)
        res.exit_code = EXIT_OK
        text = ctl.router.bypass_warning(moved, app=app, namespace=namespace)
        res.extra.update({"warnings": [text]} if text else {})
        return res
    members = ctl.router.find(app=app, namespace=namespace, names=vs_names, candidates=candidates)
    target, vs = members[0]
    return Result(
        "no_rollout",
        app,
        namespace,
        EXIT_OK,
        None,
        f"no rollout recorded; {target.vs_name} sends {100 - target.canary_weight}% to "
        f"{target.stable.label()} and {target.canary_weight}% to {target.canary.label()}",
        {
            "virtualService": target.vs_name,
            "weights": ctl.router.weights(vs, target),
            **_warnings(ctl.router, members, app=app, namespace=namespace),
        },
    )


def list_rollouts(ctl: Controller, *, namespace: str | None) -> list[RolloutState]:
    out = []
    for vs in ctl.router.list(namespace):
        st = read_state(vs)
        if st is not None:
            out.append(st)
    out.sort(key=lambda s: (s.namespace, s.app))
    return out
