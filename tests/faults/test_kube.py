"""Kubernetes API faults, injected into the strict API emulator (``EmulatorServer.inject``),
RBAC denials (``set_rbac``), a concurrent writer, and objects changed behind canaryctl's back.

Promised (README, kube.py, controller.py): 5xx, 429 and timeouts are retried for
``CANARYCTL_KUBE_RETRY_SECONDS``; a 409 re-reads and recomputes so a concurrent edit of another
field is kept; a 403 is exit 3 naming the verb and the resource; after retries exit 3 with
traffic back on stable when the cluster can still be written; a canary that becomes unavailable
mid-rollout is rolled back (exit 1).
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from canaryctl.sandbox import load_manifests
from tests.e2e.conftest import NS
from tests.faults.conftest import (
    KUBE_RETRY_SECONDS,
    VS,
    Case,
    FaultWorld,
    assert_clean_success,
    assert_one_line_error,
    log_events,
    role_rules,
)

VS_PATH = r"/virtualservices/rest-apl-vs$"
GROUP = "networking.istio.io"


def _kube_retries(stderr: str) -> int:
    return sum(1 for e in log_events(stderr) if e.get("event") == "kube.retry")


def _manifest(kind: str, name: str) -> dict[str, Any]:
    return copy.deepcopy(
        next(d for d in load_manifests() if d["kind"] == kind and d["metadata"]["name"] == name)
    )


def _assert_promoted(world: FaultWorld, res: Any) -> None:
    assert res.code == 0, res.stderr[-3000:]
    assert_clean_success(res)
    assert res.json()["result"] == "promoted"
    assert world.written_weights() == [50, 100, 100]
    assert world.weights() == [("v1", 0), ("v2", 100)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Promoted"


# The traffic simulator reads the VirtualService through the same URL 5 times a second, so a
# fault on "the next N GETs" of it would mostly hit the simulator: those faults are windows
# (every matching request for W seconds) and only the PATCH / LIST faults are counted.
# name -> (method, path regex, status, count or None, window seconds or None)
BURSTS: dict[str, tuple[str, str, int | None, int | None, float | None]] = {
    "PATCH-vs-500-x3": ("PATCH", VS_PATH, 500, 3, None),
    "LIST-deployments-502-x3": ("GET", r"/deployments$", 502, 3, None),
    "GET-vs-503-for-1.5s": ("GET", VS_PATH, 503, None, 1.5),
    "GET-vs-429-for-1.5s": ("GET", VS_PATH, 429, None, 1.5),
}


def _burst(world: FaultWorld, spec: tuple[Any, ...], delay: float = 0.0) -> None:
    method, path, status, count, window = spec
    emulator = world.sb.emulator
    if count is not None:
        emulator.inject(method, path, status, times=count, delay=delay)
        return
    emulator.inject(method, path, status, times=100_000, delay=delay)
    time.sleep(window)
    emulator.clear_faults()


@pytest.mark.parametrize("burst", list(BURSTS))
def test_kube_error_burst_mid_rollout_is_retried_and_rollout_promotes(
    world: FaultWorld, case: Case, burst: str
) -> None:
    """Once step 1 is written, the next 3 matching API requests (or every one for 1.5 s)
    fail with 5xx/429: each is retried within the budget and the rollout completes exactly as
    without the fault."""
    spec = BURSTS[burst]
    case(
        f"API {burst} once step 1 is written",
        "retried; exit 0, promoted, weights written 50,100,100, final 0/100",
    )
    world.when_written(1, lambda: _burst(world, spec))
    res = world.run(*world.promote())
    retries = _kube_retries(res.stderr)
    case.observed(world.observed(res) + f"; kube retries logged {'>= 1' if retries else 0}")
    count = spec[3]
    if count is not None:
        assert retries == count, res.stderr[-3000:]
    else:
        assert retries >= 1, res.stderr[-3000:]
    _assert_promoted(world, res)


# name -> (method, path regex, status, count or None, window or None, delay)
SLOW: dict[str, tuple[str, str, int | None, int | None, float | None, float]] = {
    "PATCH-vs-served-after-3s-x2": ("PATCH", VS_PATH, None, 2, None, 3.0),
    "GET-vs-served-after-3s-for-1s": ("GET", VS_PATH, None, None, 1.0, 3.0),
    "PATCH-vs-504-after-1.5s-x2": ("PATCH", VS_PATH, 504, 2, None, 1.5),
}


@pytest.mark.parametrize("slow", list(SLOW))
def test_slow_or_timed_out_api_calls_are_waited_for_or_retried_and_rollout_promotes(
    world: FaultWorld, case: Case, slow: str
) -> None:
    """API calls answered after 3 s (below the 20 s read timeout) are waited for; a gateway
    timeout (504 after 1.5 s) is retried; the rollout completes."""
    *spec, delay = SLOW[slow]
    status = spec[2]
    case(
        f"API {slow} once step 1 is written",
        "waited for / retried; exit 0, promoted, weights written 50,100,100",
    )
    world.when_written(1, lambda: _burst(world, tuple(spec), delay=delay))
    res = world.run(*world.promote())
    case.observed(world.observed(res) + f"; kube retries logged {_kube_retries(res.stderr)}")
    assert _kube_retries(res.stderr) == (spec[3] if status else 0)
    _assert_promoted(world, res)


@pytest.mark.parametrize("which", [2, 3], ids=["advance", "promote"])
def test_write_applied_but_answered_504_is_recognised_as_ours(
    world: FaultWorld, case: Case, which: int
) -> None:
    """The API server commits the rollout's ``which``-th write but answers 504 (a real API
    server does so when its deadline passes after etcd committed; "the request may still be
    processed"). The retry is refused with 409 (the resourceVersion moved: by us), the re-read
    shows exactly the state canaryctl wrote, and it carries on as if the answer had arrived:
    no step repeated or skipped, every decision announced once, promoted."""
    step = {2: "the advance to 100 %", 3: "the promotion"}[which]
    case(
        f"API commits {step} but answers 504",
        "own write recognised after the 409; exit 0, promoted, weights written 50,100,100, "
        "one Kubernetes Event per decision",
    )
    world.when_written(
        which - 1,
        lambda: world.sb.emulator.inject("PATCH", VS_PATH, 504, times=1, applied=True),
    )
    res = world.run(*world.promote())
    case.observed(world.observed(res) + f"; kube retries logged {_kube_retries(res.stderr)}")
    assert _kube_retries(res.stderr) == 1, res.stderr[-3000:]
    answered = [w.status for w in world.sb.emulator.writes if "virtualservices" in w.path]
    assert answered == [200] * (which - 1) + [504, 409] + [200] * (3 - which), answered
    _assert_promoted(world, res)
    reasons = [e["reason"] for e in world.sb.emulator.list("v1", "Event", NS)]
    assert reasons == ["RolloutStarted", "StepAdvanced", "Promoted"], reasons
    assert not any(e.get("event") == "state.adopted" for e in log_events(res.stderr))


def test_api_failing_longer_than_retry_budget_puts_traffic_back_on_stable_and_exits_3(
    world: FaultWorld, case: Case
) -> None:
    """Listing Deployments answers 503 from step 1 on, longer than the kube retry budget, while
    the VirtualService can still be written: exit 3 with a one-line error, and (README "Exit
    codes": traffic back on stable when the cluster can still be written, the state says why)
    weights 100/0 and phase Failed."""
    case(
        f"LIST deployments 503 from step 1 on (> {KUBE_RETRY_SECONDS}s budget); VS writable",
        "exit 3, one-line error naming the API call, weights 100/0, phase Failed saying why",
    )
    world.when_written(
        1, lambda: world.sb.emulator.inject("GET", r"/deployments$", 503, times=10_000)
    )
    res = world.run(*world.promote())
    case.observed(world.observed(res))
    assert res.code == 3, res.stderr[-3000:]
    assert_one_line_error(res, "deployments", "503")
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Failed", state
    assert "deployments" in state["reason"]
    assert world.lease_holder() == "", "the rollout's lease was not released"


def test_rbac_revoked_mid_rollout_fails_back_to_stable_naming_verb_and_resource(
    world: FaultWorld, case: Case
) -> None:
    """Once step 1 is written the Role loses ``list deployments`` (checked before each
    analysis): exit 3 with one line naming the verb and the resource, traffic back on stable
    (the VirtualService can still be patched), phase Failed saying why, lease released."""
    case(
        "403 mid-rollout: RBAC loses list deployments after step 1",
        "exit 3, one-line error naming 'list' and 'deployments', weights 100/0, "
        "phase Failed naming the denial",
    )
    rules = role_rules() - {("list", "apps", "deployments")}
    world.when_written(1, lambda: world.sb.emulator.set_rbac(rules))
    res = world.run(*world.promote())
    case.observed(world.observed(res))
    assert res.code == 3, res.stderr[-3000:]
    assert_one_line_error(res, "forbidden", "list", "deployments")
    assert world.written_weights() == [50, 0]
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and state["phase"] == "Failed", state
    assert "forbidden" in state["reason"] and "deployments" in state["reason"]
    assert world.lease_holder() == "", "the rollout's lease was not released"


class ConcurrentWriter:
    """Another controller editing ``spec.http[0].timeout`` and an annotation of the same
    VirtualService in a loop: real ``kubernetes`` client, GET then PUT with the resourceVersion
    read (a 409 means: read again)."""

    def __init__(self, kubeconfig: str) -> None:
        self.api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.stop = threading.Event()
        self.written = 0
        self.conflicts = 0
        self.last: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            vs = self.custom.get_namespaced_custom_object(GROUP, "v1", NS, "virtualservices", VS)
            vs["spec"]["http"][0]["timeout"] = f"{seq % 50 + 1}s"
            vs["metadata"].setdefault("annotations", {})["faults.test/writer"] = str(seq)
            try:
                self.custom.replace_namespaced_custom_object(
                    GROUP, "v1", NS, "virtualservices", VS, vs
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.conflicts += 1
                continue
            self.written += 1
            self.last = seq
            time.sleep(0.02)

    def __enter__(self) -> ConcurrentWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.api.close()


def test_409_storm_from_a_concurrent_writer_converges_and_keeps_the_other_field(
    world: FaultWorld, case: Case
) -> None:
    """While another writer keeps changing ``spec.http[0].timeout`` and an annotation (GET +
    PUT with resourceVersion), canaryctl's first three patches are held 0.3 s in flight, so the
    other writer lands first and they get real 409s: canaryctl re-reads and recomputes, the
    rollout is promoted, and the other writer's last values are kept."""
    case(
        "409 storm: concurrent writer of spec.http[0].timeout + an annotation",
        "canaryctl gets 409s, re-reads, converges: exit 0, promoted 0/100; the other "
        "writer's last timeout and annotation kept",
    )
    world.sb.emulator.inject("PATCH", VS_PATH, None, times=3, delay=0.3)
    with ConcurrentWriter(world.kubeconfig) as writer:
        res = world.run(*world.promote())
    conflicts = [
        w
        for w in world.sb.emulator.writes
        if w.method == "PATCH" and "virtualservices" in w.path and w.status == 409
    ]
    vs = world.vs()
    kept = (
        vs["metadata"].get("annotations", {}).get("faults.test/writer") == str(writer.last)
        and vs["spec"]["http"][0].get("timeout") == f"{(writer.last or 0) % 50 + 1}s"
    )
    case.observed(
        world.observed(res) + f"; canaryctl 409s {'>= 3' if len(conflicts) >= 3 else 'fewer'}"
        f"; other writer's last values {'kept' if kept else 'LOST'}"
    )
    assert len(conflicts) >= 3, [(w.method, w.status) for w in world.sb.emulator.writes]
    assert writer.written >= 10, writer.written
    _assert_promoted(world, res)
    assert kept, (writer.last, vs["metadata"].get("annotations"), vs["spec"]["http"][0])


def test_rbac_without_patch_virtualservices_exits_3_naming_verb_and_resource(
    world: FaultWorld, case: Case
) -> None:
    """The Role of examples/cronjob minus ``patch virtualservices``: exit 3 with one line naming
    the verb (patch) and the resource (virtualservices), nothing shifted (80/20, no state)."""
    case(
        "403: RBAC without patch on virtualservices",
        "exit 3, one-line error naming 'patch' and 'virtualservices', 80/20 kept, no state",
    )
    rules = role_rules() - {("patch", GROUP, "virtualservices")}
    world.sb.emulator.set_rbac(rules)
    res = world.run(*world.promote())
    case.observed(world.observed(res))
    assert res.code == 3, res.stderr[-3000:]
    assert res.json()["result"] == "error"
    line = assert_one_line_error(res, "forbidden", "patch", "virtualservices")
    assert "rest-apl-vs" in line
    assert world.vs_writes() == []
    assert world.weights() == [("v1", 80), ("v2", 20)]
    assert world.state() is None


def test_virtualservice_deleted_mid_rollout_exits_3_with_a_clear_error(
    world: FaultWorld, case: Case
) -> None:
    """The VirtualService is deleted while step 1 waits: canaryctl stops with exit 3 (the
    rollout had changed the cluster, so this is not "invalid input") and one line saying the
    VirtualService was deleted during the rollout; no traceback, nothing re-created or written."""
    case(
        "VirtualService deleted mid-rollout",
        "exit 3, one-line error saying rest-apl-vs was deleted during the rollout, no "
        "traceback, no write after the deletion",
    )
    deleted: list[int] = []

    def delete() -> None:
        world.sb.emulator.delete("networking.istio.io/v1", "VirtualService", NS, VS)
        deleted.append(len(world.sb.emulator.writes))

    world.when_written(1, delete, delay=0.5)
    res = world.run(*world.promote())
    after = world.sb.emulator.writes[deleted[0] :] if deleted else []
    vs_after = [w for w in after if "virtualservices" in w.path and w.status < 300]
    case.observed(world.observed(res) + f"; VS writes after deletion {len(vs_after)}")
    assert deleted, "the VirtualService was not deleted"
    assert res.code == 3, res.stderr[-3000:]
    assert res.json()["result"] == "error"
    assert_one_line_error(res, "rest-apl-vs", "deleted during the rollout")
    assert vs_after == []
    assert world.sb.emulator.get("networking.istio.io/v1", "VirtualService", NS, VS) is None
    assert world.lease_holder() == "", "the rollout's lease was not released"


def _scale_canary_to_zero(world: FaultWorld) -> None:
    deployment = _manifest("Deployment", world.sb.canary_workload)
    deployment["spec"]["replicas"] = 0
    world.sb.emulator.apply([deployment])


CANARY_LOSS = {
    "unavailable": lambda w: w.sb.emulator.set_deployment_available(
        NS, w.sb.canary_workload, False
    ),
    "scaled-to-0": _scale_canary_to_zero,
}


@pytest.mark.parametrize("how", list(CANARY_LOSS))
def test_canary_deployment_lost_mid_rollout_is_rolled_back_naming_it(
    world: FaultWorld, case: Case, how: str
) -> None:
    """The canary Deployment becomes unavailable (or is scaled to 0) while step 1 waits: the
    next analysis rolls back: exit 1, weights 100/0, phase RolledBack, reason naming the
    Deployment rest-apl-v2."""
    case(
        f"canary Deployment {how} mid-rollout",
        "rolled back: exit 1, weights 100/0, phase RolledBack, reason names rest-apl-v2",
    )
    world.when_written(1, lambda: CANARY_LOSS[how](world), delay=0.3)
    res = world.run(*world.promote())
    case.observed(world.observed(res))
    assert res.code == 1, res.stderr[-3000:]
    assert_clean_success(res)
    assert res.json()["result"] == "rolled_back"
    assert world.written_weights() == [50, 0]
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and state["phase"] == "RolledBack"
    assert "unavailable" in state["reason"] or "scaled to 0" in state["reason"]
    assert world.sb.canary_workload in state["reason"], state["reason"]


def test_destinationrule_subset_removed_mid_rollout_does_not_promote_to_it(
    world: FaultWorld, case: Case
) -> None:
    """The canary's subset (v2) is removed from the DestinationRule while step 1 waits. In a
    mesh the canary's share of requests now fails (no such subset), and the preflight that
    refuses to start without the subset no longer holds. Expected (the safe reading of the
    preflight promise; nothing more specific is documented): canaryctl does not shift more
    traffic to an undefined subset: it ends on stable with a reason naming the subset."""
    case(
        "DestinationRule subset v2 removed mid-rollout",
        "not promoted: traffic back on stable (exit 1 or 3), reason names subset v2",
    )
    dr = _manifest("DestinationRule", "rest-apl")
    dr["spec"]["subsets"] = [s for s in dr["spec"]["subsets"] if s["name"] != "v2"]
    world.when_written(1, lambda: world.sb.emulator.apply([dr]), delay=0.3)
    res = world.run(*world.promote())
    case.observed(world.observed(res) + f"; weights written {world.written_weights()}")
    assert "Traceback" not in res.stderr
    assert res.code in (1, 3), f"exit {res.code}: {world.observed(res)}"
    assert world.weights() == [("v1", 100), ("v2", 0)]
    state = world.consistent()
    assert state is not None and "v2" in state["reason"], state and state["reason"]
