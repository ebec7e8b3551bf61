"""The sequential judge's absolute tests on counts (canaryctl.judges, stats.share_test)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from canaryctl.judges import sequential_results, threshold_part
from canaryctl.policy import MetricSpec, parse_policy
from canaryctl.stats import share_test, slo_edge, wilson_interval
from tests.rollouts import begin_rollout

T0 = 1_700_000_000.0


def test_share_test_rolls_back_at_most_alpha_when_the_share_is_exactly_the_limit() -> None:
    """Calibration at the boundary of H0 (p = p0), looked at after each of 8 windows."""
    rng = np.random.default_rng(7)
    alpha, runs = 0.05, 200
    rejected = 0
    for _ in range(runs):
        windows: list[tuple[int, int]] = []
        for n in rng.integers(20, 400, 8):
            windows.append((int(n), int(rng.binomial(n, 0.01))))
            if share_test(windows, p0=0.01, alpha=alpha)[1]:
                rejected += 1
                break
    assert wilson_interval(rejected, runs, 0.99)[0] <= alpha


def test_share_test_sees_a_certain_breach_within_a_few_windows() -> None:
    """5 % slow against a 1 % limit, 600 requests a window: rejected by the third window."""
    rng = np.random.default_rng(8)
    for _ in range(50):
        windows = [(600, int(rng.binomial(600, 0.05))) for _ in range(3)]
        assert share_test(windows, p0=0.01, alpha=0.01)[1]


def test_share_test_without_requests_is_exactly_one() -> None:
    assert share_test([(0, 0), (0, 0)], p0=0.01, alpha=0.01) == (1.0, False)


def test_slo_edge_snaps_a_limit_between_edges_down() -> None:
    edges = [100.0, 250.0, 500.0, 1000.0, float("inf")]
    assert slo_edge(edges, 500) == 500
    assert slo_edge(edges, 700) == 500
    with pytest.raises(ValueError):
        slo_edge(edges, 50)


def test_threshold_part_leaves_only_the_relative_limits_to_thresholds() -> None:
    assert threshold_part(MetricSpec(name="request-duration", max=500)) is None
    assert threshold_part(MetricSpec(name="request-success-rate", min=99)) is None
    rest = threshold_part(MetricSpec(name="request-duration", max=500, maxRatio=1.5))
    assert rest is not None and (rest.max, rest.maxRatio) == (None, 1.5)
    custom = MetricSpec(name="mine", query="up", max=1)
    assert threshold_part(custom) is custom


def _slo_result(slo: float, windows: list[tuple[int, int, int, int]]) -> Any:
    """latency-slo after ``windows`` of (canary n, canary slow, stable n, stable slow)."""
    pol = parse_policy(
        {"spec": {"judge": "sequential", "metrics": [{"name": "request-duration", "max": slo}]}}
    )
    state = begin_rollout(pol.snapshot(), now=T0)
    entries = [
        {
            "step": 0,
            "canary_requests": nc,
            "canary_errors": 0,
            "stable_requests": ns,
            "stable_errors": 0,
            "canary_slow_requests": nc,
            "canary_slow": sc,
            "stable_slow_requests": ns,
            "stable_slow": ss,
            "slow_le": 500.0,
        }
        for nc, sc, ns, ss in windows
    ]
    state = replace(state, counts=entries[:-1])
    results, _, _ = sequential_results(state, pol, entry=entries[-1])
    return {r.name: r for r in results}["latency-slo"]


def test_latency_slo_fails_on_a_certain_breach_and_says_where_the_limit_snapped() -> None:
    r = _slo_result(700, [(400, 30, 1600, 4)] * 2)
    assert r.verdict == "fail"
    assert "limit 700 ms snapped to the bucket edge 500" in r.reason
    assert r.evidence["bucketEdgeMs"] == 500


def test_latency_slo_is_excused_when_stable_breaches_too() -> None:
    r = _slo_result(500, [(400, 30, 1600, 120)] * 2)
    assert r.verdict == "pass"
    assert "stable breaches too" in r.reason


def test_latency_slo_is_inconclusive_on_few_requests_without_a_breach() -> None:
    assert _slo_result(500, [(12, 0, 48, 0)]).verdict == "inconclusive"
    assert _slo_result(500, [(400, 1, 1600, 5)]).verdict == "pass"


def _dwell_after(steps: list[int], step_index: int, windows: int) -> str | None:
    """The dwell reason after ``windows`` windows at ``step_index`` of a 3x-compatible canary
    (10 errors of 5000 against stable's 2 of 1000 each window)."""
    pol = parse_policy({"spec": {"judge": "sequential", "steps": steps}})
    state = replace(begin_rollout(pol.snapshot(), now=T0), step_index=step_index)
    entry = {
        "step": step_index,
        "canary_requests": 5000,
        "canary_errors": 10,
        "stable_requests": 1000,
        "stable_errors": 2,
    }
    state = replace(state, counts=[entry] * (windows - 1))
    return sequential_results(state, pol, entry=entry)[2]


def test_the_final_dwell_may_hold_up_to_max_window_the_middle_steps_max_dwell() -> None:
    """A late regression is not promoted for want of time: the last step before 100 % may
    dwell maxWindow / interval windows (30 here), the earlier ones MAX_DWELL (8)."""
    reason = _dwell_after([20, 60, 100], 1, 12) or ""
    assert reason.startswith("holding for more evidence (12/30): the error rate ratio")
    assert _dwell_after([20, 60, 100], 1, 31) is None
    assert _dwell_after([20, 40, 60, 100], 1, 8) is not None
    assert _dwell_after([20, 40, 60, 100], 1, 9) is None
