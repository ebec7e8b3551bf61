"""In-cluster modes end to end: --no-wait + reconcile (CronJob), concurrency, operator verbs,
events, declarative start, and the daemon's /metrics scraped by the real Prometheus."""

from __future__ import annotations

import json
import signal
import time

import pytest
import requests

from tests.e2e.conftest import World


def _reconcile_until_done(world: World, policy: str, limit: int = 40) -> list[str]:
    actions = []
    for _ in range(limit):
        res = world.run("reconcile", "-n", "istio-apl", "-o", "json")
        assert res.code == 0, res.stderr
        for o in res.json()["rollouts"]:
            actions.append(o["action"])
        state = world.state()
        assert state is not None
        if state["phase"] not in ("Progressing", "Paused"):
            return actions
        time.sleep(1.0)
    raise AssertionError(f"rollout did not finish: {actions}")


def test_no_wait_then_repeated_reconcile_promotes(world: World) -> None:
    """CronJob simulation: promote --no-wait writes step 1; reconcile runs finish the job."""
    policy = str(world.policy())
    res = world.run(*world.promote("--no-wait", "-o", "json", policy=policy))
    assert res.code == 0, res.stderr
    assert res.json()["result"] == "started"
    assert world.written_weights() == [20]
    actions = _reconcile_until_done(world, policy)
    assert actions.count("advanced") == 4 and actions[-1] == "promoted"
    assert world.distinct_weights() == [20, 40, 60, 80, 100]
    assert world.weights() == [("v1", 0), ("v2", 100)]


@pytest.mark.parametrize("world", ["errors"], indirect=True)
def test_repeated_reconcile_rolls_back_a_bad_canary(world: World) -> None:
    """CronJob simulation: a failing canary is rolled back by reconcile (exit 0: an outcome)."""
    policy = str(world.policy())
    assert world.run(*world.promote("--no-wait", policy=policy)).code == 0
    actions = _reconcile_until_done(world, policy)
    assert actions[-1] == "rolled_back"
    assert world.weights() == [("v1", 100), ("v2", 0)]
    status = world.run(
        "status", "rest-apl", "-n", "istio-apl", "-o", "json", prometheus=False
    ).json()
    assert status["phase"] == "RolledBack" and status["steps"][-1]["verdict"] == "fail"


def test_two_promotes_at_once_only_one_acts(world: World) -> None:
    """Two processes started on the same rollout at the same moment: exactly one writes."""
    policy = str(world.policy())
    a = world.popen(*world.promote("-o", "json", policy=policy))
    b = world.popen(*world.promote("-o", "json", policy=policy))
    out_a, err_a = a.communicate(timeout=120)
    out_b, err_b = b.communicate(timeout=120)
    assert (a.returncode, b.returncode) == (0, 0), (err_a, err_b)
    assert json.loads(out_a)["result"] == json.loads(out_b)["result"] == "promoted"
    # every step written once: no duplicate start, no step skipped
    assert world.distinct_weights() == [20, 40, 60, 80, 100]
    starts = [
        w
        for w in world.vs_writes()
        if any('"step_index":0' in str(op.get("value", "")) for op in w.body)
    ]
    assert len(starts) == 1


def test_pause_resume_and_rollback_from_another_process(world: World) -> None:
    """Operator verbs act on a rollout driven by another process, which follows them."""
    policy = str(world.policy(interval="4s"))
    driver = world.popen(*world.promote("-o", "json", policy=policy))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not world.written_weights():
            time.sleep(0.1)
        assert world.run("pause", "rest-apl", "-n", "istio-apl", prometheus=False).code == 0
        paused_at = world.state()["weight"]
        time.sleep(8)  # two intervals: a paused rollout must not move
        assert world.state()["phase"] == "Paused" and world.state()["weight"] == paused_at
        assert world.run("resume", "rest-apl", "-n", "istio-apl", prometheus=False).code == 0
        assert world.state()["phase"] == "Progressing"
        assert world.run("rollback", "rest-apl", "-n", "istio-apl", prometheus=False).code == 0
        out, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 1, err
    assert json.loads(out)["result"] == "rolled_back"
    assert world.state()["reason"] == "rolled back by operator"
    assert world.weights() == [("v1", 100), ("v2", 0)]
    reasons = [e["reason"] for e in world.sb.emulator.list("v1", "Event", "istio-apl")]
    for expected in ("RolloutStarted", "Paused", "Resumed", "RolledBack"):
        assert expected in reasons


def test_force_promote_skips_remaining_analysis(world: World) -> None:
    """promote --force --yes on a rollout in progress promotes now and records it as forced."""
    policy = str(world.policy(interval="30s"))
    assert world.run(*world.promote("--no-wait", policy=policy)).code == 0
    res = world.run("promote", "rest-apl", "-n", "istio-apl", "--force", "--yes", "-o", "json")
    assert res.code == 0, res.stderr
    data = res.json()
    assert data["result"] == "promoted" and data["forced"] is True
    assert world.weights() == [("v1", 0), ("v2", 100)]
    listing = world.run("list", "-A", "-o", "json", prometheus=False).json()
    assert [r["phase"] for r in listing["rollouts"]] == ["Promoted"]


def test_annotation_starts_a_rollout_declaratively(world: World) -> None:
    """canaryctl.io/promote on the VirtualService: the next reconcile starts the rollout and
    removes the request annotations in the same patch."""
    vs = world.vs()
    vs["metadata"].setdefault("annotations", {})["canaryctl.io/promote"] = "v2"
    world.sb.emulator.apply([{**vs, "metadata": {**vs["metadata"]}}])
    res = world.run("reconcile", "-n", "istio-apl", "-o", "json")
    assert res.code == 0, res.stderr
    assert [o["action"] for o in res.json()["rollouts"]] == ["started"]
    annotations = world.vs()["metadata"]["annotations"]
    assert "canaryctl.io/promote" not in annotations
    assert world.state()["phase"] == "Progressing" and world.state()["weight"] == 20


def test_daemon_metrics_show_the_weight_moving_in_prometheus(world: World) -> None:
    """`canaryctl run`: /healthz, /readyz, and /metrics scraped by the real Prometheus show the
    canary weight moving; SIGTERM exits 0."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = str(world.policy(interval="2s"))
    assert world.run(*world.promote("--no-wait", policy=policy)).code == 0
    daemon = world.popen(
        "run", "-n", "istio-apl", "--interval", "1s", "--port", str(port), quiet=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        assert requests.get(f"{base}/healthz", timeout=1).text == "ok\n"
        world.sb.prometheus.add_target(f"127.0.0.1:{port}")
        seen: set[float] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and world.state()["phase"] == "Progressing":
            for r in world.sb.prometheus.query("canaryctl_rollout_canary_weight"):
                seen.add(float(r["value"][1]))
            time.sleep(0.5)
        for r in world.sb.prometheus.query("canaryctl_rollout_canary_weight"):
            seen.add(float(r["value"][1]))
        assert world.state()["phase"] == "Promoted"
        assert len(seen) >= 2 and max(seen) == 100.0, seen
        text = requests.get(f"{base}/metrics", timeout=1).text
        assert "canaryctl_leader 1.0" in text
        assert "canaryctl_rollout_metric_threshold{" in text
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
        assert daemon.returncode == 0
    finally:
        daemon.kill()


def test_reconcile_pass_skips_a_rollout_paused_after_it_was_listed(world: World) -> None:
    """The race of a CronJob pass with an operator: the pass lists the VirtualServices (the
    rollout is due), then ``canaryctl pause`` writes, then the pass takes the lease. The pass
    must act on the stored state, not the listed one: "skipped", no analysis, no write; the
    rollout stays paused at its weight. Run in-process to place the pause exactly there."""
    from canaryctl import operations, reconcile
    from canaryctl.controller import Controller, read_state
    from canaryctl.kube import KubeClient
    from canaryctl.mesh._base import get_router
    from canaryctl.metrics._base import get_provider
    from canaryctl.policy import load_policy

    kube = KubeClient.connect(kubeconfig=world.kubeconfig)
    ctl = Controller(
        kube=kube,
        router=get_router("istio", kube),
        provider_for=get_provider,
        prometheus_url=world.sb.prometheus.url,
    )
    policy = load_policy(world.policy(interval="1s")).with_prometheus_url(world.sb.prometheus.url)
    started = operations.promote(
        ctl, app="rest-apl", namespace="istio-apl", policy=policy, wait=False
    )
    assert started.result == "started" and started.state is not None
    listed = read_state(ctl.router.list("istio-apl")[0])
    assert listed == started.state
    time.sleep(1.1)  # the step is due
    paused = operations.pause(ctl, app="rest-apl", namespace="istio-apl", vs_names=())
    assert paused.state is not None and paused.state.phase == "Paused"
    writes = len(world.cluster_writes())
    outcome = reconcile._advance(ctl, listed, ctl.clock())
    assert (outcome.action, outcome.phase) == ("skipped", "Paused"), outcome
    assert outcome.detail == "changed by another actor meanwhile"
    vs_writes = [w for w in world.cluster_writes()[writes:] if "virtualservices" in w.path]
    assert vs_writes == []
    assert world.state()["phase"] == "Paused" and world.weights() == [("v1", 80), ("v2", 20)]
