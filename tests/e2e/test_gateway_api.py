"""The Gateway API world end to end: ``canaryctl promote`` as a real subprocess steps an
HTTPRoute's weighted backendRefs, the simulator follows them, a real Prometheus judges."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.mesh import apply_patch
from canaryctl.rollout import ANNOTATION
from canaryctl.sandbox import load_manifests, manifests_dir
from canaryctl.sandbox.world import Sandbox
from tests.e2e.conftest import World
from tests.gateway_schema import validate_http_route

NS, ROUTE = "gw-apl", "rest-apl-route"
GATEWAY_GROUP = "gateway.networking.k8s.io"
API = f"{GATEWAY_GROUP}/v1"


class GatewayWorld(World):
    def route(self) -> dict[str, Any]:
        obj = self.sb.emulator.get(API, "HTTPRoute", NS, ROUTE)
        assert obj is not None
        return obj

    def backend_weights(self) -> list[tuple[str, int]]:
        return [(r["name"], r["weight"]) for r in self.route()["spec"]["rules"][0]["backendRefs"]]

    def route_patches(self) -> list[list[dict[str, Any]]]:
        return [
            w.body
            for w in self.sb.emulator.writes
            if "/httproutes/" in w.path and w.method == "PATCH" and w.landed
        ]


@pytest.fixture
def gateway_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayWorld]:
    with Sandbox(scenario=request.param, router="gateway-api") as sandbox:
        sandbox.wait_ready()
        sandbox.emulator.clear_writes()
        yield GatewayWorld(sandbox, tmp_path)


@pytest.mark.parametrize(
    ("gateway_world", "code", "final"),
    [("healthy", 0, [("rest-apl-primary", 0), ("rest-apl-canary", 100)]),
     ("errors", 1, [("rest-apl-primary", 100), ("rest-apl-canary", 0)])],
    indirect=["gateway_world"],
)  # fmt: skip
def test_gateway_api_canary_is_promoted_when_healthy_and_rolled_back_when_failing(
    gateway_world: GatewayWorld, code: int, final: list[tuple[str, int]]
) -> None:
    """Router found from the HTTPRoute; every write validates; the traffic follows it."""
    world = gateway_world
    policy = world.policy()
    res = world.run("promote", "rest-apl", "-n", NS, "--policy", str(policy), "-o", "json")
    assert res.code == code, res.stderr
    data = res.json()
    assert (data["stable"], data["canary"]) == ("rest-apl-primary", "rest-apl-canary")
    assert data["virtualService"] == ROUTE
    assert world.backend_weights() == final
    state = json.loads(world.route()["metadata"]["annotations"][ANNOTATION])
    assert state["phase"] == ("Promoted" if code == 0 else "RolledBack")
    # every HTTPRoute canaryctl wrote, replayed from the seed manifest, is valid
    seed = next(d for d in load_manifests(manifests_dir("gateway-api")) if d["kind"] == "HTTPRoute")
    obj = copy.deepcopy(seed)
    obj["metadata"]["resourceVersion"] = "0"
    patches = world.route_patches()
    assert patches and not any(w.path.endswith("virtualservices") for w in world.sb.emulator.writes)
    for ops in patches:
        obj = apply_patch(obj, ops)
        validate_http_route(obj)
    assert {k: v for k, v in obj["spec"].items() if k != "rules"} == {
        k: v for k, v in seed["spec"].items() if k != "rules"
    }
    assert obj["spec"]["rules"][0]["filters"] == seed["spec"]["rules"][0]["filters"]
    # the simulator follows the HTTPRoute (it reads it every 0.2 s tick)
    assert world.sb.traffic.served("rest-apl-v2")[0] > 0
    wanted = {"rest-apl-v1": final[0][1], "rest-apl-v2": final[1][1]}
    deadline = time.monotonic() + 5
    while world.sb.traffic.weights != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert world.sb.traffic.weights == wanted


def _role_rules() -> set[tuple[str, str, str]]:
    """examples/cronjob/role.yaml as the emulator's RBAC: (verb, apiGroup, resource)."""
    role = yaml.safe_load((Path(__file__).parents[2] / "examples/cronjob/role.yaml").read_text())
    return {
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("gateway_world", ["healthy"], indirect=True)
def test_role_rules_suffice_and_each_httproutes_verb_is_needed(
    gateway_world: GatewayWorld,
) -> None:
    """With examples/cronjob/role.yaml as RBAC the Gateway API commands succeed, nothing
    denied; without get, list or patch httproutes, promote fails naming that verb."""
    world = gateway_world
    rules = _role_rules()
    world.sb.emulator.set_rbac(rules)
    policy = str(world.policy(interval="1s"))
    promote = ["promote", "rest-apl", "-n", NS, "--policy", policy, "--no-wait", "-o", "json"]
    for args, result in [
        (promote, "started"),
        (["reconcile", "-n", NS, "-o", "json"], None),
        (["status", "rest-apl", "-n", NS, "-o", "json"], "in_progress"),
        (["rollback", "rest-apl", "-n", NS, "-o", "json"], "rolled_back"),
    ]:
        time.sleep(1.1 if args[0] == "reconcile" else 0)  # the step is due
        res = world.run(*args, timeout=60, prometheus=args[0] in ("promote", "reconcile"))
        assert res.code == 0 and "forbidden" not in res.stderr.lower(), (args, res.stderr)
        data = res.json()
        if result is None:
            assert [o["action"] for o in data["rollouts"]] in (["advanced"], ["held"]), data
        else:
            assert data["result"] == result, data
    for verb in ("get", "list", "patch"):
        world.sb.emulator.set_rbac(rules - {(verb, GATEWAY_GROUP, "httproutes")})
        res = world.run(*promote, timeout=60)
        assert res.code == 3, (verb, res.stderr)
        error = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        assert len(error) == 1 and verb in error[0] and "httproutes" in error[0], error
