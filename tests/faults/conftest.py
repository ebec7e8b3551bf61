"""Fault-injection fixtures: the worker's sandbox at 100 req/s, reset before every case; the
Prometheus fault proxy; and the collector that writes ``docs/reliability.md``.

Every test gets the sandbox of the worker's ``worker_sandbox`` back in the seed state
(``tests/sandboxes.py``) and the proxy listening with nothing scripted. canaryctl runs as its
own process against the emulator and the proxy in front of the real Prometheus, forked from the
worker's zygote like every e2e command (``tests/forkcli.py``; ``CANARYCTL_TESTS_SUBPROCESS=1``
starts ``python -m canaryctl`` instead).

The summary table: every test declares its case and expected outcome with the ``case`` fixture
and records what it observed before asserting, so a failing case still shows what happened. The
reports reach the xdist controller as ``user_properties``; ``pytest_sessionfinish`` there (or in
the only process without xdist) writes ``docs/reliability.md`` when the whole ``tests/faults``
directory ran without ``-k``/``-m``/``--lf``/``-x``/deselection.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.sandbox.world import Sandbox
from tests.e2e.conftest import NS, Process, Run, World
from tests.faults.promproxy import PrometheusFaultProxy
from tests.forkcli import Zygote
from tests.sandboxes import WorkerSandbox

VS = "rest-apl-vs"
LEASE = "canaryctl.rest-apl-vs"
FAULTS_DIR = Path(__file__).resolve().parent
REPORT = FAULTS_DIR.parents[1] / "docs" / "reliability.md"
ROLE = FAULTS_DIR.parents[1] / "examples" / "cronjob" / "role.yaml"
KUBE_RETRY_SECONDS = 5
FAULT_RPS = 100  # the sandbox's traffic: more requests per window than the e2e tests' 40
PROM_RETRY_BUDGET = 4  # seconds; spec.prometheus.retryBudget of the fault policy
# The fast policy of tests/e2e/conftest.py, shortened: two steps of 2 s, 1 s query timeout.
FAULT_SPEC: dict[str, Any] = {
    "steps": [50, 100],
    "interval": "2s",
    "minRequests": 10,
    "inconclusiveLimit": 1,
    "prometheus": {"timeout": "1s", "retryBudget": f"{PROM_RETRY_BUDGET}s"},
}
# Commands that take --prometheus-url.
_PROM_COMMANDS = {"promote", "reconcile", "run"}


class _Stopped(Exception):
    """The test ended before a background waiter's condition came true."""


class FaultWorld(World):
    """The e2e ``World`` pointed at the fault proxy, with helpers for timing faults."""

    spec_defaults = FAULT_SPEC

    def __init__(
        self, sandbox: Sandbox, tmp: Path, proxy: PrometheusFaultProxy, zygote: Zygote | None
    ) -> None:
        super().__init__(sandbox, tmp, zygote)
        self.proxy = proxy
        self.kube_retry_seconds = KUBE_RETRY_SECONDS
        self.extra_env: dict[str, str] = {}
        self.threads: list[threading.Thread] = []
        self.stop_threads = threading.Event()

    # --- running canaryctl ----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = super().env()
        env["CANARYCTL_KUBE_RETRY_SECONDS"] = str(self.kube_retry_seconds)
        env.update(self.extra_env)
        return env

    def argv(self, *args: str, prometheus: bool = True) -> list[str]:
        argv = super().argv(*args, prometheus=False)
        if prometheus and args and args[0] in _PROM_COMMANDS:
            argv += ["--prometheus-url", self.proxy.url]
        return argv

    def promote(self, *extra: str, policy: Path | str | None = None) -> list[str]:
        """``World.promote`` with ``-o json``: fault cases read the JSON outcome."""
        return super().promote("-o", "json", *extra, policy=policy)

    @staticmethod
    def finish(proc: Process, timeout: float = 90) -> Run:
        out, err = proc.communicate(timeout=timeout)
        return Run(proc.returncode, out or "", err or "")

    # --- timing faults --------------------------------------------------------------------
    def wait_for(self, what: str, pred: Callable[[], bool], timeout: float = 30) -> None:
        """Poll ``pred``; a background waiter gives up quietly when the test ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            if self.stop_threads.is_set():
                raise _Stopped()
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")

    def wait_written(self, count: int, timeout: float = 30) -> None:
        """Until canaryctl has written the rollout ``count`` times."""
        self.wait_for(
            f"{count} rollout writes", lambda: len(self.written_weights()) >= count, timeout
        )

    def in_background(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in a thread joined at teardown (its exception fails the test)."""
        errors: list[BaseException] = []

        def run() -> None:
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as exc:  # re-raised at teardown
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.errors = errors  # type: ignore[attr-defined]
        thread.start()
        self.threads.append(thread)

    def when_written(self, count: int, fn: Callable[[], None], delay: float = 0.0) -> None:
        """In the background: once the ``count``-th rollout write is seen, wait ``delay``, then
        ``fn()`` (the fault starts mid-rollout, at a known step)."""

        def run() -> None:
            self.wait_written(count, timeout=60)
            if delay:
                time.sleep(delay)
            fn()

        self.in_background(run)

    def analysis_queries_since(self, t: float) -> int:
        """Queries about the workloads (not preflight's ``vector(1)``) seen by the proxy."""
        return sum(1 for s in self.proxy.log() if s.at >= t and "istio_" in s.query)

    # --- reading the outcome --------------------------------------------------------------
    def weight_map(self) -> dict[str, int]:
        return dict(self.weights())

    def consistent(self) -> dict[str, Any] | None:
        """Every route sums to 100 and the annotation's weight is the canary's weight."""
        for route in self.vs()["spec"]["http"]:
            weights = [int(d.get("weight", 0)) for d in route.get("route", [])]
            assert sum(weights) == 100, weights
        state = self.state()
        if state is not None:
            assert self.weight_map()["v2"] == state["weight"], (self.weights(), state["weight"])
        return state

    def lease_holder(self) -> str | None:
        """The holder of the rollout's Lease ("" once released, None if there is none)."""
        lease = self.sb.emulator.get("coordination.k8s.io/v1", "Lease", NS, LEASE)
        return None if lease is None else str(lease["spec"].get("holderIdentity") or "")

    def observed(self, res: Run | None = None) -> str:
        """Deterministic one-line summary of the outcome, for the reliability table."""
        parts = []
        if res is not None:
            parts.append(f"exit {res.code}")
            data = _json_or_none(res.stdout)
            if data is not None and data.get("result"):
                parts.append(f"result {data['result']}")
            err = error_lines(res.stderr)
            if err:
                parts.append(f"stderr `{normalise(err[-1])[:160]}`")
            if "Traceback" in res.stderr:
                parts.append("TRACEBACK on stderr")
        try:
            w = self.weight_map()
            parts.append(f"weights v1/v2 {w.get('v1')}/{w.get('v2')}")
            state = self.state()
        except AssertionError:
            parts.append("VirtualService gone")
            state = None
        if state is not None:
            parts.append(f"phase {state['phase']}: {normalise(state['reason'])[:160]}")
        else:
            parts.append("no rollout state")
        return "; ".join(parts)


def role_rules() -> frozenset[tuple[str, str, str]]:
    """examples/cronjob/role.yaml as the emulator's RBAC: (verb, apiGroup, resource) tuples."""
    role = yaml.safe_load(ROLE.read_text())
    assert role["kind"] == "Role", role["kind"]
    return frozenset(
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    )


def _json_or_none(stdout: str) -> dict[str, Any] | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        return None
    try:
        data = json.loads(lines[0])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def error_lines(stderr: str) -> list[str]:
    """stderr lines that are not JSON log records (logs are JSON lines when not on a TTY)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def log_events(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def normalise(text: str) -> str:
    """Drop what changes from run to run: ports, measured values, request counts."""
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"(?<![\d.])\d+\.\d+(?![\d.])", "N", text)
    text = re.sub(r"\b\d+ (canary )?requests", r"N \1requests", text)
    return text.replace("|", "/").replace("\n", " ")


def assert_clean_success(res: Run) -> None:
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert error_lines(res.stderr) == [], res.stderr[-3000:]


def assert_one_line_error(res: Run, *needles: str) -> str:
    """No traceback; exactly one non-log line on stderr, ``error: ...``, naming the needles."""
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert len(lines[0]) < 600, lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def world(
    worker_sandbox: WorkerSandbox, zygote: Zygote | None, tmp_path: Path
) -> Iterator[FaultWorld]:
    """The worker's sandbox at 100 req/s, reset, behind a fault proxy with nothing scripted."""
    sandbox = worker_sandbox.get(rps=FAULT_RPS)
    with PrometheusFaultProxy(sandbox.prometheus.url) as proxy:
        w = FaultWorld(sandbox, tmp_path, proxy, zygote)
        try:
            yield w
        finally:
            w.stop_threads.set()
            w.close()
            for thread in w.threads:
                thread.join(timeout=30)
    errors = [e for t in w.threads for e in t.errors]  # type: ignore[attr-defined]
    if errors:
        raise errors[0]


class Case:
    """What a test declares for the reliability table: its case, expected and observed."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    def _set(self, key: str, value: str) -> None:
        props = [(k, v) for k, v in self._item.user_properties if k != key]
        self._item.user_properties[:] = [*props, (key, value)]

    def __call__(self, case: str, expected: str) -> None:
        self._set("case", case)
        self._set("expected", expected)

    def observed(self, text: str) -> None:
        self._set("observed", text)


@pytest.fixture
def case(request: pytest.FixtureRequest) -> Case:
    return Case(request.node)


# --- the reliability table ----------------------------------------------------------------

AREAS = {
    "test_prometheus.py": (1, "Prometheus"),
    "test_kube.py": (2, "Kubernetes API"),
    "test_process.py": (3, "Process"),
    "test_least_privilege.py": (4, "Least privilege"),
}
_RESULTS: dict[str, dict[str, Any]] = {}
_STARTED = [time.monotonic()]


def pytest_sessionstart(session: pytest.Session) -> None:
    _STARTED[0] = time.monotonic()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.nodeid.replace("\\", "/").startswith("tests/faults/"):
        return
    rec = _RESULTS.setdefault(
        report.nodeid,
        {"outcome": "passed", "props": {}, "duration": 0.0, "line": report.location[1] or 0},
    )
    if report.when == "call":  # the test body: setup may include starting the sandbox
        rec["duration"] += report.duration
    rec["props"].update(dict(report.user_properties))
    if report.failed:
        rec["outcome"] = "FAIL" if report.when == "call" else f"ERROR ({report.when})"
    elif report.skipped and rec["outcome"] == "passed":
        rec["outcome"] = "skipped"


def _whole_directory_ran(session: pytest.Session, exitstatus: int) -> bool:
    config = session.config
    if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return False
    opt = config.option
    if opt.keyword or opt.markexpr or getattr(opt, "deselect", None) or opt.maxfail:
        return False
    if getattr(opt, "lf", False) or getattr(opt, "failedfirst", False):
        return False
    base = config.invocation_params.dir
    covered = False
    for arg in config.args:
        if "::" in arg:
            return False
        path = (base / arg).resolve()
        if path == FAULTS_DIR or path in FAULTS_DIR.parents:
            covered = True
        elif FAULTS_DIR in path.parents:
            return False  # a file or subdirectory of tests/faults only
    seen = {nodeid.split("::")[0].rsplit("/", 1)[-1] for nodeid in _RESULTS}
    files = {p.name for p in FAULTS_DIR.glob("test_*.py")}
    return covered and files <= seen


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def render_table(results: dict[str, dict[str, Any]], wall: float) -> str:
    def order(item: tuple[str, dict[str, Any]]) -> tuple[int, int, str]:
        nodeid, rec = item
        file = nodeid.split("::")[0].rsplit("/", 1)[-1]
        return AREAS.get(file, (9, file))[0], rec["line"], nodeid

    rows = sorted(results.items(), key=order)
    passed = sum(1 for _, r in rows if r["outcome"] == "passed")
    lines = [
        "# Reliability: fault-injection results",
        "",
        "Generated by `pytest tests/faults -n 2` (see `tests/faults/conftest.py`); do not edit.",
        "Each row is one injected fault: what canaryctl promises (expected) and what the run",
        "showed (observed). Values that change from run to run (ports, measured values, request",
        "counts) are written `N`/`PORT`; `s` is the test body's duration in whole seconds.",
        "",
        f"{len(rows)} cases: {passed} pass, {len(rows) - passed} fail; wall time {round(wall)} s.",
        "",
        "| # | area | case | expected | observed | result | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (nodeid, rec) in enumerate(rows, 1):
        file = nodeid.split("::")[0].rsplit("/", 1)[-1]
        area = AREAS.get(file, (9, file))[1]
        props = rec["props"]
        name = props.get("case") or nodeid.split("::", 1)[-1]
        test = nodeid.split("::", 1)[-1]
        result = "pass" if rec["outcome"] == "passed" else rec["outcome"].lower()
        lines.append(
            f"| {i} | {area} | {_cell(name)}<br>`{_cell(test)}` "
            f"| {_cell(props.get('expected', '-'))} "
            f"| {_cell(props.get('observed', 'not observed (the test stopped before)'))} "
            f"| {'**' + result + '**' if result != 'pass' else result} "
            f"| {round(rec['duration'])} |"
        )
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller writes
        return
    if not _RESULTS or not _whole_directory_ran(session, int(exitstatus)):
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(render_table(_RESULTS, time.monotonic() - _STARTED[0]))
