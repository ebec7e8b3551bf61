"""The API emulator, driven by the real ``kubernetes`` client, behaves like an API server.

These are the behaviours canaryctl's correctness rests on (optimistic concurrency, patch content
types, status codes, RBAC messages); if the emulator were lenient here, the controller's tests
would pass against it and fail on a cluster.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import requests
import yaml
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CoreV1Event,
    CustomObjectsApi,
    V1Lease,
    V1LeaseSpec,
    V1ObjectMeta,
    V1ObjectReference,
)
from kubernetes.client.exceptions import ApiException

from canaryctl.sandbox.emulator import EmulatorServer

NS = "istio-apl"
VS = "rest-apl-vs"
ISTIO = ("networking.istio.io", "v1")
JSON_PATCH = "application/json-patch+json"


def get_vs(api: ApiClient, version: str = "v1") -> dict[str, Any]:
    obj: dict[str, Any] = CustomObjectsApi(api).get_namespaced_custom_object(
        "networking.istio.io", version, NS, "virtualservices", VS
    )
    return obj


def patch_vs(api: ApiClient, body: Any, content_type: str | None = JSON_PATCH) -> dict[str, Any]:
    kwargs = {"_content_type": content_type} if content_type else {}
    obj: dict[str, Any] = CustomObjectsApi(api).patch_namespaced_custom_object(
        *ISTIO, NS, "virtualservices", VS, body, **kwargs
    )
    return obj


def weights_patch(rv: str, v1: int, v2: int) -> list[dict[str, Any]]:
    """The controller's write: resourceVersion precondition first, then the weights."""
    return [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": v1},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": v2},
    ]


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(exc.value.body)
    return body


def test_stored_objects_carry_server_owned_metadata(kube_api: ApiClient) -> None:
    meta = get_vs(kube_api)["metadata"]
    assert meta["resourceVersion"].isdigit()
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1


def test_istio_object_is_served_under_every_version(kube_api: ApiClient) -> None:
    """One stored VirtualService, converted to v1beta1/v1alpha3 on read, writable through any."""
    v1 = get_vs(kube_api)
    for version in ("v1beta1", "v1alpha3"):
        other = get_vs(kube_api, version)
        assert other["apiVersion"] == f"networking.istio.io/{version}"
        assert other["spec"] == v1["spec"] and other["metadata"] == v1["metadata"]
    CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        "networking.istio.io", "v1beta1", NS, "virtualservices", VS,
        weights_patch(v1["metadata"]["resourceVersion"], 60, 40), _content_type=JSON_PATCH,
    )  # fmt: skip
    assert get_vs(kube_api)["spec"]["http"][0]["route"][1]["weight"] == 40


def test_json_patch_with_stale_resource_version_is_409_conflict(kube_api: ApiClient) -> None:
    rv = get_vs(kube_api)["metadata"]["resourceVersion"]
    patched = patch_vs(kube_api, weights_patch(rv, 50, 50))
    assert int(patched["metadata"]["resourceVersion"]) > int(rv)
    with pytest.raises(ApiException) as exc:
        patch_vs(kube_api, weights_patch(rv, 0, 100))  # rv is stale now
    assert exc.value.status == 409
    status = status_of(exc)
    assert status["kind"] == "Status" and status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    assert get_vs(kube_api)["spec"]["http"][0]["route"][1]["weight"] == 50  # not applied


def test_json_patch_result_is_exactly_the_patched_document(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    """Lists are replaced, not merged; the stored object is what RFC 6902 produces."""
    before = get_vs(kube_api)
    rv = before["metadata"]["resourceVersion"]
    only_v2 = [{"destination": {"host": "rest-apl", "subset": "v2"}, "weight": 100}]
    ops = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/annotations", "value": {"canaryctl.io/rollout": "{}"}},
        {"op": "replace", "path": "/spec/http/0/route", "value": only_v2},
    ]
    after = patch_vs(kube_api, ops)
    expected = jsonpatch.apply_patch(before, ops)
    for doc in (after, expected):
        doc["metadata"].pop("resourceVersion")
        doc["metadata"].pop("generation")
    assert after == expected
    stored = emulator.get("networking.istio.io/v1", "VirtualService", NS, VS)
    assert stored is not None and stored["spec"] == expected["spec"]
    assert stored["metadata"]["generation"] == 2  # the spec changed


def test_merge_patch_with_list_body_is_rejected_like_a_real_server(kube_api: ApiClient) -> None:
    """kubernetes 37 sends merge-patch for any body unless _content_type is given: a 400."""
    rv = get_vs(kube_api)["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as exc:
        patch_vs(kube_api, weights_patch(rv, 10, 90), content_type=None)
    assert exc.value.status == 400
    assert "cannot unmarshal array" in status_of(exc)["message"]
    patched = patch_vs(kube_api, weights_patch(rv, 10, 90), content_type=JSON_PATCH)
    assert [r["weight"] for r in patched["spec"]["http"][0]["route"]] == [10, 90]


def test_merge_patch_merges_objects_and_replaces_lists(kube_api: ApiClient) -> None:
    patched = patch_vs(
        kube_api,
        {"metadata": {"labels": {"team": "apl"}}, "spec": {"hosts": ["rest-apl"]}},
        content_type="application/merge-patch+json",
    )
    assert patched["metadata"]["labels"] == {"team": "apl"}
    assert patched["spec"]["hosts"] == ["rest-apl"]
    assert patched["spec"]["gateways"] == ["rest-apl-gateway"]  # untouched keys stay


def test_patch_without_resource_version_is_unconditional(kube_api: ApiClient) -> None:
    patch_vs(kube_api, [{"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 30}])
    patch_vs(kube_api, [{"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 35}])
    assert get_vs(kube_api)["spec"]["http"][0]["route"][1]["weight"] == 35


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/spec/http/0/route/1/weight", "value": 99}],
        [{"op": "replace", "path": "/spec/http/7/route", "value": []}],
        [{"op": "add", "path": "/metadata/annotations/canaryctl.io~1rollout", "value": "{}"}],
        [{"op": "frobnicate", "path": "/spec"}],
    ],
    ids=["failing-test-op", "missing-index", "missing-parent", "unknown-op"],
)
def test_json_patch_that_cannot_apply_is_422(kube_api: ApiClient, ops: list[Any]) -> None:
    before = get_vs(kube_api)
    with pytest.raises(ApiException) as exc:
        patch_vs(kube_api, ops)
    assert exc.value.status == 422
    assert get_vs(kube_api) == before


def test_strategic_merge_patch_is_415_on_istio_and_a_merge_on_builtins(kube_api: ApiClient) -> None:
    smp = "application/strategic-merge-patch+json"
    with pytest.raises(ApiException) as exc:
        patch_vs(kube_api, {"spec": {"hosts": ["x"]}}, content_type=smp)
    assert exc.value.status == 415
    service = CoreV1Api(kube_api).patch_namespaced_service(
        "rest-apl", NS, {"metadata": {"labels": {"tier": "web"}}}, _content_type=smp
    )
    assert service.metadata.labels == {"app": "rest-apl", "tier": "web"}


def test_unknown_patch_content_type_is_415(emulator: EmulatorServer) -> None:
    url = f"{emulator.url}/apis/networking.istio.io/v1/namespaces/{NS}/virtualservices/{VS}"
    with requests.Session() as http:
        response = http.patch(url, data="{}", headers={"Content-Type": "application/x-yaml"})
    assert response.status_code == 415
    assert response.json()["reason"] == "UnsupportedMediaType"


def test_builtin_patch_with_a_dict_goes_as_strategic_merge(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    """kubernetes 37 turns a dict PATCH of a built-in into a strategic merge: a merge here."""
    patched = AppsV1Api(kube_api).patch_namespaced_deployment(
        "rest-apl-v2", NS, {"spec": {"replicas": 3}}
    )
    assert patched.spec.replicas == 3 and patched.status.available_replicas == 3
    assert emulator.writes[0].content_type == "application/strategic-merge-patch+json"


def test_put_with_stale_resource_version_is_409(kube_api: ApiClient) -> None:
    api = CustomObjectsApi(kube_api)
    stale = get_vs(kube_api)
    fresh = copy.deepcopy(stale)
    fresh["spec"]["hosts"] = ["rest-apl"]
    api.replace_namespaced_custom_object(*ISTIO, NS, "virtualservices", VS, fresh)
    with pytest.raises(ApiException) as exc:
        api.replace_namespaced_custom_object(*ISTIO, NS, "virtualservices", VS, stale)
    assert exc.value.status == 409 and status_of(exc)["reason"] == "Conflict"


def test_list_across_all_namespaces_with_label_selector(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    other = copy.deepcopy(emulator.get("networking.istio.io/v1", "VirtualService", NS, VS))
    assert other is not None
    other["metadata"] = {"name": "other-vs", "namespace": "team-b", "labels": {"team": "b"}}
    emulator.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}}, other]
    )
    api = CustomObjectsApi(kube_api)
    everything = api.list_cluster_custom_object(*ISTIO, "virtualservices")
    names = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in everything["items"]]
    assert names == [(NS, VS), ("team-b", "other-vs")]
    assert everything["kind"] == "VirtualServiceList"
    assert everything["metadata"]["resourceVersion"].isdigit()
    only_b = api.list_cluster_custom_object(*ISTIO, "virtualservices", label_selector="team=b")
    assert [o["metadata"]["name"] for o in only_b["items"]] == ["other-vs"]
    one_ns = api.list_namespaced_custom_object(*ISTIO, NS, "virtualservices")
    assert [o["metadata"]["name"] for o in one_ns["items"]] == [VS]


def test_writes_log_records_every_mutating_request_and_no_read(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    get_vs(kube_api)
    CustomObjectsApi(kube_api).list_cluster_custom_object(*ISTIO, "virtualservices")
    AppsV1Api(kube_api).list_namespaced_deployment(NS)
    assert emulator.writes == []
    rv = get_vs(kube_api)["metadata"]["resourceVersion"]
    patch_vs(kube_api, weights_patch(rv, 50, 50))
    with pytest.raises(ApiException):
        patch_vs(kube_api, weights_patch(rv, 50, 50))
    assert [(w.method, w.content_type, w.status) for w in emulator.writes] == [
        ("PATCH", JSON_PATCH, 200),
        ("PATCH", JSON_PATCH, 409),
    ]
    assert (
        emulator.writes[0].path
        == f"/apis/networking.istio.io/v1/namespaces/{NS}/virtualservices/{VS}"
    )
    assert emulator.writes[0].body[0]["path"] == "/metadata/resourceVersion"


def test_injected_faults_fail_the_next_matching_requests_then_stop(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    emulator.inject("PATCH", r"/virtualservices/rest-apl-vs$", 503, times=2)
    ops = [{"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 25}]
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            patch_vs(kube_api, ops)
        assert exc.value.status == 503 and status_of(exc)["reason"] == "ServiceUnavailable"
    get_vs(kube_api)  # a GET does not match the PATCH fault
    assert patch_vs(kube_api, ops)["spec"]["http"][0]["route"][1]["weight"] == 25
    assert [w.status for w in emulator.writes] == [503, 503, 200]


def test_applied_fault_carries_the_write_out_and_only_the_answer_fails(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    """What a real API server does when its deadline passes after etcd committed: the
    client sees a 504, the object has changed, and a retry guarded by the old
    resourceVersion is a 409."""
    rv = get_vs(kube_api)["metadata"]["resourceVersion"]
    emulator.inject("PATCH", r"/virtualservices/rest-apl-vs$", 504, applied=True)
    with pytest.raises(ApiException) as exc:
        patch_vs(kube_api, weights_patch(rv, 60, 40))
    assert exc.value.status == 504 and status_of(exc)["reason"] == "Timeout"
    after = get_vs(kube_api)
    assert [d["weight"] for d in after["spec"]["http"][0]["route"]] == [60, 40]
    assert after["metadata"]["resourceVersion"] != rv
    with pytest.raises(ApiException) as retry:
        patch_vs(kube_api, weights_patch(rv, 60, 40))
    assert retry.value.status == 409
    assert [(w.status, w.applied, w.landed) for w in emulator.writes] == [
        (504, True, True),
        (409, False, False),
    ]


def test_injected_delay_slows_the_request_down(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    emulator.inject(None, r"/deployments/rest-apl-v2$", None, delay=0.3)
    started = time.monotonic()
    AppsV1Api(kube_api).read_namespaced_deployment("rest-apl-v2", NS)
    assert time.monotonic() - started >= 0.3
    emulator.inject("GET", r"/deployments/", 500, body={"kind": "Status", "message": "boom"})
    with pytest.raises(ApiException) as exc:
        AppsV1Api(kube_api).read_namespaced_deployment("rest-apl-v2", NS)
    assert exc.value.status == 500 and status_of(exc)["message"] == "boom"


def test_rbac_denial_answers_403_with_the_api_server_message(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    emulator.set_rbac(
        [("get", "networking.istio.io", "virtualservices"), ("list", "apps", "*")],
        user="system:serviceaccount:istio-apl:canaryctl",
    )
    rv = get_vs(kube_api)["metadata"]["resourceVersion"]
    AppsV1Api(kube_api).list_namespaced_deployment(NS)
    with pytest.raises(ApiException) as exc:
        patch_vs(kube_api, weights_patch(rv, 50, 50))
    assert exc.value.status == 403
    assert status_of(exc)["reason"] == "Forbidden"
    assert status_of(exc)["message"] == (
        'virtualservices.networking.istio.io "rest-apl-vs" is forbidden: User '
        '"system:serviceaccount:istio-apl:canaryctl" cannot patch resource "virtualservices" '
        'in API group "networking.istio.io" in the namespace "istio-apl"'
    )
    with pytest.raises(ApiException) as exc:
        CoreV1Api(kube_api).read_namespaced_service("rest-apl", NS)
    assert 'cannot get resource "services" in API group ""' in status_of(exc)["message"]
    emulator.set_rbac(None)
    assert patch_vs(kube_api, weights_patch(rv, 50, 50))["metadata"]["resourceVersion"] != rv


def test_deployments_are_available_and_can_be_made_unavailable(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    apps = AppsV1Api(kube_api)
    deployment = apps.read_namespaced_deployment("rest-apl-v2", NS)
    assert deployment.status.available_replicas == deployment.spec.replicas == 2
    assert {c.type: c.status for c in deployment.status.conditions}["Available"] == "True"
    emulator.set_deployment_available(NS, "rest-apl-v2", available=False)
    deployment = apps.read_namespaced_deployment("rest-apl-v2", NS)
    assert not deployment.status.available_replicas
    assert {c.type: c.status for c in deployment.status.conditions}["Available"] == "False"
    names = [d.metadata.name for d in apps.list_namespaced_deployment(NS).items]
    assert names == ["rest-apl-v1", "rest-apl-v2"]


def test_status_changes_only_through_the_status_subresource(kube_api: ApiClient) -> None:
    merge = "application/merge-patch+json"
    unavailable = {"status": {"availableReplicas": 0}}
    apps = AppsV1Api(kube_api)
    apps.patch_namespaced_deployment("rest-apl-v1", NS, unavailable, _content_type=merge)
    assert apps.read_namespaced_deployment("rest-apl-v1", NS).status.available_replicas == 2
    apps.patch_namespaced_deployment_status("rest-apl-v1", NS, unavailable, _content_type=merge)
    assert apps.read_namespaced_deployment("rest-apl-v1", NS).status.available_replicas == 0


def test_core_reads_events_and_leases_work_with_the_real_client(kube_api: ApiClient) -> None:
    core = CoreV1Api(kube_api)
    assert core.read_namespaced_service("rest-apl", NS).spec.ports[0].target_port == 4009
    event = core.create_namespaced_event(
        NS,
        CoreV1Event(
            metadata=V1ObjectMeta(generate_name="rest-apl-vs."),
            involved_object=V1ObjectReference(kind="VirtualService", name=VS, namespace=NS),
            reason="CanaryStep",
            message="weight 20 -> 40",
            type="Normal",
        ),
    )
    assert event.metadata.name.startswith("rest-apl-vs.") and event.metadata.namespace == NS
    leases = CoordinationV1Api(kube_api)
    lease = V1Lease(
        metadata=V1ObjectMeta(name="canaryctl-rest-apl"), spec=V1LeaseSpec(holder_identity="a")
    )
    created = leases.create_namespaced_lease(NS, lease)
    created.spec.holder_identity = "b"
    replaced = leases.replace_namespaced_lease("canaryctl-rest-apl", NS, created)
    assert leases.read_namespaced_lease("canaryctl-rest-apl", NS).spec.holder_identity == "b"
    created.spec.holder_identity = "c"  # still carries the first resourceVersion
    with pytest.raises(ApiException) as exc:
        leases.replace_namespaced_lease("canaryctl-rest-apl", NS, created)
    assert exc.value.status == 409
    assert replaced.metadata.resource_version != created.metadata.resource_version


def test_create_is_409_when_it_exists_and_404_without_namespace(kube_api: ApiClient) -> None:
    api = CustomObjectsApi(kube_api)
    vs = get_vs(kube_api)
    vs["metadata"] = {"name": VS}
    with pytest.raises(ApiException) as exc:
        api.create_namespaced_custom_object(*ISTIO, NS, "virtualservices", vs)
    assert exc.value.status == 409 and status_of(exc)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as exc:
        api.create_namespaced_custom_object(*ISTIO, "nowhere", "virtualservices", vs)
    assert exc.value.status == 404 and status_of(exc)["message"] == 'namespaces "nowhere" not found'


def test_annotation_values_must_be_strings(kube_api: ApiClient) -> None:
    """A controller writing its state as a JSON object, not a string, fails like on a cluster."""
    ops = [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {"canaryctl.io/rollout": {"step": 1}},
        }
    ]
    with pytest.raises(ApiException) as exc:
        patch_vs(kube_api, ops)
    assert exc.value.status == 400


def test_dry_run_validates_without_storing(kube_api: ApiClient, emulator: EmulatorServer) -> None:
    before = get_vs(kube_api)
    ops = weights_patch(before["metadata"]["resourceVersion"], 0, 100)
    result = CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        *ISTIO, NS, "virtualservices", VS, ops, dry_run="All", _content_type=JSON_PATCH
    )
    assert result["spec"]["http"][0]["route"][1]["weight"] == 100
    assert get_vs(kube_api) == before
    assert emulator.writes[0].dry_run


def test_delete_then_read_is_404_with_not_found_status(kube_api: ApiClient) -> None:
    api = CustomObjectsApi(kube_api)
    api.delete_namespaced_custom_object(*ISTIO, NS, "virtualservices", VS)
    with pytest.raises(ApiException) as exc:
        get_vs(kube_api)
    assert exc.value.status == 404
    assert status_of(exc)["message"] == f'virtualservices.networking.istio.io "{VS}" not found'


def test_unknown_resources_are_404_and_discovery_lists_istio(emulator: EmulatorServer) -> None:
    with requests.Session() as http:
        missing = http.get(f"{emulator.url}/apis/networking.istio.io/v1/namespaces/{NS}/sidecarz")
        assert missing.status_code == 404 and missing.json()["kind"] == "Status"
        discovery = http.get(f"{emulator.url}/apis/networking.istio.io/v1beta1").json()
    assert {"virtualservices", "destinationrules", "gateways"} <= {
        r["name"] for r in discovery["resources"]
    }


def test_istio_bookinfo_samples_load_and_read_back(
    istio_data: Path, emulator: EmulatorServer
) -> None:
    """Istio's own sample VirtualServices/DestinationRules are accepted as they are."""
    docs = []
    for name in ("virtual-service-reviews-80-20.yaml", "destination-rule-reviews.yaml"):
        docs += [
            d
            for d in yaml.safe_load_all((istio_data / "bookinfo-networking" / name).read_text())
            if d
        ]
    emulator.apply(docs)
    reviews = emulator.get("networking.istio.io/v1alpha3", "VirtualService", "default", "reviews")
    assert reviews is not None
    assert [r["weight"] for r in reviews["spec"]["http"][0]["route"]] == [80, 20]


# --- the scale subresource and HPAs (used by the clean-up after a rollout) --------------------
def test_scale_subresource_reads_and_patches_spec_replicas(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    """GET .../deployments/NAME/scale is an autoscaling/v1 Scale; a JSON patch of spec.replicas
    changes the Deployment (and its status); a negative count is 422, a stale RV 409."""
    apps = AppsV1Api(kube_api)
    scale = apps.read_namespaced_deployment_scale("rest-apl-v1", NS)
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=rest-apl,version=v1")
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 0}]
    apps.patch_namespaced_deployment_scale("rest-apl-v1", NS, ops, _content_type=JSON_PATCH)
    deployment = apps.read_namespaced_deployment("rest-apl-v1", NS)
    assert (deployment.spec.replicas, deployment.status.available_replicas) == (0, 0)
    assert emulator.writes[-1].path.endswith("/deployments/rest-apl-v1/scale")
    bad = [{"op": "replace", "path": "/spec/replicas", "value": -1}]
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale("rest-apl-v1", NS, bad, _content_type=JSON_PATCH)
    assert err.value.status == 422
    stale = [{"op": "replace", "path": "/metadata/resourceVersion", "value": "1"}, *ops]
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale("rest-apl-v1", NS, stale, _content_type=JSON_PATCH)
    assert err.value.status == 409


def test_scale_rbac_is_its_own_resource_and_hpas_are_listed(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    """`patch deployments` does not grant `patch deployments/scale` (403 naming it); HPAs are
    served under autoscaling/v2."""
    emulator.set_rbac([("patch", "apps", "deployments"), ("list", "autoscaling", "*")])
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 0}]
    with pytest.raises(ApiException) as err:
        AppsV1Api(kube_api).patch_namespaced_deployment_scale(
            "rest-apl-v2", NS, ops, _content_type=JSON_PATCH
        )
    message = json.loads(err.value.body)["message"]
    assert err.value.status == 403 and 'resource "deployments/scale"' in message
    from kubernetes.client import AutoscalingV2Api

    emulator.apply(
        [
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "v2", "namespace": NS},
                "spec": {
                    "scaleTargetRef": {"kind": "Deployment", "name": "rest-apl-v2"},
                    "maxReplicas": 3,
                },
            }
        ]
    )
    hpas = AutoscalingV2Api(kube_api).list_namespaced_horizontal_pod_autoscaler(NS).items
    assert [h.spec.scale_target_ref.name for h in hpas] == ["rest-apl-v2"]


def test_watch_streams_later_changes_and_answers_410_after_compaction(
    kube_api: ApiClient, emulator: EmulatorServer
) -> None:
    """A watch from a list's resourceVersion gets exactly the later changes, as the real
    client's ``Watch`` parses them; once the history is compacted, a watch from that version
    gets an ERROR event holding a 410 Expired Status (the client must list again)."""
    from kubernetes import watch

    api = CustomObjectsApi(kube_api)
    rv = api.list_namespaced_custom_object(*ISTIO, NS, "virtualservices")["metadata"][
        "resourceVersion"
    ]
    patch_vs(kube_api, weights_patch(get_vs(kube_api)["metadata"]["resourceVersion"], 50, 50))
    emulator.delete("networking.istio.io/v1", "VirtualService", NS, VS)
    events = list(
        watch.Watch().stream(
            api.list_namespaced_custom_object,
            *ISTIO,
            NS,
            "virtualservices",
            resource_version=rv,
            timeout_seconds=1,
        )
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", VS),
        ("DELETED", VS),
    ]
    assert events[0]["object"]["spec"]["http"][0]["route"][1]["weight"] == 50
    emulator.emulator.store.compact()
    stale = requests.get(
        f"{emulator.url}/apis/networking.istio.io/v1/namespaces/{NS}/virtualservices",
        params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"},
        headers={"Authorization": "Bearer sandbox-token"},
        timeout=10,
    )
    first = yaml.safe_load(stale.text.splitlines()[0])
    assert first["type"] == "ERROR"
    assert (first["object"]["code"], first["object"]["reason"]) == (410, "Expired")
