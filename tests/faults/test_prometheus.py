"""Prometheus faults, injected by the fault proxy in front of the sandbox's real Prometheus.

Promised (README "Exit codes", metrics/prometheus.py "Failure policy", analysis.py):
connection errors, timeouts, 5xx, 429 and malformed answers are retried for
``prometheus.retryBudget``, then traffic goes back on stable, the state is ``Failed`` with the
reason and canaryctl exits 3; missing data, NaN/Inf or several series are *inconclusive* with a
reason, never a pass; counter resets do not disturb a healthy rollout.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import NS, Run
from tests.faults.conftest import (
    PROM_RETRY_BUDGET,
    Case,
    FaultWorld,
    assert_clean_success,
    assert_one_line_error,
    log_events,
    normalise,
)
from tests.faults.promproxy import empty_vector, several_series, with_value

ANALYSIS = "istio_"  # every analysis query names an Istio metric; preflight's vector(1) does not
CANARY_SUCCESS_RATE = r"^100 - 100 .*rest-apl-v2"
CANARY_P99 = r"^histogram_quantile.*rest-apl-v2"

# name -> (proxy.inject kwargs, words the state's reason must contain when it persists)
FAULTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "slower-than-timeout": ({"delay": 1.6}, ("timeout",)),
    "http-500": (
        {"status": 500, "body": {"status": "error", "errorType": "internal", "error": "boom"}},
        ("HTTP 500",),
    ),
    "http-503": ({"status": 503, "body": "Service Unavailable"}, ("HTTP 503",)),
    "http-429": ({"status": 429, "body": "Too Many Requests"}, ("HTTP 429",)),
    "malformed-json": (
        {"status": 200, "body": '{"status": "success", "data": {"resultType": "vec'},
        ("malformed",),
    ),
    "status-error": ({"status": 200, "body": {"status": "error"}}, ("error",)),
    "malformed-sample": (
        {
            "status": 200,
            "body": {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "x"]}]},
            },
        },
        ("malformed",),
    ),
}


def _retries(stderr: str) -> int:
    return sum(1 for e in log_events(stderr) if e.get("event") == "prometheus.retry")


def test_prometheus_refusing_connections_at_start_exits_3_with_nothing_written(
    world: FaultWorld, case: Case
) -> None:
    """Proxy stopped (connection refused) before the rollout: exit 3 after the retry budget,
    one-line error naming Prometheus, zero cluster writes, weights still 80/20."""
    case(
        "connection refused before the rollout (proxy stopped)",
        "exit 3, one-line error naming Prometheus, no traceback, 0 cluster writes, 80/20 kept",
    )
    world.proxy.stop()
    res = world.run(*world.promote())
    case.observed(world.observed(res) + f"; cluster writes {len(world.cluster_writes())}")
    assert res.code == 3, res.stderr[-2000:]
    assert res.json()["result"] == "error"
    assert_one_line_error(res, "Prometheus")
    assert world.cluster_writes() == []
    assert world.weights() == [("v1", 80), ("v2", 20)]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_prometheus_fault_is_retried_when_brief_and_fails_back_to_stable_when_it_persists(
    world: FaultWorld, case: Case, fault: str
) -> None:
    """At step 1 the first two analysis queries meet the fault: retried within the budget, the
    step passes and the rollout advances to 100. From step 2 on the fault persists longer than
    the retry budget: traffic back on stable (100/0), phase Failed with a reason naming what
    Prometheus did, exit 3 with a one-line error."""
    kwargs, words = FAULTS[fault]
    case(
        f"{fault}: 2 queries at step 1, then every query from step 2 on",
        "step 1 retried and passed (advance to 100); step 2 after the "
        f"{PROM_RETRY_BUDGET}s budget: exit 3, weights written 50,100,0, final 100/0, "
        f"phase Failed 'metrics unavailable' naming {' / '.join(words)}, one-line error",
    )
    proxy = world.proxy
    proxy.inject(fault, times=2, match=ANALYSIS, **kwargs)
    persistent = f"{fault} (persistent)"

    def from_step_2() -> bool:  # armed by the step-2 write itself: no race with a poller
        return len(world.written_weights()) >= 2

    proxy.inject(persistent, match=ANALYSIS, when=from_step_2, **kwargs)
    started = time.monotonic()
    res = world.run(*world.promote())
    elapsed = time.monotonic() - started
    data = _json_or_empty(res)
    verdicts = [s["verdict"] for s in data.get("steps") or []]
    case.observed(
        world.observed(res) + f"; step verdicts {verdicts}; brief faults served "
        f"{proxy.hits(fault)}; written {world.written_weights()}"
    )
    assert proxy.hits(fault) == 2
    assert res.code == 3, res.stderr[-3000:]
    assert_one_line_error(res, "Prometheus")
    assert data["result"] == "error"
    assert verdicts == ["pass"], data
    assert world.written_weights() == [50, 100, 0]
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Failed"
    assert "metrics unavailable" in state["reason"]
    for word in words:
        assert word.lower() in state["reason"].lower(), state["reason"]
    assert elapsed >= 2 * 2 + PROM_RETRY_BUDGET, "gave up before the retry budget was spent"
    assert world.lease_holder() == "", "the rollout's lease was not released"


def test_query_rejected_mid_rollout_fails_back_to_stable_without_retrying(
    world: FaultWorld, case: Case
) -> None:
    """From step 1 on Prometheus rejects the analysis queries as ``bad_data`` (HTTP 400): not
    retried (the query itself is wrong), traffic back on stable at once, phase Failed saying
    Prometheus rejected the query, exit 3, one-line error."""
    case(
        "bad_data (HTTP 400, query rejected) from step 1 on",
        "not retried; exit 3, weights written 50,0, final 100/0, phase Failed "
        "'rejected the query', one-line error",
    )
    body = {"status": "error", "errorType": "bad_data", "error": "parse error: unexpected"}
    world.when_written(
        1, lambda: world.proxy.inject("bad_data", match=ANALYSIS, status=400, body=body)
    )
    res = world.run(*world.promote())
    case.observed(world.observed(res) + f"; retries logged {_retries(res.stderr)}")
    assert res.code == 3, res.stderr[-3000:]
    assert_one_line_error(res, "rejected")
    assert _retries(res.stderr) == 0
    assert world.written_weights() == [50, 0]
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Failed"
    assert "rejected the query" in state["reason"]


def _json_or_empty(res: Run) -> dict[str, Any]:
    try:
        return res.json()
    except (AssertionError, ValueError):
        return {}


CANARY_REQUEST_COUNT = r"^sum\(increase\(istio_requests_total.*rest-apl-v2"
# name -> (regex of the query to corrupt, rewrite, metric, words of the inconclusive reason)
BAD_DATA: dict[str, tuple[str, Any, str, tuple[str, ...]]] = {
    "empty-vector": (CANARY_SUCCESS_RATE, empty_vector, "request-success-rate", ("no data",)),
    "NaN": (CANARY_SUCCESS_RATE, with_value("NaN"), "request-success-rate", ("nan",)),
    "+Inf": (CANARY_P99, with_value("+Inf"), "request-duration", ("inf",)),
    "-Inf": (CANARY_SUCCESS_RATE, with_value("-Inf"), "request-success-rate", ("-inf",)),
    "several-series": (
        CANARY_SUCCESS_RATE,
        several_series(3),
        "request-success-rate",
        ("3 series",),
    ),
    "several-series-request-count": (
        CANARY_REQUEST_COUNT,
        several_series(2),
        "request-success-rate",
        ("2 series",),
    ),
}


@pytest.mark.parametrize("bad", list(BAD_DATA))
def test_bad_canary_data_is_inconclusive_never_a_pass(
    world: FaultWorld, case: Case, bad: str
) -> None:
    """The canary's value for one metric (or the canary's request count) is empty / NaN / +Inf
    / -Inf / several series at every analysis: that metric is inconclusive with a reason naming
    what was wrong every time, the rollout is held, then rolled back after inconclusiveLimit
    (1): exit 1, weights 100/0, never promoted."""
    match, transform, metric, words = BAD_DATA[bad]
    what = "request count" if match == CANARY_REQUEST_COUNT else metric
    case(
        f"{bad} answer for the canary's {what}",
        f"{metric} inconclusive with a reason naming {' / '.join(words)} at every analysis "
        "(never pass); held once, then rolled back: exit 1, weights 100/0, phase RolledBack",
    )
    world.proxy.inject(bad, match=match, transform=transform)
    res = world.run(*world.promote())
    case.observed(world.observed(res) + f"; corrupted answers {world.proxy.hits(bad)}")
    assert res.code == 1, res.stderr[-3000:]
    assert_clean_success(res)
    data = res.json()
    assert data["result"] == "rolled_back"
    assert world.proxy.hits(bad) >= 2
    assert [s["verdict"] for s in data["steps"]] == ["inconclusive", "inconclusive"]
    for step in data["steps"]:
        m = next(m for m in step["metrics"] if m["name"] == metric)
        assert m["verdict"] == "inconclusive", m
        if match != CANARY_REQUEST_COUNT:  # the value itself was corrupted: none is shown
            assert m["value"] is None, m
        for word in words:
            assert word.lower() in m["reason"].lower(), m["reason"]
    assert world.written_weights() == [50, 50, 0]
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and state["phase"] == "RolledBack"
    assert "inconclusive" in state["reason"] and metric in state["reason"]


@pytest.mark.parametrize("judge", ["threshold", "sequential"])
def test_counter_reset_mid_rollout_still_promotes_a_healthy_canary(
    world: FaultWorld, case: Case, judge: str
) -> None:
    """Both workloads' counters restart at 0 (pod restarts) one second into the second step:
    no analysis fails, no count is implausible (negative, or the counters' totals), at most
    ``inconclusiveLimit`` (2) analyses hold the weight, and the canary is promoted through
    40, 70, 100 in order."""
    case(
        f"counter reset of canary and stable mid-step 2 (judge {judge})",
        "no fail, plausible counts, at most 2 holds; exit 0, promoted, weights written "
        "40,70,100 in order (holds repeat a weight)",
    )
    traffic = world.sb.traffic

    def restart_pods() -> None:
        traffic.reset_counters(world.sb.canary_workload)
        traffic.reset_counters(world.sb.stable_workload)

    world.when_written(2, restart_pods, delay=1.0)
    policy = world.policy(steps=[40, 70, 100], judge=judge, minRequests=20, inconclusiveLimit=2)
    res = world.run(*world.promote(policy=policy))
    data = _json_or_empty(res)
    steps = data.get("steps") or []
    not_passed = [
        f"step {s['step']}: {s['verdict']}: {s['reason']}" for s in steps if s["verdict"] != "pass"
    ]
    failed = [r for r in not_passed if ": fail:" in r]
    holds = len(not_passed)
    case.observed(
        world.observed(res)
        + ("; no analysis failed" if not failed else "".join(f"; {normalise(r)}" for r in failed))
        + ("; holds within inconclusiveLimit" if holds <= 2 else f"; {holds} holds")
    )
    assert res.code == 0, res.stderr[-3000:]
    assert_clean_success(res)
    assert data["result"] == "promoted"
    assert all(s["verdict"] in ("pass", "inconclusive") for s in steps), not_passed
    written = world.written_weights()
    assert [w for i, w in enumerate(written) if i == 0 or written[i - 1] != w] == [40, 70, 100]
    assert written[-2:] == [100, 100]
    for step in steps:
        for m in step["metrics"]:
            if m["requests"] is not None:  # 100 req/s, 2-3 s windows: never thousands
                assert 0 <= m["requests"] < 1500, m
    assert world.weights() == [("v1", 0), ("v2", 100)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Promoted"
    for entry in state["counts"]:
        assert 0 <= entry["canary_requests"] < 1500, entry
        assert 0 <= entry["stable_requests"] < 1500, entry


def test_prometheus_outage_shorter_than_retry_budget_rollout_continues_and_promotes(
    world: FaultWorld, case: Case
) -> None:
    """The proxy stops (connection refused) when step 1 is written and comes back 3 s later,
    ~1 s into the first analysis' retries: the retries succeed and the canary is promoted."""
    case(
        f"outage from step 1 until 1 s into the analysis (budget {PROM_RETRY_BUDGET}s)",
        "retried, rollout continues: exit 0, promoted, weights written 50,100,100",
    )
    proxy = world.proxy

    def outage() -> None:
        proxy.stop()
        time.sleep(3.0)
        proxy.start()

    world.when_written(1, outage)
    res = world.run(*world.promote())
    retries = _retries(res.stderr)
    case.observed(world.observed(res) + f"; retries logged {'>= 1' if retries else 0}")
    assert res.code == 0, res.stderr[-3000:]
    assert_clean_success(res)
    assert retries >= 1
    assert res.json()["result"] == "promoted"
    assert world.written_weights() == [50, 100, 100]
    assert world.weights() == [("v1", 0), ("v2", 100)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Promoted"


def test_prometheus_outage_longer_than_retry_budget_fails_back_to_stable(
    world: FaultWorld, case: Case
) -> None:
    """The proxy stops when step 1 is written and stays down: after the retry budget traffic
    goes back on stable, the state says Failed and why, exit 3 with a one-line error."""
    case(
        "outage from step 1 that outlasts the retry budget",
        "exit 3, weights 100/0, phase Failed 'metrics unavailable' (connection), one-line error",
    )
    world.when_written(1, world.proxy.stop)
    res = world.run(*world.promote())
    case.observed(world.observed(res))
    assert res.code == 3, res.stderr[-3000:]
    assert_one_line_error(res, "Prometheus")
    assert res.json()["result"] == "error"
    assert world.written_weights() == [50, 0]
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Failed"
    assert "metrics unavailable" in state["reason"] and "Connection" in state["reason"]


def test_reconcile_with_prometheus_unreachable_fails_back_to_stable_and_exits_3(
    world: FaultWorld, case: Case
) -> None:
    """CronJob mode: ``promote --no-wait`` writes step 1, Prometheus becomes unreachable, and
    the next due ``reconcile`` spends the retry budget, puts traffic back on stable and exits 3
    (README: 3 when the cluster or Prometheus was unreachable), the outcome saying why."""
    case(
        "reconcile (CronJob) with Prometheus unreachable at a due step",
        "exit 3, outcome failed 'metrics unavailable', weights 100/0, phase Failed, no traceback",
    )
    assert world.run(*world.promote("--no-wait")).code == 0
    world.proxy.stop()
    time.sleep(2.1)  # the 2 s step is due
    res = world.run("reconcile", "-n", NS, "-o", "json")
    data = _json_or_empty(res)
    actions = [o.get("action") for o in data.get("rollouts") or []]
    case.observed(world.observed(res) + f"; outcomes {actions}")
    assert res.code == 3, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert data["result"] == "error" and actions == ["failed"], data
    assert "Prometheus" in data["rollouts"][0]["detail"]
    assert world.written_weights() == [50, 0]
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Failed"
    assert "metrics unavailable" in state["reason"]
