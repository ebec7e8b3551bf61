"""Measurements -> verdicts (pure).

One analysis measures every metric of the policy for the canary (and stable, for relative
checks and display) over one window. Each metric gets a verdict:

- ``pass``: enough canary requests and every threshold of the metric holds;
- ``fail``: enough canary requests and a threshold is breached;
- ``inconclusive``: no data, NaN/Inf, or fewer than ``minRequests`` canary requests in the
  window. Missing data is never a pass: a relative check with no stable value is inconclusive.

The step verdict is ``fail`` if any metric failed, else ``inconclusive`` if any metric was
inconclusive, else ``pass``. Infrastructure errors do not reach this module: the provider
raises them and the controller handles them (traffic back to stable, exit 3).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from canaryctl.policy import MetricSpec

Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Measurement:
    """What the metrics provider read for one metric over one window."""

    metric: str
    canary: float | None
    stable: float | None = None
    canary_requests: float | None = None
    note: str | None = None  # why a value is missing, e.g. "query returned 3 series"


@dataclass(frozen=True)
class MetricResult:
    name: str
    verdict: Verdict
    value: float | None
    stable: float | None
    threshold: str
    requests: float | None
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.evidence:
            data.pop("evidence")
        return data


@dataclass(frozen=True)
class StepAnalysis:
    verdict: Verdict
    metrics: tuple[MetricResult, ...]
    reason: str
    sequential_reject: bool = False  # the anytime-valid test rejected: roll back at once
    counts: dict[str, Any] | None = None  # this window's counts (sequential judge), to store
    dwell: str | None = None  # passed, but hold for more evidence (sequential judge)


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def describe_threshold(spec: MetricSpec) -> str:
    parts = []
    if spec.min is not None:
        parts.append(f">= {_fmt(spec.min)}")
    if spec.max is not None:
        parts.append(f"<= {_fmt(spec.max)}")
    if spec.maxIncrease is not None:
        parts.append(f"<= stable + {_fmt(spec.maxIncrease)}")
    if spec.maxRatio is not None:
        parts.append(f"<= {_fmt(spec.maxRatio)} x stable")
    return ", ".join(parts)


def _increase_is_bad(spec: MetricSpec) -> bool:
    """Relative checks bound how much worse the canary may be. For a metric with a floor
    (success rate), worse means lower; otherwise (latency, errors) worse means higher."""
    return not (spec.min is not None and spec.max is None)


def judge_metric(spec: MetricSpec, m: Measurement, *, min_requests: int) -> MetricResult:
    """Verdict for one metric. ``min_requests`` applies to the canary's request count."""
    threshold = describe_threshold(spec)

    def result(verdict: Verdict, reason: str) -> MetricResult:
        return MetricResult(
            name=spec.name,
            verdict=verdict,
            value=m.canary if _finite(m.canary) else None,
            stable=m.stable if _finite(m.stable) else None,
            threshold=threshold,
            requests=m.canary_requests if _finite(m.canary_requests) else None,
            reason=reason,
        )

    requests = m.canary_requests
    if requests is None or not math.isfinite(requests) or requests < min_requests:
        if requests is None and m.note:  # the request count itself could not be read
            return result("inconclusive", m.note)
        got = 0 if requests is None or not math.isfinite(requests) else round(requests)
        return result("inconclusive", f"{got} canary requests in window, need {min_requests}")
    if m.canary is None or not math.isfinite(m.canary):
        why = m.note or ("no data" if m.canary is None else f"value is {m.canary}")
        return result("inconclusive", why)
    v = m.canary
    breaches = []
    if spec.min is not None and v < spec.min:
        breaches.append(f"{_fmt(v)} < min {_fmt(spec.min)}")
    if spec.max is not None and v > spec.max:
        breaches.append(f"{_fmt(v)} > max {_fmt(spec.max)}")
    relative = spec.maxIncrease is not None or spec.maxRatio is not None
    if relative and not _finite(m.stable):
        if breaches:  # an absolute breach needs no comparison to fail
            return result("fail", "; ".join(breaches))
        return result("inconclusive", "no stable value to compare with")
    if relative:
        s = m.stable
        assert s is not None
        worse = (v - s) if _increase_is_bad(spec) else (s - v)
        if spec.maxIncrease is not None and worse > spec.maxIncrease:
            breaches.append(
                f"canary {_fmt(v)} vs stable {_fmt(s)}: worse by {_fmt(worse)} "
                f"> maxIncrease {_fmt(spec.maxIncrease)}"
            )
        if spec.maxRatio is not None:
            ratio = (
                (v / s if s > 0 else math.inf if v > 0 else 1.0)
                if _increase_is_bad(spec)
                else (s / v if v > 0 else math.inf)
            )
            if ratio > spec.maxRatio:
                breaches.append(
                    f"canary {_fmt(v)} vs stable {_fmt(s)}: ratio {_fmt(ratio)} "
                    f"> maxRatio {_fmt(spec.maxRatio)}"
                )
    if breaches:
        return result("fail", "; ".join(breaches))
    return result("pass", f"{_fmt(v)} within {threshold}")


def combine(
    results: list[MetricResult],
    *,
    sequential_reject: bool = False,
    counts: dict[str, Any] | None = None,
    dwell: str | None = None,
) -> StepAnalysis:
    """The step verdict from the metric verdicts (fail > inconclusive > pass)."""
    failed = [r for r in results if r.verdict == "fail"]
    if failed or sequential_reject:
        reason = "; ".join(f"{r.name}: {r.reason}" for r in failed) or "sequential test rejected"
        return StepAnalysis("fail", tuple(results), reason, sequential_reject, counts)
    unsure = [r for r in results if r.verdict == "inconclusive"]
    if unsure:
        reason = "; ".join(f"{r.name}: {r.reason}" for r in unsure)
        return StepAnalysis("inconclusive", tuple(results), reason, counts=counts)
    if not results:
        return StepAnalysis("inconclusive", (), "no metrics measured", counts=counts)
    if dwell:
        return StepAnalysis("pass", tuple(results), dwell, counts=counts, dwell=dwell)
    return StepAnalysis("pass", tuple(results), "all metrics within thresholds", counts=counts)
