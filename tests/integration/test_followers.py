"""Several VirtualServices and other writers, at the engine level: the real ``kubernetes``
client and canaryctl's controller against the strict API emulator holding rest-apl plus the
in-mesh ``rest-apl-mesh`` of ``examples/rest-apl-mesh``. No analysis runs here (what is
checked happens before any query), so no Prometheus is needed."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi
from typer.testing import CliRunner

from canaryctl import operations, reconcile, rollout, undo
from canaryctl.cli import app
from canaryctl.controller import Controller, read_state
from canaryctl.demo import DEMO_POLICY
from canaryctl.errors import ClusterUnavailableError
from canaryctl.kube import KubeClient
from canaryctl.mesh import Workloads, get_router
from canaryctl.metrics._base import get_provider
from canaryctl.policy import parse_policy
from canaryctl.rollout import PROMOTE_ANNOTATION, REF_ANNOTATION, RolloutState
from canaryctl.sandbox import load_manifests
from canaryctl.sandbox.emulator import EmulatorServer
from tests.istio_schema import validate_virtual_service
from tests.recording_server import RecordingServer

NS, APP, PRIMARY, MESH = "istio-apl", "rest-apl", "rest-apl-vs", "rest-apl-mesh"
MESH_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rest-apl-mesh"


@pytest.fixture
def notified() -> Iterator[RecordingServer]:
    """A webhook notification target recording what it receives."""
    with RecordingServer() as server:
        yield server


@pytest.fixture
def ctl(emulator: EmulatorServer, kube_api: ApiClient) -> Iterator[Controller]:
    """A controller over the emulator with ``rest-apl-mesh`` added (writes log empty)."""
    emulator.apply(load_manifests(MESH_EXAMPLE))
    emulator.clear_writes()
    kube = KubeClient(kube_api, retry_seconds=0.5)
    controller = Controller(kube=kube, router=get_router("istio", kube), provider_for=get_provider)
    yield controller
    controller.notifier.flush(5.0)


def _vs(emulator: EmulatorServer, name: str) -> dict[str, Any]:
    obj = emulator.get("networking.istio.io/v1", "VirtualService", NS, name)
    assert obj is not None
    validate_virtual_service(obj)  # every object canaryctl wrote is one the API server accepts
    return obj


def _weights(emulator: EmulatorServer, name: str) -> list[list[tuple[str, int]]]:
    http = _vs(emulator, name)["spec"]["http"]
    return [[(d["destination"]["subset"], d.get("weight", 100)) for d in h["route"]] for h in http]


def _vs_patches(emulator: EmulatorServer) -> list[str]:
    return [w.path.rsplit("/", 1)[1] for w in emulator.writes if "virtualservices" in w.path]


def _start(
    ctl: Controller, url: str | None = None, finish: dict[str, Any] | None = None
) -> RolloutState:
    """Write the first step the way ``promote`` does (members found, state on the primary)."""
    doc = copy.deepcopy(DEMO_POLICY)
    doc["spec"]["interval"] = "1h"  # no analysis is ever due here
    if finish:
        doc["spec"]["finish"] = finish
    if url:
        doc["spec"]["notify"] = [{"name": "team", "type": "webhook", "url": url}]
    members = ctl.router.find(app=APP, namespace=NS)
    workloads = Workloads(stable="rest-apl-v1", canary="rest-apl-v2")
    policy = parse_policy(doc, source="test")
    state = operations.begin_rollout(
        members, workloads=workloads, policy=policy, route_names=None, now=ctl.clock()
    )
    ctl.commit(state, expect=None)
    return state


def _advance(ctl: Controller, state: RolloutState, weight: int) -> RolloutState:
    """The write of a passed step (what ``rollout.decide`` returns on a pass)."""
    new = rollout.restart_window(
        state, now=ctl.clock(), reason="test step", step_index=state.step_index + 1, weight=weight
    )
    ctl.commit(new, expect=state)
    return new


def _other_writer(api: ApiClient, name: str, v1: int, v2: int) -> None:
    """Argo CD's self-heal: a JSON patch of the weights only (no precondition)."""
    ops = [
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": v1},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": v2},
    ]
    CustomObjectsApi(api).patch_namespaced_custom_object(
        "networking.istio.io",
        "v1",
        NS,
        "virtualservices",
        name,
        ops,
        _content_type="application/json-patch+json",
    )


def test_every_step_writes_the_primary_then_the_follower_with_its_pointer(
    ctl: Controller, emulator: EmulatorServer
) -> None:
    state = _start(ctl)
    assert (state.virtual_service, state.followers, state.weight) == (PRIMARY, [MESH], 20)
    assert _weights(emulator, PRIMARY) == [[("v1", 80), ("v2", 20)]]
    assert _weights(emulator, MESH) == [[("v1", 80), ("v2", 20)]]  # the plain route, split
    state = _advance(ctl, state, 40)
    assert _weights(emulator, MESH) == [[("v1", 60), ("v2", 40)]]
    assert _vs_patches(emulator) == [PRIMARY, MESH, PRIMARY, MESH]
    ref = json.loads(_vs(emulator, MESH)["metadata"]["annotations"][REF_ANNOTATION])
    assert ref == {"virtualService": PRIMARY, "startedAt": state.started_at, "weight": 40}
    assert read_state(_vs(emulator, MESH)) is None  # the state lives on the primary only


def test_a_follower_left_behind_is_repaired_first_by_the_next_pass(
    ctl: Controller, emulator: EmulatorServer
) -> None:
    """The follower's patch fails after the primary's (as if the process died in between):
    the next reconcile pass patches the follower before anything else, even though no
    analysis is due."""
    state = _start(ctl)
    emulator.inject("PATCH", rf"/virtualservices/{MESH}$", 503, times=1000)
    with pytest.raises(ClusterUnavailableError):
        _advance(ctl, state, 40)
    emulator.clear_faults()
    assert _weights(emulator, PRIMARY) == [[("v1", 60), ("v2", 40)]]
    assert _weights(emulator, MESH) == [[("v1", 80), ("v2", 20)]]
    emulator.clear_writes()
    report = reconcile.reconcile(ctl, namespace=NS)
    assert [o.action for o in report.outcomes] == ["skipped"]  # next analysis in ~1 h
    assert _weights(emulator, MESH) == [[("v1", 60), ("v2", 40)]]
    assert _vs_patches(emulator) == [MESH]


def test_weight_drift_pauses_without_writing_over_it_resume_reapplies_rollback_works(
    ctl: Controller, emulator: EmulatorServer, kube_api: ApiClient, notified: RecordingServer
) -> None:
    state = _advance(ctl, _start(ctl, notified.url("/n")), 40)
    _other_writer(kube_api, PRIMARY, 80, 20)
    emulator.clear_writes()
    paused = ctl.step(state)
    assert paused.phase == "Paused" and paused.weight == 40
    assert "http[0] 80/20 (stable/canary) where canaryctl wrote 60/40" in paused.reason
    assert _weights(emulator, PRIMARY) == [[("v1", 80), ("v2", 20)]]  # never overwritten
    assert read_state(_vs(emulator, PRIMARY)) == paused
    events = emulator.list("v1", "Event", NS)
    assert [e["reason"] for e in events if e["reason"] == "WeightsChanged"] == ["WeightsChanged"]
    assert [e["type"] for e in events if e["reason"] == "WeightsChanged"] == ["Warning"]
    start, note = notified.wait_for("/n", 2)
    assert (start.json["event"], note.json["event"]) == ("start", "pause")
    assert "80/20" in note.json["message"]

    resumed = operations.resume(ctl, app=APP, namespace=NS, vs_names=[MESH])  # its pointer
    assert resumed.state is not None and resumed.state.phase == "Progressing"
    assert _weights(emulator, PRIMARY) == _weights(emulator, MESH) == [[("v1", 60), ("v2", 40)]]

    _other_writer(kube_api, MESH, 100, 0)  # the follower's weights change too
    paused = ctl.step(resumed.state)
    assert paused.phase == "Paused" and f"VirtualService {MESH} has http[0] 100/0" in paused.reason
    assert _weights(emulator, MESH) == [[("v1", 100), ("v2", 0)]]
    rolled = operations.rollback(ctl, app=APP, namespace=NS, vs_names=())
    assert rolled.state is not None and rolled.state.phase == "RolledBack"
    assert _weights(emulator, PRIMARY) == _weights(emulator, MESH) == [[("v1", 100), ("v2", 0)]]


def test_promote_trigger_for_a_canary_that_already_ended_does_not_start_it_again(
    ctl: Controller, emulator: EmulatorServer
) -> None:
    state = _start(ctl)
    done = rollout.force_promote(state, reason="test", now=ctl.clock())
    ctl.commit(done, expect=state)
    vs = _vs(emulator, PRIMARY)
    vs["metadata"]["annotations"][PROMOTE_ANNOTATION] = "v2"  # Argo CD re-applies it from git
    emulator.apply([vs])
    emulator.clear_writes()
    [outcome] = reconcile.reconcile(ctl, namespace=NS).outcomes
    assert (outcome.action, outcome.phase) == ("skipped", "Promoted")
    assert "already ended" in outcome.detail
    assert _vs_patches(emulator) == []
    assert _weights(emulator, PRIMARY) == _weights(emulator, MESH) == [[("v1", 0), ("v2", 100)]]


def _promoted_and_collapsed(ctl: Controller) -> RolloutState:
    """A rollout over both VirtualServices promoted with ``finish.collapseRoutes`` and an undo
    window, then one reconcile pass: the collapse is its only clean-up task."""
    state = _start(ctl, finish={"collapseRoutes": True, "undoWindow": "10m"})
    done = rollout.force_promote(state, reason="test", now=ctl.clock())
    ctl.commit(done, expect=state)
    [outcome] = reconcile.reconcile(ctl, namespace=NS).outcomes
    assert (outcome.action, outcome.detail) == ("cleanup", "clean-up complete")
    _, collapsed = operations.locate(ctl, app=APP, namespace=NS, vs_names=[])
    assert collapsed is not None
    return collapsed


def test_collapse_makes_both_virtual_services_plain_and_undo_sends_both_back(
    ctl: Controller, emulator: EmulatorServer
) -> None:
    """The collapse covers the follower too; undo puts both plain routes back on v1, points
    the follower at weight 0, and the next reconcile pass writes no VirtualService."""
    state = _promoted_and_collapsed(ctl)
    assert state.cleanup[0]["routes"] == {MESH: [0], PRIMARY: [0]}
    assert _weights(emulator, PRIMARY) == _weights(emulator, MESH) == [[("v2", 100)]]

    emulator.clear_writes()
    res = undo.undo(ctl, app=APP, namespace=NS, vs_names=[])
    assert (res.result, res.exit_code) == ("undone", 0)
    assert _vs_patches(emulator) == [MESH, PRIMARY]
    assert _weights(emulator, PRIMARY) == _weights(emulator, MESH) == [[("v1", 100)]]
    ref = json.loads(_vs(emulator, MESH)["metadata"]["annotations"][REF_ANNOTATION])
    assert ref == {"virtualService": PRIMARY, "startedAt": state.started_at, "weight": 0}

    emulator.clear_writes()
    reconcile.reconcile(ctl, namespace=NS)
    assert _vs_patches(emulator) == []  # no "lagging follower" repair
    assert _weights(emulator, PRIMARY) == _weights(emulator, MESH) == [[("v1", 100)]]


@pytest.mark.parametrize("finisher", ["reconcile", "undo again"])
def test_an_undo_interrupted_after_the_follower_is_finished_not_reverted(
    ctl: Controller, emulator: EmulatorServer, finisher: str
) -> None:
    """The primary's undo patch fails after the follower's (as if the process died): the
    follower is not "repaired" back to v2; the next reconcile pass (or the operator's second
    ``undo``) finishes the undo: the primary back on v1, state RolledBack, and a reconcile pass
    after it writes nothing."""
    _promoted_and_collapsed(ctl)
    emulator.inject("PATCH", rf"/virtualservices/{PRIMARY}$", 503, times=1000)
    with pytest.raises(ClusterUnavailableError):
        undo.undo(ctl, app=APP, namespace=NS, vs_names=[])
    emulator.clear_faults()
    assert (_weights(emulator, PRIMARY), _weights(emulator, MESH)) == (
        [[("v2", 100)]],
        [[("v1", 100)]],
    )
    assert operations.locate(ctl, app=APP, namespace=NS, vs_names=[])[1].phase == "Promoted"

    emulator.clear_writes()
    if finisher == "reconcile":
        [outcome] = reconcile.reconcile(ctl, namespace=NS).outcomes
        assert (outcome.action, outcome.phase) == ("undone", "RolledBack")
        assert "finishing an interrupted undo" in outcome.detail
    else:
        res = undo.undo(ctl, app=APP, namespace=NS, vs_names=[])
        assert res.state is not None and res.state.phase == "RolledBack"
    assert _vs_patches(emulator) == [PRIMARY]
    assert _weights(emulator, PRIMARY) == _weights(emulator, MESH) == [[("v1", 100)]]
    emulator.clear_writes()
    reconcile.reconcile(ctl, namespace=NS)
    assert _vs_patches(emulator) == []


def test_status_shows_the_pending_clean_up_of_two_virtual_services_and_the_mesh_bypass_warning(
    emulator: EmulatorServer, kube_api: ApiClient, tmp_path: Path
) -> None:
    """rest-apl-vs plus a plain route bound to an internal gateway, both moved and promoted
    with collapse and idle scale-down still to do: ``canaryctl status`` names the follower,
    each pending task, and warns that in-mesh callers pass through neither."""
    internal = copy.deepcopy(_vs(emulator, PRIMARY))
    internal["metadata"] = {"name": "rest-apl-internal", "namespace": NS}
    internal["spec"]["gateways"] = ["rest-apl-internal-gateway"]
    internal["spec"]["http"][0]["route"] = [{"destination": {"host": APP, "subset": "v1"}}]
    emulator.apply([internal])
    kube = KubeClient(kube_api, retry_seconds=0.5)
    ctl = Controller(kube=kube, router=get_router("istio", kube), provider_for=get_provider)
    state = _start(ctl, finish={"collapseRoutes": True, "scaleDownIdle": "1h"})
    assert (state.virtual_service, state.followers) == (PRIMARY, ["rest-apl-internal"])
    ctl.commit(rollout.force_promote(state, reason="test", now=ctl.clock()), expect=state)

    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    result = CliRunner().invoke(app, ["status", APP, "-n", NS, "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "moved with it: rest-apl-internal" in out
    assert "clean-up collapse: pending due from" in out
    assert "clean-up scale-down rest-apl-v1: pending due from" in out
    assert "warning: in-mesh traffic to rest-apl" in out
    assert (
        "passes through none of the VirtualServices moved (rest-apl-internal, rest-apl-vs:" in out
    )


def test_an_interrupted_undo_is_not_finished_while_the_previous_version_is_unavailable(
    ctl: Controller, emulator: EmulatorServer
) -> None:
    """After the interruption v1 loses its replicas: reconcile reports an error naming
    rest-apl-v1 and writes nothing (each VirtualService keeps its traffic); once v1 is back,
    the next pass finishes the undo."""
    _promoted_and_collapsed(ctl)
    emulator.inject("PATCH", rf"/virtualservices/{PRIMARY}$", 503, times=1000)
    with pytest.raises(ClusterUnavailableError):
        undo.undo(ctl, app=APP, namespace=NS, vs_names=[])
    emulator.clear_faults()
    emulator.set_deployment_available(NS, "rest-apl-v1", False)
    emulator.clear_writes()
    [outcome] = reconcile.reconcile(ctl, namespace=NS).outcomes
    assert outcome.action == "error" and "Deployment rest-apl-v1 is not available" in outcome.detail
    assert _vs_patches(emulator) == []
    assert (_weights(emulator, PRIMARY), _weights(emulator, MESH)) == (
        [[("v2", 100)]],
        [[("v1", 100)]],
    )
    emulator.set_deployment_available(NS, "rest-apl-v1", True)
    [outcome] = reconcile.reconcile(ctl, namespace=NS).outcomes
    assert (outcome.action, outcome.phase) == ("undone", "RolledBack")
    assert _weights(emulator, PRIMARY) == [[("v1", 100)]]
