"""``canaryctl`` as a real subprocess on rest-apl with several VirtualServices or a plain route:
the emulator, the traffic simulator and a real Prometheus (``tests/e2e/conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from canaryctl.rollout import REF_ANNOTATION
from canaryctl.sandbox import load_manifests
from tests.e2e.conftest import NS, World
from tests.istio_schema import validate_virtual_service

MESH_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rest-apl-mesh"
STEPS = [50, 100]


def add_mesh_virtual_service(world: World) -> None:
    """rest-apl plus ``examples/rest-apl-mesh`` (a plain in-mesh route to v1); writes log empty."""
    world.sb.emulator.apply(load_manifests(MESH_EXAMPLE))
    world.sb.emulator.clear_writes()


def mesh_vs(world: World) -> dict[str, Any]:
    obj = world.sb.emulator.get("networking.istio.io/v1", "VirtualService", NS, "rest-apl-mesh")
    assert obj is not None
    return obj


def follower_weights(world: World) -> list[int]:
    """The canary weight of every write to rest-apl-mesh, from its pointer, in order."""
    out = []
    for w in world.sb.emulator.writes:
        if w.path.endswith("/rest-apl-mesh") and w.method == "PATCH" and w.landed:
            out += [
                json.loads(op["value"])["weight"] for op in w.body if "rollout-ref" in op["path"]
            ]
    return out


def test_gateway_and_mesh_virtual_services_step_together(world: World) -> None:
    """rest-apl-vs (gateway, 80/20) and rest-apl-mesh (mesh, plain v1): each step writes both,
    the plain route becomes a split in the first one, and both end at 0/100; no warning."""
    add_mesh_virtual_service(world)
    res = world.run(*world.promote("-o", "json", policy=world.policy(steps=STEPS)))
    assert res.code == 0, res.stderr
    data = res.json()
    assert data["result"] == "promoted" and "warnings" not in data
    assert world.distinct_weights() == STEPS
    assert sorted(set(follower_weights(world))) == STEPS
    route = mesh_vs(world)["spec"]["http"][0]["route"]
    assert [(d["destination"]["subset"], d["weight"]) for d in route] == [("v1", 0), ("v2", 100)]
    assert world.weights() == [("v1", 0), ("v2", 100)]
    ref = json.loads(mesh_vs(world)["metadata"]["annotations"][REF_ANNOTATION])
    assert ref["virtualService"] == "rest-apl-vs" and ref["weight"] == 100
    validate_virtual_service(mesh_vs(world))
    validate_virtual_service(world.vs())
    patched = [w.path.rsplit("/", 1)[1] for w in world.vs_writes()]
    assert patched[:2] == ["rest-apl-vs", "rest-apl-mesh"]  # the state first, then the other


def test_gateway_only_rest_apl_warns_that_mesh_callers_bypass_it(world: World) -> None:
    """The seed's rest-apl-vs is bound to its gateway only: promote and status warn (exit 0),
    naming the consequence; with the mesh VirtualService added, no warning."""
    res = world.run(*world.promote("--dry-run", "-o", "json"))
    assert res.code == 0, res.stderr
    [warning] = res.json()["warnings"]
    assert "in-mesh traffic to rest-apl" in warning and "not by the canary weights" in warning
    assert "mesh.bypassed" in res.stderr
    status = world.run("status", "rest-apl", "-n", NS, "-o", "json", prometheus=False)
    assert status.code == 0 and status.json()["warnings"] == [warning]
    text = world.run("status", "rest-apl", "-n", NS, prometheus=False)
    assert "warning: in-mesh traffic to rest-apl" in text.stdout
    add_mesh_virtual_service(world)
    plan = world.run(*world.promote("--dry-run", "-o", "json")).json()
    assert "warnings" not in plan
    assert [f["virtualService"] for f in plan["plan"]["followers"]] == ["rest-apl-mesh"]
    assert plan["plan"]["followers"][0]["weightsAfterFirstPatch"] == [[80, 20]]
    assert world.cluster_writes() == []


def test_plain_route_needs_canary_then_is_promoted_from_it(world: World) -> None:
    """rest-apl-vs sending everything to v1: without --canary (or with an unknown --route) exit
    2 naming the flag, nothing written; with --canary v2 --route version the first step splits
    it and the canary is promoted."""
    vs = world.vs()
    vs["spec"]["http"][0]["route"] = [{"destination": {"host": "rest-apl", "subset": "v1"}}]
    vs["spec"]["http"][0]["name"] = "version"
    world.sb.emulator.apply([vs])
    world.sb.emulator.clear_writes()
    res = world.run(*world.promote())
    assert res.code == 2 and "give --canary SUBSET" in res.stderr, res.stderr
    res = world.run(*world.promote("--canary", "v2", "--route", "nope"))
    assert res.code == 2 and "--route nope: no HTTP route of that name" in res.stderr
    assert world.cluster_writes() == []
    policy = world.policy(steps=STEPS)
    res = world.run(*world.promote("--canary", "v2", "--route", "version", policy=policy))
    assert res.code == 0, res.stderr
    assert world.state()["routes"] == ["version"]
    assert world.distinct_weights() == STEPS
    assert world.weights() == [("v1", 0), ("v2", 100)]
    validate_virtual_service(world.vs())
