"""``canaryctl promote`` as a real subprocess against the emulator and a real Prometheus."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import World
from tests.istio_schema import validate_virtual_service


def test_healthy_canary_is_promoted_through_every_step_in_order(world: World) -> None:
    """A healthy canary exits 0 and the weights written are 20, 40, 60, 80, 100 in order."""
    res = world.run(*world.promote("-o", "json"))
    assert res.code == 0, res.stderr
    data = res.json()
    assert data["result"] == "promoted"
    assert (data["stable"], data["canary"]) == ("rest-apl/v1", "rest-apl/v2")
    assert world.distinct_weights() == [20, 40, 60, 80, 100]
    passed = [s["weight"] for s in data["steps"] if s["verdict"] == "pass"]
    assert passed == [20, 40, 60, 80, 100]
    assert all(s["verdict"] != "fail" for s in data["steps"])
    for step in data["steps"]:
        if step["verdict"] == "pass":
            for m in step["metrics"]:
                assert m["requests"] >= 10 and m["value"] is not None and m["threshold"]
    assert world.weights() == [("v1", 0), ("v2", 100)]
    assert world.state()["phase"] == "Promoted"
    validate_virtual_service(world.vs())
    events = world.sb.emulator.list("v1", "Event", "istio-apl")
    reasons = [e["reason"] for e in events]
    assert reasons.count("StepAdvanced") == 4 and reasons[0] == "RolloutStarted"
    assert reasons[-1] == "Promoted"
    assert all(e["involvedObject"]["name"] == "rest-apl-vs" for e in events)


@pytest.mark.parametrize("world", ["errors", "latency"], indirect=True)
def test_bad_canary_is_rolled_back_at_the_first_step(world: World) -> None:
    """A 25 %-error or 900 ms canary exits 1; the history ends at 0, never past step two."""
    res = world.run(*world.promote("-o", "json"))
    assert res.code == 1, res.stderr
    data = res.json()
    assert data["result"] == "rolled_back"
    written = world.written_weights()
    assert written[-1] == 0
    assert max(written) <= 40
    failing = data["steps"][-1]["metrics"]
    metric = "request-success-rate" if world.sb.scenario == "errors" else "request-duration"
    assert any(m["name"] == metric and m["verdict"] == "fail" for m in failing)
    assert world.weights() == [("v1", 100), ("v2", 0)]
    validate_virtual_service(world.vs())


def test_no_canary_traffic_never_promotes(world: World) -> None:
    """Without traffic every analysis is inconclusive: held, then rolled back, never promoted."""
    world.sb.traffic.pause()
    res = world.run(*world.promote("-o", "json", policy=world.policy(inconclusiveLimit=1)))
    assert res.code == 1, res.stderr
    data = res.json()
    assert [s["verdict"] for s in data["steps"]] == ["inconclusive", "inconclusive"]
    assert "inconclusive" in data["reason"]
    assert world.written_weights() == [20, 20, 0]
    assert world.weights() == [("v1", 100), ("v2", 0)]


def test_no_canary_traffic_pauses_with_exit_4_after_max_window(world: World) -> None:
    """whenNoEvidence pause: the window grows to maxWindow, then exit 4; the canary keeps 20 %."""
    world.sb.traffic.pause()
    pol = world.policy(inconclusiveLimit=None, maxWindow="6s", whenNoEvidence="pause")
    res = world.run(*world.promote("-o", "json", policy=pol))
    assert res.code == 4, res.stderr
    data = res.json()
    assert (data["result"], data["phase"], data["weight"]) == ("paused", "Paused", 20)
    assert [s["action"] for s in data["steps"]] == ["hold", "pause"]
    assert data["steps"][-1]["window"] >= 6
    assert "maxWindow 6s" in data["reason"]
    assert world.weights() == [("v1", 80), ("v2", 20)]


def test_unreachable_prometheus_exits_3_before_any_write(world: World) -> None:
    """Prometheus down at the start: exit 3 after the retry budget, nothing shifted."""
    res = world.run(
        *world.promote("--prometheus-url", "http://127.0.0.1:9", "-o", "json"),
        prometheus=False,
    )
    assert res.code == 3, res.stderr
    assert res.json()["result"] == "error"
    assert "Prometheus" in res.stderr and "Traceback" not in res.stderr
    assert world.cluster_writes() == []
    assert world.weights() == [("v1", 80), ("v2", 20)]


def test_prometheus_lost_mid_rollout_puts_traffic_back_on_stable(world: World) -> None:
    """Prometheus dies after the first step: exit 3, weights 100/0, phase Failed with reason."""
    proc = world.popen(*world.promote("-o", "json", policy=world.policy(interval="4s")))
    try:
        written: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not written:
            written = world.written_weights()
            time.sleep(0.1)
        assert written == [20]
        world.stop_prometheus()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    state = world.state()
    assert state is not None and state["phase"] == "Failed"
    assert "metrics unavailable" in state["reason"]
    assert world.weights() == [("v1", 100), ("v2", 0)]
    assert '"result": "error"' in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["promote", "no-such-app", "-n", "istio-apl"], "no-such-app"),
        (["promote", "rest-apl", "-n", "istio-apl", "--canary", "v9"], "v9"),
        (["promote", "rest-apl", "-n", "istio-apl", "--virtual-service", "nope"], "nope"),
        (
            ["promote", "rest-apl", "-n", "istio-apl", "--policy", "/no/such/policy.yaml"],
            "--policy",
        ),
    ],
)
def test_invalid_input_exits_2_with_zero_writes(world: World, args: list[str], needle: str) -> None:
    """Unknown app, unknown subset, unknown VirtualService, missing policy: exit 2, no write."""
    if "--policy" not in args:
        args = [*args, "--policy", str(world.policy())]
    res = world.run(*args)
    assert res.code == 2, res.stderr
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()[-1]) < 400
    assert world.cluster_writes() == []


def test_bad_policy_exits_2_naming_the_field_with_zero_writes(world: World) -> None:
    """A policy with steps out of order is rejected before any cluster access."""
    path = world.policy(steps=[40, 20, 100])
    res = world.run(*world.promote(policy=path))
    assert res.code == 2
    assert "spec.steps: must be strictly increasing and end at 100, got [40, 20, 100]" in res.stderr
    assert world.cluster_writes() == []


def test_unavailable_canary_fails_preflight(world: World) -> None:
    """A canary Deployment with no available replicas: exit 2 before anything is written."""
    world.sb.emulator.set_deployment_available("istio-apl", "rest-apl-v2", False)
    world.sb.emulator.clear_writes()
    res = world.run(*world.promote())
    assert res.code == 2
    assert "rest-apl-v2" in res.stderr and "not available" in res.stderr
    assert world.cluster_writes() == []


def test_dry_run_prints_the_plan_and_writes_nothing(world: World) -> None:
    """--dry-run shows the steps and the first JSON patch; the cluster is untouched."""
    res = world.run(*world.promote("--dry-run", "-o", "json"))
    assert res.code == 0, res.stderr
    plan = res.json()["plan"]
    assert plan["steps"] == [20, 40, 60, 80, 100]
    assert plan["firstPatch"][0]["path"] == "/metadata/resourceVersion"
    assert plan["weightsAfterFirstPatch"] == [[80, 20]]
    assert world.cluster_writes() == []


def test_prometheus_secrets_never_reach_logs_output_events_or_state(world: World) -> None:
    """A bearer token and a basic-auth password (files) are used but never appear in stdout,
    stderr, Kubernetes events or the rollout state stored on the VirtualService."""
    token, password = "tok-9f8e7d6c5b4a-SECRET", "pw-1a2b3c4d-SECRET"
    (world.tmp / "token").write_text(token)
    (world.tmp / "pw").write_text(password)
    policy = world.policy(
        prometheus={
            "timeout": "2s",
            "retryBudget": "3s",
            "bearerTokenFile": str(world.tmp / "token"),
            "headers": {"X-Scope-OrgID": "tenant-a"},
        }
    )
    res = world.run(*world.promote("-o", "json", "--log-level", "debug", policy=policy))
    assert res.code == 0, res.stderr
    basic = world.policy(
        prometheus={
            "basicAuth": {"username": "canary", "passwordFile": str(world.tmp / "pw")},
        }
    )
    status = world.run("status", "rest-apl", "-n", "istio-apl", "-o", "json", prometheus=False)
    dry = world.run(*world.promote("--dry-run", "-o", "json", "--log-level", "debug", policy=basic))
    events = world.sb.emulator.list("v1", "Event", "istio-apl")
    everything = "".join(
        [
            res.stdout,
            res.stderr,
            status.stdout,
            status.stderr,
            dry.stdout,
            dry.stderr,
            str(events),
            str(world.vs()),
        ]
    )
    assert token not in everything and password not in everything
    assert "SECRET" not in everything
