"""Kill test: SIGKILL `promote` and `reconcile` at seeded random moments, restart, and check
after every kill that nothing was lost: each route sums to 100, the annotation parses and
matches the weights, no step is repeated or skipped, and the end equals an uninterrupted run.

Each seeded run is its own test (its own random generator, seeded by mode and run), so xdist
spreads the runs over the workers. The 10 runs of a mode must see at least 10 kills between
them: each run records its count in the session's temporary directory (shared by the xdist
workers), and the run that completes the set checks the sum.

``promote`` runs are forked from the zygote (``tests/forkcli.py``): the kill moment, 0 to 3.5 s
after the start, always falls inside the first process's work (two analysis intervals of 2 s).
``reconcile`` passes are ``python -m canaryctl`` processes: a forked pass does its work in ~10 ms
after taking the lease, too short a window for a kill drawn from 0 to 0.4 s to land in, while a
fresh interpreter's pass spends ~0.4 s there (importing what the work needs)."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import time
from subprocess import TimeoutExpired
from typing import Any

import pytest

from canaryctl.rollout import REF_ANNOTATION
from canaryctl.sandbox import load_manifests, manifests_dir
from tests.e2e.conftest import NS, Process, World

RUNS = 10  # per mode: 20 runs in all
STEPS = [50, 100]
MAX_KILLS_PER_RUN = 2


@pytest.fixture
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """A killed holder's lease expires after 2 s instead of 15 s, so restarts are quick."""
    monkeypatch.setenv("CANARYCTL_LEASE_SECONDS", "2")


def _seed(world: World) -> None:
    vs = next(d for d in load_manifests(manifests_dir()) if d["kind"] == "VirtualService")
    world.sb.emulator.apply([vs])
    world.sb.emulator.delete(
        "coordination.k8s.io/v1", "Lease", "istio-apl", "canaryctl.rest-apl-vs"
    )
    world.sb.emulator.clear_writes()


def _check_consistent(world: World) -> dict[str, object] | None:
    """What must hold at any moment, in particular right after a SIGKILL."""
    vs = world.vs()
    for route in vs["spec"]["http"]:
        weights = [int(d.get("weight", 0)) for d in route["route"]]
        assert sum(weights) == 100, weights
    state = world.state()
    if state is not None:
        assert dict(world.weights())["v2"] == state["weight"]
        passed = [h["step"] for h in state["history"] if h["verdict"] == "pass"]
        assert passed == list(range(1, len(passed) + 1)), passed  # none repeated or skipped
        assert state["step_index"] == len(passed) - (1 if state["phase"] == "Promoted" else 0)
    # every written step follows the previous one: holds allowed, no jump, no going back
    written = world.written_weights()
    for a, b in itertools.pairwise(written):
        assert b == a or (a in STEPS and b == STEPS[min(STEPS.index(a) + 1, len(STEPS) - 1)]), (
            written
        )
    return state


def _kill_while_working(world: World, proc: Process, delay: float) -> bool:
    """SIGKILL ``delay`` seconds after the process took the rollout's lease, i.e. inside the
    part of a reconcile pass that analyses and writes; False when it ended first (a pass with
    nothing due never takes the lease).

    A reconcile pass is short (~2 s, nearly all interpreter start-up; ~0.4 s from the lease to
    exit on an idle machine), so a moment drawn from the start of the process would mostly land
    before the work or after the exit, and the number of kills would depend on the machine's
    speed."""
    seen = len(world.sb.emulator.writes)
    while proc.poll() is None:
        if any("/leases" in w.path and w.status < 300 for w in world.sb.emulator.writes[seen:]):
            return _kill_at(proc, delay)
        time.sleep(0.01)
    return False


def _kill_at(proc: Process, delay: float) -> bool:
    """SIGKILL after ``delay`` seconds unless it ended; True when it was killed."""
    try:
        proc.wait(timeout=delay)
        return False
    except TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def _kills_of_all_runs(
    factory: pytest.TempPathFactory, mode: str, run: int, kills: int
) -> int | None:
    """Record this run's kills; the total of the mode's runs once all of them have recorded
    theirs in this session (None before, or when only some runs were selected)."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # popen-gwN/..: the session's directory, shared by the workers
    folder = base / "kill-counts"
    folder.mkdir(exist_ok=True)
    (folder / f"{mode}-{run}.part").write_text(str(kills))
    (folder / f"{mode}-{run}.part").rename(folder / f"{mode}-{run}")
    counts = [folder / f"{mode}-{r}" for r in range(RUNS)]
    if not all(path.exists() for path in counts):
        return None
    return sum(int(path.read_text()) for path in counts)


@pytest.mark.parametrize("run", range(RUNS))
@pytest.mark.parametrize("mode", ["promote", "reconcile"])
def test_sigkill_at_random_moments_loses_nothing(
    world: World,
    short_leases: None,
    tmp_path_factory: pytest.TempPathFactory,
    mode: str,
    run: int,
) -> None:
    """One seeded run: killed up to twice at a random moment, then resumed by a new process; it
    ends promoted with the history of an uninterrupted run."""
    rng = random.Random(f"kill-{mode}-{run}")
    policy = str(world.policy(interval="2s", minRequests=3, inconclusiveLimit=5, steps=STEPS))
    _seed(world)
    if mode == "reconcile":
        assert world.run(*world.promote("--no-wait", policy=policy)).code == 0
    kills = 0
    for _attempt in range(60):
        if mode == "reconcile":
            proc = world.popen("reconcile", "-n", "istio-apl", quiet=True, fork=False)
        else:
            proc = world.popen(*world.promote(policy=policy), quiet=True)
        if kills < MAX_KILLS_PER_RUN and mode == "reconcile":
            killed = _kill_while_working(world, proc, rng.uniform(0.0, 0.4))
        elif kills < MAX_KILLS_PER_RUN:
            killed = _kill_at(proc, rng.uniform(0.0, 3.5))
        else:
            proc.wait(timeout=120)
            killed = False
        kills += killed
        state = _check_consistent(world)
        if state is not None and state["phase"] == "Promoted":
            break
        if mode == "reconcile" and not killed:
            time.sleep(0.5)
    else:
        raise AssertionError(f"run {run} did not finish: {world.state()}")
    final = world.state()
    assert final is not None and final["phase"] == "Promoted", final
    assert [h["weight"] for h in final["history"] if h["verdict"] == "pass"] == STEPS
    assert world.weights() == [("v1", 0), ("v2", 100)]
    assert sorted(set(world.written_weights())) == STEPS
    total = _kills_of_all_runs(tmp_path_factory, mode, run, kills)
    assert total is None or total >= RUNS, f"only {total} kills in the {RUNS} {mode} runs"


TWO_OBJECT_RUNS = 3
FOLLOWER_DELAY = 0.4  # the emulator holds every read of rest-apl-mesh this long


def _follower_lags(world: World, state: dict[str, Any] | None) -> bool:
    """rest-apl-mesh is consistent with itself (its weights are the ones its pointer records;
    each route sums to 100) and at most behind the state, never ahead; True when behind."""
    vs = world.sb.emulator.get("networking.istio.io/v1", "VirtualService", NS, "rest-apl-mesh")
    assert vs is not None
    weights = [int(d.get("weight", 100)) for d in vs["spec"]["http"][0]["route"]]
    assert sum(weights) == 100, weights
    text = (vs["metadata"].get("annotations") or {}).get(REF_ANNOTATION)
    if text is None:  # never written yet: still the plain route of the manifest
        assert weights == [100]
        return state is not None
    assert state is not None
    ref = json.loads(text)
    assert ref["startedAt"] == state["started_at"] and weights == [
        100 - ref["weight"],
        ref["weight"],
    ]
    assert ref["weight"] in STEPS[: STEPS.index(state["weight"]) + 1], (ref, state["weight"])
    return bool(ref["weight"] != state["weight"])


def _kill_between_patches(world: World, proc: Process, delay: float) -> bool:
    """SIGKILL ``delay`` s after a write of the primary landed, while the read before the
    follower's patch is held FOLLOWER_DELAY s by the emulator (so that patch is never sent);
    False when it ended first."""
    seen = len(world.sb.emulator.writes)
    while proc.poll() is None:
        if any(
            w.path.endswith("/rest-apl-vs") and w.landed for w in world.sb.emulator.writes[seen:]
        ):
            killed = _kill_at(proc, delay)
            time.sleep(FOLLOWER_DELAY + 0.2)  # a request in flight still completes, as on a server
            return killed
        time.sleep(0.01)
    return False


def _first_vs_write(world: World, proc: Process, seen: int) -> str | None:
    """The VirtualService of the first write ``proc`` lands (None if it ends without one)."""
    while True:
        for w in world.sb.emulator.writes[seen:]:
            if "/virtualservices/" in w.path and w.landed:
                return str(w.path.rsplit("/", 1)[1])
        if proc.poll() is not None:
            return None
        time.sleep(0.01)


@pytest.mark.parametrize("run", range(TWO_OBJECT_RUNS))
def test_sigkill_between_the_two_patches_of_a_step_loses_nothing(
    world: World, short_leases: None, run: int
) -> None:
    """rest-apl-vs and rest-apl-mesh move together; ``promote`` is SIGKILLed right after a
    write of the primary, before the follower's (at least once leaving the follower behind).
    The follower is never half-written or ahead, the next process writes it before anything
    else, and the run ends with both at 0/100 (an ended rollout's follower is repaired by the
    next ``reconcile``)."""
    rng = random.Random(f"kill-two-objects-{run}")
    policy = str(world.policy(interval="2s", minRequests=3, inconclusiveLimit=5, steps=STEPS))
    _seed(world)
    world.sb.emulator.apply(load_manifests(manifests_dir().parent / "rest-apl-mesh"))
    world.sb.emulator.inject("GET", "/rest-apl-mesh$", None, 10**6, FOLLOWER_DELAY)
    kills, lagging, lagged = 0, False, 0
    for _attempt in range(30):
        seen = len(world.sb.emulator.writes)
        proc = world.popen(*world.promote(policy=policy), quiet=True)
        if lagging:
            assert _first_vs_write(world, proc, seen) in (None, "rest-apl-mesh")
        if kills < MAX_KILLS_PER_RUN:
            kills += _kill_between_patches(world, proc, rng.uniform(0.0, FOLLOWER_DELAY / 2))
        else:
            proc.wait(timeout=120)
        state = _check_consistent(world)
        lagging = _follower_lags(world, state)
        lagged += lagging
        if state is not None and state["phase"] == "Promoted":
            break
    else:
        raise AssertionError(f"the run did not finish: {world.state()}")
    world.sb.emulator.clear_faults()
    assert world.run("reconcile", "-n", NS).code == 0
    assert not _follower_lags(world, world.state())
    assert world.weights() == [("v1", 0), ("v2", 100)]
    assert lagged >= 1, "no kill left the follower behind"
