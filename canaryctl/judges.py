"""The sequential judge (``spec.judge: sequential``): counts in, evidence and verdicts out.

After every analysis window the controller reads *counts* (not ``rate()`` ratios): requests and
5xx of canary and stable as per-series counter differences between the window's start and end
(reset-aware), and, when ``request-duration`` has a ``max``, the requests slower than that SLO
bucket. Each window's counts are stored in the rollout state (so a restart loses nothing) and
all of them feed ``stats.sequential_test``:

- ``sequential-error-rate``: H1 "canary error rate > psi0 x stable's". Rejected -> roll back at
  once (the test already accounts for looking after every step: Ville's inequality).
- ``sequential-latency``: the same test on the share of requests slower than the SLO bucket.
- ``latency-slo``: the ``request-duration`` ``max`` on counts. "p99 <= 500 ms" is "at most 1 %
  of requests slower than 500 ms", tested with the one-sample e-process ``stats.share_test``
  over every window (no single window's p99 estimate decides). A limit between two of Istio's
  bucket edges is judged at the lower edge, and the reason says so.
  alpha is split evenly between the three e-processes (Bonferroni), so the bound on rolling
  back a good canary stays ``alpha`` overall.
- The success-rate floor (``request-success-rate`` ``min``) is judged on the counts since the
  current weight was set, with a 99 % Wilson interval: the canary fails only when we are confident
  it is below the floor *and* stable is confidently above it, over the whole rollout and (when it
  served enough there) at this weight: errors bursting in stable alone or an incident hitting
  both versions now excuse the canary alike. One error in ten
  requests is not evidence; a stable that is itself below the floor means the environment is
  degraded and the relative test decides.
- Every other limit (custom queries, the built-ins' relative checks) is judged as in the
  threshold judge (``threshold_part``).
- Dwell: at the middle steps, when the evidence is still compatible with a large regression
  (upper end of the ratio's confidence interval >= 3) and waiting could realistically settle it
  (the bad rate so far x this window's requests x 8 >= 20 expected bad requests), the weight is held
  for up to ``MAX_DWELL`` more windows instead of advancing; at the last step before 100 % for up
  to ``maxWindow`` (the final dwell, ``final_dwell``). These holds are not failures and do not
  count towards ``maxWindow`` or ``inconclusiveLimit``.

The rule and its parameters were chosen with ``benchmarks/judgement.py``; the README quotes it.
"""

from __future__ import annotations

import math
from typing import Any

from canaryctl.analysis import MetricResult
from canaryctl.metrics._base import MetricsProvider
from canaryctl.policy import AnalysisPolicy, MetricSpec, parse_duration
from canaryctl.rollout import RolloutState
from canaryctl.stats import (
    StepCounts,
    sequential_test,
    share_test,
    slo_edge,
    slow_counts,
    wilson_interval,
)

FLOOR_CONFIDENCE = 0.99
DWELL_RATIO = 3.0
DWELL_FACTOR = 8.0
DWELL_MIN_BAD = 20.0
MAX_DWELL = 8
# the final dwell holds until a 3x regression is excluded with this confidence sequence: a
# canary that regresses late gets past it with probability <= 1e-4, not alpha
FINAL_DWELL_ALPHA = 1e-4
SLO_SHARE = 0.01  # request-duration is a p99: "p99 <= max" is "at most 1 % slower than max"


def measure_counts(
    provider: MetricsProvider, state: RolloutState, policy: AnalysisPolicy, now: float
) -> dict[str, Any]:
    """One window's counts, as stored in ``state.counts``."""
    start = state.step_started_at
    ns = state.namespace
    c = provider.counts(namespace=ns, workload=state.canary_workload, start=start, end=now)
    s = provider.counts(namespace=ns, workload=state.stable_workload, start=start, end=now)
    entry: dict[str, Any] = {
        "step": state.step_index,
        "canary_requests": c.requests,
        "canary_errors": c.errors,
        "stable_requests": s.requests,
        "stable_errors": s.errors,
    }
    slo = latency_slo(policy)
    if slo is not None:
        for side, workload in (
            ("canary", state.canary_workload),
            ("stable", state.stable_workload),
        ):
            inc = provider.bucket_counts(namespace=ns, workload=workload, start=start, end=now)
            try:
                n, slow = slow_counts(inc, slo) if inc else (0, 0)
                entry["slow_le"] = slo_edge(inc, slo)
            except ValueError:
                n, slow = 0, 0
            entry[f"{side}_slow_requests"] = n
            entry[f"{side}_slow"] = slow
    return entry


def threshold_part(metric: MetricSpec) -> MetricSpec | None:
    """What of ``metric`` the sequential judge leaves to the threshold judge (None: nothing).
    The built-ins' absolute limits are judged on counts: the success rate's ``min`` by the
    floor, the p99's ``max`` by ``latency-slo``; their relative limits stay thresholds."""
    drop = {"request-success-rate": "min", "request-duration": "max"}.get(metric.name)
    if drop is None:
        return metric
    rest = metric.model_copy(update={drop: None})
    limits = (rest.min, rest.max, rest.maxIncrease, rest.maxRatio)
    return None if all(v is None for v in limits) else rest


def latency_slo(policy: AnalysisPolicy) -> float | None:
    for m in policy.spec.metrics:
        if m.name == "request-duration" and m.max is not None:
            return m.max
    return None


def _errors(entries: list[dict[str, Any]]) -> list[StepCounts]:
    return [
        StepCounts(
            e["canary_requests"], e["canary_errors"], e["stable_requests"], e["stable_errors"]
        )
        for e in entries
    ]


def _slow(entries: list[dict[str, Any]]) -> list[StepCounts]:
    return [
        StepCounts(
            e.get("canary_slow_requests", 0),
            e.get("canary_slow", 0),
            e.get("stable_slow_requests", 0),
            e.get("stable_slow", 0),
        )
        for e in entries
    ]


def _evidence(result: Any) -> dict[str, Any]:
    lo, hi = result.ratio_ci
    return {
        "eValue": result.e_value if math.isfinite(result.e_value) else 1e308,
        "threshold": result.threshold,
        "ratio": result.ratio,
        "ratioCI": [lo, hi if math.isfinite(hi) else None],
        "canaryRequests": result.canary_requests,
        "canaryBad": result.canary_errors,
        "stableRequests": result.stable_requests,
        "stableBad": result.stable_errors,
    }


def _sequential_metric(
    name: str, steps: list[StepCounts], *, psi0: float, alpha: float, what: str
) -> MetricResult:
    res = sequential_test(steps, psi0=psi0, alpha=alpha)
    ev = _evidence(res)
    ratio = "-" if res.ratio is None else f"{res.ratio:.3g}"
    ci_hi = "inf" if ev["ratioCI"][1] is None else f"{ev['ratioCI'][1]:.3g}"
    detail = (
        f"e-value {res.e_value:.3g} (rollback at {res.threshold:g}); {what} ratio canary/stable "
        f"{ratio}, {100 * (1 - alpha):g}% CI [{res.ratio_ci[0]:.3g}, {ci_hi}]; "
        f"canary {res.canary_errors}/{res.canary_requests}, "
        f"stable {res.stable_errors}/{res.stable_requests}"
    )
    return MetricResult(
        name=name,
        verdict="fail" if res.reject else "pass",
        value=res.e_value if math.isfinite(res.e_value) else 1e308,
        stable=None,
        threshold=f"e-value < {res.threshold:g} (H0: ratio <= {psi0:g})",
        requests=float(res.canary_requests),
        reason=detail,
        evidence=ev,
    )


def _floor(
    entries_here: list[dict[str, Any]],
    all_entries: list[dict[str, Any]],
    floor_pct: float,
    min_requests: int,
) -> tuple[str, str, float | None]:
    """(verdict, reason, canary success %) of the success-rate floor, by Wilson intervals."""
    floor = floor_pct / 100
    n_c = sum(e["canary_requests"] for e in entries_here)
    bad_c = sum(e["canary_errors"] for e in entries_here)
    value = 100 * (1 - bad_c / n_c) if n_c else None
    if n_c < min_requests:
        return "inconclusive", f"{n_c} canary requests at this weight, need {min_requests}", value
    upper = wilson_interval(n_c - bad_c, n_c, FLOOR_CONFIDENCE)[1]
    if upper >= floor:
        return "pass", f"{value:.4g}% (99% upper bound {100 * upper:.4g}% >= {floor_pct:g})", value

    def stable_above(src: list[dict[str, Any]]) -> bool:
        n_s = sum(e["stable_requests"] for e in src)
        bad_s = sum(e["stable_errors"] for e in src)
        low = wilson_interval(n_s - bad_s, n_s, FLOOR_CONFIDENCE)[0] if n_s else 0.0
        return n_s >= min_requests and low >= floor

    # stable above the floor over the whole rollout (a stable degraded all along, or bursting
    # independently, excuses the canary) and at this weight when it served enough there (an
    # incident hitting both now excuses it too)
    here_enough = sum(e["stable_requests"] for e in entries_here) >= min_requests
    if stable_above(all_entries) and (not here_enough or stable_above(entries_here)):
        why = f"{value:.4g}% is confidently below {floor_pct:g} (99% upper {100 * upper:.4g}%)"
        return "fail", why, value
    return (
        "pass",
        (
            f"{value:.4g}% below {floor_pct:g}, but stable is not confidently above it either: "
            "the comparison with stable decides"
        ),
        value,
    )


def _slo_metric(
    here: list[dict[str, Any]],
    entries: list[dict[str, Any]],
    slo: float,
    *,
    alpha: float,
    min_requests: int,
) -> MetricResult:
    """``latency-slo``: "at most SLO_SHARE of the canary's requests slower than the limit",
    tested on the bucket counts of every window (``stats.share_test``), not on one window's
    p99 estimate. It fails as soon as the breach is certain, whatever stable does, unless
    stable's own test says it breaches too (a degraded environment: the relative test
    decides). Fewer than minRequests canary requests at this weight and no breach yet:
    inconclusive. A limit between two bucket edges is judged at the lower edge, and says so."""
    edge = next((e["slow_le"] for e in reversed(entries) if "slow_le" in e), slo)

    def side(name: str) -> tuple[list[tuple[int, int]], float, bool]:
        counts = [(e.get(f"{name}_slow_requests", 0), e.get(f"{name}_slow", 0)) for e in entries]
        return (counts, *share_test(counts, p0=SLO_SHARE, alpha=alpha))

    canary, e_c, breach = side("canary")
    _, e_s, stable_breach = side("stable")
    n, slow = (sum(c[i] for c in canary) for i in (0, 1))
    n_here = sum(e.get("canary_slow_requests", 0) for e in here)
    snapped = "" if edge == slo else f" (limit {slo:g} ms snapped to the bucket edge {edge:g})"
    share = f"{slow}/{n} canary requests slower than {edge:g} ms{snapped}; e-value {e_c:.3g}"
    if breach and not stable_breach:
        verdict, reason = "fail", f"{share} >= {1 / alpha:g}: more than {SLO_SHARE:.0%} is certain"
    elif breach:
        verdict, reason = "pass", f"{share}, but stable breaches too: the relative test decides"
    elif n_here < min_requests:
        verdict, reason = (
            "inconclusive",
            f"{n_here} canary requests at this weight, need {min_requests}",
        )
    else:
        verdict, reason = "pass", share
    return MetricResult(
        name="latency-slo",
        verdict=verdict,  # type: ignore[arg-type]
        value=e_c if math.isfinite(e_c) else 1e308,
        stable=e_s if math.isfinite(e_s) else 1e308,
        threshold=f"<= {SLO_SHARE:.0%} slower than {edge:g} ms (e-value < {1 / alpha:g})",
        requests=float(n),
        reason=reason,
        evidence={"sloMs": slo, "bucketEdgeMs": edge, "canaryRequests": n, "canarySlow": slow},
    )


def sequential_results(
    state: RolloutState, policy: AnalysisPolicy, *, entry: dict[str, Any]
) -> tuple[list[MetricResult], bool, str | None]:
    """(results, reject, dwell reason) for one analysis with ``entry`` this window's counts."""
    spec = policy.spec
    entries = [*state.counts, entry]
    here = [e for e in entries if e["step"] == state.step_index]
    slo = latency_slo(policy)
    alpha = spec.alpha / (3 if slo is not None else 1)  # Bonferroni over the e-processes
    results = [
        _sequential_metric(
            "sequential-error-rate",
            _errors(entries),
            psi0=spec.psi0,
            alpha=alpha,
            what="error-rate",
        )
    ]
    if slo is not None:
        results.append(
            _sequential_metric(
                "sequential-latency",
                _slow(entries),
                psi0=spec.psi0,
                alpha=alpha,
                what=f"share slower than {slo:g} ms",
            )
        )
    reject = any(r.verdict == "fail" for r in results)
    if slo is not None:
        results.append(_slo_metric(here, entries, slo, alpha=alpha, min_requests=spec.minRequests))
    for m in spec.metrics:
        if m.name == "request-success-rate" and m.min is not None:
            verdict, reason, value = _floor(here, entries, m.min, spec.minRequests)
            results.append(
                MetricResult(
                    name="success-rate-floor",
                    verdict=verdict,  # type: ignore[arg-type]
                    value=value,
                    stable=None,
                    threshold=f">= {m.min:g} (99% Wilson)",
                    requests=float(sum(e["canary_requests"] for e in here)),
                    reason=reason,
                )
            )
    dwell = None if reject else _dwell_reason(state, here, entries, slo, spec.alpha)
    return results, reject, dwell


def final_dwell(state: RolloutState) -> int:
    """Windows the last step before 100 % may dwell: the last chance to compare with stable
    (at 100 % stable serves nothing), so a regression that starts late is not promoted for
    want of time. ``maxWindow / interval``, the budget a quiet step gets (never below
    MAX_DWELL; MAX_DWELL for snapshots without maxWindow)."""
    budget = state.policy["spec"].get("maxWindow")
    if budget is None:
        return MAX_DWELL
    return max(MAX_DWELL, int(parse_duration(budget) // state.interval))


def _dwell_reason(
    state: RolloutState,
    here: list[dict[str, Any]],
    entries: list[dict[str, Any]],
    slo: float | None,
    alpha: float,
) -> str | None:
    """``here``: the windows at this weight, this one last; ``entries``: every window."""
    if not 0 < state.step_index < len(state.steps) - 1:
        return None
    # extra windows already measured at this weight (state.counts is not truncated, unlike
    # the history): dwells and holds alike, so a step never dwells more than its limit
    dwelt = len(here) - 1
    final = state.step_index == len(state.steps) - 2
    limit = final_dwell(state) if final else MAX_DWELL
    if dwelt >= limit:
        return None
    if final:
        alpha = FINAL_DWELL_ALPHA
    window = here[-1]
    total = window["canary_requests"] + window["stable_requests"]
    checks = [("error rate", _errors(here), _errors(entries))]
    if slo is not None:
        checks.append(("latency", _slow(here), _slow(entries)))
    for what, steps_here, steps_all in checks:
        res = sequential_test(steps_here, alpha=alpha)
        hi = res.ratio_ci[1]
        # both versions' bad rate so far: a stable that was lucky (few errors) must not end
        # the dwell of a canary that is not
        n = sum(s.stable_requests + s.canary_requests for s in steps_all)
        bad_rate = sum(s.stable_errors + s.canary_errors for s in steps_all) / n if n else 0.0
        if hi >= DWELL_RATIO and bad_rate * total * DWELL_FACTOR >= DWELL_MIN_BAD:
            return (
                f"holding for more evidence ({dwelt + 1}/{limit}): the {what} ratio "
                f"could still be up to {hi:.3g}x stable's"
            )
    return None
