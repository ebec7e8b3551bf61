"""Finishing cleanly, the pure parts: route collapse and undo on Istio's bookinfo samples
(``mesh/collapse.py``), the clean-up plan (``finish.py``) and ``spec.finish`` validation."""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl import finish, rollout
from canaryctl.errors import PolicyError, PreflightError
from canaryctl.mesh.collapse import collapse_ops, guard, routes_to, undo_ops
from canaryctl.mesh.routes import Destination, apply_patch
from canaryctl.policy import AnalysisPolicy, parse_policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for istio_schema
import istio_schema

BOOKINFO = istio_schema.ISTIO_DIR / "bookinfo-networking"
V1, V2 = Destination("reviews", "v1"), Destination("reviews", "v2")
ROLLOUT = "canaryctl.io/rollout"


def _sample(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((BOOKINFO / name).read_text())
    doc["metadata"].update(namespace="default", resourceVersion="7")
    return dict(doc)


def _promoted_test_v2() -> dict[str, Any]:
    """bookinfo's reviews-test-v2 (jason -> v2, everyone else -> v1) after a rollout of v2 on
    the default route: v1 0 / v2 100, with fields of its own that must survive."""
    vs = _sample("virtual-service-reviews-test-v2.yaml")
    default = vs["spec"]["http"][1]
    default["timeout"] = "5s"
    default["route"] = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 0},
        {
            "destination": {"host": "reviews", "subset": "v2"},
            "weight": 100,
            "headers": {"request": {"set": {"x-release": "v2"}}},
        },
    ]
    return vs


def _apply(vs: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    out = apply_patch(vs, guard(vs, ops, {ROLLOUT: "{}"}))
    istio_schema.validate_virtual_service(out)
    return out


def test_routes_to_names_routes_sending_traffic_not_a_zero_weight_entry() -> None:
    """After the v2 promotion: v1 sits at weight 0 (sends nothing), v2 is named by the jason
    route and by the split's 100; an unweighted single entry counts as all the traffic."""
    vs = _promoted_test_v2()
    assert routes_to(vs, namespace="default", destination=V1) == []
    assert routes_to(vs, namespace="default", destination=V2) == [
        "VirtualService reviews http[0]",
        "VirtualService reviews http[1]",
    ]
    fqdn = Destination("reviews.default.svc.cluster.local", "v2")
    assert len(routes_to(vs, namespace="default", destination=fqdn)) == 2


def test_collapse_makes_the_promoted_split_a_plain_route_and_leaves_jason_alone() -> None:
    """The 0/100 split becomes one entry to v2 (its own fields kept, no weight); the route's
    timeout and bookinfo's jason -> v2 route are unchanged; the result is a valid VirtualService."""
    vs = _promoted_test_v2()
    found = collapse_ops(vs, namespace="default", previous=V1, stable=V2)
    assert (found.routes, found.skipped) == ((1,), ())
    out = _apply(vs, found.ops)
    assert out["spec"]["http"][1]["route"] == [
        {
            "destination": {"host": "reviews", "subset": "v2"},
            "headers": {"request": {"set": {"x-release": "v2"}}},
        }
    ]
    assert out["spec"]["http"][1]["timeout"] == "5s"
    assert out["spec"]["http"][0] == vs["spec"]["http"][0]


def test_collapse_leaves_a_split_that_is_not_all_on_the_new_stable() -> None:
    """A route of the pair at 80/20 (someone changed it since) is reported, never collapsed."""
    vs = _sample("virtual-service-reviews-80-20.yaml")
    found = collapse_ops(vs, namespace="default", previous=V1, stable=V2)
    assert found.routes == () and found.ops == []
    assert "http[0] is at 80/20" in found.skipped[0]


def test_guard_puts_the_resource_version_precondition_first() -> None:
    """Collapse ops are guarded like weight writes: resourceVersion first, annotations last."""
    vs = _promoted_test_v2()
    ops = guard(vs, [], {ROLLOUT: "x"})
    assert ops[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}
    assert ops[-1]["path"] == "/metadata/annotations/canaryctl.io~1rollout"
    with pytest.raises(ValueError, match="resourceVersion"):
        guard({"metadata": {"name": "x"}}, [], {})


def test_undo_after_collapse_sends_the_collapsed_route_back_to_v1_only() -> None:
    """Undo rewrites the subset of the collapsed route back to v1; jason -> v2 stays."""
    vs = _promoted_test_v2()
    collapsed = _apply(vs, collapse_ops(vs, namespace="default", previous=V1, stable=V2).ops)
    ops = undo_ops(collapsed, namespace="default", previous=V1, current=V2, collapsed=[1])
    out = _apply(collapsed, ops)
    assert out["spec"]["http"][1]["route"][0]["destination"] == {"host": "reviews", "subset": "v1"}
    assert out["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v2"


def test_undo_before_collapse_puts_the_split_at_previous_100() -> None:
    """Without a collapse, undo writes v1 100 / v2 0 on the rollout's split routes."""
    out = _apply(
        _promoted_test_v2(),
        undo_ops(_promoted_test_v2(), namespace="default", previous=V1, current=V2, collapsed=[]),
    )
    assert [e["weight"] for e in out["spec"]["http"][1]["route"]] == [100, 0]


def test_undo_refuses_a_collapsed_route_edited_since() -> None:
    """A recorded route that no longer sends only to v2 is an error naming it; nothing planned."""
    vs = _sample("virtual-service-reviews-test-v2.yaml")  # http[1] -> v1: not what we collapsed
    with pytest.raises(PreflightError, match=r"http\[1\] no longer sends only to reviews/v2"):
        undo_ops(vs, namespace="default", previous=V1, current=V2, collapsed=[1])


def test_host_level_collapse_and_undo_swap_the_host() -> None:
    """Host mode (reviews-primary / reviews-canary): the plain route's host is swapped back."""
    vs = _promoted_test_v2()
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "reviews-primary", "port": {"number": 9080}}, "weight": 0},
        {"destination": {"host": "reviews-canary", "port": {"number": 9080}}, "weight": 100},
    ]
    old, new = Destination("reviews-primary"), Destination("reviews-canary")
    collapsed = _apply(vs, collapse_ops(vs, namespace="default", previous=old, stable=new).ops)
    assert collapsed["spec"]["http"][1]["route"] == [
        {"destination": {"host": "reviews-canary", "port": {"number": 9080}}}
    ]
    out = _apply(
        collapsed,
        undo_ops(collapsed, namespace="default", previous=old, current=new, collapsed=[1]),
    )
    assert out["spec"]["http"][1]["route"][0]["destination"]["host"] == "reviews-primary"


# --- the plan -------------------------------------------------------------------------------
FINISH = {
    "collapseRoutes": True,
    "scaleDownIdle": "5m",
    "abortScaleDownDelay": "30s",
    "undoWindow": "1h",
}


def _plan(phase: str, spec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return finish.plan(
        {"finish": FINISH if spec is None else spec},
        phase=phase,
        stable_workload="reviews-v1",
        canary_workload="reviews-v2",
        stable={"host": "reviews", "subset": "v1"},
        canary={"host": "reviews", "subset": "v2"},
        now=1000.0,
    )


def test_promotion_plans_collapse_then_an_idle_gated_scale_down_of_the_previous_version() -> None:
    """Promoted: collapse now; scale reviews-v1 down after 300 s without requests, and only
    once the collapse is done."""
    tasks = _plan("Promoted")
    assert [(t["task"], t["target"], t.get("idleFor")) for t in tasks] == [
        ("collapse", "", None),
        ("scale-down", "reviews-v1", 300.0),
    ]
    assert [t["task"] for _, t in finish.ready(tasks, 1000.0)] == ["collapse"]
    done = finish.settle(tasks, 0, status="done", detail="ok", now=1001.0)
    assert [t["task"] for _, t in finish.ready(done, 1001.0)] == ["scale-down"]


def test_rollback_plans_the_canary_scale_down_after_the_delay_and_failure_nothing() -> None:
    """RolledBack: reviews-v2 to 0 from now + 30 s. Failed (infrastructure): nothing. No
    spec.finish: nothing at all."""
    (task,) = _plan("RolledBack")
    assert (task["target"], task["notBefore"]) == ("reviews-v2", 1030.0)
    assert finish.ready([task], 1029.0) == [] and finish.ready([task], 1030.0)
    assert _plan("Failed") == []
    assert _plan("Promoted", {}) == [] and _plan("RolledBack", {}) == []


def test_missing_data_is_not_idle() -> None:
    """No series (None) and any request keep the Deployment; only a measured 0 is idle."""
    assert not finish.judge_idle(None, workload="w", idle_for="5m").ok
    assert "missing data" in finish.judge_idle(None, workload="w", idle_for="5m").detail
    assert not finish.judge_idle(0.5, workload="w", idle_for="5m").ok
    assert finish.judge_idle(0.0, workload="w", idle_for="5m").ok


def test_the_terminal_state_carries_its_clean_up_through_the_annotation() -> None:
    """rollout's finish (promotion) stores the planned tasks in the state JSON."""
    policy = parse_policy({"spec": {"finish": FINISH}}).snapshot()
    state = rollout.begin(
        app="reviews",
        namespace="default",
        virtual_service="reviews",
        mode="subset",
        stable={"host": "reviews", "subset": "v1"},
        canary={"host": "reviews", "subset": "v2"},
        stable_workload="reviews-v1",
        canary_workload="reviews-v2",
        policy=policy,
        current_canary_weight=0,
        now=0.0,
    )
    done = rollout.force_promote(state, reason="forced", now=10.0)
    back = rollout.RolloutState.from_json(done.to_json())
    assert [t["task"] for t in back.cleanup] == ["collapse", "scale-down"]
    assert finish.undo_deadline(back.policy["spec"], back.finished_at) == 3610.0
    assert json.loads(done.to_json())["cleanup"][1]["target"] == "reviews-v1"


def test_finish_policy_is_opt_in_and_validated_with_the_field_path() -> None:
    """Absent by default; a bad duration or an unknown field is one line naming the field."""
    assert AnalysisPolicy().spec.finish is None
    with pytest.raises(PolicyError, match=r"spec\.finish\.scaleDownIdle: .*soon"):
        parse_policy({"spec": {"finish": {"scaleDownIdle": "soon"}}})
    with pytest.raises(PolicyError, match=r"spec\.finish\.collapse: unknown field"):
        parse_policy({"spec": {"finish": {"collapse": True}}})
    spec = copy.deepcopy(FINISH)
    assert parse_policy({"spec": {"finish": spec}}).snapshot()["spec"]["finish"] == FINISH


def test_the_next_rollout_carries_pending_scale_downs_and_runs_them_after_it_ends() -> None:
    """v2 promoted, v1's scale-down still pending, then a rollout of v3 from v2 starts: it takes
    over "scale v1 down" (not the collapse, nor anything about v2/v3) and plans it again, with
    its own tasks, when it ends. Undo (a rollback of a promotion) keeps only carried tasks."""
    policy = parse_policy({"spec": {"finish": FINISH}}).snapshot()

    def start(stable: str, canary: str) -> rollout.RolloutState:
        return rollout.begin(
            app="reviews",
            namespace="default",
            virtual_service="reviews",
            mode="subset",
            stable={"host": "reviews", "subset": stable},
            canary={"host": "reviews", "subset": canary},
            stable_workload=f"reviews-{stable}",
            canary_workload=f"reviews-{canary}",
            policy=policy,
            current_canary_weight=0,
            now=0.0,
        )

    v2 = rollout.force_promote(start("v1", "v2"), reason="forced", now=10.0)
    carried = finish.carry(v2.cleanup, workloads={"reviews-v2", "reviews-v3"})
    assert [(t["target"], t["carried"]) for t in carried] == [("reviews-v1", True)]
    assert finish.carry(v2.cleanup, workloads={"reviews-v1", "reviews-v3"}) == []
    v3 = replace(start("v2", "v3"), cleanup=carried)
    done = rollout.force_promote(v3, reason="forced", now=20.0)
    assert [(t["task"], t["target"]) for t in done.cleanup] == [
        ("scale-down", "reviews-v1"),
        ("collapse", ""),
        ("scale-down", "reviews-v2"),
    ]
    undone = rollout.rollback(done, reason="undone", now=30.0)
    assert [t["target"] for t in undone.cleanup] == ["reviews-v1", "reviews-v3"]
