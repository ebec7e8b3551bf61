"""Finishing cleanly (``spec.finish``) through the real CLI, emulator, simulator and Prometheus."""

from __future__ import annotations

from tests.e2e.conftest import World
from tests.istio_schema import validate_virtual_service

IDLE = 3.0


def test_promotion_collapses_the_route_and_scales_v1_down_only_after_it_went_idle(
    world: World,
) -> None:
    """Sidecars apply routes 5 s late (longer than a step), so v1 still receives requests after
    the promotion: the route becomes a plain route to v2 at once, and v1 is scaled to 0 only once
    Prometheus has shown it no requests for 3 s. No request reached v1 while it had no replica.
    Then `undo` exits 2 naming the scaled-down Deployment and changes nothing."""
    traffic = world.sb.traffic
    traffic.propagation = 5.0
    unrouted = traffic.unrouted("rest-apl-v1")  # a lifetime counter: the sandbox is shared
    finish = {"collapseRoutes": True, "scaleDownIdle": f"{IDLE:g}s", "undoWindow": "1m"}
    policy = world.policy(steps=[50, 100], finish=finish)
    res = world.run(*world.promote("-o", "json", policy=policy))
    assert res.code == 0, res.stderr
    data = res.json()
    assert data["result"] == "promoted"
    vs = world.vs()
    assert vs["spec"]["http"][0]["route"] == [{"destination": {"host": "rest-apl", "subset": "v2"}}]
    validate_virtual_service(vs)
    collapse, scale = data["cleanup"]
    assert (collapse["task"], collapse["status"], collapse["routes"]) == (
        "collapse",
        "done",
        {"rest-apl-vs": [0]},
    )
    assert (scale["task"], scale["target"], scale["status"]) == (
        "scale-down",
        "rest-apl-v1",
        "done",
    )
    v1 = world.sb.emulator.get("apps/v1", "Deployment", "istio-apl", "rest-apl-v1")
    assert v1 is not None and v1["spec"]["replicas"] == 0
    last = traffic.last_served("rest-apl-v1")
    state = world.state()
    assert state is not None and last is not None
    assert last > state["finished_at"], "v1 kept receiving requests after the promotion"
    assert scale["at"] - last >= IDLE - 1.5  # one scrape interval of slack
    assert traffic.unrouted("rest-apl-v1") == unrouted
    reasons = [e["reason"] for e in world.sb.emulator.list("v1", "Event", "istio-apl")]
    assert reasons[-3:] == ["Promoted", "RoutesCollapsed", "ScaledDown"]
    world.sb.emulator.clear_writes()
    res = world.run("undo", "rest-apl", "-n", "istio-apl", prometheus=False)
    assert res.code == 2 and res.stderr.strip().splitlines()[-1].startswith("error: undo:")
    assert "Deployment rest-apl-v1 is not available (scaled to 0)" in res.stderr
    assert world.cluster_writes() == [] and "Traceback" not in res.stderr
