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

from tests.faults.conftest import (
    APP,
    NS,
    PROM_RETRY_BUDGET,
    Case,
    FaultWorld,
    assert_clean_success,
    assert_one_line_error,
    log_events,
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
def test_transient_prometheus_fault_is_retried_and_rollout_promotes(
    world: FaultWorld, case: Case, fault: str
) -> None:
    """The first two analysis queries meet the fault; the retries succeed within the budget and
    the healthy canary is promoted through every step (50, 100) as without the fault."""
    kwargs, _ = FAULTS[fault]
    case(
        f"{fault} for the next 2 analysis queries",
        "retried within the budget; exit 0, promoted, weights written 50,100,100, 0/100",
    )
    world.proxy.inject(fault, times=2, match=ANALYSIS, **kwargs)
    res = world.run(*world.promote())
    case.observed(
        world.observed(res) + f"; faults served {world.proxy.hits(fault)}, "
        f"retries logged {_retries(res.stderr)}"
    )
    assert res.code == 0, res.stderr[-3000:]
    assert_clean_success(res)
    assert world.proxy.hits(fault) == 2
    assert _retries(res.stderr) == 2
    data = res.json()
    assert data["result"] == "promoted"
    assert all(s["verdict"] == "pass" for s in data["steps"])
    assert world.written_weights() == [50, 100, 100]
    assert world.weights() == [("v1", 0), ("v2", 100)]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_persistent_prometheus_fault_puts_traffic_back_on_stable_and_exits_3(
    world: FaultWorld, case: Case, fault: str
) -> None:
    """The fault outlasts the retry budget at the first analysis: traffic back on stable
    (100/0), phase Failed with a reason naming what Prometheus did, exit 3, one-line error."""
    kwargs, words = FAULTS[fault]
    case(
        f"{fault} on every analysis query (longer than the {PROM_RETRY_BUDGET}s budget)",
        "exit 3, weights 100/0, phase Failed, reason 'metrics unavailable' naming "
        f"{' / '.join(words)}, one-line error",
    )
    world.proxy.inject(fault, match=ANALYSIS, **kwargs)
    started = time.monotonic()
    res = world.run(*world.promote())
    elapsed = time.monotonic() - started
    case.observed(world.observed(res))
    assert res.code == 3, res.stderr[-3000:]
    assert_one_line_error(res, "Prometheus")
    assert res.json()["result"] == "error"
    assert world.written_weights() == [50, 0]
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Failed"
    assert "metrics unavailable" in state["reason"]
    for word in words:
        assert word.lower() in state["reason"].lower(), state["reason"]
    assert elapsed >= PROM_RETRY_BUDGET, "gave up before the retry budget was spent"


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
}


@pytest.mark.parametrize("bad", list(BAD_DATA))
def test_bad_canary_data_is_inconclusive_never_a_pass(
    world: FaultWorld, case: Case, bad: str
) -> None:
    """The canary's value for one metric is empty / NaN / +Inf / -Inf / several series at every
    analysis: that metric is inconclusive with a reason every time, the rollout is held, then
    rolled back after inconclusiveLimit (1): exit 1, weights 100/0, never promoted."""
    match, transform, metric, words = BAD_DATA[bad]
    case(
        f"{bad} answer for the canary's {metric}",
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
        assert m["verdict"] == "inconclusive" and m["value"] is None, m
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
    every analysis still passes with plausible request counts and the canary is promoted."""
    case(
        f"counter reset of canary and stable mid-step 2 (judge {judge})",
        "every analysis passes with plausible counts; exit 0, promoted, weights written "
        "40,70,100,100",
    )
    traffic = world.sb.traffic

    def restart_pods() -> None:
        traffic.reset_counters(world.sb.canary_workload)
        traffic.reset_counters(world.sb.stable_workload)

    world.when_written(2, restart_pods, delay=1.0)
    policy = world.policy(steps=[40, 70, 100], judge=judge, minRequests=20)
    res = world.run(*world.promote(policy=policy))
    case.observed(world.observed(res))
    assert res.code == 0, res.stderr[-3000:]
    assert_clean_success(res)
    data = res.json()
    assert data["result"] == "promoted"
    assert [s["verdict"] for s in data["steps"]] == ["pass", "pass", "pass"]
    assert world.written_weights() == [40, 70, 100, 100]
    for step in data["steps"]:
        for m in step["metrics"]:
            if m["requests"] is not None:  # 100 req/s, 2-3 s windows: never thousands
                assert 0 < m["requests"] < 1500, m
    state = world.state()
    assert state is not None
    for entry in state["counts"]:
        assert 0 < entry["canary_requests"] < 1500, entry
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
    case.observed(world.observed(res) + f"; retries logged {_retries(res.stderr)}")
    assert res.code == 0, res.stderr[-3000:]
    assert_clean_success(res)
    assert _retries(res.stderr) >= 1
    assert res.json()["result"] == "promoted"
    assert world.written_weights() == [50, 100, 100]
    assert world.weights() == [("v1", 0), ("v2", 100)]


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
    status = world.run("status", APP, "-n", NS, "-o", "json")
    assert status.code == 0 and status.json()["phase"] == "Failed"
