"""The rollout state machine (pure): given the stored state and a verdict, what happens next.

The state lives in the VirtualService annotation ``canaryctl.io/rollout`` as JSON and is
written in the same patch as the weights, so the two never disagree. Every function here takes
``now`` (epoch seconds) instead of reading a clock, so the machine is deterministic and the
property tests can replay any sequence of verdicts and restarts.

Phases::

    Progressing --pass--> Progressing (next step) ... --pass at 100--> Promoted
    Progressing --fail > failureLimit--> RolledBack
    Progressing --inconclusive, window older than maxWindow--> Paused or RolledBack
                (whenNoEvidence; also RolledBack after more than inconclusiveLimit, if set)
    Progressing --pause--> Paused --resume--> Progressing
    Progressing --infrastructure failure--> Failed (traffic put back on stable)
    Progressing/Paused --rollback verb--> RolledBack;  --promote --force--> Promoted
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

from canaryctl import finish
from canaryctl.analysis import StepAnalysis
from canaryctl.policy_base import parse_duration

ANNOTATION = "canaryctl.io/rollout"
PROMOTE_ANNOTATION = "canaryctl.io/promote"
POLICY_ANNOTATION = "canaryctl.io/policy"
# The app a declarative start is for, when the routes do not tell (see mesh.routes.infer_app).
APP_ANNOTATION = "canaryctl.io/app"
REF_ANNOTATION = (
    "canaryctl.io/rollout-ref"  # on followers: {"virtualService", "startedAt", "weight"}
)
STATE_VERSION = 1
HISTORY_LIMIT = 20  # analyses kept in the annotation; older ones are counted, not stored

Phase = Literal["Progressing", "Waiting", "Paused", "Promoted", "RolledBack", "Failed"]
# Waiting: analysis passed but a confirm-step/confirm-promotion webhook has not approved yet;
# the weight is held and analysed again every interval (a pass is needed when the gate opens).
ACTIVE_PHASES: tuple[str, ...] = ("Progressing", "Waiting", "Paused")
ANALYSED_PHASES: tuple[str, ...] = ("Progressing", "Waiting")
TERMINAL_PHASES: tuple[str, ...] = ("Promoted", "RolledBack", "Failed")
PHASES: tuple[str, ...] = get_args(Phase)
# How a finished rollout ended, as webhooks (post-rollout) and notifications say it.
Outcome = Literal["promoted", "rolled_back", "failed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
_OUTCOME_OF_PHASE: dict[str, Outcome] = {
    "Promoted": "promoted",
    "RolledBack": "rolled_back",
    "Failed": "failed",
}
Action = Literal["advance", "hold", "dwell", "promote", "rollback", "pause"]


@dataclass(frozen=True)
class RolloutState:
    """Everything a canaryctl process needs to continue a rollout it did not start."""

    app: str
    namespace: str
    virtual_service: str
    mode: str  # "subset" | "host"
    stable: dict[str, str | None]  # {"host": ..., "subset": ...}
    canary: dict[str, str | None]
    stable_workload: str
    canary_workload: str
    policy: dict[str, Any]  # snapshot of the effective policy
    phase: Phase = "Progressing"
    reason: str = ""
    step_index: int = 0
    weight: int = 0
    failed: int = 0
    inconclusive: int = 0  # in a row
    step_started_at: float = 0.0  # the next analysis is due one interval after this
    # start of the window the next analysis measures: equal to step_started_at, except after an
    # inconclusive analysis, which holds the weight and lets the window grow (all of it was
    # served at this weight), so a quiet canary accumulates evidence instead of starting over
    window_started_at: float | None = None  # None: same as step_started_at (older states)
    started_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    forced: bool = False
    waiting_since: float | None = None  # when a gate first said no at this step
    history: list[dict[str, Any]] = field(default_factory=list)
    history_dropped: int = 0
    counts: list[dict[str, Any]] = field(default_factory=list)  # per analysis, for sequential
    version: int = STATE_VERSION
    # --- several VirtualServices, named routes (README "How it works") ---------------------
    # the other VirtualServices moved with this one; each carries REF_ANNOTATION (a pointer
    # here, with the weight canaryctl last wrote to it)
    followers: list[str] = field(default_factory=list)
    routes: list[str] | None = None  # --route: only the HTTP routes of these names
    # --- clean-up after the rollout ended (finish.py): tasks planned by _finish ---
    cleanup: list[dict[str, Any]] = field(default_factory=list)

    # --- derived --------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return list(self.policy["spec"]["steps"])

    @property
    def interval(self) -> float:
        return parse_duration(self.policy["spec"]["interval"])

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    def due_at(self) -> float:
        """When the current step's analysis window is complete."""
        return self.step_started_at + self.interval

    @property
    def window_start(self) -> float:
        return self.step_started_at if self.window_started_at is None else self.window_started_at

    # --- serialisation --------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported rollout state version {data.get('version')!r}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Decision:
    action: Action
    state: RolloutState
    reason: str


def first_step_index(steps: list[int], current_canary_weight: int) -> int:
    """The rollout starts at the first step whose weight is >= the current canary weight."""
    for i, w in enumerate(steps):
        if w >= current_canary_weight:
            return i
    return len(steps) - 1


def begin(
    *,
    app: str,
    namespace: str,
    virtual_service: str,
    mode: str,
    stable: dict[str, str | None],
    canary: dict[str, str | None],
    stable_workload: str,
    canary_workload: str,
    policy: dict[str, Any],
    current_canary_weight: int,
    now: float,
) -> RolloutState:
    steps = list(policy["spec"]["steps"])
    idx = first_step_index(steps, current_canary_weight)
    return RolloutState(
        app=app,
        namespace=namespace,
        virtual_service=virtual_service,
        mode=mode,
        stable=stable,
        canary=canary,
        stable_workload=stable_workload,
        canary_workload=canary_workload,
        policy=policy,
        phase="Progressing",
        reason=f"started at step {idx + 1}/{len(steps)} ({steps[idx]}%)",
        step_index=idx,
        weight=steps[idx],
        step_started_at=now,
        window_started_at=now,
        started_at=now,
        updated_at=now,
    )


def _record(state: RolloutState, analysis: StepAnalysis, now: float, action: str) -> RolloutState:
    entry = {
        "step": state.step_index + 1,
        "weight": state.weight,
        "at": round(now, 3),
        "window": round(now - state.window_start, 3),
        "verdict": analysis.verdict,
        "action": action,
        "reason": analysis.reason[:300],
        "metrics": [r.to_dict() for r in analysis.metrics],
    }
    history = [*state.history, entry]
    dropped = state.history_dropped
    if len(history) > HISTORY_LIMIT:
        dropped += len(history) - HISTORY_LIMIT
        history = history[-HISTORY_LIMIT:]
    counts = state.counts if analysis.counts is None else [*state.counts, analysis.counts]
    return replace(state, history=history, history_dropped=dropped, counts=counts)


def decide(state: RolloutState, analysis: StepAnalysis, *, now: float) -> Decision:
    """Apply one analysis of the current step. Never promotes on anything but a pass."""
    if state.phase not in ANALYSED_PHASES:
        raise ValueError(f"cannot analyse a rollout in phase {state.phase}")
    state = replace(state, phase="Progressing", waiting_since=None)
    spec = state.policy["spec"]
    steps = state.steps
    if analysis.verdict == "fail":
        failed = state.failed + 1
        if analysis.sequential_reject or failed > int(spec["failureLimit"]):
            why = (
                "sequential test rejected: " if analysis.sequential_reject else "analysis failed: "
            ) + analysis.reason
            s = _record(replace(state, failed=failed), analysis, now, "rollback")
            return Decision("rollback", _finish(s, "RolledBack", why, now), why)
        why = f"analysis failed ({failed}/{spec['failureLimit']} allowed): {analysis.reason}"
        s = _record(replace(state, failed=failed, inconclusive=0), analysis, now, "hold")
        return Decision("hold", restart_window(s, now=now, reason=why), why)
    if analysis.verdict == "inconclusive":
        return _no_evidence(state, analysis, now=now)
    # pass
    if analysis.dwell:
        s = _record(replace(state, inconclusive=0), analysis, now, "dwell")
        why = analysis.dwell
        return Decision("dwell", restart_window(s, now=now, reason=why), why)
    if state.step_index >= len(steps) - 1:
        why = f"all {len(steps)} steps passed analysis"
        s = _record(replace(state, inconclusive=0), analysis, now, "promote")
        return Decision("promote", _finish(s, "Promoted", why, now), why)
    nxt = state.step_index + 1
    why = f"step {state.step_index + 1} passed; advancing to {steps[nxt]}%"
    s = _record(replace(state, inconclusive=0), analysis, now, "advance")
    s = restart_window(s, now=now, reason=why, step_index=nxt, weight=steps[nxt])
    return Decision("advance", s, why)


def _no_evidence(state: RolloutState, analysis: StepAnalysis, *, now: float) -> Decision:
    """An inconclusive analysis: the weight holds and the window grows (evidence accumulates
    at this weight) until it is ``maxWindow`` old; then ``whenNoEvidence`` decides. A quiet
    canary is not a bad one, so the default pauses (a human decides) rather than rolls back.
    Snapshots from before ``maxWindow`` existed carry ``inconclusiveLimit`` only."""
    spec = state.policy["spec"]
    streak = state.inconclusive + 1
    limit, budget = spec.get("inconclusiveLimit"), spec.get("maxWindow")
    age = now - state.window_start
    s = replace(state, inconclusive=streak)
    if limit is not None and streak > int(limit):
        why = f"{streak} inconclusive analyses in a row: {analysis.reason}"
        s = _record(s, analysis, now, "rollback")
        return Decision("rollback", _finish(s, "RolledBack", why, now), why)
    if budget is not None and age >= parse_duration(budget):
        why = f"no verdict after a {round(age)}s window (maxWindow {budget}): "
        why += analysis.reason
        if spec.get("whenNoEvidence", "pause") == "rollback":
            s = _record(s, analysis, now, "rollback")
            return Decision("rollback", _finish(s, "RolledBack", why, now), why)
        s = _record(s, analysis, now, "pause")
        return Decision("pause", pause(s, reason=why, now=now), why)
    why = f"inconclusive, window {round(age)}s of {budget or 'unlimited'}: "
    why += analysis.reason
    s = _record(s, analysis, now, "hold")
    s = restart_window(s, now=now, reason=why, window_started_at=state.window_start)
    return Decision("hold", s, why)


def _finish(state: RolloutState, phase: Phase, reason: str, now: float) -> RolloutState:
    weight = 100 if phase == "Promoted" else 0
    cleanup = finish.kept(state.cleanup) + finish.plan(
        state.policy["spec"],
        phase=phase,
        stable_workload=state.stable_workload,
        canary_workload=state.canary_workload,
        stable=state.stable,
        canary=state.canary,
        now=now,
    )
    return replace(
        state,
        phase=phase,
        reason=reason,
        weight=weight,
        updated_at=now,
        finished_at=now,
        cleanup=cleanup,
    )


def rollback(state: RolloutState, *, reason: str, now: float) -> RolloutState:
    """Operator or controller rollback: all traffic back to stable."""
    return _finish(state, "RolledBack", reason, now)


def fail(state: RolloutState, *, reason: str, now: float) -> RolloutState:
    """Infrastructure failure: traffic back to stable, phase Failed with the reason."""
    return _finish(state, "Failed", reason, now)


def force_promote(state: RolloutState, *, reason: str, now: float) -> RolloutState:
    return replace(_finish(state, "Promoted", reason, now), forced=True)


def pause(state: RolloutState, *, reason: str, now: float) -> RolloutState:
    return replace(state, phase="Paused", reason=reason, updated_at=now)


def resume(state: RolloutState, *, now: float) -> RolloutState:
    """Resume re-measures the current step from now: the paused time is not analysed."""
    return restart_window(state, now=now, reason="resumed", phase="Progressing")


def restart_window(state: RolloutState, *, now: float, reason: str, **changes: Any) -> RolloutState:
    """A new analysis window at the current weight from ``now`` (plus ``changes``)."""
    fields: dict[str, Any] = {
        "step_started_at": now,
        "window_started_at": now,
        "updated_at": now,
        "reason": reason,
    }
    return replace(state, **{**fields, **changes})


def wait_for_gate(state: RolloutState, *, now: float, since: float, reason: str) -> RolloutState:
    """A gate said no: hold the weight, measure a fresh window, remember since when we wait."""
    return restart_window(state, now=now, reason=reason, phase="Waiting", waiting_since=since)


def outcome_of(state: RolloutState) -> Outcome | None:
    """How ``state`` ended; None while it is still active."""
    return _OUTCOME_OF_PHASE.get(state.phase)
