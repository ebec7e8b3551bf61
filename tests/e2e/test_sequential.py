"""The sequential judge end to end against the real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from canaryctl.sandbox.traffic import Profile
from tests.e2e.conftest import World
from tests.forkcli import Zygote
from tests.sandboxes import WorkerSandbox


@pytest.fixture
def busy_world(
    tmp_path: Path, worker_sandbox: WorkerSandbox, zygote: Zygote | None
) -> Iterator[World]:
    """rest-apl at 400 req/s with stable answering 2 % errors (a degraded but live stable)."""
    sandbox = worker_sandbox.get(rps=400)
    sandbox.traffic.set_profile("rest-apl-v1", Profile(error_rate=0.02, latency_ms=40))
    world = World(sandbox, tmp_path, zygote)
    try:
        yield world
    finally:
        world.close()


def _sequential_policy(world: World) -> str:
    return str(world.policy(judge="sequential", interval="3s", minRequests=50, inconclusiveLimit=3))


def test_three_times_the_errors_of_stable_is_rolled_back(busy_world: World) -> None:
    """A canary with 3x stable's error rate (6 % vs 2 %) is rolled back by the e-process, not
    by the floor (stable is below 99 % too), with the evidence in the JSON output."""
    world = busy_world
    world.sb.traffic.set_profile("rest-apl-v2", Profile(error_rate=0.06, latency_ms=40))
    res = world.run(*world.promote("-o", "json", policy=_sequential_policy(world)))
    assert res.code == 1, res.stderr
    data = res.json()
    assert data["judge"] == "sequential"
    assert "sequential test rejected" in data["reason"]
    last = {m["name"]: m for m in data["steps"][-1]["metrics"]}
    seq = last["sequential-error-rate"]
    assert seq["verdict"] == "fail"
    assert seq["evidence"]["eValue"] >= 100
    assert seq["evidence"]["ratio"] > 1.2 and seq["evidence"]["canaryBad"] > 0
    assert last["success-rate-floor"]["verdict"] == "pass"  # stable degraded: not the floor
    assert max(world.written_weights()) <= 60
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.state()
    assert state is not None and state["counts"], "per-window counts are kept in the state"
    # the same policy replayed on what Prometheus recorded: the workloads come from the
    # rollout just recorded on the VirtualService, and the replay rolls back too
    span = ("--from", str(state["started_at"]), "--to", str(state["finished_at"] + 9))
    replay = world.run("backtest", "rest-apl", "-n", "istio-apl", "--policy",
                       _sequential_policy(world), *span, "-o", "json")  # fmt: skip
    assert replay.code == 0, replay.stderr
    replayed = replay.json()
    assert replayed["outcome"] == "rolled_back", replayed
    assert max(a["weight"] for a in replayed["analyses"]) <= 60


def test_canary_as_good_as_a_degraded_stable_is_promoted(busy_world: World) -> None:
    """Same 2 % errors in both versions: a threshold judge (min 99) would roll back; the
    sequential judge promotes, and `status` shows the e-value evidence."""
    world = busy_world
    world.sb.traffic.set_profile("rest-apl-v2", Profile(error_rate=0.02, latency_ms=40))
    res = world.run(*world.promote("-o", "json", policy=_sequential_policy(world)))
    assert res.code == 0, res.stderr
    status = world.run("status", "rest-apl", "-n", "istio-apl", "-o", "json", prometheus=False)
    data = status.json()
    assert data["phase"] == "Promoted" and data["judge"] == "sequential"
    seq = [m for s in data["steps"] for m in s["metrics"] if m["name"] == "sequential-error-rate"]
    assert seq and all(m["verdict"] == "pass" for m in seq)
    assert seq[-1]["evidence"]["eValue"] < 100
    text = world.run("status", "rest-apl", "-n", "istio-apl", prometheus=False).stdout
    assert "judge sequential" in text
    assert "sequential-error-rate" in text and "e-value" in text
