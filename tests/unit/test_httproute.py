"""The Gateway API router's pure part on Gateway API's own traffic-split samples and CRD."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from canaryctl.errors import InputError, PreflightError, UsageError
from canaryctl.mesh import Destination, apply_patch, get_router
from canaryctl.mesh.httproute import ops as route_ops
from tests import gateway_schema

ROUTER = get_router("gateway-api", None)  # the pure methods never reach the cluster
WEIGHTS = [0, 20, 40, 60, 80, 100]
ROLLOUT = "canaryctl.io/rollout"


def _applied(name: str) -> dict[str, Any]:
    """A pinned sample as the API server returns it (namespace, resourceVersion)."""
    obj = copy.deepcopy(gateway_schema.examples()[name])
    obj["metadata"].update(namespace="default", resourceVersion="7")
    return obj


def _without_weights(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("annotations", None)
    for rule in out["spec"]["rules"]:
        for ref in rule.get("backendRefs") or []:
            ref.pop("weight", None)
    return out


@pytest.mark.parametrize(
    ("sample", "stable", "canary"),
    [
        ("simple-split.yaml", "foo-v1", "foo-v2"),
        ("traffic-split-2.yaml", "foo-v1", "foo-v2"),
        ("traffic-split-3.yaml", "foo-v2", "foo-v1"),  # weights 0/1: foo-v2 has the traffic
    ],
)
def test_weighted_backend_refs_are_stepped_and_every_other_field_kept(
    sample: str, stable: str, canary: str
) -> None:
    """Each step's patch sets the two weights (with the state), validates, keeps the rest."""
    route = _applied(sample)
    gateway_schema.validate_http_route(route)
    target = ROUTER.resolve(route, app="foo", namespace="default")
    assert (target.stable.host, target.canary.host, target.mode) == (stable, canary, "host")
    for weight in WEIGHTS:
        ops = ROUTER.weight_ops(
            target, route, canary_weight=weight, annotations={ROLLOUT: '{"w": 1}'}
        )
        assert ops[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}
        after = apply_patch(route, ops)
        gateway_schema.validate_http_route(after)
        assert ROUTER.weights(after, target) == [(100 - weight, weight)]
        assert ROUTER.drift(after, target, weight) is None
        assert after["metadata"]["annotations"][ROLLOUT] == '{"w": 1}'
        assert _without_weights(after) == _without_weights(route)


def test_a_plain_rule_gets_a_copy_of_the_stable_backend_ref_for_the_canary() -> None:
    """traffic-split-1: the catch-all rule to foo-v1 is split; the testers' rule stays."""
    route = _applied("traffic-split-1.yaml")
    target = ROUTER.resolve(route, app="foo", namespace="default", canary="foo-v2")
    after = apply_patch(route, ROUTER.weight_ops(target, route, canary_weight=10, annotations={}))
    gateway_schema.validate_http_route(after)
    assert after["spec"]["rules"][0]["backendRefs"] == [
        {"name": "foo-v1", "port": 8080, "weight": 90},
        {"name": "foo-v2", "port": 8080, "weight": 10},
    ]
    assert after["spec"]["rules"][1] == route["spec"]["rules"][1]


def test_a_missing_weight_is_one_as_in_the_gateway_api() -> None:
    """No weight on one side and 0 on the other: the unweighted side is the stable."""
    route = _applied("simple-split.yaml")
    refs = route["spec"]["rules"][0]["backendRefs"]
    del refs[0]["weight"]
    refs[1]["weight"] = 0
    target = ROUTER.resolve(route, app="foo", namespace="default")
    assert (target.stable.host, ROUTER.weights(route, target)) == ("foo-v1", [(1, 0)])
    after = apply_patch(route, ROUTER.weight_ops(target, route, canary_weight=30, annotations={}))
    assert [r["weight"] for r in after["spec"]["rules"][0]["backendRefs"]] == [70, 30]


def test_equal_weights_need_the_canary_named() -> None:
    """Two unweighted backendRefs (1/1) cannot tell the stable: --canary is asked for."""
    route = _applied("simple-split.yaml")
    for ref in route["spec"]["rules"][0]["backendRefs"]:
        del ref["weight"]
    with pytest.raises(UsageError, match="HTTPRoute simple-split splits foo-v1 / foo-v2"):
        ROUTER.resolve(route, app="foo", namespace="default")


def test_collapse_then_undo_write_valid_http_routes() -> None:
    """After a promotion the split becomes one backendRef (fields kept); undo points it back."""
    route = _applied("simple-split.yaml")
    target = ROUTER.resolve(route, app="foo", namespace="default")
    promoted = apply_patch(
        route, ROUTER.weight_ops(target, route, canary_weight=100, annotations={})
    )
    previous, new = Destination("foo-v1"), Destination("foo-v2")
    found = ROUTER.collapse(promoted, namespace="default", previous=previous, stable=new)
    assert (found.routes, found.skipped) == ((0,), ())
    collapsed = apply_patch(promoted, found.ops)
    gateway_schema.validate_http_route(collapsed)
    assert collapsed["spec"]["rules"][0]["backendRefs"] == [{"name": "foo-v2", "port": 8080}]
    undone = apply_patch(
        collapsed,
        ROUTER.undo(collapsed, namespace="default", previous=previous, current=new, collapsed=[0]),
    )
    gateway_schema.validate_http_route(undone)
    assert undone["spec"]["rules"][0]["backendRefs"] == [{"name": "foo-v1", "port": 8080}]


def test_a_half_split_rule_is_left_split_and_reported_in_http_route_words() -> None:
    """Collapse never moves traffic: a rule not all on the new stable stays as it is."""
    route = _applied("simple-split.yaml")
    found = ROUTER.collapse(
        route, namespace="default", previous=Destination("foo-v1"), stable=Destination("foo-v2")
    )
    assert found.ops == []
    assert found.skipped == (
        "HTTPRoute simple-split rules[0] is at 90/10, not all on foo-v2: left split",
    )


def test_errors_speak_of_http_routes_and_rules() -> None:
    """A three-way split is refused naming the HTTPRoute and its rule, not a VirtualService."""
    route = _applied("simple-split.yaml")
    route["spec"]["rules"][0]["backendRefs"].append({"name": "foo-v3", "port": 8080, "weight": 0})
    with pytest.raises(PreflightError) as exc:
        ROUTER.resolve(route, app="foo", namespace="default")
    assert exc.value.message.startswith("HTTPRoute simple-split rules[0] splits foo across 3")


def test_backends_other_than_services_are_never_the_apps_destinations() -> None:
    """A ServiceImport named like the app is not one of its Services: nothing to drive."""
    route = _applied("simple-split.yaml")
    route["spec"]["rules"][0]["backendRefs"][1].update(
        group="multicluster.x-k8s.io", kind="ServiceImport"
    )
    assert not ROUTER.routes_app(
        {"spec": {"rules": [{"backendRefs": [route["spec"]["rules"][0]["backendRefs"][1]]}]}},
        app="foo",
        namespace="default",
    )
    with pytest.raises(InputError):
        ROUTER.resolve(route, app="foo", namespace="default")


def test_drift_names_the_rule_another_writer_changed() -> None:
    """Weights another writer set are reported by rule, in HTTPRoute words."""
    route = _applied("simple-split.yaml")
    target = ROUTER.resolve(route, app="foo", namespace="default")
    assert ROUTER.drift(route, target, 20) == (
        "HTTPRoute simple-split has rules[0] 90/10 (stable/canary) where canaryctl wrote 80/20"
    )


def test_istio_only_paths_have_no_http_route_equivalent() -> None:
    """A subset rewrite cannot be translated: refused, never written somewhere else."""
    with pytest.raises(InputError, match="subsets"):
        route_ops(
            [{"op": "replace", "path": "/spec/http/0/route/1/destination/subset", "value": "v2"}]
        )


def test_the_pinned_crd_still_has_the_cel_rules_the_schema_helper_decided_on() -> None:
    """A newer CRD with other CEL rules must make us look at gateway_schema's decision again."""
    assert gateway_schema.cel_rules(gateway_schema.schema()) == gateway_schema.CEL_RULES


def test_the_schema_helper_rejects_what_the_api_server_would() -> None:
    """A negative weight and an unknown (pruned) field are both reported."""
    bad = {"spec": {"rules": [{"backendRefs": [{"name": "a", "weight": -1, "extra": 1}]}]}}
    assert len(gateway_schema.http_route_errors(bad)) == 2
