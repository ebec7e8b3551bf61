"""canaryctl.mesh.routes against Istio's own samples, the CRD schema and hand-built edge cases."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryctl.errors import PreflightError, TargetNotFoundError, UsageError
from canaryctl.mesh.routes import (
    Destination,
    SplitRoute,
    Target,
    apply_patch,
    deployment_available,
    destination_rule_subsets,
    find_target,
    infer_app,
    normalise_host,
    preflight_subsets,
    select_deployments,
    weight_patch,
    weights_of,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for istio_schema
import istio_schema

BOOKINFO = istio_schema.ISTIO_DIR / "bookinfo-networking"
WEIGHTS = [0, 20, 40, 60, 80, 100]
ROLLOUT = "canaryctl.io/rollout"


def _docs(path: Path, kind: str) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d and d.get("kind") == kind]


def _fixture_vs() -> dict[tuple[str, str], dict[str, Any]]:
    if not BOOKINFO.is_dir():
        raise FileNotFoundError(f"Istio samples not found at {BOOKINFO}")
    return {
        (path.name, vs["metadata"]["name"]): vs
        for path in sorted(BOOKINFO.glob("*.yaml"))
        for vs in _docs(path, "VirtualService")
    }


FIXTURE_VS = _fixture_vs()
NOT_FOUND = "not found"
TIE = "tie"
# (file, VirtualService) -> app -> outcome: NOT_FOUND, TIE, or (stable, canary, canary weight).
EXPECTED: dict[tuple[str, str], dict[str, Any]] = {
    ("bookinfo-gateway.yaml", "bookinfo"): {"productpage": NOT_FOUND},
    ("certmanager-gateway.yaml", "cert-manager"): {"cert-manager-resolver": NOT_FOUND},
    ("egress-rule-google-apis.yaml", "rewrite-port-for-googleapis"): {
        "www.googleapis.com": NOT_FOUND
    },
    ("fault-injection-details-v1.yaml", "details"): {"details": NOT_FOUND},
    ("virtual-service-all-v1.yaml", "productpage"): {"productpage": NOT_FOUND},
    ("virtual-service-all-v1.yaml", "reviews"): {"reviews": NOT_FOUND},
    ("virtual-service-all-v1.yaml", "ratings"): {"ratings": NOT_FOUND},
    ("virtual-service-all-v1.yaml", "details"): {"details": NOT_FOUND},
    ("virtual-service-details-v2.yaml", "details"): {"details": NOT_FOUND},
    ("virtual-service-ratings-db.yaml", "reviews"): {"reviews": NOT_FOUND},
    ("virtual-service-ratings-db.yaml", "ratings"): {"ratings": NOT_FOUND},
    ("virtual-service-ratings-mysql-vm.yaml", "reviews"): {"reviews": NOT_FOUND},
    ("virtual-service-ratings-mysql-vm.yaml", "ratings"): {"ratings": NOT_FOUND},
    ("virtual-service-ratings-mysql.yaml", "reviews"): {"reviews": NOT_FOUND},
    ("virtual-service-ratings-mysql.yaml", "ratings"): {"ratings": NOT_FOUND},
    ("virtual-service-ratings-test-abort.yaml", "ratings"): {"ratings": NOT_FOUND},
    ("virtual-service-ratings-test-delay.yaml", "ratings"): {"ratings": NOT_FOUND},
    ("virtual-service-reviews-50-v3.yaml", "reviews"): {"reviews": TIE},
    ("virtual-service-reviews-80-20.yaml", "reviews"): {"reviews": ("v1", "v2", 20)},
    ("virtual-service-reviews-90-10.yaml", "reviews"): {"reviews": ("v1", "v2", 10)},
    # jason is pinned to v2, everyone else to v3: no route is split.
    ("virtual-service-reviews-jason-v2-v3.yaml", "reviews"): {"reviews": NOT_FOUND},
    ("virtual-service-reviews-test-v2.yaml", "reviews"): {"reviews": NOT_FOUND},
    ("virtual-service-reviews-v2-v3.yaml", "reviews"): {"reviews": TIE},
    ("virtual-service-reviews-v3.yaml", "reviews"): {"reviews": NOT_FOUND},
}
# Split fixtures with the `canary` needed to resolve 50/50 ties.
SPLITS = [
    ("virtual-service-reviews-80-20.yaml", None),
    ("virtual-service-reviews-90-10.yaml", None),
    ("virtual-service-reviews-50-v3.yaml", "v3"),
    ("virtual-service-reviews-v2-v3.yaml", "v3"),
]


def _ns(vs: dict[str, Any]) -> str:
    return str(vs["metadata"].get("namespace", "default"))


def _apps(vs: dict[str, Any]) -> set[str]:
    ns, spec = _ns(vs), vs["spec"]
    hosts = {normalise_host(h, ns) for h in spec.get("hosts", []) if h != "*"}
    dests = {e["destination"]["host"] for h in spec.get("http", []) for e in h["route"]}
    return hosts | {normalise_host(h, ns) for h in dests}


def _live(vs: dict[str, Any], rv: str = "1001") -> dict[str, Any]:
    """The object as a cluster returns it: with a resourceVersion (fixtures have none)."""
    obj = copy.deepcopy(vs)
    obj["metadata"]["resourceVersion"] = rv
    return obj


def _split(name: str) -> tuple[dict[str, Any], str | None]:
    canary = dict(SPLITS)[name]
    vs = _live(FIXTURE_VS[(name, "reviews")])
    return vs, canary


def _without_weights(vs: dict[str, Any]) -> str:
    obj = copy.deepcopy(vs)
    for http in obj["spec"].get("http", []):
        for entry in http.get("route", []):
            entry.pop("weight", None)
    return json.dumps(obj, sort_keys=True)


def _check_patched(before: dict[str, Any], after: dict[str, Any], target: Target, w: int) -> None:
    assert weights_of(after, target) == [(100 - w, w)] * len(target.routes)
    for route in target.routes:
        entries = after["spec"]["http"][route.http_index]["route"]
        assert sum(e["weight"] for e in entries) == 100
    assert _without_weights(after) == _without_weights(before)
    for version in istio_schema.VERSIONS:
        istio_schema.validate_virtual_service(after, version)


# --- every VirtualService of Istio's samples -----------------------------------------------


def test_expectations_cover_every_fixture_virtual_service() -> None:
    assert {k: set(v) for k, v in EXPECTED.items()} == {
        k: _apps(vs) for k, vs in FIXTURE_VS.items()
    }


@pytest.mark.parametrize(("key", "app"), [(k, a) for k, apps in EXPECTED.items() for a in apps])
def test_find_target_on_bookinfo(key: tuple[str, str], app: str) -> None:
    vs, outcome = FIXTURE_VS[key], EXPECTED[key][app]
    same_file = [v for (f, _), v in FIXTURE_VS.items() if f == key[0]]
    for listed in ([vs], same_file):
        if outcome == NOT_FOUND:
            with pytest.raises(TargetNotFoundError, match="--virtual-service") as err:
                find_target(listed, app=app, namespace=_ns(vs))
            assert app in str(err.value) and vs["metadata"]["name"] in str(err.value)
        elif outcome == TIE:
            with pytest.raises(UsageError, match="--canary"):
                find_target(listed, app=app, namespace=_ns(vs))
        else:
            target = find_target(listed, app=app, namespace=_ns(vs))
            assert (target.stable.subset, target.canary.subset, target.canary_weight) == outcome
            assert (target.mode, target.vs_name, target.canary_rewritten) == (
                "subset",
                key[1],
                False,
            )


def test_tie_is_resolved_by_naming_either_side() -> None:
    vs = FIXTURE_VS[("virtual-service-reviews-50-v3.yaml", "reviews")]
    target = find_target([vs], app="reviews", namespace="default", canary="v3")
    assert (target.stable, target.canary) == (
        Destination("reviews", "v1"),
        Destination("reviews", "v3"),
    )
    target = find_target([vs], app="reviews", namespace="default", canary="v1")
    assert (target.stable.subset, target.canary.subset, target.canary_weight) == ("v3", "v1", 50)
    with pytest.raises(UsageError, match="v1 or v3"):
        find_target([vs], app="reviews", namespace="default", canary="v4")


@pytest.mark.parametrize("name", [n for n, _ in SPLITS])
@pytest.mark.parametrize("w", WEIGHTS)
def test_weight_patch_on_bookinfo_splits(name: str, w: int) -> None:
    vs, canary = _split(name)
    target = find_target([vs], app="reviews", namespace="default", canary=canary)
    ops = weight_patch(target, canary_weight=w, vs=vs)
    assert ops[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "1001"}
    assert ops == weight_patch(target, canary_weight=w)  # recorded facts == the object's
    _check_patched(vs, apply_patch(vs, ops), target, w)
    annotated = apply_patch(vs, weight_patch(target, canary_weight=w, annotations={ROLLOUT: "{}"}))
    assert annotated["metadata"]["annotations"] == {ROLLOUT: "{}"}
    _check_patched(vs, {**annotated, "metadata": vs["metadata"]}, target, w)
    istio_schema.validate_virtual_service(annotated)


@settings(max_examples=300, deadline=None)
@given(
    split=st.sampled_from(SPLITS),
    w=st.integers(0, 100),
    annotation=st.none() | st.text(max_size=30),
    use_vs=st.booleans(),
)
def test_property_split_sums_to_100_and_nothing_else_changes(
    split: tuple[str, str | None], w: int, annotation: str | None, use_vs: bool
) -> None:
    vs, canary = _split(split[0])
    target = find_target([vs], app="reviews", namespace="default", canary=canary)
    changes = {ROLLOUT: annotation}
    after = apply_patch(
        vs, weight_patch(target, canary_weight=w, annotations=changes, vs=vs if use_vs else None)
    )
    assert after["metadata"].get("annotations", {}).get(ROLLOUT) == annotation
    after["metadata"] = vs["metadata"]
    _check_patched(vs, after, target, w)
    assert after == apply_patch(vs, weight_patch(target, canary_weight=w))


# --- the schema helper really rejects bad objects -----------------------------------------


def test_schema_helper_rejects_what_the_api_server_rejects() -> None:
    vs = _live(FIXTURE_VS[("virtual-service-reviews-80-20.yaml", "reviews")])
    for version in istio_schema.VERSIONS:
        istio_schema.validate_virtual_service(vs, version)
    bad = copy.deepcopy(vs)
    bad["spec"]["http"][0]["route"][0]["weight"] = "abc"
    with pytest.raises(istio_schema.VirtualServiceInvalid, match="'abc' is not of type 'integer'"):
        istio_schema.validate_virtual_service(bad, "v1beta1")
    bad = copy.deepcopy(vs)
    del bad["spec"]["http"][0]["route"][1]["destination"]
    with pytest.raises(istio_schema.VirtualServiceInvalid, match="'destination' is a required"):
        istio_schema.validate_virtual_service(bad, "v1alpha3")
    bad = copy.deepcopy(vs)
    bad["spec"]["http"][0]["match"] = [{"uri": {"exact": "/a", "prefix": "/b"}}]  # oneOf
    with pytest.raises(istio_schema.VirtualServiceInvalid, match="uri"):
        istio_schema.validate_virtual_service(bad)
    bad = copy.deepcopy(vs)
    bad["spec"]["http"][0]["timeout"] = "0.5ms"  # x-kubernetes-validations (CEL)
    with pytest.raises(istio_schema.VirtualServiceInvalid, match="greater than 1ms"):
        istio_schema.validate_virtual_service(bad)
    bad = copy.deepcopy(vs)
    bad["metadata"]["annotations"] = {"canaryctl.io/a/b": "x", "n": 1}
    with pytest.raises(
        istio_schema.VirtualServiceInvalid, match=r"qualified name.*must be a string"
    ):
        istio_schema.validate_virtual_service(bad)


def test_schema_helper_unknown_fields_are_pruned_not_rejected_by_the_schema() -> None:
    # No additionalProperties: false in the CRD: the schema alone accepts unknown fields (the
    # server prunes them); strict mode reports them, as fieldValidation=Strict would.
    vs = _live(FIXTURE_VS[("virtual-service-reviews-80-20.yaml", "reviews")])
    vs["spec"]["trafficSplit"] = {"v2": 20}
    vs["status"] = {"anything": True}  # status preserves unknown fields
    assert istio_schema.virtual_service_errors(vs, strict=False) == []
    assert istio_schema.virtual_service_errors(vs) == [
        "/spec/trafficSplit: unknown field (pruned by the API server)"
    ]
    with pytest.raises(ValueError, match="known"):
        istio_schema.schema("v2")


@pytest.mark.parametrize(
    ("text", "nanos"),
    [("1ms", 10**6), ("2h45m", 9_900 * 10**9), (".5s", 5 * 10**8), ("0", 0), ("-1s", -(10**9))],
)
def test_go_duration(text: str, nanos: int) -> None:
    assert istio_schema.go_duration_nanos(text) == nanos


@pytest.mark.parametrize("text", ["", "1", "3x", ".s", "1s2"])
def test_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        istio_schema.go_duration_nanos(text)


# --- rest-apl: the product's own example ----------------------------------------------------


def _dest(host: str, subset: str | None = None, port: int = 8080) -> dict[str, Any]:
    dest: dict[str, Any] = {"host": host, "port": {"number": port}}
    return dest | ({"subset": subset} if subset else {})


def rest_apl(
    stable: dict[str, Any] | None = None,
    canary: dict[str, Any] | None = None,
    weights: tuple[int | None, int | None] = (80, 20),
    name: str = "rest-apl",
) -> dict[str, Any]:
    split = []
    for dest, weight in zip(
        (stable or _dest("rest-apl", "v1"), canary or _dest("rest-apl", "v2")), weights, strict=True
    ):
        split.append({"destination": dest} | ({"weight": weight} if weight is not None else {}))
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "4711"},
        "spec": {
            "hosts": ["*"],
            "gateways": ["rest-apl-gateway"],
            "http": [
                {
                    "name": "testers",
                    "match": [{"headers": {"x-tester": {"exact": "yes"}}}],
                    "route": [{"destination": _dest("rest-apl", "v2")}],
                },
                {
                    "name": "version",
                    "match": [{"uri": {"prefix": "/version"}}],
                    "rewrite": {"uri": "/"},
                    "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"},
                    "timeout": "10s",
                    "headers": {"response": {"set": {"x-served-by": "rest-apl"}}},
                    "route": split,
                },
            ],
        },
    }


def test_rest_apl_only_the_split_weights_change() -> None:
    vs = rest_apl()
    target = find_target([vs], app="rest-apl", namespace="shop")
    assert target == Target(
        vs_name="rest-apl",
        namespace="shop",
        app="rest-apl",
        mode="subset",
        stable=Destination("rest-apl", "v1"),
        canary=Destination("rest-apl", "v2"),
        routes=(SplitRoute(1, 0, 1),),
        canary_weight=20,
        resource_version="4711",
        canary_rewritten=False,
        annotation_keys=None,
    )
    for w in WEIGHTS:
        after = apply_patch(vs, weight_patch(target, canary_weight=w, vs=vs))
        assert after["spec"]["http"][0] == vs["spec"]["http"][0]  # the tester route
        _check_patched(vs, after, target, w)


@pytest.mark.parametrize(
    "hosts",
    [
        ("rest-apl-primary", "rest-apl-canary"),
        ("rest-apl-primary.shop.svc.cluster.local", "rest-apl-canary.shop.svc.cluster.local"),
        ("rest-apl-primary.shop", "rest-apl-canary.shop.svc"),
    ],
)
def test_host_level_split(hosts: tuple[str, str]) -> None:
    vs = rest_apl(_dest(hosts[0]), _dest(hosts[1]), (90, 10))
    target = find_target([vs], app="rest-apl", namespace="shop")
    assert (target.mode, target.stable.host, target.canary.host) == ("host", *hosts)
    assert (target.canary_weight, target.canary.label()) == (10, hosts[1])
    after = apply_patch(vs, weight_patch(target, canary_weight=40))
    _check_patched(vs, after, target, 40)
    target = find_target([vs], app="rest-apl", namespace="shop", canary="rest-apl-canary2")
    assert (target.canary, target.canary_rewritten) == (Destination("rest-apl-canary2"), True)
    after = apply_patch(vs, weight_patch(target, canary_weight=0))
    assert after["spec"]["http"][1]["route"][1]["destination"]["host"] == "rest-apl-canary2"
    with pytest.raises(UsageError, match="--canary rest-apl-primary is the stable host"):
        find_target([vs], app="rest-apl", namespace="shop", canary="rest-apl-primary")
    with pytest.raises(UsageError, match="--canary billing is not a host of app rest-apl"):
        find_target([vs], app="rest-apl", namespace="shop", canary="billing")


def test_host_split_of_one_host_per_route_in_both_spellings() -> None:
    vs = rest_apl(_dest("rest-apl-primary"), _dest("rest-apl-canary"), (90, 10))
    second = copy.deepcopy(vs["spec"]["http"][1])
    second["route"].reverse()
    second["route"][0]["destination"]["host"] = "rest-apl-canary.shop.svc.cluster.local"
    vs["spec"]["http"].append(second)
    target = find_target([vs], app="rest-apl", namespace="shop")
    assert target.routes == (SplitRoute(1, 0, 1), SplitRoute(2, 1, 0))
    _check_patched(vs, apply_patch(vs, weight_patch(target, canary_weight=60)), target, 60)


def test_canary_rewrite_and_errors() -> None:
    vs = rest_apl()
    target = find_target([vs], app="rest-apl", namespace="shop", canary="v3")
    assert (target.stable.subset, target.canary, target.canary_rewritten) == (
        "v1",
        Destination("rest-apl", "v3"),
        True,
    )
    ops = weight_patch(target, canary_weight=0, vs=vs)
    assert {
        "op": "replace",
        "path": "/spec/http/1/route/1/destination/subset",
        "value": "v3",
    } in ops
    after = apply_patch(vs, ops)
    assert after["spec"]["http"][1]["route"][1]["destination"] == _dest("rest-apl", "v3")
    assert after["spec"]["http"][0] == vs["spec"]["http"][0]  # the pinned tester route stays
    istio_schema.validate_virtual_service(after)
    same = find_target([vs], app="rest-apl", namespace="shop", canary="v2")
    assert not same.canary_rewritten and same.canary == Destination("rest-apl", "v2")
    with pytest.raises(UsageError, match=r"^--canary v1 is the stable subset of VirtualService"):
        find_target([vs], app="rest-apl", namespace="shop", canary="v1")


def test_ambiguous_named_and_foreign_virtual_services() -> None:
    one, two = rest_apl(), rest_apl(name="rest-apl-internal")
    other_ns = rest_apl(name="elsewhere")
    other_ns["metadata"]["namespace"] = "billing"
    with pytest.raises(UsageError, match=r"rest-apl, rest-apl-internal.*--virtual-service"):
        find_target([one, two, other_ns], app="rest-apl", namespace="shop")
    target = find_target([one, two], app="rest-apl", namespace="shop", vs_name="rest-apl-internal")
    assert target.vs_name == "rest-apl-internal"
    with pytest.raises(TargetNotFoundError, match=r"VirtualService nope not found.*rest-apl, "):
        find_target([one, two, other_ns], app="rest-apl", namespace="shop", vs_name="nope")
    with pytest.raises(TargetNotFoundError, match=r"namespace shop \(inspected: none\)"):
        find_target([other_ns], app="rest-apl", namespace="shop")
    with pytest.raises(TargetNotFoundError, match=r"splits billing .*VirtualService rest-apl "):
        find_target([one], app="billing", namespace="shop", vs_name="rest-apl")
    # "rest" must not claim rest-apl's subset split.
    with pytest.raises(TargetNotFoundError):
        find_target([one], app="rest", namespace="shop")
    # APP-* means a dash after the app name: rest-apl-primary is not a host of "rest-ap".
    hosts = rest_apl(_dest("rest-apl-primary"), _dest("rest-apl-canary"))
    with pytest.raises(TargetNotFoundError):
        find_target([hosts], app="rest-ap", namespace="shop")


def test_split_routes_must_split_the_same_pair() -> None:
    vs = rest_apl()
    third = copy.deepcopy(vs["spec"]["http"][1])
    third["route"][1]["destination"]["subset"] = "v3"
    vs["spec"]["http"].append(third)
    with pytest.raises(PreflightError, match=r"http\[1\] splits .*v2; http\[2\] splits .*v3"):
        find_target([vs], app="rest-apl", namespace="shop")


def test_routes_that_cannot_be_weighted_safely() -> None:
    vs = rest_apl()
    vs["spec"]["http"][1]["route"].append({"destination": _dest("rest-apl", "v3"), "weight": 0})
    with pytest.raises(PreflightError, match=r"http\[1\] splits rest-apl across 3 destinations"):
        find_target([vs], app="rest-apl", namespace="shop")
    vs = rest_apl(_dest("rest-apl"), _dest("rest-apl", "v2"))
    with pytest.raises(PreflightError, match="give both destinations a subset"):
        find_target([vs], app="rest-apl", namespace="shop")
    vs = rest_apl()
    flipped = copy.deepcopy(vs["spec"]["http"][1])
    flipped["route"].reverse()
    flipped["route"][0]["weight"], flipped["route"][1]["weight"] = 70, 30  # v2 70, v1 30
    vs["spec"]["http"].append(flipped)
    with pytest.raises(PreflightError, match="disagree on which"):
        find_target([vs], app="rest-apl", namespace="shop")


def test_canary_weight_is_the_maximum_when_routes_disagree() -> None:
    vs = rest_apl()
    second = copy.deepcopy(vs["spec"]["http"][1])
    second["route"][0]["weight"], second["route"][1]["weight"] = 70, 30
    vs["spec"]["http"].append(second)
    target = find_target([vs], app="rest-apl", namespace="shop")
    assert target.canary_weight == 30
    assert weights_of(vs, target) == [(80, 20), (70, 30)]


def test_known_roles_override_weights() -> None:
    vs = rest_apl(weights=(40, 60))  # a rollout at 60: the canary is the heavier side
    assert find_target([vs], app="rest-apl", namespace="shop").stable.subset == "v2"
    known = (Destination("rest-apl", "v1"), Destination("rest-apl.shop.svc.cluster.local", "v2"))
    target = find_target([vs], app="rest-apl", namespace="shop", known=known)
    assert (target.stable.subset, target.canary.subset, target.canary_weight) == ("v1", "v2", 60)
    _check_patched(vs, apply_patch(vs, weight_patch(target, canary_weight=80)), target, 80)
    gone = (Destination("rest-apl", "v1"), Destination("rest-apl", "v3"))
    with pytest.raises(PreflightError, match="no longer splits rest-apl/v1 / rest-apl/v3"):
        find_target([vs], app="rest-apl", namespace="shop", known=gone)


def test_missing_weight_counts_as_zero_and_is_added() -> None:
    vs = rest_apl(weights=(100, None))
    target = find_target([vs], app="rest-apl", namespace="shop")
    assert (target.canary_weight, target.routes) == (0, (SplitRoute(1, 0, 1, True, False),))
    ops = weight_patch(target, canary_weight=20, vs=vs)
    assert ops[1:] == [
        {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 80},
        {"op": "add", "path": "/spec/http/1/route/1/weight", "value": 20},
    ]
    assert ops == weight_patch(target, canary_weight=20)
    _check_patched(vs, apply_patch(vs, ops), target, 20)
    with pytest.raises(UsageError, match="--canary"):  # both missing: 0/0 is a tie
        find_target([rest_apl(weights=(None, None))], app="rest-apl", namespace="shop")


def test_annotations_are_created_escaped_and_removed() -> None:
    vs = rest_apl()
    target = find_target([vs], app="rest-apl", namespace="shop")
    ops = weight_patch(target, canary_weight=20, annotations={ROLLOUT: "{}", "a~b/c": "x"})
    assert ops[-3:] == [
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "add", "path": "/metadata/annotations/canaryctl.io~1rollout", "value": "{}"},
        {"op": "add", "path": "/metadata/annotations/a~0b~1c", "value": "x"},
    ]
    after = apply_patch(vs, ops)
    assert after["metadata"]["annotations"] == {ROLLOUT: "{}", "a~b/c": "x"}
    assert weight_patch(target, canary_weight=20, annotations={ROLLOUT: None}) == ops[:3]
    after["metadata"]["annotations"] = {ROLLOUT: "{}", "team": "apl"}
    live = find_target([after], app="rest-apl", namespace="shop")
    ops = weight_patch(live, canary_weight=40, annotations={ROLLOUT: None, "x": None}, vs=after)
    assert ops[-1] == {"op": "remove", "path": "/metadata/annotations/canaryctl.io~1rollout"}
    assert apply_patch(after, ops)["metadata"]["annotations"] == {"team": "apl"}


@pytest.mark.parametrize("w", [-1, 101, 20.5, True, "20"])
def test_weight_out_of_range(w: Any) -> None:
    target = find_target([rest_apl()], app="rest-apl", namespace="shop")
    with pytest.raises(ValueError, match=r"0\.\.100"):
        weight_patch(target, canary_weight=w)


def test_patch_preconditions() -> None:
    vs = rest_apl()
    target = find_target([vs], app="rest-apl", namespace="shop")
    with pytest.raises(ValueError, match="resourceVersion 4711"):
        weight_patch(target, canary_weight=20, vs=_live(vs, "4712"))
    del vs["metadata"]["resourceVersion"]
    with pytest.raises(ValueError, match="no resourceVersion"):
        weight_patch(find_target([vs], app="rest-apl", namespace="shop"), canary_weight=20)
    with pytest.raises(ValueError, match="does not apply"):
        apply_patch(vs, [{"op": "replace", "path": "/spec/nope", "value": 1}])
    before = copy.deepcopy(vs)
    apply_patch(vs, [{"op": "add", "path": "/spec/hosts/0", "value": "x"}])
    assert vs == before  # apply_patch works on a copy


def test_normalise_host_and_destination() -> None:
    for host in ["reviews", "Reviews", "reviews.default", "reviews.default.svc"]:
        assert normalise_host(host, "default") == "reviews"
    assert normalise_host("reviews.default.svc.cluster.local.", "default") == "reviews"
    assert normalise_host("reviews.other.svc.cluster.local", "default") == (
        "reviews.other.svc.cluster.local"
    )
    dest = Destination("reviews.default.svc.cluster.local", "v2")
    assert (dest.key("default"), dest.label()) == (
        ("reviews", "v2"),
        "reviews.default.svc.cluster.local/v2",
    )
    assert Destination("rest-apl-canary").label() == "rest-apl-canary"


# --- DestinationRules and Deployments ---------------------------------------------------------


@pytest.mark.parametrize(
    "file",
    [
        "destination-rule-all.yaml",
        "destination-rule-all-mtls.yaml",
        "destination-rule-reviews.yaml",
    ],
)
def test_destination_rule_subsets_from_bookinfo(file: str) -> None:
    rules = _docs(BOOKINFO / file, "DestinationRule")
    for host in ["reviews", "reviews.default.svc.cluster.local"]:
        assert destination_rule_subsets(rules, host=host, namespace="default") == {
            v: {"version": v} for v in ("v1", "v2", "v3")
        }
    with pytest.raises(
        TargetNotFoundError, match=r"no DestinationRule for host rest-apl in .*reviews"
    ):
        destination_rule_subsets(rules, host="rest-apl", namespace="default")


def test_destination_rules_merge_oldest_first() -> None:
    def rule(name: str, created: str, subsets: dict[str, str]) -> dict[str, Any]:
        meta = {"name": name, "creationTimestamp": created}
        spec = {"host": "rest-apl.shop.svc.cluster.local"}
        return {
            "metadata": meta,
            "spec": spec
            | {"subsets": [{"name": k, "labels": {"v": v}} for k, v in subsets.items()]},
        }

    rules = [
        rule("new", "2024-02-01T00:00:00Z", {"v1": "new", "v3": "3"}),
        rule("old", "2024-01-01T00:00:00Z", {"v1": "old"}),
    ]
    assert destination_rule_subsets(rules, host="rest-apl", namespace="shop") == {
        "v1": {"v": "old"},
        "v3": {"v": "3"},
    }


def test_preflight_subsets() -> None:
    rules = _docs(BOOKINFO / "destination-rule-all.yaml", "DestinationRule")
    subsets = destination_rule_subsets(rules, host="reviews", namespace="default")
    vs = FIXTURE_VS[("virtual-service-reviews-80-20.yaml", "reviews")]
    target = find_target([vs], app="reviews", namespace="default")
    assert preflight_subsets(subsets, target) == ({"version": "v1"}, {"version": "v2"})
    target = find_target([vs], app="reviews", namespace="default", canary="v4")
    with pytest.raises(
        PreflightError, match=r"subset v4 \(canary\) is not defined in DestinationRule reviews"
    ):
        preflight_subsets(subsets, target, destination_rule="reviews")
    with pytest.raises(PreflightError, match=r"DestinationRule for host reviews .*v1, v2, v3"):
        preflight_subsets(subsets, target)
    with pytest.raises(PreflightError, match="select the same pods"):
        preflight_subsets(
            {"v1": {"app": "r"}, "v2": {"app": "r"}},
            find_target([vs], app="reviews", namespace="default"),
        )
    with pytest.raises(PreflightError, match=r"subset v2 .* has no labels"):
        preflight_subsets(
            {"v1": {"app": "r"}, "v2": {}}, find_target([vs], app="reviews", namespace="default")
        )
    host = find_target(
        [rest_apl(_dest("rest-apl-a"), _dest("rest-apl-b"))], app="rest-apl", namespace="shop"
    )
    with pytest.raises(ValueError, match="subset-level"):
        preflight_subsets(subsets, host)


def test_select_deployments_from_bookinfo() -> None:
    deployments = _docs(istio_schema.ISTIO_DIR / "platform" / "bookinfo.yaml", "Deployment")
    names = [
        d["metadata"]["name"]
        for d in select_deployments(deployments, {"app": "reviews", "version": "v2"})
    ]
    assert names == ["reviews-v2"]
    # subset labels alone match every app's v1: callers add the Service selector
    assert len(select_deployments(deployments, {"version": "v1"})) > 1
    with pytest.raises(ValueError, match="at least one label"):
        select_deployments(deployments, {})


def _deployment(
    replicas: int | None, available: int | None, condition: dict[str, str] | None
) -> dict[str, Any]:
    spec = {} if replicas is None else {"replicas": replicas}
    status: dict[str, Any] = {} if available is None else {"availableReplicas": available}
    if condition is not None:
        status["conditions"] = [
            {"type": "Progressing", "status": "True"},
            {"type": "Available"} | condition,
        ]
    return {"metadata": {"name": "rest-apl-v2"}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("deployment", "expected"),
    [
        (_deployment(2, 2, {"status": "True"}), (True, "2/2 replicas available")),
        (_deployment(None, 1, {"status": "True"}), (True, "1/1 replicas available")),
        (_deployment(0, None, None), (False, "scaled to 0")),
        (_deployment(2, None, None), (False, "0/2 replicas available")),
        (
            _deployment(
                2,
                0,
                {
                    "status": "False",
                    "reason": "MinimumReplicasUnavailable",
                    "message": "Deployment does not\nhave minimum availability.",
                },
            ),
            (
                False,
                "0/2 replicas available, Available=False (MinimumReplicasUnavailable: "
                "Deployment does not have minimum availability.)",
            ),
        ),
        (
            _deployment(2, 1, None),
            (False, "1/2 replicas available, but no Available condition yet"),
        ),
        (
            _deployment(3, 1, {"status": "Unknown"}),
            (False, "1/3 replicas available, Available=Unknown"),
        ),
    ],
)
def test_deployment_available(deployment: dict[str, Any], expected: tuple[bool, str]) -> None:
    assert deployment_available(deployment) == expected


def _vs(*routes: list[dict[str, Any]], namespace: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {"name": "vs", "namespace": namespace},
        "spec": {"hosts": ["x"], "http": [{"route": r} for r in routes]},
    }


@pytest.mark.parametrize(
    ("hosts", "app"),
    [
        (["reviews-v1", "reviews-v2"], "reviews"),  # not the character prefix "reviews-v"
        (["web-primary", "web-canary"], "web"),
        (["web-primary.shop.svc.cluster.local", "web-canary.shop"], "web"),
        (["reviews", "reviews"], "reviews"),
        (["api-v1", "apiary-v2"], None),  # no app both belong to
    ],
)
def test_infer_app_uses_the_routers_host_rule(hosts: list[str], app: str | None) -> None:
    """A declarative start names the app the routes' hosts belong to, by find_target's rule."""
    vs = _vs([{"destination": {"host": h}, "weight": 50} for h in hosts])
    assert infer_app(vs) == app


def test_infer_app_prefers_a_split_route_and_ignores_other_namespaces() -> None:
    """A plain route is used only when no route splits; hosts of other namespaces are no app."""
    plain = [{"destination": {"host": "ratings", "subset": "v1"}}]
    split = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20},
    ]
    assert infer_app(_vs(plain, split)) == "reviews"
    assert infer_app(_vs(plain)) == "ratings"
    assert infer_app(_vs([{"destination": {"host": "ratings.other.svc.cluster.local"}}])) is None
    all_v1 = FIXTURE_VS[("virtual-service-all-v1.yaml", "reviews")]
    assert infer_app(all_v1) == "reviews"
