"""Webhooks and notifications against a real HTTP server on loopback (no mocks of our code).

What matters: a failure (4xx, 5xx, timeout, refused connection) is never an approval and never
raises; gates wait and expire; notifications never block a rollout; secrets in URLs never
reach the logs.
"""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import TypeAdapter, ValidationError
from structlog.testing import capture_logs

from canaryctl import rollout
from canaryctl.analysis import MetricResult, combine
from canaryctl.hooks import (
    HookRunner,
    as_failed_checks,
    build_payload,
    call,
    payload_schema,
)
from canaryctl.notify import Notifier, event_for, failing_metric, render
from canaryctl.policy import AnalysisPolicy
from canaryctl.policy_hooks import NotifySpec, Webhooks, WebhookSpec
from canaryctl.rollout import RolloutState
from tests.recording_server import RecordingServer
from tests.rollouts import begin_rollout


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as s:
        yield s


@pytest.fixture
def dead_url() -> str:
    """A loopback port nobody listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def make_state(policy: dict[str, Any] | None = None, *, now: float = 1000.0) -> RolloutState:
    return begin_rollout(policy or AnalysisPolicy().snapshot(), app="reviews", now=now)


@pytest.fixture
def state() -> RolloutState:
    return make_state()


def hook(url: str, type: str = "rollout", **kw: Any) -> WebhookSpec:
    return WebhookSpec.model_validate({"name": kw.pop("name", "h"), "type": type, "url": url, **kw})


def rolled_back_on_metric(state: RolloutState) -> RolloutState:
    """A rollback decided by an analysis: the success rate breached its threshold."""
    bad = MetricResult("request-success-rate", "fail", 97.5, 99.9, ">= 99", 120.0, "97.5 < min 99")
    ok = MetricResult("request-duration", "pass", 120.0, 110.0, "<= 500", 120.0, "within")
    decision = rollout.decide(state, combine([ok, bad]), now=state.started_at + 60)
    assert decision.action == "rollback"
    return decision.state


# --- call: every failure is "not ok", none raises ------------------------------------------
def test_2xx_is_ok_and_the_payload_arrives(server: RecordingServer, state: RolloutState) -> None:
    server.script("/h", [204])
    h = hook(server.url("/h"), metadata={"team": "shop"})
    r = call(h, build_payload(h, state))
    assert (r.ok, r.status, r.error, r.attempts, r.name) == (True, 204, None, 1, "h")
    (req,) = server.requests("/h")
    assert req.method == "POST" and req.headers["Content-Type"] == "application/json"
    assert req.json == build_payload(h, state)


def test_4xx_is_not_ok_and_not_retried(server: RecordingServer, state: RolloutState) -> None:
    server.script("/h", [403])
    h = hook(server.url("/h"))
    r = call(h, build_payload(h, state))
    assert (r.ok, r.status, r.error, r.attempts) == (False, 403, "HTTP 403", 1)
    assert len(server.requests("/h")) == 1


def test_5xx_is_retried_then_not_ok(server: RecordingServer, state: RolloutState) -> None:
    server.script("/h", [503])
    h = hook(server.url("/h"), retries=2)
    started = time.monotonic()
    r = call(h, build_payload(h, state))
    assert (r.ok, r.status, r.error, r.attempts) == (False, 503, "HTTP 503", 3)
    assert len(server.requests("/h")) == 3
    assert 0.5 <= time.monotonic() - started < 3  # backoff 0.2 s + 0.4 s


def test_5xx_then_2xx_is_ok(server: RecordingServer, state: RolloutState) -> None:
    server.script("/h", [502, 200])
    h = hook(server.url("/h"))
    r = call(h, build_payload(h, state))
    assert (r.ok, r.status, r.attempts) == (True, 200, 2)


def test_timeout_is_not_ok(server: RecordingServer, state: RolloutState) -> None:
    server.script("/slow", [200], delay=3)
    h = hook(server.url("/slow"), timeout="300ms", retries=1)
    started = time.monotonic()
    r = call(h, build_payload(h, state))
    assert not r.ok and r.status is None and r.attempts == 2
    assert r.error is not None and "Timeout" in r.error
    assert time.monotonic() - started < 2


def test_connection_refused_is_not_ok(dead_url: str, state: RolloutState) -> None:
    h = hook(dead_url, retries=1)
    r = call(h, build_payload(h, state))
    assert not r.ok and r.status is None and r.attempts == 2
    assert r.error is not None and r.error.startswith("ConnectionError")


def test_redirect_and_unserialisable_body_are_not_ok(
    server: RecordingServer, state: RolloutState
) -> None:
    server.script("/moved", [302])
    assert call(hook(server.url("/moved")), {}).status == 302
    assert not call(hook(server.url("/moved")), {}).ok
    r = call(hook(server.url("/h")), {"x": object()})  # never raises, whatever goes wrong
    assert not r.ok and r.error


# --- payload --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "type",
    ["pre-rollout", "rollout", "confirm-step", "confirm-promotion", "rollback", "post-rollout"],
)
def test_payload_matches_the_schema(type: str, state: RolloutState) -> None:
    schema = payload_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    h = hook("http://x/h", type, metadata={"team": "shop", "ticket": "REL-7"})
    ended = rolled_back_on_metric(state) if type == "post-rollout" else state
    body = build_payload(h, ended)
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    assert body["metadata"] == {"team": "shop", "ticket": "REL-7"}
    assert body["canary"] == "reviews/v2" and body["stable"] == "reviews/v1"
    assert ("outcome" in body) == (type == "post-rollout")
    if type != "post-rollout":
        assert (body["step"], body["stepsTotal"], body["canaryWeight"]) == (1, 5, 20)
        assert body["stableWeight"] == 80 and body["phase"] == "Progressing"
    else:
        assert body["outcome"] == "rolled_back" and "analysis failed" in body["reason"]


def test_schema_rejects_misplaced_outcome(state: RolloutState) -> None:
    body = build_payload(hook("http://x/h", "rollout"), state)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**body, "outcome": "promoted", "reason": "x"}, payload_schema())
    post = {**body, "type": "post-rollout"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(post, payload_schema())
    with pytest.raises(ValueError, match="outcome"):
        build_payload(hook("http://x/h", "post-rollout"), state)  # still running: no outcome


# --- HookRunner -----------------------------------------------------------------------------
def test_gate_closed_three_times_then_open(server: RecordingServer, state: RolloutState) -> None:
    server.script("/gate", [403, 403, 403, 200])
    clock = Clock()
    runner = HookRunner([hook(server.url("/gate"), "confirm-step", name="qa")], clock=clock)
    for _ in range(3):
        g = runner.gate("confirm-step", state)
        assert not g.open and not g.expired and g.waiting_since == 1000.0
        assert "qa: HTTP 403" in g.detail
        clock.now += 10
    g = runner.gate("confirm-step", state)
    assert g.open and g.waiting_since is None and not g.expired
    assert len(server.requests("/gate")) == 4
    assert {r.json["type"] for r in server.requests("/gate")} == {"confirm-step"}


def test_gate_max_wait_expires(server: RecordingServer, state: RolloutState) -> None:
    server.script("/gate", [409])
    clock = Clock()
    runner = HookRunner(
        [hook(server.url("/gate"), "confirm-promotion", maxWait="30s")], clock=clock
    )
    assert not runner.gate("confirm-promotion", state).expired
    clock.now += 29
    assert not runner.gate("confirm-promotion", state).expired
    clock.now += 1
    g = runner.gate("confirm-promotion", state)
    assert not g.open and g.expired and g.waiting_since == 1000.0 and "maxWait 30s" in g.detail
    # the next step waits afresh; a wait persisted by the caller (CronJob) is honoured
    nxt = replace(state, step_index=1, weight=40)
    assert runner.gate("confirm-promotion", nxt).waiting_since == clock.now
    assert runner.gate("confirm-promotion", nxt, since=clock.now - 31).expired


def test_gate_failures_never_open(
    server: RecordingServer, dead_url: str, state: RolloutState
) -> None:
    server.script("/ok", [200])
    server.script("/broken", [500])
    hooks = [
        hook(server.url("/ok"), "confirm-step", name="a"),
        hook(server.url("/broken"), "confirm-step", name="b", retries=0),
        hook(dead_url, "confirm-step", name="c", retries=0),
    ]
    g = HookRunner(hooks).gate("confirm-step", state)
    assert not g.open and "b: HTTP 500" in g.detail and "c: ConnectionError" in g.detail
    assert HookRunner([]).gate("confirm-step", state).open  # no gates: nothing to wait for
    with pytest.raises(ValueError):
        HookRunner([]).gate("rollback", state)  # type: ignore[arg-type]


def test_rollback_hook(server: RecordingServer, dead_url: str, state: RolloutState) -> None:
    server.script("/no", [404])
    server.script("/yes", [404, 200])
    assert not HookRunner([hook(dead_url, "rollback", retries=0)]).rollback_requested(state)
    runner = HookRunner([hook(server.url("/no"), "rollback"), hook(server.url("/yes"), "rollback")])
    assert not runner.rollback_requested(state)
    assert runner.rollback_requested(state)


def test_pre_rollout_returns_the_first_failure(
    server: RecordingServer, state: RolloutState
) -> None:
    server.script("/bad", [500])
    hooks = [
        hook(server.url("/fine"), "pre-rollout", name="a"),
        hook(server.url("/bad"), "pre-rollout", name="b", retries=1),
        hook(server.url("/never"), "pre-rollout", name="c"),
    ]
    r = HookRunner(hooks).pre_rollout(state)
    assert r is not None and (r.name, r.ok, r.status, r.attempts) == ("b", False, 500, 2)
    assert server.requests("/never") == []
    assert HookRunner(hooks[:1]).pre_rollout(state) is None


def test_rollout_hook_failures_count_as_failed_checks(
    server: RecordingServer, state: RolloutState
) -> None:
    server.script("/loadtest", [400])
    hooks = [hook(server.url("/smoke")), hook(server.url("/loadtest"), name="load")]
    failures = HookRunner(hooks).rollout(state)
    assert [f.name for f in failures] == ["load"]
    checks = as_failed_checks(failures)
    assert checks[0].name == "webhook-load" and "HTTP 400" in checks[0].reason
    assert combine(checks).verdict == "fail"


def test_post_rollout_and_hooks_from_the_policy_snapshot(
    server: RecordingServer, dead_url: str
) -> None:
    snap = AnalysisPolicy().snapshot()
    specs = [hook(server.url("/done"), "post-rollout"), hook(dead_url, "post-rollout", retries=0)]
    snap["spec"]["webhooks"] = [h.model_dump(mode="json", exclude_none=True) for h in specs]
    done = rollout.rollback(make_state(snap), reason="rolled back by operator", now=1060)
    results = HookRunner().post_rollout(done, "rolled_back")  # never raises
    assert [r.ok for r in results] == [True, False]
    (req,) = server.requests("/done")
    assert req.json["outcome"] == "rolled_back" and req.json["reason"] == "rolled back by operator"
    assert HookRunner().post_rollout(done, "bogus") == []  # type: ignore[arg-type]


# --- spec validation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "Bad_Name"}, "DNS-1123"),
        ({"url": "ftp://x/y"}, "http(s) URL"),
        ({"url": "http://x:port/"}, "http(s) URL"),
        ({"timeout": "0s"}, "positive"),
        ({"timeout": "soon"}, "duration"),
        ({"retries": 11}, "less than or equal"),
        ({"maxWait": "1m"}, "gates only"),
        ({"headers": {}}, "Extra inputs"),
    ],
)
def test_webhook_spec_is_strict(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        WebhookSpec.model_validate({"name": "h", "type": "rollout", "url": "http://x/", **data})


def test_spec_lists_need_unique_names() -> None:
    same = {"name": "h", "type": "rollout", "url": "http://x/"}
    with pytest.raises(ValidationError, match="unique"):
        TypeAdapter(Webhooks).validate_python([same, same])
    with pytest.raises(ValidationError, match="at least one event"):
        NotifySpec(name="n", type="slack", url="http://x/", events=[])
    assert "step" not in NotifySpec(name="n", type="slack", url="http://x/").events


# --- notifications --------------------------------------------------------------------------
def test_notification_formats_name_the_failing_metric(
    server: RecordingServer, state: RolloutState
) -> None:
    ended = rolled_back_on_metric(state)
    assert failing_metric(ended) == {
        "name": "request-success-rate",
        "value": 97.5,
        "threshold": ">= 99",
    }
    specs = [
        NotifySpec(name=k, type=k, url=server.url(f"/{k}")) for k in ("slack", "teams", "webhook")
    ]
    notifier = Notifier(specs)
    notifier.send("rollback", ended, message=ended.reason)
    assert notifier.flush(5)
    slack = server.requests("/slack")[0].json
    assert "*Rolled back: reviews in shop*" in slack["text"]
    assert "request-success-rate = 97.5 (threshold &gt;= 99)" in slack["text"]
    assert slack["attachments"][0]["color"] == "#D00000"
    teams = server.requests("/teams")[0].json
    assert teams["@type"] == "MessageCard" and teams["@context"] == "https://schema.org/extensions"
    assert {"summary", "themeColor", "title", "text"} <= teams.keys()
    assert "request-success-rate = 97.5 (threshold >= 99)" in teams["text"]
    generic = server.requests("/webhook")[0].json
    assert generic == {
        "event": "rollback",
        "app": "reviews",
        "namespace": "shop",
        "phase": "RolledBack",
        "canaryWeight": 0,
        "message": ended.reason,
        "metric": {"name": "request-success-rate", "value": 97.5, "threshold": ">= 99"},
    }


def test_notification_events_are_filtered(server: RecordingServer, state: RolloutState) -> None:
    notifier = Notifier(
        [
            NotifySpec(name="all", type="webhook", url=server.url("/all")),
            NotifySpec(name="steps", type="webhook", url=server.url("/steps"), events=["step"]),
        ]
    )
    notifier.send("step", state, message="step 1 passed")
    notifier.send("start", state, message="started")
    assert notifier.flush(5)
    assert [r.json["event"] for r in server.requests("/all")] == ["start"]
    assert [r.json["event"] for r in server.requests("/steps")] == ["step"]
    assert server.requests("/all")[0].json["metric"] is None
    assert notifier.close(5)


@pytest.mark.parametrize("target", ["dead", "slow"])
def test_a_broken_notifier_never_blocks(
    target: str, server: RecordingServer, dead_url: str, state: RolloutState
) -> None:
    server.script("/slow", [200], delay=5)
    url = dead_url if target == "dead" else server.url("/slow")
    notifier = Notifier([NotifySpec(name="n", type="slack", url=url, timeout="5s")])
    for event in ("start", "pause", "resume"):
        started = time.perf_counter()
        notifier.send(event, state, message="x")
        assert time.perf_counter() - started < 0.5  # a blocking send would retry: >= 0.6 s
    started = time.perf_counter()
    if target == "dead":  # refused at once: 3 messages x 3 attempts, backoff 0.2 s + 0.4 s
        assert notifier.flush(10)
        assert time.perf_counter() - started < 5
    else:  # still waiting for the slow target: flush gives up at its timeout
        assert not notifier.flush(0.5)
        assert time.perf_counter() - started < 1.5


def test_full_queue_drops_instead_of_blocking(server: RecordingServer, state: RolloutState) -> None:
    server.script("/slow", [200], delay=5)
    notifier = Notifier(
        [NotifySpec(name="n", type="webhook", url=server.url("/slow"))], queue_size=2
    )
    started = time.perf_counter()
    for _ in range(10):
        notifier.send("start", state, message="x")
    assert time.perf_counter() - started < 0.1
    assert notifier.dropped >= 7


def test_render_rejects_unknown_types_but_send_never_raises(state: RolloutState) -> None:
    with pytest.raises(ValueError):
        render("pager", "start", state, message="x", metric=None)
    Notifier([]).send("start", state, message="x")  # no targets: nothing happens
    Notifier().send("start", replace(state, policy={"spec": {"notify": [{}]}}), message="x")


def test_event_for_transitions(state: RolloutState) -> None:
    t = state.started_at
    assert event_for(None, state) == "start"
    paused = rollout.pause(state, reason="paused", now=t + 1)
    assert event_for(state, paused) == "pause"
    assert event_for(paused, rollout.resume(paused, now=t + 2)) == "resume"
    passed = combine([MetricResult("m", "pass", 1.0, 1.0, "<= 2", 100.0, "ok")])
    assert event_for(state, rollout.decide(state, passed, now=t + 60).state) == "step"
    assert event_for(state, rolled_back_on_metric(state)) == "rollback"
    assert event_for(state, rollout.fail(state, reason="prometheus down", now=t + 3)) == "failure"
    promoted = rollout.force_promote(state, reason="forced", now=t + 3)
    assert event_for(state, promoted) == "promotion"
    assert event_for(state, rollout.restart_window(state, now=t + 4, reason="hold")) is None


# --- secrets --------------------------------------------------------------------------------
def test_url_credentials_never_reach_logs(
    server: RecordingServer, dead_url: str, state: RolloutState
) -> None:
    server.script("/x", [503, 200])
    creds = server.url("/x", userinfo="user:secret")
    dead = dead_url.replace("http://", "http://user:secret@")
    with capture_logs() as logs:
        r = call(hook(creds), build_payload(hook(creds), state))
        call(hook(dead, retries=1), {})
        notifier = Notifier([NotifySpec(name="n", type="slack", url=server.url("/T0/B0/secret"))])
        notifier.send("start", state, message="x")
        assert notifier.flush(5)
    assert r.ok and r.attempts == 2
    assert logs and "secret" not in repr(logs)
    assert {e["endpoint"] for e in logs if "endpoint" in e} >= {f"http://127.0.0.1:{server.port}"}
    auth = server.requests("/x")[0].headers["Authorization"]  # the credentials were used
    assert base64.b64decode(auth.split()[1]) == b"user:secret"
    with pytest.raises(ValidationError) as exc:
        WebhookSpec(name="h", type="rollout", url="gopher://user:secret@x/")
    assert "secret" not in exc.value.errors()[0]["msg"]


# --- urlFile: the URL kept out of the cluster -----------------------------------------------
def test_url_file_is_read_at_every_call_so_rotation_works(
    server: RecordingServer, state: RolloutState, tmp_path: Path
) -> None:
    server.script("/old", [200])
    server.script("/new", [200])
    secret = tmp_path / "url"
    secret.write_text(server.url("/old") + "\n")  # as a Secret's value often ends
    h = WebhookSpec(name="h", type="rollout", urlFile=str(secret))
    assert call(h, build_payload(h, state)).ok
    secret.write_text(server.url("/new"))
    with capture_logs() as logs:
        assert call(h, build_payload(h, state)).ok
    assert [len(server.requests(p)) for p in ("/old", "/new")] == [1, 1]
    mine = [e for e in logs if e.get("name") == "h"]
    assert [e["endpoint"] for e in mine] == [f"http://127.0.0.1:{server.port}"]
    assert "url" not in h.model_dump(exclude_none=True)  # the snapshot holds only the path


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("token-abc123", "{path} does not hold an http(s) URL"),
        (b"\xff\xfe", "cannot read {path}: not UTF-8 text"),
    ],
)
def test_unreadable_url_file_is_a_failed_call_never_an_approval(
    state: RolloutState, tmp_path: Path, content: str | bytes | None, error: str
) -> None:
    path = tmp_path / "url"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    gate = WebhookSpec(name="file-gate", type="confirm-step", urlFile=str(path))
    with capture_logs() as logs:
        r = call(gate, build_payload(gate, state))
        notifier = Notifier([NotifySpec(name="file-chat", type="slack", urlFile=str(path))])
        notifier.send("start", state, message="x")
        assert notifier.flush(5)
    assert (r.ok, r.status, r.attempts) == (False, None, 0)
    assert r.error == "urlFile: " + error.format(path=path)
    mine = [e for e in logs if e.get("name") in ("file-gate", "file-chat")]
    assert [e["endpoint"] for e in mine] == [f"file:{path}"] * 2
    assert [e["error"] for e in mine] == ["urlFile: " + error.format(path=path)] * 2
    assert "abc123" not in repr(logs)
    runner = HookRunner([gate], clock=Clock())
    assert runner.gate("confirm-step", state).open is False


@pytest.mark.parametrize(
    "data",
    [{}, {"url": "http://x/", "urlFile": "/run/url"}, {"urlFile": ""}, {"url": None}],
    ids=["neither", "both", "empty-file", "null-url"],
)
def test_exactly_one_of_url_and_url_file(data: dict[str, Any]) -> None:
    for model, kind in ((WebhookSpec, "rollout"), (NotifySpec, "slack")):
        with pytest.raises(ValidationError, match=r"exactly one of url and urlFile|at least 1"):
            model.model_validate({"name": "h", "type": kind, **data})
