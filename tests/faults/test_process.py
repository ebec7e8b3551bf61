"""Signals to a running ``canaryctl promote``: SIGTERM and SIGINT while it waits for a step's
window, and while a VirtualService PATCH is in flight (the emulator holds that PATCH 3 s).

Promised (README "Exit codes"): 130, interrupted (Ctrl-C / SIGTERM while following): the rollout
stays in the cluster; run ``promote`` again to attach. With ``-o json`` stdout is exactly one
JSON object (``result: interrupted``). Afterwards the VirtualService is consistent (every route
sums to 100, the annotation's weight is the route's weight) and a restart resumes and finishes
without repeating or skipping a step.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.conftest import Case, FaultWorld, assert_clean_success

VS_PATH = r"/virtualservices/rest-apl-vs$"
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def _vs_patches(world: FaultWorld) -> int:
    """VirtualService PATCHes the emulator has finished with (any status)."""
    return sum(
        1 for w in world.sb.emulator.writes if w.method == "PATCH" and "virtualservices" in w.path
    )


@pytest.mark.parametrize("moment", ["start-patch-in-flight", "waiting", "patch-in-flight"])
@pytest.mark.parametrize("sig", list(SIGNALS))
def test_signal_to_promote_exits_130_leaves_consistent_state_and_restart_finishes(
    world: FaultWorld, case: Case, sig: str, moment: str
) -> None:
    """``sig`` reaches ``promote -o json`` while the emulator holds its first PATCH (the start,
    0.7 s into 3 s), while it waits at step 1 (0.5 s after the write), or 1 s into the 3 s the
    emulator holds the step-2 PATCH: the PATCH completes, then exit 130 with one JSON object
    ``result: interrupted`` and no traceback, lease released; the VirtualService is consistent;
    ``promote`` again attaches and promotes, the weights written overall being 50, 100, 100."""
    case(
        f"{sig} to promote while {moment.replace('-', ' ')}",
        "exit 130, stdout {result: interrupted}, no traceback; VS consistent (sums to 100, "
        "annotation = weights); restart exits 0 promoted, writes 50,100,100 overall",
    )
    world.extra_env["CANARYCTL_LEASE_SECONDS"] = "4"  # a lease left behind expires quickly
    policy = world.policy()
    emulator = world.sb.emulator
    if moment == "start-patch-in-flight":
        emulator.inject("PATCH", VS_PATH, None, times=1, delay=3.0)
    proc = world.popen(*world.promote(policy=policy))
    patches = 0
    if moment == "start-patch-in-flight":
        world.wait_for(
            "the rollout's lease",
            lambda: any(w.method == "POST" and "/leases" in w.path for w in emulator.writes),
        )
        time.sleep(0.7)  # lease taken; the start PATCH follows within ms and is held 3 s
        assert _vs_patches(world) == 0, "the start PATCH was not in flight at the signal"
    else:
        world.wait_written(1)
        patches = _vs_patches(world)
    if moment == "waiting":
        time.sleep(0.5)
    elif moment == "patch-in-flight":
        t0 = time.monotonic()
        world.sb.emulator.inject("PATCH", VS_PATH, None, times=1, delay=3.0)
        world.wait_for("the step-1 analysis", lambda: world.analysis_queries_since(t0) > 0)
        time.sleep(1.0)  # the analysis takes ~0.1 s; the advance PATCH is now held in flight
        assert _vs_patches(world) == patches, "the PATCH was not in flight at the signal"
    proc.send_signal(SIGNALS[sig])
    first = world.finish(proc, timeout=30)
    if moment.endswith("patch-in-flight"):  # let the emulator finish the held PATCH first
        world.wait_for("the held PATCH", lambda: _vs_patches(world) > patches, timeout=10)
    state = world.consistent()
    holder = world.lease_holder()
    after_signal = world.observed(first) + f"; lease {'released' if holder == '' else 'HELD'}"
    again = world.run(*world.promote(policy=policy), timeout=60)
    case.observed(
        f"signalled: {after_signal}; then promote again: exit {again.code}; {world.observed()}"
        f"; written {world.written_weights()}"
    )
    assert first.code == 130, first.stderr[-3000:]
    assert "Traceback" not in first.stderr and "internal error" not in first.stderr
    assert first.json()["result"] == "interrupted"
    assert state is not None and state["phase"] == "Progressing", state
    assert holder == "", "the interrupted process did not release the rollout's lease"
    assert again.code == 0, again.stderr[-3000:]
    assert_clean_success(again)
    assert again.json()["result"] == "promoted"
    final = world.consistent()
    assert final is not None and final["phase"] == "Promoted"
    assert world.weights() == [("v1", 0), ("v2", 100)]
    assert world.written_weights() == [50, 100, 100]
    passed = [(h["step"], h["weight"]) for h in final["history"] if h["verdict"] == "pass"]
    assert passed == [(1, 50), (2, 100)], final["history"]
