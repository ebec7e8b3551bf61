"""Measurements -> per-metric verdicts -> step verdict (canaryctl.analysis)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryctl.analysis import (
    Measurement,
    MetricResult,
    combine,
    describe_threshold,
    judge_metric,
)
from canaryctl.policy import MetricSpec

MIN_REQ = 50
NAN = math.nan
INF = math.inf


def spec(name: str = "request-success-rate", **fields: Any) -> MetricSpec:
    """A validated metric spec (custom names get a query)."""
    if name not in ("request-success-rate", "request-duration"):
        fields.setdefault("query", "sum(x)")
    return MetricSpec(name=name, **fields)


def judge(
    s: MetricSpec,
    canary: float | None,
    stable: float | None = None,
    requests: float | None = 1000,
    note: str | None = None,
) -> MetricResult:
    return judge_metric(
        s, Measurement(s.name, canary, stable, requests, note), min_requests=MIN_REQ
    )


SUCCESS = spec("request-success-rate", min=99)
LATENCY = spec("request-duration", max=500)


def strict_json(data: Any) -> str:
    """JSON as RFC 8259 defines it: NaN and Infinity are not JSON."""
    return json.dumps(data, allow_nan=False)


# --- absolute thresholds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "verdict"),
    [(99.5, "pass"), (99.0, "pass"), (100.0, "pass"), (98.99, "fail"), (0.0, "fail")],
)
def test_min_threshold_passes_at_or_above_the_floor(value: float, verdict: str) -> None:
    assert judge(SUCCESS, value).verdict == verdict


@pytest.mark.parametrize(
    ("value", "verdict"),
    [(120.0, "pass"), (500.0, "pass"), (0.0, "pass"), (500.01, "fail"), (1e9, "fail")],
)
def test_max_threshold_passes_at_or_below_the_ceiling(value: float, verdict: str) -> None:
    assert judge(LATENCY, value).verdict == verdict


def test_min_breach_reason_and_fields() -> None:
    r = judge(SUCCESS, 97.5, stable=99.9, requests=400)
    assert r.verdict == "fail"
    assert r.reason == "97.5 < min 99"
    assert (r.name, r.value, r.stable, r.requests, r.threshold) == (
        "request-success-rate",
        97.5,
        99.9,
        400,
        ">= 99",
    )


def test_max_breach_reason() -> None:
    r = judge(LATENCY, 812.0)
    assert r.verdict == "fail"
    assert r.reason == "812 > max 500"


def test_pass_reason_names_value_and_threshold() -> None:
    r = judge(LATENCY, 120.0)
    assert r.verdict == "pass"
    assert r.reason == "120 within <= 500"


def test_min_and_max_band() -> None:
    band = spec("queue-depth", min=10, max=20)
    assert [judge(band, v).verdict for v in (9, 10, 15, 20, 21)] == [
        "fail",
        "pass",
        "pass",
        "pass",
        "fail",
    ]


# --- relative thresholds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [
        (99.6, 99.9, "pass"),  # 0.3 points lower: tolerated
        (99.4, 99.9, "pass"),  # exactly 0.5 lower
        (99.9, 99.5, "pass"),  # better than stable
        (99.2, 99.9, "fail"),  # 0.7 lower
    ],
)
def test_max_increase_on_success_rate_treats_lower_as_worse(
    canary: float, stable: float, verdict: str
) -> None:
    s = spec("request-success-rate", min=90, maxIncrease=0.5)
    assert judge(s, canary, stable).verdict == verdict


def test_max_increase_on_success_rate_reason_says_how_much_worse() -> None:
    s = spec("request-success-rate", min=90, maxIncrease=0.5)
    r = judge(s, 99.2, 99.9)
    assert r.reason == "canary 99.2 vs stable 99.9: worse by 0.7 > maxIncrease 0.5"


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [(120.0, 100.0, "pass"), (130.0, 100.0, "pass"), (131.0, 100.0, "fail"), (50.0, 100.0, "pass")],
)
def test_max_increase_on_latency_treats_higher_as_worse(
    canary: float, stable: float, verdict: str
) -> None:
    s = spec("request-duration", max=1000, maxIncrease=30)
    assert judge(s, canary, stable).verdict == verdict


def test_max_increase_alone_treats_higher_as_worse() -> None:
    """A custom error-count metric with only maxIncrease: more errors than stable is worse."""
    s = spec("errors", maxIncrease=2)
    assert judge(s, 5.0, 4.0).verdict == "pass"
    assert judge(s, 7.0, 4.0).verdict == "fail"
    assert judge(s, 0.0, 40.0).verdict == "pass"


def test_min_and_max_with_max_increase_treats_higher_as_worse() -> None:
    s = spec("cpu", min=0, max=100, maxIncrease=10)
    assert judge(s, 75.0, 60.0).verdict == "fail"
    assert judge(s, 40.0, 60.0).verdict == "pass"


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [
        (120.0, 100.0, "pass"),
        (125.0, 100.0, "pass"),
        (130.0, 100.0, "fail"),
        (80.0, 100.0, "pass"),
        (10.0, 0.0, "fail"),  # stable at 0 and canary above: infinitely worse
        (0.0, 0.0, "pass"),  # both 0: equal
    ],
)
def test_max_ratio_on_latency(canary: float, stable: float, verdict: str) -> None:
    s = spec("request-duration", max=1000, maxRatio=1.25)
    assert judge(s, canary, stable).verdict == verdict


def test_max_ratio_reason_shows_the_ratio() -> None:
    s = spec("request-duration", max=1000, maxRatio=1.25)
    r = judge(s, 130.0, 100.0)
    assert r.reason == "canary 130 vs stable 100: ratio 1.3 > maxRatio 1.25"


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [(99.0, 99.5, "pass"), (95.0, 99.0, "fail"), (0.0, 99.0, "fail"), (99.9, 99.0, "pass")],
)
def test_max_ratio_on_success_rate_uses_stable_over_canary(
    canary: float, stable: float, verdict: str
) -> None:
    s = spec("request-success-rate", min=0, maxRatio=1.01)
    assert judge(s, canary, stable).verdict == verdict


@pytest.mark.parametrize("stable", [None, NAN, INF, -INF])
def test_relative_check_without_stable_value_is_inconclusive(stable: float | None) -> None:
    s = spec("request-duration", max=1000, maxRatio=1.25)
    r = judge(s, 100.0, stable)
    assert r.verdict == "inconclusive"
    assert r.reason == "no stable value to compare with"
    assert r.stable is None


def test_absolute_breach_fails_even_without_a_stable_value() -> None:
    """A breached min is a breach: missing stable data must not turn a fail into inconclusive."""
    s = spec("request-success-rate", min=99, maxIncrease=0.5)
    r = judge(s, 50.0, stable=None)
    assert r.verdict == "fail"
    assert "50 < min 99" in r.reason


def test_absolute_breach_without_stable_fails_the_step() -> None:
    """Same bug seen from the step: a canary at 50% success must fail, not be held."""
    s = spec("request-success-rate", min=99, maxIncrease=0.5)
    step = combine([judge(s, 50.0, stable=None), judge(LATENCY, 100.0)])
    assert step.verdict == "fail"


def test_several_breaches_are_all_listed() -> None:
    s = spec("request-duration", max=400, maxRatio=1.25, maxIncrease=100)
    r = judge(s, 600.0, 100.0)
    assert r.verdict == "fail"
    assert r.reason == (
        "600 > max 400; canary 600 vs stable 100: worse by 500 > maxIncrease 100; "
        "canary 600 vs stable 100: ratio 6 > maxRatio 1.25"
    )


# --- missing data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"), [(None, "no data"), (NAN, "value is nan"), (INF, "value is inf")]
)
def test_missing_or_non_finite_value_is_inconclusive(value: float | None, reason: str) -> None:
    r = judge(LATENCY, value)
    assert r.verdict == "inconclusive"
    assert r.reason == reason
    assert r.value is None


def test_provider_note_explains_a_missing_value() -> None:
    r = judge(LATENCY, None, note="query returned 3 series")
    assert r.verdict == "inconclusive"
    assert r.reason == "query returned 3 series"


@pytest.mark.parametrize(
    ("requests", "reason"),
    [
        (None, "0 canary requests in window, need 50"),
        (0, "0 canary requests in window, need 50"),
        (10.4, "10 canary requests in window, need 50"),
        (49.9, "50 canary requests in window, need 50"),
        (NAN, "0 canary requests in window, need 50"),
    ],
)
def test_too_few_requests_is_inconclusive_even_when_failing(
    requests: float | None, reason: str
) -> None:
    r = judge(SUCCESS, 10.0, requests=requests)  # 10% success would fail with enough traffic
    assert r.verdict == "inconclusive"
    assert r.reason == reason


def test_exactly_min_requests_is_enough_for_a_verdict() -> None:
    assert judge(SUCCESS, 10.0, requests=MIN_REQ).verdict == "fail"
    assert judge(SUCCESS, 99.5, requests=MIN_REQ).verdict == "pass"


@pytest.mark.parametrize("requests", [NAN, INF])
def test_result_with_non_finite_request_count_is_strict_json(requests: float) -> None:
    """MetricResult.to_dict() is stored in the rollout annotation and printed by -o json."""
    r = judge(SUCCESS, 99.5, requests=requests)
    assert r.verdict == "inconclusive"
    assert json.loads(strict_json(r.to_dict()))["name"] == "request-success-rate"


def test_result_with_non_finite_values_is_strict_json() -> None:
    s = spec("request-duration", max=1, maxRatio=2)
    data = json.loads(strict_json(judge(s, NAN, INF).to_dict()))
    assert (data["verdict"], data["value"], data["stable"]) == ("inconclusive", None, None)


def test_to_dict_omits_empty_evidence_and_keeps_given_evidence() -> None:
    r = judge(LATENCY, 100.0)
    assert "evidence" not in r.to_dict()
    assert r.to_dict()["verdict"] == "pass"
    with_evidence = MetricResult("x", "pass", 1.0, 1.0, "<= 1", 100, "ok", evidence={"e": 3.5})
    assert with_evidence.to_dict()["evidence"] == {"e": 3.5}


# --- describe_threshold ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"min": 99}, ">= 99"),
        ({"max": 500}, "<= 500"),
        ({"min": 99.5, "maxIncrease": 0.5}, ">= 99.5, <= stable + 0.5"),
        ({"max": 400, "maxRatio": 1.25}, "<= 400, <= 1.25 x stable"),
        (
            {"min": 1, "max": 2, "maxIncrease": 0.1, "maxRatio": 3},
            ">= 1, <= 2, <= stable + 0.1, <= 3 x stable",
        ),
        ({"max": 0.1234567}, "<= 0.123457"),
        ({"max": 1e-9}, "<= 1e-09"),
    ],
)
def test_describe_threshold(fields: dict[str, float], text: str) -> None:
    assert describe_threshold(spec("custom", **fields)) == text


# --- combine ---------------------------------------------------------------------------------


def _result(name: str, verdict: str) -> MetricResult:
    return MetricResult(name, verdict, 1.0, None, "<= 1", 100, f"{name} is {verdict}")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (["pass"], "pass"),
        (["pass", "pass"], "pass"),
        (["pass", "inconclusive"], "inconclusive"),
        (["inconclusive", "fail"], "fail"),
        (["fail", "pass"], "fail"),
        (["pass", "inconclusive", "fail"], "fail"),
        (["inconclusive", "inconclusive"], "inconclusive"),
    ],
)
def test_combine_precedence_fail_over_inconclusive_over_pass(
    verdicts: list[str], expected: str
) -> None:
    results = [_result(f"m{i}", v) for i, v in enumerate(verdicts)]
    step = combine(results)
    assert step.verdict == expected
    assert step.metrics == tuple(results)


def test_combine_of_nothing_is_inconclusive() -> None:
    step = combine([])
    assert step.verdict == "inconclusive"
    assert step.reason == "no metrics measured"
    assert step.metrics == ()


def test_combine_reason_lists_every_failed_metric_only() -> None:
    step = combine([_result("a", "fail"), _result("b", "inconclusive"), _result("c", "fail")])
    assert step.reason == "a: a is fail; c: c is fail"


def test_combine_reason_lists_inconclusive_metrics_when_none_failed() -> None:
    step = combine([_result("a", "pass"), _result("b", "inconclusive")])
    assert step.reason == "b: b is inconclusive"


def test_combine_all_pass_reason() -> None:
    assert combine([_result("a", "pass")]).reason == "all metrics within thresholds"


def test_combine_carries_sequential_reject_on_a_failure() -> None:
    assert combine([_result("a", "fail")], sequential_reject=True).sequential_reject is True
    assert combine([_result("a", "fail")]).sequential_reject is False


def test_real_judgements_combine_to_a_failing_step() -> None:
    results = [judge(SUCCESS, 99.9), judge(LATENCY, 900.0), judge(spec("errs", max=1), None)]
    step = combine(results)
    assert step.verdict == "fail"
    assert step.reason == "request-duration: 900 > max 500"


# --- properties ------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(floor=finite, value=finite, requests=st.integers(min_value=0, max_value=10_000))
def test_min_verdict_matches_the_comparison(floor: float, value: float, requests: int) -> None:
    """With min only: pass iff value >= min, given enough requests; else inconclusive."""
    r = judge(spec("custom", min=floor), value, requests=requests)
    if requests < MIN_REQ:
        assert r.verdict == "inconclusive"
    else:
        assert r.verdict == ("pass" if value >= floor else "fail")


@settings(max_examples=200, deadline=None)
@given(ceiling=finite, value=finite, worse=st.floats(min_value=0, max_value=1e6))
def test_max_verdict_is_monotonic_in_the_value(ceiling: float, value: float, worse: float) -> None:
    """If a latency fails its max, any higher latency fails too."""
    s = spec("request-duration", max=ceiling)
    if judge(s, value).verdict == "fail":
        assert judge(s, value + worse).verdict == "fail"
    else:
        assert judge(s, value).verdict == "pass"
