"""canaryctl.stats: known values, properties, and seeded calibration / power simulations."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest

from canaryctl.stats import (
    SequentialResult,
    StepCounts,
    counter_increase,
    error_rate_evalue,
    normal_quantile,
    sequential_test,
    slow_counts,
    wilson_interval,
)

# --- normal quantile -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.975, 1.959963984540054),
        (0.5, 0.0),
        (0.995, 2.5758293035489004),
        (0.001, -3.090232306167813),
        (0.9, 1.2815515655446004),
        (1e-10, -6.361340902404056),
    ],
)
def test_normal_quantile_known_values(p: float, expected: float) -> None:
    assert normal_quantile(p) == pytest.approx(expected, abs=1e-9)


def test_normal_quantile_matches_stdlib_and_is_antisymmetric() -> None:
    for p in np.linspace(1e-6, 1 - 1e-6, 997):
        assert normal_quantile(float(p)) == pytest.approx(NormalDist().inv_cdf(float(p)), abs=1e-9)
        assert normal_quantile(float(p)) == pytest.approx(-normal_quantile(1 - float(p)), abs=1e-9)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5])
def test_normal_quantile_rejects_out_of_range(p: float) -> None:
    with pytest.raises(ValueError):
        normal_quantile(p)


# --- Wilson ----------------------------------------------------------------------------------


def test_wilson_zero_successes_closed_form() -> None:
    z = 1.959963984540054
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(z * z / (10 + z * z), abs=1e-12)  # 0.2775
    assert hi == pytest.approx(0.2775, abs=1e-4)


def test_wilson_half() -> None:
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert lo + hi == pytest.approx(1.0)


def test_wilson_newcombe_1998_example() -> None:
    # Newcombe (1998), Stat Med 17:857, Table I: 81/263 -> Wilson score 0.2553 to 0.3662.
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == 1.0
    narrow, wide = wilson_interval(50, 100, 0.90), wilson_interval(50, 100, 0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


# --- e-value properties ----------------------------------------------------------------------


def test_evalue_is_one_without_information() -> None:
    assert error_rate_evalue([]) == 1.0
    uninformative = [
        StepCounts(0, 0, 1000, 5),  # no canary traffic
        StepCounts(1000, 5, 0, 0),  # no stable traffic (100 % step)
        StepCounts(1000, 0, 1000, 0),  # no errors
    ]
    assert error_rate_evalue(uninformative) == pytest.approx(1.0, abs=1e-12)
    res = sequential_test(uninformative)
    assert res.e_value == pytest.approx(1.0) and not res.reject
    assert res.ratio is None and res.ratio_ci == (0.0, math.inf)


def test_evalue_monotone_in_canary_errors() -> None:
    values = [
        error_rate_evalue([StepCounts(1200, ec, 4800, 6), StepCounts(2400, ec, 3600, 4)])
        for ec in range(0, 30)
    ]
    assert all(b > a for a, b in itertools.pairwise(values))


def test_evalue_depends_on_requests_only_through_the_split() -> None:
    base = [StepCounts(200, 3, 800, 4), StepCounts(400, 5, 600, 2)]
    scaled = [StepCounts(2000, 3, 8000, 4), StepCounts(4000, 5, 6000, 2)]
    assert error_rate_evalue(scaled) == pytest.approx(error_rate_evalue(base), rel=1e-12)


def test_evalue_ignores_a_common_rate_change() -> None:
    """Only e_c | e matters: the same canary share of the errors gives the same evidence
    whether the split came from a healthy or a degraded (both x5) environment."""
    calm = [StepCounts(1000, 2, 1000, 2)]
    both_degraded = [StepCounts(1000, 10, 1000, 10)]
    assert error_rate_evalue(calm) < 1.0 and error_rate_evalue(both_degraded) < 1.0


def test_stable_without_errors_still_gives_evidence() -> None:
    steps = [StepCounts(1000, 12, 4000, 0), StepCounts(2000, 20, 3000, 0)]
    res = sequential_test(steps)
    assert res.reject and res.e_value > 100
    assert res.ratio is None  # infinite point estimate
    assert res.ratio_ci[1] == math.inf and res.ratio_ci[0] > 1.2


def test_huge_counts_do_not_overflow() -> None:
    res = sequential_test([StepCounts(10**7, 10**5, 10**7, 10**4)] * 300)
    assert res.e_value == math.inf and res.reject
    assert res.ratio == pytest.approx(10.0)
    assert res.ratio_ci[0] < 10.0 < res.ratio_ci[1]


def test_sequential_result_fields() -> None:
    steps = [StepCounts(1000, 10, 3000, 10), StepCounts(2000, 20, 2000, 7)]
    res = sequential_test(steps, psi0=1.2, alpha=0.05)
    assert isinstance(res, SequentialResult)
    assert res.threshold == pytest.approx(20.0)
    assert res.reject == (res.e_value >= 20.0)
    assert (res.canary_requests, res.canary_errors) == (3000, 30)
    assert (res.stable_requests, res.stable_errors) == (5000, 17)
    assert res.ratio is not None and res.ratio_ci[0] < res.ratio < res.ratio_ci[1]


def test_ratio_is_the_pooled_ratio_for_a_constant_split() -> None:
    steps = [StepCounts(1000, 10, 1000, 5), StepCounts(500, 7, 500, 3)]
    assert sequential_test(steps).ratio == pytest.approx((17 / 1500) / (8 / 1500), rel=1e-9)


def test_confidence_sequence_narrows_and_covers() -> None:
    small = sequential_test([StepCounts(1000, 10, 1000, 10)]).ratio_ci
    large = sequential_test([StepCounts(100000, 1000, 100000, 1000)]).ratio_ci
    assert small[0] < large[0] < 1.0 < large[1] < small[1]
    assert sequential_test([StepCounts(1000, 0, 1000, 8)]).ratio_ci[0] == 0.0


def test_step_counts_validation() -> None:
    with pytest.raises(ValueError):
        StepCounts(10, 11, 10, 0)
    with pytest.raises(ValueError):
        StepCounts(10, 0, -1, 0)
    with pytest.raises(ValueError):
        sequential_test([], alpha=0.0)
    with pytest.raises(ValueError):
        error_rate_evalue([], psi0=0.0)


# --- counters and histograms -----------------------------------------------------------------


def test_counter_increase() -> None:
    assert counter_increase(10.0, 25.0) == 15.0
    assert counter_increase(100.0, 7.0) == 7.0  # reset
    assert counter_increase(None, 7.0) == 7.0  # new series
    assert counter_increase(5.0, None) == 0.0  # series gone
    assert counter_increase(math.nan, 3.0) == 3.0
    assert counter_increase(3.0, math.nan) == 0.0


BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, math.inf)


def _cumulative(per_bucket: list[int]) -> dict[float, float]:
    return dict(zip(BUCKETS, np.cumsum(per_bucket).astype(float).tolist(), strict=True))


def test_slow_counts_uses_largest_bound_not_above_slo() -> None:
    window = _cumulative([0, 0, 0, 0, 0, 10, 100, 50, 15, 5, 0, 0, 0])
    # +Inf increase 180; le=500 increase 175 -> 5 slow
    assert slow_counts(window, 500) == (180, 5)
    # slo 700 ms: still bound 500 (largest <= 700)
    assert slow_counts(window, 700) == (180, 5)
    # slo 250 ms: bound 250 -> slow = 15 + 5 = 20
    assert slow_counts(window, 250) == (180, 20)


def test_slow_counts_errors() -> None:
    window = _cumulative([0, 0, 0, 0, 0, 2, 8, 5, 3, 1, 0, 0, 0])
    assert slow_counts(window, 500) == (19, 1)
    with pytest.raises(ValueError):
        slow_counts({500.0: 1.0}, 500)  # no +Inf bucket
    with pytest.raises(ValueError):
        slow_counts(window, 0.1)


# --- calibration and power (seeded simulations) ------------------------------------------------


def _simulate(
    rng: np.random.Generator,
    weights: list[int],
    rate: float,
    stable_err: float,
    k: float,
    *,
    incident_step: int = -1,
    seconds: float = 60.0,
) -> list[StepCounts]:
    steps = []
    for i, w in enumerate(weights):
        m = 5.0 if i == incident_step else 1.0
        nc = int(rng.poisson(rate * seconds * w / 100))
        ns = int(rng.poisson(rate * seconds * (100 - w) / 100))
        ec = int(rng.binomial(nc, min(1.0, stable_err * m * k)))
        es = int(rng.binomial(ns, min(1.0, stable_err * m)))
        steps.append(StepCounts(nc, ec, ns, es))
    return steps


def _ever_rejects(steps: list[StepCounts], alpha: float) -> bool:
    """Looks after every step, as the controller does."""
    return any(error_rate_evalue(steps[: i + 1]) >= 1 / alpha for i in range(len(steps)))


A_A = [
    # (weights, rate req/s, stable error rate, incident step)
    ([20, 40, 60, 80, 100], 100, 0.012, -1),
    ([5, 10, 25, 50, 100], 100, 0.001, -1),
    ([50, 50, 50, 50, 50], 30, 0.012, -1),
    ([20, 40, 60, 80, 100], 100, 0.001, 1),  # stable degraded: both x5 in step 2
    ([10, 90, 10, 90, 50], 100, 0.012, 2),  # erratic split + incident
]


@pytest.mark.parametrize(("weights", "rate", "err", "incident"), A_A)
def test_calibration_a_a(weights: list[int], rate: float, err: float, incident: int) -> None:
    alpha, runs = 0.05, 200  # a lenient alpha makes the check sensitive
    rng = np.random.default_rng(20240 + int(err * 1e4) + weights[0] + incident)
    rejections = sum(
        _ever_rejects(_simulate(rng, weights, rate, err, 1.0, incident_step=incident), alpha)
        for _ in range(runs)
    )
    lo, _ = wilson_interval(rejections, runs, 0.99)
    assert lo <= alpha, f"{rejections}/{runs} false rollbacks, significantly above {alpha}"
    assert rejections / runs <= alpha + 0.02


def test_calibration_at_the_null_boundary() -> None:
    """rho = psi0 exactly (the least favourable null): still at most alpha."""
    alpha, runs = 0.05, 300
    rng = np.random.default_rng(7)
    rejections = sum(
        _ever_rejects(_simulate(rng, [20, 40, 60, 80, 100], 100, 0.012, 1.2), alpha)
        for _ in range(runs)
    )
    assert wilson_interval(rejections, runs, 0.99)[0] <= alpha


def test_power_three_times_worse_canary() -> None:
    """3x canary at 100 req/s, 60 s steps (stable 0.5 % errors): detected in >= 90 % of runs."""
    rng = np.random.default_rng(11)
    runs = 150
    detected = sum(
        _ever_rejects(_simulate(rng, [20, 40, 60, 80, 100], 100, 0.005, 3.0), 0.01)
        for _ in range(runs)
    )
    assert detected / runs >= 0.9


def test_latency_slow_share_calibration() -> None:
    """Same lognormal latency in both versions -> slow-share test rolls back <= alpha."""
    alpha, runs = 0.05, 200
    rng = np.random.default_rng(3)
    finite = np.array(BUCKETS[:-1])

    def histogram(n: int) -> np.ndarray:
        samples = rng.lognormal(math.log(100.0), 0.6, n)  # median 100 ms
        return np.searchsorted(finite, samples, side="left")  # bucket index (le semantics)

    rejections = 0
    for _ in range(runs):
        steps = []
        for w in (20, 40, 60, 80, 100):
            nc, ns = rng.poisson(60 * w / 100 * 50), rng.poisson(60 * (100 - w) / 100 * 50)
            win_c = _cumulative(np.bincount(histogram(nc), minlength=len(BUCKETS)).tolist())
            win_s = _cumulative(np.bincount(histogram(ns), minlength=len(BUCKETS)).tolist())
            (rc, sc), (rs, ss) = slow_counts(win_c, 250), slow_counts(win_s, 250)
            steps.append(StepCounts(rc, sc, rs, ss))
        rejections += _ever_rejects(steps, alpha)
    assert wilson_interval(rejections, runs, 0.99)[0] <= alpha
    assert rejections / runs <= alpha + 0.02


def test_one_window_never_decides_alone_however_many_errors_it_holds() -> None:
    """A burst is one window: its likelihood ratio is capped, a second window must agree."""
    burst = StepCounts(1000, 200, 1000, 2)
    assert sequential_test([burst], alpha=0.01).reject is False
    assert sequential_test([burst, burst], alpha=0.01).reject is True


def test_bursts_in_one_version_at_a_time_rarely_roll_back_a_good_canary() -> None:
    """A/A with independent gamma bursts per version and window (the benchmark's model at
    100 req/s, 1.2 % errors): the tempered, capped e-process stays near its alpha."""
    rng = np.random.default_rng(11)
    alpha, runs, rejected = 0.05, 60, 0
    for _ in range(runs):
        steps = []
        for _w in range(6):
            gc, gs = rng.gamma(6.0, 1 / 6.0, 2)
            steps.append(
                StepCounts(3000, int(rng.poisson(36 * gc)), 3000, int(rng.poisson(36 * gs)))
            )
            if sequential_test(steps, alpha=alpha).reject:
                rejected += 1
                break
    assert rejected / runs <= 2 * alpha
