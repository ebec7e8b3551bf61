"""Judgement benchmark: fixed thresholds vs canaryctl's sequential test on simulated rollouts.

Seeded, numpy-only simulation (matplotlib only for the PNG). Writes
``benchmarks/results/judgement.md`` and ``benchmarks/results/judgement.png``.

    python benchmarks/judgement.py [--runs 2000] [--seed 1] [--quick] [--interval 60] [--jobs 2]

Policy (c)'s decisions come from ``canaryctl.stats``: the simulation uses a vectorised numpy twin
of the e-process, the confidence sequence and the Wilson floor (built on the module's own grid),
and every cell asserts that the twin agrees with ``canaryctl.stats.sequential_test`` /
``wilson_interval`` at every interval of a sample of runs. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canaryctl import stats

WEIGHTS = (20, 40, 60, 80, 100)
FLOOR = 0.99  # success >= 99 %, and (latency) p99 <= 500 ms <=> <= 1 % slower than 500 ms
P99_MS = 500.0
MIN_REQUESTS = 50
ALPHA = 0.01
PSI0 = 1.2
GATE_RHO = 3.0  # (c) promotion gate: upper confidence bound of rho below this
ISTIO_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                    60000, 300000, 600000, 1800000, 3600000)  # fmt: skip
RUNNING, PROMOTED, ROLLED_BACK, ABORTED = 0, 1, 2, 3
SAMPLE_RUNS = 6  # runs per cell checked against canaryctl.stats at every interval


# --- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    family: str  # "errors" | "latency"
    scenario: str
    rate: float  # total requests per second
    base: float  # stable error rate
    k: float = 1.0  # canary error-rate multiplier (from step `k_from_step` on)
    k_from_step: int = 0
    good: bool = True
    incident_interval: int = -1  # 0-based interval in which both versions' error rates x5
    burst_shape: float = 0.0  # gamma shape per second; 0 = Poisson
    burst_shared: bool = True
    latency: str = ""  # "", "aa", "median", "tail"

    @property
    def label(self) -> str:
        return f"{self.scenario} | {self.rate:g} rps | {self.base:.1%}"


def cells() -> list[Cell]:
    out: list[Cell] = []
    for rate in (1, 10, 100):
        for base in (0.001, 0.005, 0.012):
            for k in (1, 1.5, 3, 10):
                name = "A/A (k=1)" if k == 1 else f"k={k:g}"
                out.append(Cell("errors", name, rate, base, k=k, good=k == 1))
            out += [
                Cell("errors", "regression from step 3 (k=3)", rate, base, 3.0, 2, good=False),
                Cell("errors", "incident x5 both, interval 2", rate, base, incident_interval=1),
                Cell("errors", "bursty, shared (gamma 0.1/s)", rate, base, burst_shape=0.1),
                Cell(
                    "errors",
                    "bursty, per version (gamma 0.1/s)",
                    rate,
                    base,
                    burst_shape=0.1,
                    burst_shared=False,
                ),
                Cell("errors", "one bad pod of 4 at 4x (k=1.75)", rate, base, 1.75, good=False),
            ]
        out += [
            Cell("latency", "latency A/A", rate, 0.001, latency="aa"),
            Cell("latency", "latency median x1.5", rate, 0.001, latency="median", good=False),
            Cell("latency", "latency tail: 5% x10", rate, 0.001, latency="tail", good=False),
        ]
    return out


def _lognorm_cdf(x: float, median: float, sigma: float) -> float:
    return 0.5 * math.erfc(-(math.log(x) - math.log(median)) / (sigma * math.sqrt(2)))


def bucket_probs(kind: str) -> np.ndarray:
    """Probability of each Istio bucket (incl. +Inf) for a latency distribution."""

    def cdf(b: float) -> float:
        base = _lognorm_cdf(b, 100.0, 0.6)  # median 100 ms, p99 ~ 404 ms
        if kind == "median":
            return _lognorm_cdf(b, 150.0, 0.6)  # p99 ~ 606 ms
        if kind == "tail":
            return 0.95 * base + 0.05 * _lognorm_cdf(b, 1000.0, 0.6)
        return base

    cum = np.array([cdf(b) for b in ISTIO_BUCKETS_MS] + [1.0])
    return np.diff(np.concatenate([[0.0], cum]))


# --- traffic generation ---------------------------------------------------------------------


@dataclass
class Counts:
    """One interval of one metric for the running runs: requests and bad (error / slow) counts."""

    nc: np.ndarray
    bc: np.ndarray
    ns: np.ndarray
    bs: np.ndarray
    hist_c: np.ndarray | None = None  # (runs, buckets) per-bucket counts, latency cells only
    hist_s: np.ndarray | None = None


def generate(
    cell: Cell, w: np.ndarray, step: np.ndarray, t: int, rng: np.random.Generator, sec: float
) -> list[Counts]:
    """Counts for one interval: [errors] or [errors, latency]."""
    lam = cell.rate * sec
    m = 5.0 if t == cell.incident_interval else 1.0
    rs = np.full(w.shape, cell.base * m)
    rc = rs * np.where(step >= cell.k_from_step, cell.k, 1.0)
    if cell.burst_shape > 0:  # sum over `sec` seconds of gamma(shape) multipliers, mean 1
        shape = cell.burst_shape * sec
        gs = rng.gamma(shape, 1.0 / shape, w.shape)
        gc = gs if cell.burst_shared else rng.gamma(shape, 1.0 / shape, w.shape)
        rs, rc = rs * gs, rc * gc
    rs, rc = np.minimum(rs, 1.0), np.minimum(rc, 1.0)
    # Poisson arrivals split by weight; errors and successes are independent Poisson streams.
    ec, es = rng.poisson(lam * w * rc), rng.poisson(lam * (1 - w) * rs)
    nc = ec + rng.poisson(lam * w * (1 - rc))
    ns = es + rng.poisson(lam * (1 - w) * (1 - rs))
    out = [Counts(nc, ec, ns, es)]
    if cell.latency:
        pc, ps = bucket_probs(cell.latency), bucket_probs("aa")
        hc, hs = rng.multinomial(nc, pc), rng.multinomial(ns, ps)
        slow = ISTIO_BUCKETS_MS.index(P99_MS) + 1  # buckets above 500 ms
        out.append(Counts(nc, hc[:, slow:].sum(1), ns, hs[:, slow:].sum(1), hc, hs))
    return out


def histogram_p99(hist: np.ndarray) -> np.ndarray:
    """Prometheus histogram_quantile(0.99, ...) on per-bucket counts; NaN without data."""
    cum = np.cumsum(hist, axis=1)
    total = cum[:, -1]
    rank = 0.99 * total
    idx = np.argmax(cum >= rank[:, None], axis=1)
    bounds = np.array((*ISTIO_BUCKETS_MS, math.inf))
    lower = np.where(idx > 0, bounds[np.maximum(idx - 1, 0)], 0.0)
    below = np.where(idx > 0, np.take_along_axis(cum, np.maximum(idx - 1, 0)[:, None], 1)[:, 0], 0)
    inbucket = np.take_along_axis(hist, idx[:, None], 1)[:, 0]
    upper = bounds[idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        val = lower + (upper - lower) * (rank - below) / inbucket
    val = np.where(np.isinf(upper), ISTIO_BUCKETS_MS[-1], val)
    return np.where(total > 0, val, np.nan)


# --- the e-process twin ---------------------------------------------------------------------


def _logsig(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


class Twin:
    """Vectorised copy of canaryctl.stats' e-process and confidence-sequence upper-bound gate."""

    def __init__(self, n: int, psi0: float, alpha: float, gate: float) -> None:
        prior = stats._h1_prior(psi0)
        self.u = np.array([p[0] for p in prior])
        self.lw = np.array([p[1] for p in prior])
        cnt = round(2 * math.log(stats._RHO_MAX) / stats._GRID_STEP)
        self.cu = np.linspace(-math.log(stats._RHO_MAX), math.log(stats._RHO_MAX), cnt + 1)
        clw = -0.5 * (self.cu / stats._CS_SD) ** 2
        self.clw = clw - np.logaddexp.reduce(clw)
        self.u0, self.ug, self.alpha = math.log(psi0), math.log(gate), alpha
        self.log_a = np.full((n, len(self.u)), -np.inf)  # change-point recursion, see stats
        self.t = np.zeros(n, int)
        self.cs = np.zeros((n, len(self.cu)))
        self.lg = np.zeros(n)
        self.score_g = np.zeros(n)

    def update(self, idx: np.ndarray, c: Counts) -> None:
        ok = (c.nc > 0) & (c.ns > 0) & (c.bc + c.bs > 0)
        ec, es = np.where(ok, c.bc, 0), np.where(ok, c.bs, 0)
        a = np.where(ok, np.log(np.maximum(c.nc, 1) / np.maximum(c.ns, 1)), 0.0)

        def ll(u: np.ndarray) -> np.ndarray:
            x = u + a[:, None] if u.ndim else u + a
            e1 = ec[:, None] if u.ndim else ec
            e2 = es[:, None] if u.ndim else es
            return e1 * _logsig(x) + e2 * _logsig(-x)

        t = self.t[idx]
        log_pi = np.where(t == 0, -math.log(2), -np.log(2.0 * np.maximum(t, 1) * (t + 1)))
        llr = ll(self.u) - ll(np.float64(self.u0))[:, None]
        self.log_a[idx] = np.logaddexp(self.log_a[idx], log_pi[:, None]) + llr
        self.t[idx] += 1
        self.cs[idx] += ll(self.cu)
        self.lg[idx] += ll(np.float64(self.ug))
        self.score_g[idx] += ec - (ec + es) * np.exp(_logsig(self.ug + a))

    def reset_gate(self, idx: np.ndarray) -> None:
        self.cs[idx] = 0.0
        self.lg[idx] = 0.0
        self.score_g[idx] = 0.0

    def log_e(self, idx: np.ndarray) -> np.ndarray:
        log_tail = -np.log(2.0 * self.t[idx])[:, None]
        return np.logaddexp.reduce(self.lw + np.logaddexp(self.log_a[idx], log_tail), axis=1)

    def gate_ok(self, idx: np.ndarray) -> np.ndarray:
        """Upper end of the confidence sequence for rho below the gate value."""
        cut = np.logaddexp.reduce(self.cs[idx] + self.clw, axis=1) + math.log(self.alpha)
        return (self.lg[idx] <= cut) & (self.score_g[idx] < 0)


def wilson_lower(succ: np.ndarray, n: np.ndarray, conf: float) -> np.ndarray:
    z = stats.normal_quantile(0.5 + conf / 2)
    nn = np.maximum(n, 1)
    p = succ / nn
    d = 1 + z * z / nn
    lo = (p + z * z / (2 * nn)) / d - z / d * np.sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn))
    return np.where(n > 0, np.maximum(lo, 0.0), 0.0)


def wilson_upper(succ: np.ndarray, n: np.ndarray, conf: float) -> np.ndarray:
    z = stats.normal_quantile(0.5 + conf / 2)
    nn = np.maximum(n, 1)
    p = succ / nn
    d = 1 + z * z / nn
    up = (p + z * z / (2 * nn)) / d + z / d * np.sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn))
    return np.where(n > 0, np.minimum(up, 1.0), 1.0)


# --- policies -------------------------------------------------------------------------------


@dataclass
class Design:
    """Knobs of policy (c); the defaults are the design the benchmark recommends."""

    min_requests: int = MIN_REQUESTS
    hold_limit: int | None = None  # consecutive "too few requests" holds before rollback (b-like)
    floor: str = "wilson+stable"  # "none" | "point" | "wilson" | "wilson+stable"
    floor_conf: float = 1 - ALPHA
    gate: float | None = GATE_RHO
    gate_from_weight: int = 40
    gate_window: str = "step"  # CS over data since the weight was set, or "rollout"
    max_dwell: int = 8  # extra intervals a step may hold for the gate
    gate_min_errors: float = 20.0  # dwell only if max_dwell intervals would see this many errors
    floor_holds: int = 2  # floor breaches without concurrent stable data: hold up to this many
    deadline: int = 60  # intervals; then abort (insufficient traffic)
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class Result:
    status: np.ndarray
    time: np.ndarray  # seconds to the decision
    bad_served: np.ndarray  # canary errors (error cells) / slow requests (latency cells)
    reason: np.ndarray  # 0 none, 1 threshold/failures, 2 e-process, 3 floor, 4 no data


def simulate(cell: Cell, policy: str, runs: int, seed: int, sec: float, design: Design) -> Result:
    rng = np.random.default_rng(seed)
    nm = 2 if cell.latency else 1
    status = np.zeros(runs, int)
    step = np.zeros(runs, int)
    dtime = np.full(runs, np.nan)
    served = np.zeros(runs)
    reason = np.zeros(runs, int)
    failures = np.zeros(runs, int)
    holds = np.zeros(runs, int)
    dwell = np.zeros(runs, int)
    step_start = np.zeros(runs, int)
    fholds = np.zeros(runs, int)  # interval at which the current weight was set
    # window since the weight was set, per metric: nc, bc, ns, bs (+ histograms)
    win = np.zeros((nm, 4, runs))
    nb = len(ISTIO_BUCKETS_MS) + 1
    win_h = np.zeros((runs, nb), int)
    cum = np.zeros((nm, 4, runs))  # since start, (d)
    alpha = ALPHA / nm
    twins = [Twin(runs, PSI0, alpha, design.gate or GATE_RHO) for _ in range(nm)]
    sample = min(SAMPLE_RUNS, runs) if policy == "c" else 0
    hist: list[list[list[stats.StepCounts]]] = [[[] for _ in range(sample)] for _ in range(nm)]
    w_arr = np.array(WEIGHTS) / 100.0
    t_max = design.deadline if policy == "c" else 40
    for t in range(t_max):
        idx = np.nonzero(status == RUNNING)[0]
        if idx.size == 0:
            break
        cs = generate(cell, w_arr[step[idx]], step[idx], t, rng, sec)
        served[idx] += cs[-1].bc if cell.latency else cs[0].bc
        for m, c in enumerate(cs):
            for j, arr in enumerate((c.nc, c.bc, c.ns, c.bs)):
                win[m, j, idx] += arr
                cum[m, j, idx] += arr
        if cell.latency:
            win_h[idx] += cs[1].hist_c
        last = step[idx] == len(WEIGHTS) - 1
        advance = np.zeros(idx.size, bool)
        rollback = np.zeros(idx.size, bool)
        why = np.zeros(idx.size, int)
        reset = np.zeros(idx.size, bool)
        c0 = cs[0]
        if policy == "a":  # Flagger: per-interval checks, 5 cumulative failures
            with np.errstate(invalid="ignore", divide="ignore"):
                fail = (c0.nc == 0) | ((c0.nc - c0.bc) / c0.nc < FLOOR)
            if cell.latency:
                p99 = histogram_p99(cs[1].hist_c)
                fail |= np.isnan(p99) | (p99 > P99_MS)
            failures[idx] += fail
            rollback = failures[idx] >= 5
            why[:] = 1
            advance = ~fail
        elif policy in ("b", "b2"):
            limit = 0 if policy == "b" else 2
            n = win[0, 0, idx]
            few = n < design.min_requests
            holds[idx] = np.where(few, holds[idx] + 1, 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                fail = ~few & ((n - win[0, 1, idx]) / n < FLOOR)
            if cell.latency:
                p99 = histogram_p99(win_h[idx])
                fail |= ~few & (p99 > P99_MS)
            failures[idx] += fail
            rollback = (failures[idx] > limit) | (holds[idx] > 3)
            why = np.where(holds[idx] > 3, 4, 1)
            advance = ~few & ~fail
            reset = fail
        elif policy == "d":  # naive z-test on cumulative counts after every interval
            for m in range(nm):
                ncm, bcm, nsm, bsm = cum[m][:, idx]
                with np.errstate(invalid="ignore", divide="ignore"):
                    p = (bcm + bsm) / (ncm + nsm)
                    z = (bcm / ncm - bsm / nsm) / np.sqrt(p * (1 - p) * (1 / ncm + 1 / nsm))
                rollback |= np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0) > 1.6448536
            why[:] = 2
            advance = ~rollback
        else:  # (c) canaryctl sequential
            gate_wait = np.zeros(idx.size, bool)
            floor_hold = np.zeros(idx.size, bool)
            for m, c in enumerate(cs):
                tw = twins[m]
                tw.update(idx, c)
                rej = tw.log_e(idx) >= math.log(1 / alpha)
                rollback |= rej
                why = np.where(rej & (why == 0), 2, why)
                # dwell only where it can be informative: this metric's stable rate so far x
                # this interval's requests x max_dwell >= gate_min_errors (canary-independent)
                with np.errstate(invalid="ignore", divide="ignore"):
                    r_s = np.nan_to_num(cum[m, 3, idx] / cum[m, 2, idx])
                useful = r_s * (c.nc + c.ns) * design.max_dwell >= design.gate_min_errors
                gate_wait |= ~tw.gate_ok(idx) & useful
                fb = floor_breach(win[m][:, idx], cum[m][:, idx], design)
                conc = concurrent_stable(win[m][:, idx], design)
                # no concurrent stable data: a breach may be the environment's -> hold, re-check
                floor_hold |= fb & ~conc
                fb &= conc & ~rej & ~rollback
                rollback |= fb
                why = np.where(fb & (why == 0), 3, why)
                _check_sample(
                    cell, t, idx, c, tw, hist[m], alpha, design, win[m], cum[m], step_start
                )
            few = win[0, 0, idx] < design.min_requests
            holds[idx] = np.where(few, holds[idx] + 1, 0)
            if design.hold_limit is not None:
                nodata = holds[idx] > design.hold_limit
                why = np.where(nodata & ~rollback, 4, why)
                rollback |= nodata
            fholds[idx] = np.where(floor_hold, fholds[idx] + 1, 0)
            fail_floor = (fholds[idx] > design.floor_holds) & ~rollback
            why = np.where(fail_floor, 3, why)
            rollback |= fail_floor
            need_gate = np.zeros(idx.size, bool)
            if design.gate is not None:
                at = np.array(WEIGHTS)[step[idx]] >= design.gate_from_weight
                need_gate = at & ~last & gate_wait & (dwell[idx] < design.max_dwell)
            advance = ~few & ~need_gate & ~floor_hold
            reset = floor_hold  # re-check on a fresh interval: bursts pass, a bad canary does not
            dwell[idx] = np.where(~few & need_gate, dwell[idx] + 1, dwell[idx])
        rollback &= status[idx] == RUNNING
        promote = ~rollback & advance & last
        adv = ~rollback & advance & ~last
        status[idx[rollback]] = ROLLED_BACK
        status[idx[promote]] = PROMOTED
        reason[idx[rollback]] = why[rollback]
        done = rollback | promote
        dtime[idx[done]] = (t + 1) * sec
        step[idx[adv]] += 1
        clear = idx[adv | reset]
        win[:, :, clear] = 0
        win_h[clear] = 0
        if policy == "c":
            dwell[idx[adv]] = 0
            step_start[idx[adv]] = t + 1
            if design.gate_window == "step":
                for tw in twins:
                    tw.reset_gate(idx[adv])
    left = status == RUNNING
    status[left] = ABORTED
    reason[left] = 4
    dtime[left] = t_max * sec
    return Result(status, dtime, served, reason)


def floor_breach(w: np.ndarray, cum: np.ndarray, design: Design) -> np.ndarray:
    """(c)'s absolute floor on the window since the weight was set (rows nc, bc, ns, bs).

    Breach = at least min_requests canary requests, the canary's Wilson upper bound on its good
    share is below the floor (we are confident the canary misses it) AND stable is confidently
    meeting the floor (its Wilson lower bound is at or above it) -- on the same window, or on the
    whole rollout so far when the window has fewer than min_requests stable requests. If stable
    might itself be below the floor, a breach is the environment's, not the canary's: the
    relative test decides.
    """
    nc, bc, ns, bs = w
    enough = nc >= design.min_requests
    if design.floor == "none":
        return np.zeros(nc.shape, bool)
    if design.floor == "point":
        return enough & ((nc - bc) < FLOOR * nc)
    breach = enough & (wilson_upper(nc - bc, nc, design.floor_conf) < FLOOR)
    if design.floor == "wilson+stable":
        ref_n = np.where(ns >= design.min_requests, ns, cum[2])
        ref_b = np.where(ns >= design.min_requests, bs, cum[3])
        breach &= wilson_lower(ref_n - ref_b, ref_n, design.floor_conf) >= FLOOR
    return breach


def concurrent_stable(w: np.ndarray, design: Design) -> np.ndarray:
    """The window has its own stable reference (>= min_requests stable requests)."""
    return w[2] >= design.min_requests


def _check_sample(
    cell: Cell,
    t: int,
    idx: np.ndarray,
    c: Counts,
    tw: Twin,
    hist: list[list[stats.StepCounts]],
    alpha: float,
    design: Design,
    win: np.ndarray,
    cum: np.ndarray,
    step_start: np.ndarray,
) -> None:
    """Assert that the twin agrees with canaryctl.stats on the sampled runs."""
    pos = np.nonzero(idx < len(hist))[0]
    if pos.size == 0:
        return
    log_e, gate = tw.log_e(idx[pos]), tw.gate_ok(idx[pos])
    fb = floor_breach(win[:, idx[pos]], cum[:, idx[pos]], design)
    for p, le, g, f in zip(pos, log_e, gate, fb, strict=True):
        r = int(idx[p])
        hist[r].append(stats.StepCounts(int(c.nc[p]), int(c.bc[p]), int(c.ns[p]), int(c.bs[p])))
        res = stats.sequential_test(hist[r], psi0=PSI0, alpha=alpha)
        ref = math.log(res.e_value) if res.e_value > 0 else -math.inf
        assert math.isclose(le, ref, rel_tol=1e-7, abs_tol=1e-7), (cell.label, t, le, ref)
        if abs(le - math.log(res.threshold)) > 1e-7:
            assert res.reject == (le >= math.log(res.threshold)), (cell.label, t)
        if design.gate is not None:
            if design.gate_window == "step":
                ci = stats.sequential_test(
                    hist[r][step_start[r] :], psi0=PSI0, alpha=alpha
                ).ratio_ci
            else:
                ci = res.ratio_ci
            assert bool(g) == (ci[1] < design.gate), (cell.label, t, ci)
        if design.floor == "wilson+stable":
            nc, bc, ns, bs = (int(x) for x in win[:, r])
            lo_hi = stats.wilson_interval(nc - bc, nc, design.floor_conf)
            ref_n, ref_b = (ns, bs) if ns >= design.min_requests else (cum[2, r], cum[3, r])
            ref = stats.wilson_interval(int(ref_n - ref_b), int(ref_n), design.floor_conf)
            stable_ok = ref[0] >= FLOOR
            expect = nc >= design.min_requests and lo_hi[1] < FLOOR and stable_ok
            assert bool(f) == expect, (cell.label, t, nc, bc, ns, bs)


# --- aggregation and report -----------------------------------------------------------------

POLICIES = {
    "a": "(a) Flagger: 5 failures",
    "b": "(b) thresholds, failureLimit 0",
    "b2": "(b') thresholds, failureLimit 2",
    "c": "(c) sequential",
    "d": "(d) naive z-test",
}


def wilson(x: int, n: int) -> tuple[float, float]:
    return stats.wilson_interval(x, n, 0.95)


def summarise(res: Result, good: bool) -> dict[str, float]:
    n = res.status.size
    rb = int((res.status == ROLLED_BACK).sum())
    ab = int((res.status == ABORTED).sum())
    pr = int((res.status == PROMOTED).sum())
    det = res.status == ROLLED_BACK
    t_all = np.where(det, res.time, np.inf)
    out: dict[str, float] = {
        "n": n,
        "rolled_back": rb / n,
        "aborted": ab / n,
        "promoted": pr / n,
        "not_promoted": (n - pr) / n,
        "not_promoted_hi": wilson(n - pr, n)[1],
        "not_promoted_lo": wilson(n - pr, n)[0],
        "detect_lo": wilson(rb, n)[0],
        "detect_hi": wilson(rb, n)[1],
        "ttd_median_all": float(np.median(t_all)),
        "ttd_median": float(np.median(res.time[det])) if det.any() else math.nan,
        "ttd_p90": float(np.percentile(res.time[det], 90)) if det.any() else math.nan,
        "served_mean": float(res.bad_served.mean()),
        "promote_median": float(np.median(res.time[res.status == PROMOTED])) if pr else math.nan,
        "by_test": float((det & (res.reason == 2)).mean()),
        "by_floor": float((det & (res.reason == 3)).mean()),
        "by_nodata": float(((res.reason == 4) & (res.status != PROMOTED)).mean()),
        "by_threshold": float((det & (res.reason == 1)).mean()),
    }
    return out


def run_cell(
    args: tuple[int, Cell, int, int, float, Design],
) -> tuple[Cell, dict[str, dict[str, float]]]:
    i, cell, runs, seed, sec, design = args
    out = {}
    for p in POLICIES:
        res = simulate(cell, p, runs, seed * 100_003 + i, sec, design)
        out[p] = summarise(res, cell.good)
    return cell, out


def pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}"


def secs(x: float) -> str:
    return "never" if math.isinf(x) else ("-" if math.isnan(x) else f"{x:.0f}")


def check_targets(results: list[tuple[Cell, dict[str, dict[str, float]]]]) -> list[str]:
    lines = []
    good = [(c, r) for c, r in results if c.good]
    if not good or len(good) == len(results):
        return ["(targets are checked on the full grid only)"]
    worst = max(good, key=lambda cr: cr[1]["c"]["not_promoted"])
    bad_fr = [(c, r) for c, r in good if r["c"]["not_promoted"] > ALPHA]
    lines.append(
        f"1. **False rollback <= 1 % for (c) in every good-canary cell**: "
        f"{'MET' if not bad_fr else 'NOT MET'} -- worst cell `{worst[0].label}`: "
        f"{pct(worst[1]['c']['not_promoted'])} % "
        f"(95 % Wilson {pct(worst[1]['c']['not_promoted_lo'])}-"
        f"{pct(worst[1]['c']['not_promoted_hi'])} %)"
        + (
            ""
            if not bad_fr
            else "; above 1 %: "
            + ", ".join(f"`{c.label}` {pct(r['c']['not_promoted'])} %" for c, r in bad_fr)
        )
    )
    sub = [
        (c, r)
        for c, r in results
        if c.family == "errors" and c.scenario == "k=3" and c.rate in (10, 100)
    ]
    rows = []
    ok_all = True
    for c, r in sub:
        tc, ta = r["c"]["ttd_median_all"], r["a"]["ttd_median_all"]
        ok = tc <= ta
        ok_all &= ok
        rows.append(f"`{c.label}`: (c) {secs(tc)} s vs (a) {secs(ta)} s {'ok' if ok else 'WORSE'}")
    lines.append(
        "2. **k = 3 at 10 and 100 req/s: median time-to-detect of (c) <= (a)** "
        "(median over all bad runs, a run never rolled back counts as never): "
        f"{'MET' if ok_all else 'NOT MET'} -- " + "; ".join(rows)
    )
    sub = [
        (c, r)
        for c, r in results
        if c.family == "errors" and not c.good and c.k >= 3 and c.rate == 100
    ]
    worst = max(sub, key=lambda cr: cr[1]["c"]["promoted"])
    lines.append(
        "3. **No bad canary with k >= 3 promoted at 100 req/s (c)**: "
        f"{'MET' if worst[1]['c']['promoted'] == 0 else 'NOT MET'} -- worst `{worst[0].label}`: "
        f"{pct(worst[1]['c']['promoted'])} % promoted ((a): {pct(worst[1]['a']['promoted'])} %)"
    )
    return lines


def report(results: list[tuple[Cell, dict[str, dict[str, float]]]], meta: str, out: Path) -> None:
    md = ["# Judgement benchmark", "", meta, "", "## Targets", ""]
    md += check_targets(results)
    md += ["", "## Good canaries: false-rollback rate (%), 95 % Wilson interval for (c)", ""]
    md.append("Not promoted = rolled back or aborted. Time to promote: median seconds.")
    md.append("")
    hdr = (
        "| cell | "
        + " | ".join(POLICIES[p] for p in POLICIES)
        + " | (c) 95 % CI | promote (a) s | promote (c) s |"
    )
    md += [hdr, "|" + "---|" * (len(POLICIES) + 4)]
    for c, r in results:
        if not c.good:
            continue
        md.append(
            f"| {c.label} | "
            + " | ".join(pct(r[p]["not_promoted"]) for p in POLICIES)
            + f" | {pct(r['c']['not_promoted_lo'])}-{pct(r['c']['not_promoted_hi'])}"
            + f" | {secs(r['a']['promote_median'])} | {secs(r['c']['promote_median'])} |"
        )
    md += ["", "## Bad canaries: detection (%), median time-to-detect (s), promoted (%)", ""]
    md.append(
        "Detection = rolled back. Median over all runs (never = not detected in at least half); "
        "[median / p90 among detected runs]. Served = mean canary errors (slow requests for "
        "latency cells) served before the decision."
    )
    md.append("")
    hdr = (
        "| cell | "
        + " | ".join(f"{p} det %" for p in POLICIES)
        + " | a t | c t | c [med/p90] | a promoted % | c promoted % | served a | served c |"
    )
    md += [hdr, "|" + "---|" * (len(POLICIES) + 9)]
    for c, r in results:
        if c.good:
            continue
        md.append(
            f"| {c.label} | "
            + " | ".join(pct(r[p]["rolled_back"]) for p in POLICIES)
            + f" | {secs(r['a']['ttd_median_all'])} | {secs(r['c']['ttd_median_all'])}"
            + f" | {secs(r['c']['ttd_median'])}/{secs(r['c']['ttd_p90'])}"
            + f" | {pct(r['a']['promoted'])} | {pct(r['c']['promoted'])}"
            + f" | {r['a']['served_mean']:.1f} | {r['c']['served_mean']:.1f} |"
        )
    md += ["", "## A/A calibration of (c): why good canaries were not promoted (%)", ""]
    md.append(
        "e-process = rejected by the sequential test (bounded by alpha = 1 %, by alpha/2 per "
        "metric in latency cells); floor = absolute floor; no data = aborted at the deadline. "
        "(d) shows what peeking with a fixed-sample z-test does in the same cells."
    )
    md.append("")
    md += [
        "| cell | (c) e-process | (c) floor | (c) no data | (c) total [95 % CI] | (d) naive z |",
        "|---|---|---|---|---|---|",
    ]
    for c, r in results:
        if not c.good:
            continue
        rc = r["c"]
        md.append(
            f"| {c.label} | {pct(rc['by_test'])} | {pct(rc['by_floor'])} | {pct(rc['by_nodata'])}"
            f" | {pct(rc['not_promoted'])}"
            f" [{pct(rc['not_promoted_lo'])}-{pct(rc['not_promoted_hi'])}]"
            f" | {pct(r['d']['rolled_back'])} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "judgement.md").write_text("\n".join(md) + "\n")
    plot(results, out / "judgement.png")


def plot(results: list[tuple[Cell, dict[str, dict[str, float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(16, 13))
    good = [(c, r) for c, r in results if c.good]
    bad = [(c, r) for c, r in results if not c.good]
    marks = {"a": "o", "b": "s", "b2": "D", "c": "*", "d": "x"}
    for p, name in POLICIES.items():
        kw = {"marker": marks[p], "linestyle": "none", "label": name, "ms": 9 if p == "c" else 5}
        axes[0].plot(range(len(good)), [100 * r[p]["not_promoted"] for _, r in good], **kw)
        axes[1].plot(range(len(bad)), [100 * r[p]["rolled_back"] for _, r in bad], **kw)
        axes[2].plot(
            range(len(bad)),
            [r[p]["ttd_median"] for _, r in bad],
            **kw,
        )
    axes[0].axhline(100 * ALPHA, color="k", lw=0.8, ls="--")
    axes[0].set_yscale("symlog", linthresh=1)
    axes[0].set_ylabel("false rollback %\n(good canaries)")
    axes[1].set_ylabel("detection %\n(bad canaries)")
    axes[2].set_ylabel("median time-to-detect, s\n(detected runs)")
    for ax, rows in ((axes[0], good), (axes[1], bad), (axes[2], bad)):
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([c.label for c, _ in rows], rotation=90, fontsize=5)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--interval", type=float, default=60.0, help="seconds per interval")
    ap.add_argument("--quick", action="store_true", help="300 runs, for a smoke test")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--only", default="", help="only cells whose label contains this")
    ap.add_argument("--design", default="", help="override (c) knobs, e.g. 'gate=None,max_dwell=0'")
    args = ap.parse_args()
    runs = 300 if args.quick else args.runs
    design = Design()
    for kv in filter(None, args.design.split(",")):
        k, v = kv.split("=")
        design = replace(
            design, **{k: eval(v) if v not in ("wilson", "point", "none", "wilson+stable") else v}
        )
    t0 = time.time()
    todo = [
        (i, c, runs, args.seed, args.interval, design)
        for i, c in enumerate(cells())
        if args.only in c.label
    ]
    with ProcessPoolExecutor(args.jobs) as ex:
        results = list(ex.map(run_cell, todo))
    el = time.time() - t0
    meta = (
        f"{runs} runs per cell and policy, seed {args.seed}, interval {args.interval:g} s, "
        f"steps {list(WEIGHTS)}, alpha {ALPHA}, psi0 {PSI0}, minRequests {MIN_REQUESTS}; "
        f"(c) design: {design}; {len(todo)} cells in {el:.0f} s on {args.jobs} processes."
    )
    report(results, meta, args.out)
    print("\n".join(check_targets(results)))
    print(f"done in {el:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
