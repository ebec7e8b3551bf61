"""Webhooks and notifications end to end: the real CLI, the emulator, the real Prometheus, and a
recording HTTP server on loopback answering as scripted."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from canaryctl.hooks import payload_schema
from tests.e2e.conftest import World
from tests.recording_server import RecordingServer


@pytest.fixture
def hooks() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def _hook(server: RecordingServer, name: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "url": server.url(f"/{name}"),
        "timeout": "2s",
        "retries": 0,
        "metadata": {"team": "payments"},
        **extra,
    }


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _payloads(server: RecordingServer, path: str) -> list[dict[str, Any]]:
    bodies = [r.json for r in server.requests(path)]
    for body in bodies:
        jsonschema.validate(body, payload_schema())
    return bodies


def test_every_hook_type_in_a_promoted_rollout(world: World, hooks: RecordingServer) -> None:
    """pre-rollout, rollout, confirm-step (no three times, then yes), confirm-promotion and
    post-rollout are called with payloads that match the documented schema; the rollout waits
    on the gate (phase Waiting) without burning its failure budget, then promotes."""
    hooks.script("/gate", [403, 403, 403, 200])
    hooks.script("/stop", [404])  # "no, do not stop"
    gate_url, slack_url = world.tmp / "gate-url", world.tmp / "slack-url"  # mounted Secrets
    gate_url.write_text(hooks.url("/gate") + "\n")
    slack_url.write_text(hooks.url("/slack"))
    gate = _hook(hooks, "gate", "confirm-step")
    del gate["url"]
    policy = world.policy(
        interval="2s",
        webhooks=[
            _hook(hooks, "smoke", "pre-rollout"),
            _hook(hooks, "load", "rollout"),
            {**gate, "urlFile": str(gate_url)},
            _hook(hooks, "approve", "confirm-promotion"),
            _hook(hooks, "stop", "rollback"),
            _hook(hooks, "done", "post-rollout"),
        ],
        notify=[
            {
                "name": "chat",
                "type": "slack",
                "urlFile": str(slack_url),
                "events": ["start", "step", "promotion"],
            }
        ],
    )
    proc = world.popen(*world.promote("-o", "json", policy=policy))
    phases = set()
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        state = world.state()
        if state:
            phases.add(state["phase"])
        time.sleep(0.2)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Waiting" in phases
    assert world.state()["failed"] == 0 and world.state()["phase"] == "Promoted"
    gate = _payloads(hooks, "/gate")
    assert len(gate) >= 4 + 3  # three refusals at step 1, then one yes per remaining step
    assert gate[0]["type"] == "confirm-step" and gate[0]["metadata"] == {"team": "payments"}
    assert gate[0]["app"] == "rest-apl" and gate[0]["canary"] == "rest-apl/v2"
    assert len(_payloads(hooks, "/smoke")) == 1
    assert len(_payloads(hooks, "/load")) >= 5
    assert len(_payloads(hooks, "/approve")) == 1
    stop = _payloads(hooks, "/stop")
    assert len(stop) >= 5
    done = _payloads(hooks, "/done")
    assert [d["outcome"] for d in done] == ["promoted"]
    hooks.wait_for("/slack", 6, timeout=5)
    texts = [r.json["text"] for r in hooks.requests("/slack")]
    assert "start" in texts[0].lower() or "started" in texts[0].lower()
    assert "promot" in texts[-1].lower()
    events = [e["reason"] for e in world.sb.emulator.list("v1", "Event", "istio-apl")]
    assert "AwaitingApproval" in events
    stored = world.vs()["metadata"]["annotations"]["canaryctl.io/rollout"]
    assert str(gate_url) in stored and "/gate" not in stored.replace(str(gate_url), "")
    assert "/slack" not in stored.replace(str(slack_url), "")  # the URLs stayed in the files


def test_rollback_webhook_stops_the_rollout_within_one_poll(
    world: World, hooks: RecordingServer
) -> None:
    """The "stop now" button: the rollback hook answers 2xx at its third poll; the rollout is
    rolled back right then (exit 1), and the Teams notification names the reason."""
    hooks.script("/stop", [404, 404, 200])
    policy = world.policy(
        interval="2s",
        webhooks=[_hook(hooks, "stop", "rollback")],
        notify=[{"name": "teams", "type": "teams", "url": hooks.url("/teams")}],
    )
    res = world.run(*world.promote("-o", "json", policy=policy))
    assert res.code == 1, res.stderr
    data = res.json()
    assert data["reason"] == "rollback requested by a webhook"
    assert len(hooks.requests("/stop")) == 3
    assert world.distinct_weights()[-1] == 0 and max(world.written_weights()) <= 60
    cards = [r.json for r in hooks.wait_for("/teams", 2, timeout=5)]
    assert cards[-1]["@type"] == "MessageCard" and "rollback" in cards[-1]["text"].lower()


def test_failing_pre_rollout_hook_shifts_nothing(world: World, hooks: RecordingServer) -> None:
    """A notification urlFile that is not there, then a pre-rollout smoke test answering 500:
    exit 2 each time, one line naming the cause, zero cluster writes."""
    missing = world.tmp / "no-such-secret"
    policy = world.policy(notify=[{"name": "chat", "type": "slack", "urlFile": str(missing)}])
    res = world.run(*world.promote(policy=policy))
    assert res.code == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: spec.notify[0].urlFile: cannot read {missing}: No such file or directory"
    )
    assert world.cluster_writes() == []
    hooks.script("/smoke", [500])
    policy = world.policy(webhooks=[_hook(hooks, "smoke", "pre-rollout")])
    res = world.run(*world.promote(policy=policy))
    assert res.code == 2
    assert "pre-rollout webhook smoke failed (HTTP 500)" in res.stderr
    assert world.cluster_writes() == []
    assert world.weights() == [("v1", 80), ("v2", 20)]


def test_broken_notifier_and_failing_rollout_hook(world: World, hooks: RecordingServer) -> None:
    """A notifier on a dead port does not delay or fail a rollout; a rollout hook that fails
    (e.g. the load test could not start) fails the analysis like a failed metric."""
    dead = _dead_port()
    hooks.script("/load", [200, 500])
    policy = world.policy(
        interval="2s",
        webhooks=[_hook(hooks, "load", "rollout")],
        notify=[
            {"name": "gone", "type": "webhook", "url": f"http://127.0.0.1:{dead}/x", "retries": 1}
        ],
    )
    t0 = time.monotonic()
    res = world.run(*world.promote("-o", "json", policy=policy))
    assert res.code == 1, res.stderr
    assert time.monotonic() - t0 < 40
    last = res.json()["steps"][-1]
    assert any(m["name"] == "webhook-load" and m["verdict"] == "fail" for m in last["metrics"])
    assert len(hooks.requests("/load")) == 2  # rolled back at the first failing call
    assert world.written_weights()[-1] == 0 and max(world.written_weights()) <= 40
