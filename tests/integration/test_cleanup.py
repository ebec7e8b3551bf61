"""Clean-up after a rollout through ``reconcile`` and ``undo``: the real kubernetes client against
the strict emulator, a real Prometheus scraping the traffic simulator, in this process (the CLI
path is covered by tests/e2e/test_finish.py). One module-scoped sandbox: Prometheus needs a few
seconds before its first scrapes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from canaryctl import operations, undo
from canaryctl.controller import Controller
from canaryctl.errors import PreflightError, RolloutStateError, UsageError
from canaryctl.kube import KubeClient
from canaryctl.mesh import get_router
from canaryctl.metrics.prometheus import PrometheusProvider
from canaryctl.policy import AnalysisPolicy, parse_policy
from canaryctl.reconcile import reconcile
from canaryctl.render import result_text
from canaryctl.rollout import RolloutState
from canaryctl.sandbox.world import Sandbox
from tests.integration.test_traffic_prometheus import eventually
from tests.istio_schema import validate_virtual_service
from tests.recording_server import RecordingServer
from tests.sandboxes import WorkerSandbox

APP, NS, VS = "rest-apl", "istio-apl", "rest-apl-vs"


@pytest.fixture
def sb(worker_sandbox: WorkerSandbox) -> Sandbox:
    """The worker's sandbox in its seed state (VirtualService at 80/20, both Deployments at 2
    replicas, no HPA): see ``tests/sandboxes.py``."""
    return worker_sandbox.get()


def _ctl(sb: Sandbox, clock: Callable[[], float] = time.time) -> Controller:
    kube = KubeClient.connect(kubeconfig=str(sb.kubeconfig))
    return Controller(
        kube=kube,
        router=get_router("istio", kube),
        provider_for=PrometheusProvider,
        prometheus_url=sb.prometheus.url,
        clock=clock,
    )


def _policy(sb: Sandbox, notify: str | None = None, **finish: Any) -> AnalysisPolicy:
    spec: dict[str, Any] = {"steps": [100], "interval": "1s", "minRequests": 10, "finish": finish}
    if notify:
        spec["notify"] = [
            {"name": "audit", "type": "webhook", "url": notify, "events": ["cleanup"]}
        ]
    return parse_policy({"spec": spec}).with_prometheus_url(sb.prometheus.url)


def _state(ctl: Controller) -> RolloutState:
    _, state = operations.locate(ctl, app=APP, namespace=NS, vs_names=[])
    assert state is not None
    return state


def _reconciled_until(ctl: Controller, done: Callable[[RolloutState], bool]) -> RolloutState:
    def probe() -> RolloutState | None:
        reconcile(ctl, namespace=NS)
        state = _state(ctl)
        return state if done(state) else None

    return eventually(probe, timeout=30)


def _replicas(sb: Sandbox, name: str) -> int:
    deployment = sb.emulator.get("apps/v1", "Deployment", NS, name)
    assert deployment is not None
    return int(deployment["spec"]["replicas"])


def _route(sb: Sandbox) -> list[dict[str, Any]]:
    vs = sb.emulator.get("networking.istio.io/v1", "VirtualService", NS, VS)
    assert vs is not None
    validate_virtual_service(vs)
    return list(vs["spec"]["http"][0]["route"])


def _reasons(sb: Sandbox) -> list[str]:
    return [e["reason"] for e in sb.emulator.list("v1", "Event", NS)]


def test_reconcile_collapses_and_undo_sends_traffic_back_then_scales_the_undone_version(
    sb: Sandbox,
) -> None:
    """reconcile promotes and collapses to a plain route to v2 (v1 kept: 1h idle wanted); undo
    refuses while v1 is unavailable (exit 2 naming it), then puts the plain route back on v1 in
    one patch; 1 s later reconcile scales the undone v2 to 0. A second undo is refused."""
    ctl = _ctl(sb)
    policy = _policy(
        sb, collapseRoutes=True, scaleDownIdle="1h", abortScaleDownDelay="1s", undoWindow="1m"
    )
    operations.promote(ctl, app=APP, namespace=NS, policy=policy, wait=False)
    state = _reconciled_until(
        ctl, lambda s: s.phase == "Promoted" and s.cleanup[0]["status"] == "done"
    )
    assert _route(sb) == [{"destination": {"host": "rest-apl", "subset": "v2"}}]
    assert [t["status"] for t in state.cleanup] == ["done", "pending"]
    text = result_text(operations.status(ctl, app=APP, namespace=NS, vs_names=[]).to_dict())
    assert "undo possible until" in text and "scale-down rest-apl-v1: pending" in text

    sb.emulator.set_deployment_available(NS, "rest-apl-v1", False)
    with pytest.raises(PreflightError, match="Deployment rest-apl-v1 is not available"):
        undo.undo(ctl, app=APP, namespace=NS, vs_names=[])
    assert _route(sb) == [{"destination": {"host": "rest-apl", "subset": "v2"}}]
    sb.emulator.set_deployment_available(NS, "rest-apl-v1", True)

    res = undo.undo(ctl, app=APP, namespace=NS, vs_names=[])
    assert (res.result, res.exit_code) == ("undone", 0)
    assert _route(sb) == [{"destination": {"host": "rest-apl", "subset": "v1"}}]
    undone = _state(ctl)
    assert undone.phase == "RolledBack" and "undone by operator" in undone.reason
    assert [(t["target"], t["status"]) for t in undone.cleanup] == [("rest-apl-v2", "pending")]
    assert "Undone" in _reasons(sb)

    _reconciled_until(ctl, lambda s: s.cleanup[0]["status"] == "done")
    assert (_replicas(sb, "rest-apl-v2"), _replicas(sb, "rest-apl-v1")) == (0, 2)
    assert _reasons(sb)[-1] == "ScaledDown"
    with pytest.raises(RolloutStateError, match="undo follows a promotion"):
        undo.undo(ctl, app=APP, namespace=NS, vs_names=[])


def test_undo_after_the_window_is_refused(sb: Sandbox) -> None:
    """Two minutes after a promotion with a 1m undoWindow: exit 2, the route stays on v2."""
    ctl = _ctl(sb)
    operations.promote(ctl, app=APP, namespace=NS, policy=_policy(sb, undoWindow="1m"), wait=False)
    _reconciled_until(ctl, lambda s: s.phase == "Promoted")
    late = _ctl(sb, clock=lambda: time.time() + 120)
    with pytest.raises(UsageError, match=r"undo window \(1m\) closed"):
        undo.undo(late, app=APP, namespace=NS, vs_names=[])
    assert [e.get("weight") for e in _route(sb)] == [0, 100]


def test_an_hpa_on_the_failed_canary_is_not_fought(sb: Sandbox) -> None:
    """After a rollback, an HPA targeting rest-apl-v2: not scaled; the task is skipped with a
    warning Event and a `cleanup` notification naming the HPA, and status says so."""
    sb.emulator.apply(
        [
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "rest-apl-v2", "namespace": NS},
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "rest-apl-v2",
                    },
                    "minReplicas": 2,
                    "maxReplicas": 4,
                },
            }
        ]
    )
    ctl = _ctl(sb)
    with RecordingServer() as server:
        policy = _policy(sb, notify=server.url("/audit"), abortScaleDownDelay="0s")
        operations.promote(ctl, app=APP, namespace=NS, policy=policy, wait=False)
        operations.rollback(ctl, app=APP, namespace=NS, vs_names=[])
        state = _reconciled_until(ctl, lambda s: s.cleanup[0]["status"] != "pending")
        (note,) = server.wait_for("/audit", 1)
    assert note.json["event"] == "cleanup" and "HorizontalPodAutoscaler" in note.json["message"]
    assert state.cleanup[0]["status"] == "skipped"
    assert "HorizontalPodAutoscaler rest-apl-v2 targets it" in state.cleanup[0]["detail"]
    assert _replicas(sb, "rest-apl-v2") == 2
    events = sb.emulator.list("v1", "Event", NS)
    assert (events[-1]["reason"], events[-1]["type"]) == ("CleanupSkipped", "Warning")
    text = result_text(operations.status(ctl, app=APP, namespace=NS, vs_names=[]).to_dict())
    assert "clean-up scale-down rest-apl-v2: skipped" in text


def test_a_collapse_committed_but_answered_504_counts_once(sb: Sandbox) -> None:
    """The API server commits the collapse patch but answers 504: the retry gets 409, the
    re-read recognises canaryctl's own write, one RoutesCollapsed Event, the route is plain."""
    ctl = _ctl(sb)
    operations.promote(
        ctl, app=APP, namespace=NS, policy=_policy(sb, collapseRoutes=True), wait=False
    )
    _reconciled_until(ctl, lambda s: s.phase == "Promoted")
    before = len(_reasons(sb))
    sb.emulator.inject("PATCH", "virtualservices/rest-apl-vs", 504, applied=True)
    state = _reconciled_until(ctl, lambda s: s.cleanup[0]["status"] == "done")
    assert state.cleanup[0]["routes"] == {VS: [0]}
    assert _route(sb) == [{"destination": {"host": "rest-apl", "subset": "v2"}}]
    assert _reasons(sb)[before:] == ["RoutesCollapsed"]
    patches = [w for w in sb.emulator.writes if w.method == "PATCH" and "rest-apl-vs" in w.path]
    assert [w.status for w in patches[-2:]] == [504, 409]


def test_the_daemon_carries_out_the_clean_up_of_a_finished_rollout(sb: Sandbox) -> None:
    """`run`'s tick: a rolled-back rollout whose canary scale-down is due gets it done."""
    from canaryctl.daemon import Daemon

    ctl = _ctl(sb)
    policy = _policy(sb, abortScaleDownDelay="0s")
    operations.promote(ctl, app=APP, namespace=NS, policy=policy, wait=False)
    operations.rollback(ctl, app=APP, namespace=NS, vs_names=[])
    daemon = Daemon(
        ctl, namespace=NS, interval=1.0, lease_namespace=NS, port=0, stop=threading.Event()
    )
    try:
        daemon.tick()
    finally:
        daemon.leader.release()
        daemon.server.server_close()
    assert _state(ctl).cleanup[0]["status"] == "done"
    assert _replicas(sb, "rest-apl-v2") == 0


def test_request_count_is_none_without_series_and_counts_requests_otherwise(sb: Sandbox) -> None:
    """The idle check's query against the real Prometheus: a workload Prometheus has no series
    for is None (no data, never "no requests"); v1, receiving traffic, counts requests."""
    provider = PrometheusProvider(_policy(sb).spec.prometheus)
    assert provider.request_count(namespace=NS, workload="rest-apl-v9", window_seconds=5) is None
    count = eventually(
        lambda: provider.request_count(namespace=NS, workload="rest-apl-v1", window_seconds=5),
        timeout=30,
    )
    assert count > 0
