"""``canaryctl backtest`` against the real Prometheus, fed a recorded incident: an OpenMetrics
history written into its TSDB with ``promtool tsdb create-blocks-from openmetrics``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from typer.testing import CliRunner

from canaryctl.backtest import parse_time
from canaryctl.cli import app
from canaryctl.sandbox.prometheus import PrometheusServer

NS, STABLE, CANARY = "istio-apl", "rest-apl-v1", "rest-apl-v2"
BUCKETS = (50.0, 100.0, 250.0, 500.0, 1000.0, math.inf)
SCRAPE = 15  # seconds between recorded samples
MINUTES = 12
INCIDENT_AT = 150  # seconds after the start: the canary starts answering 10 % 5xx
# recorded 3 hours ago (inside the TSDB's retention, clear of its head block), whole minutes
START = (int(time.time()) // 3600 - 3) * 3600


def _history(path: Path) -> None:
    """Both versions at 20 req/s, 0.1 % 5xx and ~120 ms; from INCIDENT_AT the canary answers
    10 % 5xx. Counters as the destination sidecars export them, one sample every SCRAPE s."""
    lines = ["# TYPE istio_requests counter"]
    times = range(START, START + MINUTES * 60 + 1, SCRAPE)

    def errors(workload: str, t: int) -> int:
        bad = min(t - START, INCIDENT_AT) * 20 // 1000
        if workload == CANARY and t - START > INCIDENT_AT:
            bad += (t - START - INCIDENT_AT) * 20 // 10
        return bad

    def labels(workload: str, **extra: str) -> str:
        pairs = {
            "reporter": "destination",
            "destination_workload_namespace": NS,
            "destination_workload": workload,
            **extra,
        }
        return ",".join(f'{k}="{v}"' for k, v in pairs.items())

    for workload in (STABLE, CANARY):
        for code in ("200", "503"):
            for t in times:
                bad = errors(workload, t)
                value = bad if code == "503" else (t - START) * 20 - bad
                lines.append(f"istio_requests_total{{{labels(workload, response_code=code)}}} "
                             f"{value} {t}")  # fmt: skip
    lines.append("# TYPE istio_request_duration_milliseconds histogram")
    share = {50.0: 0.05, 100.0: 0.35, 250.0: 0.97, 500.0: 0.996, 1000.0: 0.999, math.inf: 1.0}
    for workload in (STABLE, CANARY):
        for le in BUCKETS:
            shown = "+Inf" if le == math.inf else f"{le:g}"
            for t in times:
                value = int((t - START) * 20 * share[le])
                lines.append(f"istio_request_duration_milliseconds_bucket"
                             f"{{{labels(workload, le=shown)}}} {value} {t}")  # fmt: skip
        for t in times:
            n = (t - START) * 20
            lines.append(f"istio_request_duration_milliseconds_count{{{labels(workload)}}} {n} {t}")
            lines.append(f"istio_request_duration_milliseconds_sum{{{labels(workload)}}} "
                         f"{n * 120} {t}")  # fmt: skip
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """The CLI configures structlog to print to the runner's (then closed) stderr; undo it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    history = tmp_path_factory.mktemp("history") / "incident.om"
    _history(history)
    with PrometheusServer([], history=history) as prom:
        yield prom


def _backtest(prom: PrometheusServer, tmp: Path, spec: dict[str, Any], *args: str) -> Any:
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump({"metadata": {"name": "replayed"}, "spec": spec}))
    res = CliRunner().invoke(
        app,
        ["backtest", "rest-apl", "-n", NS, "--policy", str(policy),
         "--canary-workload", CANARY, "--stable-workload", STABLE,
         "--prometheus-url", prom.url, *args],
    )  # fmt: skip
    return res


SEQUENTIAL = {"judge": "sequential", "steps": [25, 50, 100], "interval": "1m"}


def test_backtest_rolls_back_at_the_step_the_recorded_incident_falls_in(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    """Step 1 passes on the healthy minute; step 2's window holds the incident: rolled back."""
    res = _backtest(prometheus, tmp_path, SEQUENTIAL, "--from", str(START), "--to",
                    str(START + 600), "-o", "json")  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["result"], data["outcome"]) == ("backtest", "rolled_back")
    assert data["policy"] == "replayed"
    steps = [(a["step"], a["weight"], a["action"]) for a in data["analyses"]]
    assert steps[0] == (1, 25, "advance")
    assert steps[-1][2] == "rollback"
    incident = START + INCIDENT_AT
    assert all(a["at"] <= incident for a in data["analyses"][:-1])
    assert incident < data["analyses"][-1]["at"] <= incident + 120
    failed = {m["name"] for m in data["analyses"][-1]["metrics"] if m["verdict"] == "fail"}
    assert failed & {"sequential-error-rate", "success-rate-floor"}


def test_backtest_before_the_incident_promotes_or_stays_undecided(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    """The healthy first two minutes do not decide a three-step rollout: undecided, said why."""
    res = _backtest(prometheus, tmp_path, SEQUENTIAL, "--from", str(START), "--to",
                    str(START + INCIDENT_AT))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "outcome: undecided: no decision before --to" in res.stdout
    assert " 25% " in res.stdout and "advance" in res.stdout


def test_backtest_with_the_threshold_judge_fails_the_incident_window_too(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    spec = {"judge": "threshold", "steps": [25, 50, 100], "interval": "1m"}
    res = _backtest(prometheus, tmp_path, spec, "--from", str(START), "--to",
                    str(START + 600), "-o", "json")  # fmt: skip
    data = json.loads(res.stdout)
    assert data["outcome"] == "rolled_back"
    last = data["analyses"][-1]
    assert any(m["name"] == "request-success-rate" and m["verdict"] == "fail"
               for m in last["metrics"])  # fmt: skip


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--from", "yesterday"], "--from"),
        (["--from", "now-1h", "--to", "now-2h"], "--to"),
    ],
)
def test_backtest_bad_times_exit_2_naming_the_flag(
    prometheus: PrometheusServer, tmp_path: Path, args: list[str], flag: str
) -> None:
    res = _backtest(prometheus, tmp_path, SEQUENTIAL, *args)
    assert res.exit_code == 2
    assert res.stderr.startswith(f"error: {flag}: ")


def test_backtest_without_workloads_takes_them_from_the_last_rollout_or_says_so(
    prometheus: PrometheusServer, emulator: Any, tmp_path: Path
) -> None:
    """No rollout recorded in the cluster and no --canary-workload: exit 2, nothing guessed."""
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    res = CliRunner().invoke(
        app,
        ["backtest", "rest-apl", "-n", NS, "--kubeconfig", str(kubeconfig),
         "--prometheus-url", prometheus.url, "--from", str(START), "--to", str(START + 600)],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "--canary-workload/--stable-workload: no rollout of rest-apl recorded" in res.stderr
    assert emulator.writes == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", 10_000.0),
        ("now-2h", 10_000.0 - 7200),
        ("1700000000", 1_700_000_000.0),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20", 1_700_000_000.0),  # no zone: UTC
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
    ],
)
def test_backtest_times_accept_rfc3339_unix_seconds_and_now_minus(
    text: str, expected: float
) -> None:
    assert parse_time(text, flag="--from", now=10_000.0) == expected
