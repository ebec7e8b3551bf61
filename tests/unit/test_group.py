"""canaryctl.mesh.group on Istio's bookinfo samples: plain routes become splits in the first
patch, every VirtualService routing the app moves together, other writers' changes are seen."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.errors import PreflightError, TargetNotFoundError, UsageError
from canaryctl.mesh.group import find_group, mesh_warning, resolve, weights_drift
from canaryctl.mesh.routes import Destination, apply_patch, weight_patch, weights_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for istio_schema
import istio_schema

BOOKINFO = istio_schema.ISTIO_DIR / "bookinfo-networking"
ROLLOUT = "canaryctl.io/rollout"


def _reviews(file: str, name: str = "reviews", **meta: Any) -> dict[str, Any]:
    """The ``reviews`` VirtualService of a bookinfo sample, as the API server returns it."""
    docs = yaml.safe_load_all((BOOKINFO / file).read_text())
    vs = next(d for d in docs if d and d["metadata"]["name"] == "reviews")
    vs["metadata"].update(name=name, namespace="default", resourceVersion="7", **meta)
    return vs


def _first_patch(vs: dict[str, Any], w: int, **kw: Any) -> tuple[Any, dict[str, Any]]:
    [(target, obj)] = find_group([vs], app="reviews", namespace="default", **kw)
    after = apply_patch(obj, weight_patch(target, canary_weight=w, annotations={ROLLOUT: "{}"}))
    istio_schema.validate_virtual_service(after)
    return target, after


def _dest(entry: dict[str, Any]) -> tuple[str, int | None]:
    return entry["destination"]["subset"], entry.get("weight")


# (sample, canary) -> the routes after a first patch at 20 %: [(subset, weight), ...] per route
PLAIN = {
    ("virtual-service-all-v1.yaml", "v2"): [[("v1", 80), ("v2", 20)]],
    ("virtual-service-reviews-v3.yaml", "v4"): [[("v3", 80), ("v4", 20)]],
    ("virtual-service-reviews-test-v2.yaml", "v2"): [[("v2", None)], [("v1", 80), ("v2", 20)]],
    ("virtual-service-reviews-test-v2.yaml", "v3"): [[("v2", None)], [("v1", 80), ("v3", 20)]],
    ("virtual-service-reviews-jason-v2-v3.yaml", "v4"): [
        [("v2", None)],
        [("v3", 80), ("v4", 20)],
    ],
}


@pytest.mark.parametrize(("file", "canary"), list(PLAIN))
def test_plain_route_to_stable_becomes_a_split_and_the_jason_route_is_untouched(
    file: str, canary: str
) -> None:
    vs = _reviews(file)
    target, after = _first_patch(vs, 20, canary=canary)
    assert [[_dest(e) for e in h["route"]] for h in after["spec"]["http"]] == PLAIN[(file, canary)]
    split = target.routes[0].http_index
    for i, (before, now) in enumerate(zip(vs["spec"]["http"], after["spec"]["http"], strict=True)):
        if i != split:
            assert now == before  # routes elsewhere (the tester's) stay exactly as they were
    assert {k: v for k, v in after["spec"]["http"][split].items() if k != "route"} == {
        k: v for k, v in vs["spec"]["http"][split].items() if k != "route"
    }
    assert weights_of(vs, target) == [(100, 0)]  # before: the plain route takes everything
    assert weights_of(after, target) == [(80, 20)]


def test_a_tester_route_to_the_stable_is_not_split_unless_named_with_route() -> None:
    """The release after the collapse onto v2: ``jason`` -> v2 pins testers, so only the
    catch-all to v2 gets v3; ``--route`` naming the tester route moves it too."""
    vs = _reviews("virtual-service-reviews-test-v2.yaml")
    vs["spec"]["http"][1]["route"][0]["destination"]["subset"] = "v2"
    _, after = _first_patch(vs, 20, canary="v3")
    assert after["spec"]["http"][0] == vs["spec"]["http"][0]
    assert [_dest(e) for e in after["spec"]["http"][1]["route"]] == [("v2", 80), ("v3", 20)]
    vs["spec"]["http"][0]["name"] = "testers"
    _, after = _first_patch(vs, 20, canary="v3", route_names=["testers"])
    assert [_dest(e) for e in after["spec"]["http"][0]["route"]] == [("v2", 80), ("v3", 20)]
    assert after["spec"]["http"][1] == vs["spec"]["http"][1]


def test_canary_copies_the_stable_host_and_port_and_swaps_the_subset_or_host() -> None:
    vs = _reviews("virtual-service-all-v1.yaml")
    vs["spec"]["http"][0]["route"][0]["destination"] |= {"port": {"number": 9080}}
    vs["spec"]["http"][0]["route"][0]["headers"] = {"request": {"set": {"x-team": "a"}}}
    _, after = _first_patch(vs, 10, canary="v2")
    stable, canary = after["spec"]["http"][0]["route"]
    assert canary == {
        "destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}},
        "headers": {"request": {"set": {"x-team": "a"}}},
        "weight": 10,
    }
    assert stable["weight"] == 90
    host_level = _reviews("virtual-service-all-v1.yaml")
    del host_level["spec"]["http"][0]["route"][0]["destination"]["subset"]
    target, after = _first_patch(host_level, 30, canary="reviews-canary")
    assert target.mode == "host"
    assert [e["destination"] for e in after["spec"]["http"][0]["route"]] == [
        {"host": "reviews"},
        {"host": "reviews-canary"},
    ]


@pytest.mark.parametrize(
    "file",
    [
        "virtual-service-all-v1.yaml",
        "virtual-service-reviews-v3.yaml",
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-reviews-jason-v2-v3.yaml",
    ],
)
def test_plain_route_without_canary_is_exit_2_saying_to_give_canary(file: str) -> None:
    with pytest.raises(TargetNotFoundError, match="give --canary SUBSET") as err:
        find_group([_reviews(file)], app="reviews", namespace="default")
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    ("file", "current"),
    [("virtual-service-reviews-80-20.yaml", 20), ("virtual-service-reviews-90-10.yaml", 10)],
)
def test_existing_splits_are_driven_as_before(file: str, current: int) -> None:
    target, after = _first_patch(_reviews(file), 40)
    assert (target.stable, target.canary, target.canary_weight) == (
        Destination("reviews", "v1"),
        Destination("reviews", "v2"),
        current,
    )
    assert weights_of(after, target) == [(60, 40)]


def test_route_flag_limits_the_rollout_to_named_routes() -> None:
    vs = _reviews("virtual-service-reviews-test-v2.yaml")
    vs["spec"]["http"].insert(1, copy.deepcopy(vs["spec"]["http"][1]))
    vs["spec"]["http"][1] |= {"name": "beta", "match": [{"uri": {"prefix": "/beta"}}]}
    vs["spec"]["http"][2]["name"] = "default"
    _, after = _first_patch(vs, 20, canary="v3", route_names=["beta"])
    assert [len(h["route"]) for h in after["spec"]["http"]] == [1, 2, 1]
    _, after = _first_patch(vs, 20, canary="v3", route_names=["default", "beta"])
    assert [len(h["route"]) for h in after["spec"]["http"]] == [1, 2, 2]
    with pytest.raises(UsageError, match="--route nope: no HTTP route of that name in reviews"):
        find_group([vs], app="reviews", namespace="default", canary="v3", route_names=["nope"])


def test_plain_routes_to_several_destinations_without_a_catch_all_need_route() -> None:
    vs = _reviews("virtual-service-reviews-test-v2.yaml")
    vs["spec"]["http"][1]["match"] = [{"uri": {"prefix": "/"}}]
    with pytest.raises(UsageError, match="--route"):
        find_group([vs], app="reviews", namespace="default", canary="v3")


def test_every_virtual_service_of_the_app_moves_the_split_one_first() -> None:
    gateway = _reviews("virtual-service-reviews-80-20.yaml", "reviews-gw")
    gateway["spec"]["gateways"] = ["bookinfo-gateway"]
    mesh = _reviews("virtual-service-all-v1.yaml", "a-reviews-mesh")
    other = next(  # productpage's: routes another app, not a member
        d for d in yaml.safe_load_all((BOOKINFO / "virtual-service-all-v1.yaml").read_text())
    )
    found = find_group([mesh, other, gateway], app="reviews", namespace="default")
    assert [t.vs_name for t, _ in found] == ["reviews-gw", "a-reviews-mesh"]
    (gw_target, _), (mesh_target, mesh_vs) = found
    assert (mesh_target.stable, mesh_target.canary) == (gw_target.stable, gw_target.canary)
    after = apply_patch(mesh_vs, weight_patch(mesh_target, canary_weight=40))
    istio_schema.validate_virtual_service(after)
    assert weights_of(after, mesh_target) == [(60, 40)]
    assert mesh_warning([v for _, v in found], app="reviews", namespace="default") is None
    named = find_group([mesh, gateway], app="reviews", namespace="default", names=["reviews-gw"])
    assert [t.vs_name for t, _ in named] == ["reviews-gw"]
    primary = find_group(
        [mesh, gateway], app="reviews", namespace="default", primary="a-reviews-mesh"
    )
    assert primary[0][0].vs_name == "a-reviews-mesh"
    with pytest.raises(TargetNotFoundError, match="--virtual-service"):
        find_group([mesh], app="reviews", namespace="default", names=["nope"])


def test_virtual_services_disagreeing_on_the_stable_are_refused() -> None:
    gateway = _reviews("virtual-service-reviews-80-20.yaml", "reviews-gw")
    mesh = _reviews("virtual-service-reviews-v3.yaml", "reviews-mesh")
    with pytest.raises(PreflightError, match="disagree"):
        find_group([mesh, gateway], app="reviews", namespace="default", canary="v2")


def test_gateway_only_virtual_services_warn_that_mesh_callers_bypass_them() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "rest-apl"
    rest_apl = yaml.safe_load((examples / "virtualservice.yaml").read_text())
    text = mesh_warning([rest_apl], app="rest-apl", namespace="istio-apl")
    assert text is not None and "rest-apl-gateway" in text and "replica count" in text
    with_mesh = copy.deepcopy(rest_apl)
    with_mesh["spec"]["gateways"].append("mesh")
    assert mesh_warning([rest_apl, with_mesh], app="rest-apl", namespace="istio-apl") is None
    assert (
        mesh_warning([_reviews("virtual-service-all-v1.yaml")], app="reviews", namespace="default")
        is None
    )


def test_weights_drift_names_the_route_and_both_weights() -> None:
    vs = _reviews("virtual-service-reviews-80-20.yaml")
    target = resolve(vs, app="reviews", namespace="default")
    assert weights_drift(vs, target, 20) is None
    assert weights_drift(vs, target, 40) == (
        "VirtualService reviews has http[0] 80/20 (stable/canary) where canaryctl wrote 60/40"
    )


def test_a_plain_follower_is_split_with_the_known_pair() -> None:
    mesh = _reviews("virtual-service-reviews-test-v2.yaml")
    known = (Destination("reviews", "v1"), Destination("reviews", "v3"))
    target = resolve(mesh, app="reviews", namespace="default", known=known)
    after = apply_patch(mesh, weight_patch(target, canary_weight=60))
    istio_schema.validate_virtual_service(after)
    assert [[_dest(e) for e in h["route"]] for h in after["spec"]["http"]] == [
        [("v2", None)],
        [("v1", 40), ("v3", 60)],
    ]
