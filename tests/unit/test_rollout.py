"""The rollout state machine (canaryctl.rollout): phases, weights, limits, history, JSON."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryctl import rollout
from canaryctl.analysis import Measurement, StepAnalysis, combine, judge_metric
from canaryctl.policy import parse_policy
from canaryctl.rollout import (
    ANNOTATION,
    HISTORY_LIMIT,
    STATE_VERSION,
    RolloutState,
    decide,
    first_step_index,
)
from tests.rollouts import begin_rollout

T0 = 1_700_000_000.0
STEPS = [20, 40, 60, 80, 100]


def policy(steps: list[int] | None = None, **spec: Any) -> dict[str, Any]:
    """The snapshot of a real, validated policy (what a rollout stores)."""
    return parse_policy({"spec": {"steps": steps or STEPS, **spec}}, source="test").snapshot()


def start(
    steps: list[int] | None = None, current: int = 0, now: float = T0, **spec: Any
) -> RolloutState:
    return begin_rollout(policy(steps, **spec), current=current, now=now)


def measured(verdict: str, *, reject: bool = False) -> StepAnalysis:
    """A step analysis built by the real judge from measurements giving ``verdict``."""
    pol = parse_policy({})
    values = {"pass": (99.9, 120.0), "fail": (90.0, 120.0), "inconclusive": (None, 120.0)}
    sr_value, lat_value = values[verdict]
    sr, lat = pol.spec.metrics
    results = [
        judge_metric(sr, Measurement(sr.name, sr_value, 99.9, 1000.0), min_requests=50),
        judge_metric(lat, Measurement(lat.name, lat_value, 110.0, 1000.0), min_requests=50),
    ]
    step = combine(results, sequential_reject=reject)
    assert step.verdict == verdict
    return step


PASS = measured("pass")
FAIL = measured("fail")
UNSURE = measured("inconclusive")
REJECT = measured("fail", reject=True)


def run(state: RolloutState, verdicts: list[StepAnalysis], step: float = 60.0) -> list[str]:
    """Apply analyses one minute apart; returns the actions (stops at a terminal phase)."""
    actions = []
    now = state.step_started_at
    for analysis in verdicts:
        now += step
        d = decide(state, analysis, now=now)
        actions.append(d.action)
        state = d.state
        if not state.active:
            break
    return actions


# --- first_step_index / begin ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "index"),
    [(0, 0), (20, 0), (21, 1), (30, 1), (40, 1), (79, 3), (80, 3), (99, 4), (100, 4), (120, 4)],
)
def test_first_step_index_is_first_step_at_or_above_current_weight(
    current: int, index: int
) -> None:
    assert first_step_index(STEPS, current) == index


def test_begin_from_an_80_20_seed_starts_at_20() -> None:
    s = start(current=20)
    assert (s.step_index, s.weight, s.phase) == (0, 20, "Progressing")
    assert s.reason == "started at step 1/5 (20%)"


def test_begin_at_30_percent_starts_at_the_40_step() -> None:
    s = start(current=30)
    assert (s.step_index, s.weight) == (1, 40)
    assert s.reason == "started at step 2/5 (40%)"


def test_begin_at_100_percent_starts_at_the_last_step() -> None:
    s = start(current=100)
    assert (s.step_index, s.weight) == (4, 100)


def test_begin_records_targets_clock_and_empty_counters() -> None:
    s = start(now=T0)
    assert (s.app, s.namespace, s.virtual_service, s.mode) == ("web", "shop", "web", "subset")
    assert s.canary == {"host": "web", "subset": "v2"}
    assert (s.stable_workload, s.canary_workload) == ("web-v1", "web-v2")
    assert s.started_at == s.step_started_at == s.updated_at == T0
    assert (s.failed, s.inconclusive, s.history, s.history_dropped) == (0, 0, [], 0)
    assert s.finished_at is None
    assert s.forced is False
    assert s.steps == STEPS
    assert s.interval == 60
    assert s.due_at() == T0 + 60
    assert s.active


def test_annotation_names() -> None:
    assert ANNOTATION == "canaryctl.io/rollout"


# --- decide: pass ----------------------------------------------------------------------------


def test_passes_advance_through_every_step_then_promote() -> None:
    s = start()
    weights = [s.weight]
    actions = []
    now = T0
    for _ in STEPS:
        now += 60
        d = decide(s, PASS, now=now)
        actions.append(d.action)
        s = d.state
        weights.append(s.weight)
    assert actions == ["advance", "advance", "advance", "advance", "promote"]
    assert weights == [20, 40, 60, 80, 100, 100]
    assert s.phase == "Promoted"
    assert s.finished_at == now
    assert s.reason == "all 5 steps passed analysis"
    assert [h["step"] for h in s.history] == [1, 2, 3, 4, 5]
    assert [h["weight"] for h in s.history] == STEPS


def test_reaching_100_is_not_promotion_until_that_step_passes() -> None:
    s = start()
    for i in range(4):
        s = decide(s, PASS, now=T0 + 60 * (i + 1)).state
    assert (s.phase, s.weight, s.step_index) == ("Progressing", 100, 4)
    assert s.finished_at is None
    d = decide(s, UNSURE, now=T0 + 300)
    assert (d.action, d.state.phase) == ("hold", "Progressing")
    d = decide(s, FAIL, now=T0 + 300)
    assert (d.action, d.state.phase, d.state.weight) == ("rollback", "RolledBack", 0)


def test_advance_restarts_the_window_and_explains() -> None:
    d = decide(start(), PASS, now=T0 + 61)
    assert d.action == "advance"
    assert d.state.step_started_at == d.state.updated_at == T0 + 61
    assert d.reason == d.state.reason == "step 1 passed; advancing to 40%"


def test_single_step_policy_promotes_on_the_first_pass() -> None:
    d = decide(start([100]), PASS, now=T0 + 60)
    assert (d.action, d.state.phase, d.state.weight) == ("promote", "Promoted", 100)


# --- decide: fail ----------------------------------------------------------------------------


def test_fail_with_failure_limit_0_rolls_back_to_weight_0() -> None:
    s = decide(start(), PASS, now=T0 + 60).state
    d = decide(s, FAIL, now=T0 + 120)
    assert d.action == "rollback"
    assert (d.state.phase, d.state.weight, d.state.failed) == ("RolledBack", 0, 1)
    assert d.state.finished_at == T0 + 120
    assert d.reason.startswith("analysis failed: request-success-rate: 90 < min 99")
    assert d.state.history[-1]["action"] == "rollback"
    assert d.state.history[-1]["verdict"] == "fail"


def test_failure_limit_2_tolerates_two_failures_and_rolls_back_on_the_third() -> None:
    s = decide(start(failureLimit=2), PASS, now=T0 + 60).state  # at 40%
    d1 = decide(s, FAIL, now=T0 + 120)
    assert (d1.action, d1.state.weight, d1.state.failed, d1.state.phase) == (
        "hold",
        40,
        1,
        "Progressing",
    )
    assert d1.state.step_started_at == T0 + 120  # the window restarts
    assert d1.reason.startswith("analysis failed (1/2 allowed): ")
    d2 = decide(d1.state, FAIL, now=T0 + 180)
    assert (d2.action, d2.state.weight, d2.state.failed) == ("hold", 40, 2)
    assert d2.state.step_started_at == T0 + 180
    d3 = decide(d2.state, FAIL, now=T0 + 240)
    assert (d3.action, d3.state.phase, d3.state.weight, d3.state.failed) == (
        "rollback",
        "RolledBack",
        0,
        3,
    )


def test_failure_limit_counts_failures_across_steps() -> None:
    """failureLimit bounds the analyses failed in the whole rollout, not per step."""
    actions = run(start(failureLimit=1), [FAIL, PASS, FAIL])
    assert actions == ["hold", "advance", "rollback"]


def test_sequential_reject_rolls_back_at_once_even_with_failure_limit_5() -> None:
    d = decide(start(failureLimit=5), REJECT, now=T0 + 60)
    assert (d.action, d.state.phase, d.state.weight) == ("rollback", "RolledBack", 0)
    assert d.reason.startswith("sequential test rejected: ")


# --- decide: inconclusive --------------------------------------------------------------------


def test_inconclusive_holds_then_rolls_back_after_more_than_the_limit_in_a_row() -> None:
    s = decide(start(inconclusiveLimit=3), PASS, now=T0 + 60).state
    now = T0 + 60
    for streak in (1, 2, 3):
        now += 60
        d = decide(s, UNSURE, now=now)
        assert (d.action, d.state.weight, d.state.inconclusive) == ("hold", 40, streak)
        assert d.state.step_started_at == now
        assert d.reason.startswith(f"inconclusive, window {60 * streak}s of 30m: ")
        s = d.state
    d = decide(s, UNSURE, now=now + 60)
    assert (d.action, d.state.phase, d.state.weight) == ("rollback", "RolledBack", 0)
    assert d.reason.startswith("4 inconclusive analyses in a row: ")


def _unsure_until_not_held(state: RolloutState) -> tuple[list[Any], RolloutState, float]:
    """UNSURE analyses one minute apart until the decision is not a hold."""
    actions, now = [], state.step_started_at
    while True:
        now += 60
        d = decide(state, UNSURE, now=now)
        actions.append(d.action)
        state = d.state
        if d.action != "hold":
            return actions, state, now


def test_a_quiet_step_holds_its_growing_window_until_max_window_then_pauses() -> None:
    """Default whenNoEvidence: the canary keeps its weight, phase Paused, the reason says why."""
    actions, s, now = _unsure_until_not_held(start(maxWindow="5m"))
    assert actions == ["hold"] * 4 + ["pause"]
    assert (s.phase, s.weight, s.step_index, s.inconclusive) == ("Paused", 20, 0, 5)
    assert s.reason.startswith("no verdict after a 300s window (maxWindow 5m): ")
    assert s.history[-1]["action"] == "pause"
    assert s.history[-1]["window"] == 300  # the window grew over the holds
    resumed = rollout.resume(s, now=now + 10)
    assert (resumed.phase, resumed.window_start) == ("Progressing", now + 10)


def test_when_no_evidence_rollback_rolls_back_once_max_window_is_spent() -> None:
    actions, s, _ = _unsure_until_not_held(start(maxWindow="3m", whenNoEvidence="rollback"))
    assert actions == ["hold", "hold", "rollback"]
    assert (s.phase, s.weight) == ("RolledBack", 0)
    assert "maxWindow 3m" in s.reason


def test_the_budget_is_per_window_a_pass_restarts_it() -> None:
    """Evidence at one step does not eat the next step's budget."""
    s = start(maxWindow="3m")
    actions = run(s, [UNSURE, UNSURE, PASS, UNSURE, UNSURE])
    assert actions == ["hold", "hold", "advance", "hold", "hold"]


def test_snapshot_without_max_window_keeps_the_legacy_count_only() -> None:
    """Rollouts started before maxWindow existed keep the rule they started with."""
    s = start(inconclusiveLimit=2)
    spec = {k: v for k, v in s.policy["spec"].items() if k != "maxWindow"}
    s = replace(s, policy={**s.policy, "spec": spec})
    assert run(s, [UNSURE] * 40, step=3600) == ["hold", "hold", "rollback"]


def test_inconclusive_limit_0_rolls_back_on_the_first_inconclusive() -> None:
    assert run(start(inconclusiveLimit=0), [UNSURE]) == ["rollback"]


def test_a_pass_resets_the_inconclusive_streak() -> None:
    actions = run(
        start(inconclusiveLimit=3),
        [UNSURE, UNSURE, UNSURE, PASS, UNSURE, UNSURE, UNSURE, UNSURE],
    )
    assert actions == ["hold"] * 3 + ["advance"] + ["hold"] * 3 + ["rollback"]


def test_inconclusive_does_not_count_as_a_failure() -> None:
    s = decide(start(failureLimit=0, inconclusiveLimit=5), UNSURE, now=T0 + 60).state
    assert (s.failed, s.inconclusive, s.phase) == (0, 1, "Progressing")


# --- history ---------------------------------------------------------------------------------


def test_history_entry_records_the_analysis() -> None:
    d = decide(start(), PASS, now=T0 + 61.23456)
    (entry,) = d.state.history
    assert entry["step"] == 1
    assert entry["weight"] == 20
    assert entry["at"] == round(T0 + 61.23456, 3)
    assert entry["window"] == 61.235
    assert (entry["verdict"], entry["action"]) == ("pass", "advance")
    assert entry["reason"] == "all metrics within thresholds"
    assert [m["name"] for m in entry["metrics"]] == ["request-success-rate", "request-duration"]


def test_history_reason_is_truncated_to_300_characters() -> None:
    long = StepAnalysis("inconclusive", (), "x" * 1000)
    entry = decide(start(), long, now=T0 + 60).state.history[-1]
    assert entry["reason"] == "x" * 300


def test_history_is_bounded_and_counts_dropped_entries() -> None:
    s = start(inconclusiveLimit=1000)
    now = T0
    for _ in range(HISTORY_LIMIT + 5):
        now += 60
        s = decide(s, UNSURE, now=now).state
    assert len(s.history) == HISTORY_LIMIT
    assert s.history_dropped == 5
    assert s.history[-1]["at"] == now  # the newest are kept
    assert s.history[0]["at"] == T0 + 60 * 6


# --- serialisation ---------------------------------------------------------------------------


def test_to_json_from_json_round_trip() -> None:
    s = decide(decide(start(failureLimit=1), PASS, now=T0 + 60).state, FAIL, now=T0 + 120).state
    text = s.to_json()
    assert RolloutState.from_json(text) == s
    assert json.loads(text)["version"] == STATE_VERSION
    assert text == json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True)


def test_to_json_is_stable_across_a_round_trip() -> None:
    s = start()
    assert s.to_json() == RolloutState.from_json(s.to_json()).to_json()


def test_from_json_ignores_unknown_fields() -> None:
    data = json.loads(start().to_json())
    data["addedByANewerVersion"] = 1
    assert RolloutState.from_json(json.dumps(data)) == start()


def test_state_written_before_followers_and_routes_reads_as_one_virtual_service_all_routes() -> (
    None
):
    data = json.loads(start().to_json())
    del data["followers"], data["routes"]
    old = RolloutState.from_json(json.dumps(data))
    assert (old.followers, old.routes) == ([], None)
    moved = replace(start(), followers=["web-mesh"], routes=["default"])
    assert RolloutState.from_json(moved.to_json()) == moved


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_from_json_rejects_other_versions(version: Any) -> None:
    data = json.loads(start().to_json())
    data["version"] = version
    with pytest.raises(ValueError, match="unsupported rollout state version"):
        RolloutState.from_json(json.dumps(data))


def test_state_with_100_steps_and_a_full_history_stays_under_64_kib() -> None:
    s = start(steps=list(range(1, 101)), inconclusiveLimit=1000, failureLimit=1000)
    assert len(s.steps) == 100
    now = T0
    for analysis in [PASS, FAIL, UNSURE] * 30:
        now += 60
        s = decide(s, analysis, now=now).state
    assert len(s.history) == HISTORY_LIMIT
    assert s.history_dropped == 90 - HISTORY_LIMIT
    text = s.to_json()
    assert len(text.encode()) < 64 * 1024
    assert RolloutState.from_json(text) == s


def test_state_with_a_nan_request_count_survives_a_restart() -> None:
    """Prometheus can answer NaN; the stored state must still be JSON that reads back equal."""
    pol = parse_policy({})
    sr = pol.spec.metrics[0]
    nan_step = combine(
        [judge_metric(sr, Measurement(sr.name, 99.9, 99.9, math.nan), min_requests=50)]
    )
    s = decide(start(), nan_step, now=T0 + 60).state
    text = s.to_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert RolloutState.from_json(text) == s


# --- other verbs -----------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["Paused", "Promoted", "RolledBack", "Failed"])
def test_decide_outside_progressing_raises(phase: str) -> None:
    s = replace(start(), phase=phase)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"cannot analyse a rollout in phase {phase}"):
        decide(s, PASS, now=T0 + 60)


def test_pause_keeps_the_weight_and_resume_restarts_the_window_at_now() -> None:
    s = decide(start(), PASS, now=T0 + 60).state
    p = rollout.pause(s, reason="incident", now=T0 + 70)
    assert (p.phase, p.weight, p.step_index, p.reason) == ("Paused", 40, 1, "incident")
    assert p.active
    assert p.step_started_at == T0 + 60
    r = rollout.resume(p, now=T0 + 5000)
    assert (r.phase, r.weight, r.reason) == ("Progressing", 40, "resumed")
    assert r.step_started_at == r.updated_at == T0 + 5000
    assert r.due_at() == T0 + 5060
    assert decide(r, PASS, now=T0 + 5060).state.weight == 60


def test_rollback_verb_puts_all_traffic_on_stable() -> None:
    s = decide(start(), PASS, now=T0 + 60).state
    r = rollout.rollback(s, reason="operator", now=T0 + 99)
    assert (r.phase, r.weight, r.reason, r.finished_at) == ("RolledBack", 0, "operator", T0 + 99)
    assert not r.active


def test_fail_verb_is_failed_with_traffic_on_stable() -> None:
    f = rollout.fail(start(), reason="prometheus unreachable", now=T0 + 5)
    assert (f.phase, f.weight, f.reason, f.finished_at) == (
        "Failed",
        0,
        "prometheus unreachable",
        T0 + 5,
    )


def test_force_promote_is_promoted_at_100_and_marked_forced() -> None:
    p = rollout.force_promote(start(), reason="forced by alice", now=T0 + 5)
    assert (p.phase, p.weight, p.forced, p.finished_at) == ("Promoted", 100, True, T0 + 5)


def test_paused_rollout_can_be_rolled_back() -> None:
    p = rollout.pause(start(), reason="x", now=T0 + 1)
    assert rollout.rollback(p, reason="y", now=T0 + 2).phase == "RolledBack"


def test_restart_window() -> None:
    s = rollout.restart_window(start(), now=T0 + 42, reason="VirtualService edited")
    assert (s.step_started_at, s.updated_at, s.reason) == (
        T0 + 42,
        T0 + 42,
        "VirtualService edited",
    )
    assert s.weight == 20


# --- property: any sequence of verdicts and restarts -----------------------------------------

ANALYSES = {"pass": PASS, "fail": FAIL, "inconclusive": UNSURE, "reject": REJECT}

steps_strategy = st.lists(st.integers(min_value=1, max_value=99), max_size=8, unique=True).map(
    lambda ws: [*sorted(ws), 100]
)


@settings(max_examples=300, deadline=None)
@given(
    steps=steps_strategy,
    failure_limit=st.integers(min_value=0, max_value=3),
    inconclusive_limit=st.integers(min_value=0, max_value=3),
    script=st.lists(
        st.tuples(st.sampled_from(sorted(ANALYSES)), st.booleans(), st.floats(1, 600)),
        max_size=45,
    ),
)
def test_state_machine_invariants_hold_for_any_verdicts_and_restarts(
    steps: list[int],
    failure_limit: int,
    inconclusive_limit: int,
    script: list[tuple[str, bool, float]],
) -> None:
    # maxWindow beyond any script (45 x 600 s): the count limit is the model here; the time
    # budget has its own tests above
    s = start(
        steps, failureLimit=failure_limit, inconclusiveLimit=inconclusive_limit, maxWindow="8h"
    )
    n = len(steps)
    now = T0
    log: list[dict[str, Any]] = []  # every history entry ever recorded
    fails = streak = 0
    for verdict, restart, dt in script:
        if not s.active:
            with pytest.raises(ValueError):
                decide(s, ANALYSES[verdict], now=now + dt)
            break
        now += dt
        before = s
        d = decide(s, ANALYSES[verdict], now=now)
        s = d.state
        log.append(s.history[-1])
        fails += verdict in ("fail", "reject")
        streak = streak + 1 if verdict == "inconclusive" else 0

        # the weight is a step's weight while progressing, 0 or 100 once finished
        if s.phase == "Progressing":
            assert s.weight == steps[s.step_index]
            assert s.weight in steps
            assert s.finished_at is None
        elif s.phase == "Promoted":
            assert s.weight == 100
        else:
            assert (s.phase, s.weight) == ("RolledBack", 0)
        stable_weight = 100 - s.weight
        assert 0 <= stable_weight <= 100
        assert 0 <= s.weight <= steps[s.step_index]

        # actions follow the verdict and the limits
        if d.action == "advance":
            assert verdict == "pass"
            assert s.step_index == before.step_index + 1
        elif d.action == "hold":
            assert (s.step_index, s.weight) == (before.step_index, before.weight)
            assert s.step_started_at == now
        elif d.action == "promote":
            assert verdict == "pass"
            assert before.step_index == n - 1
        else:
            assert d.action == "rollback"
            assert (
                verdict == "reject"
                or (verdict == "fail" and fails > failure_limit)
                or (verdict == "inconclusive" and streak > inconclusive_limit)
            )
        assert s.failed == fails

        # the annotation keeps the last HISTORY_LIMIT entries and counts the rest
        assert s.history == log[-HISTORY_LIMIT:]
        assert s.history_dropped == len(log) - len(s.history)

        if restart:  # another canaryctl process continues from the annotation
            again = RolloutState.from_json(s.to_json())
            assert again == s
            s = again

    if s.phase == "Promoted":
        passed = [e["step"] for e in log if e["verdict"] == "pass"]
        assert passed == list(range(1, n + 1))


@settings(max_examples=200, deadline=None)
@given(steps=steps_strategy, current=st.integers(min_value=0, max_value=100))
def test_first_step_index_never_lowers_the_canary_weight(steps: list[int], current: int) -> None:
    i = first_step_index(steps, current)
    assert steps[i] >= current
    assert i == 0 or steps[i - 1] < current
