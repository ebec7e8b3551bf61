"""CronJob mode: advance every due rollout by at most one step, then return.

A reconcile pass lists the VirtualServices (one namespace or all), and for each rollout in
phase Progressing whose step interval has elapsed: takes the rollout's lease (skipping it when
another live process holds it), analyses the window since the step began, and advances, holds,
rolls back or promotes (one guarded write). Paused rollouts are skipped. A VirtualService
annotated ``canaryctl.io/promote: <canary subset or host>`` (optionally with
``canaryctl.io/policy: <ConfigMap>``) starts a rollout declaratively, for GitOps; the annotations
are removed in the same patch that writes the first step, and a trigger naming the canary of the
rollout that already ended there (re-applied by a GitOps tool) is skipped. Before anything else,
the VirtualServices a crash left behind in a rollout (ended ones too) are repaired. A finished
rollout whose clean-up (``spec.finish``: collapse routes, scale down) has a task due is acted on
too (``cleanup.py``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from canaryctl import cleanup, finish, followers, operations, undo
from canaryctl.controller import Controller, RolloutInfraError, StateChangedError, read_state
from canaryctl.errors import CanaryctlError, InfraError, InputError, NotFoundError, PolicyError
from canaryctl.logs import get_logger
from canaryctl.policy import AnalysisPolicy, load_policy, parse_policy_text
from canaryctl.rollout import APP_ANNOTATION, POLICY_ANNOTATION, PROMOTE_ANNOTATION, RolloutState

log = get_logger("canaryctl.reconcile")


@dataclass
class Outcome:
    namespace: str
    virtual_service: str
    app: str | None
    # started, advanced, held, promoted, rolled_back, failed, skipped, error, cleanup, undone
    action: str
    detail: str = ""
    phase: str | None = None
    weight: int | None = None
    state: RolloutState | None = field(default=None, repr=False)  # not in the JSON output

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "virtualService": self.virtual_service,
            "app": self.app,
            "action": self.action,
            "detail": self.detail,
            "phase": self.phase,
            "weight": self.weight,
        }


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    infra_errors: int = 0
    # every rollout seen (ended ones too), as it stands after the pass: the daemon's metrics
    states: list[RolloutState] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 3 if self.infra_errors else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": "error" if self.infra_errors else "ok",
            "rollouts": [o.to_dict() for o in self.outcomes],
        }


def policy_from_config_map(ctl: Controller, namespace: str, name: str | None) -> AnalysisPolicy:
    if not name:
        return load_policy(None)
    try:
        cm = ctl.kube.get_config_map(namespace, name)
    except NotFoundError:
        raise PolicyError(f"{POLICY_ANNOTATION}: ConfigMap {namespace}/{name} not found") from None
    data = cm.get("data") or {}
    key = "policy.yaml" if "policy.yaml" in data else next(iter(data), None)
    if key is None:
        raise PolicyError(f"{POLICY_ANNOTATION}: ConfigMap {namespace}/{name} has no data")
    return parse_policy_text(str(data[key]), source=f"configmap {namespace}/{name}/{key}")


def _outcome(state: RolloutState, action: str, detail: str) -> Outcome:
    return Outcome(
        state.namespace,
        state.virtual_service,
        state.app,
        action,
        detail,
        state.phase,
        state.weight,
        state,
    )


def _start(ctl: Controller, vs: dict[str, Any]) -> Outcome:
    meta = vs["metadata"]
    ns, name = meta["namespace"], meta["name"]
    ann = meta.get("annotations") or {}
    app = ann.get(APP_ANNOTATION) or ctl.router.app_of(vs)
    if not app:
        raise InputError(f"{PROMOTE_ANNOTATION}: cannot tell the app of {name}")
    policy = policy_from_config_map(ctl, ns, ann.get(POLICY_ANNOTATION)).with_prometheus_url(
        ctl.prometheus_url
    )
    res = operations.promote(
        ctl,
        app=app,
        namespace=ns,
        policy=policy,
        primary=name,
        canary=str(ann[PROMOTE_ANNOTATION]) or None,
        wait=False,
    )
    if res.state is None:
        raise InputError(f"{name}: {res.message}")
    return _outcome(res.state, "started", res.message)


def _due(state: RolloutState | None, now: float) -> bool:
    """Analysed in this pass (Waiting rollouts are too: their gates are asked again)."""
    return state is not None and state.active and state.phase != "Paused" and now >= state.due_at()


def _advance(ctl: Controller, state: RolloutState, now: float, *, leader: bool = False) -> Outcome:
    """One step of a rollout, analysed as of ``now`` (the pass's instant). Without ``leader``
    the rollout's Lease is taken for the step; with it (a daemon holding its leader Lease) the
    rollout's Lease is only checked, so a ``promote`` driving it is left alone (docs/scale.md)."""
    if state.phase == "Paused":
        return _outcome(state, "skipped", "paused")
    if not _due(state, now):
        return _outcome(state, "skipped", f"next analysis in {state.due_at() - now:.0f}s")
    lease = ctl.lease_for(state)
    if lease.held_elsewhere(ctl.clock()) if leader else not lease.acquire(ctl.clock()):
        return _outcome(state, "skipped", f"lease held by {lease.observed_holder}")
    try:
        try:
            new = ctl.step(state, at=now)  # the listed state; a newer one: StateChangedError
        except StateChangedError as exc:
            latest = exc.state or state
            return _outcome(latest, "skipped", "changed by another actor meanwhile")
    finally:
        lease.release()
    if new.active:
        action = (
            "advanced"
            if new.step_index > state.step_index
            else ("waiting" if new.phase == "Waiting" else "held")
        )
    else:
        action = operations.RESULTS[new.phase]
    return _outcome(new, action, new.reason)


def _already_done(state: RolloutState | None, trigger: Any) -> Outcome | None:
    """A skip when the trigger names the canary of the rollout that already ended on this
    object: a GitOps tool re-applying the annotation (canaryctl removed it when starting) must
    not start the same release again. Another release is another value (or ``promote``)."""
    if state is None or state.active or trigger is None:
        return None
    if str(trigger) not in (state.canary.get("subset"), state.canary.get("host")):
        return None
    detail = f"{PROMOTE_ANNOTATION}: {trigger} already ended ({state.phase}); not started again"
    return _outcome(state, "skipped", detail)


def _repair(
    ctl: Controller, state: RolloutState, listed: dict[tuple[str, str], Any]
) -> Outcome | None:
    """Followers left behind by a crash between two patches are repaired first, whatever the
    phase (an ended rollout too), under the rollout's lease; a live holder repairs them itself.
    An ``undo`` interrupted the same way is finished (the outcome ``undone``)."""
    mine = {name: vs for (ns, name), vs in listed.items() if ns == state.namespace}
    undone = undo.finish_interrupted(ctl, state, mine)
    if undone is not None:
        return _outcome(undone.state or state, "undone", undone.message)
    if not followers.lagging(state, mine):
        return None
    lease = ctl.lease_for(state)
    if lease.acquire(ctl.clock()):
        try:
            followers.sync(ctl.router, state, guard=True, sleep=ctl.sleep)
        finally:
            lease.release()
    return None


# --- clean-up of finished rollouts (finish.py): still due at its time ---
def _clean_up(ctl: Controller, state: RolloutState) -> Outcome:
    new = cleanup.act(ctl, state)
    left = finish.pending(new.cleanup)
    detail = "; ".join(f"{t['task']} {t['target']}".strip() + f": {t['detail']}" for t in left)
    return _outcome(new, "cleanup", f"pending: {detail}" if left else "clean-up complete")


def _listed_state(vs: dict[str, Any]) -> RolloutState | None:
    try:
        return read_state(vs)
    except CanaryctlError:
        return None  # reported by the pass


def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard (0..shards-1) of a VirtualService: a stable hash of its namespace/name, the
    same in every replica and every Python process."""
    return zlib.crc32(f"{namespace}/{name}".encode()) % shards


def reconcile(
    ctl: Controller,
    *,
    namespace: str | None,
    shard: tuple[int, int] = (0, 1),
    leader: bool = False,
) -> Report:
    """One pass over the VirtualServices of ``shard`` (index, count). Every due rollout is
    analysed as of the pass's start, so their Prometheus queries are asked together, once per
    metric and window (``Controller.prefetch``). ``leader``: see ``_advance``."""
    report = Report()
    now = ctl.clock()
    index, shards = shard
    every = ctl.router.list(namespace)
    listed = [
        vs
        for vs in every
        if shards == 1
        or shard_of(vs["metadata"].get("namespace", ""), vs["metadata"]["name"], shards) == index
    ]
    due = [s for s in map(_listed_state, listed) if s is not None and _due(s, now)]
    ctl.prefetch(due, now)
    # followers are looked up among all VirtualServices: they may hash to another shard
    by_name = {(v["metadata"].get("namespace", ""), v["metadata"]["name"]): v for v in every}
    for vs in listed:
        meta = vs.get("metadata", {})
        ns, name = meta.get("namespace", namespace or ""), meta.get("name", "")
        try:
            state = read_state(vs)
            ann = meta.get("annotations") or {}
            repaired = None if state is None else _repair(ctl, state, by_name)
            done = repaired or _already_done(state, ann.get(PROMOTE_ANNOTATION))
            if done is not None:
                outcome = done
            elif (state is None or not state.active) and PROMOTE_ANNOTATION in ann:
                outcome = _start(ctl, vs)
            elif state is not None and cleanup.due(state, ctl.clock()):
                outcome = _clean_up(ctl, state)
            elif state is None or not state.active:
                if state is not None:
                    report.states.append(state)
                continue
            else:
                outcome = _advance(ctl, state, now, leader=leader)
        except RolloutInfraError as exc:
            report.infra_errors += 1
            st = exc.state
            outcome = (
                _outcome(st, "failed", exc.message)
                if st
                else Outcome(ns, name, None, "error", exc.message)
            )
        except InfraError as exc:
            report.infra_errors += 1
            outcome = Outcome(ns, name, None, "error", exc.message)
        except CanaryctlError as exc:  # input problems of one rollout must not stop the others
            outcome = Outcome(ns, name, None, "error", exc.message)
            ctl.event(vs, "ReconcileError", exc.message, warning=True)
        log.info("reconciled", **outcome.to_dict())
        report.outcomes.append(outcome)
        latest = outcome.state or read_state(vs)
        if latest is not None:
            report.states.append(latest)
    return report
