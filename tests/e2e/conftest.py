"""End-to-end fixtures: the sandbox world (API emulator, traffic simulator, real Prometheus) and
a runner for ``canaryctl`` as a real process.

The ``world`` fixture takes the worker's sandbox (``worker_sandbox``), reset to the seed
state (``tests/sandboxes.py``), and runs ``canaryctl`` as processes forked from the worker's
``zygote`` (``tests/forkcli.py``): each command is still its own process, without paying the
kubernetes client's import each time. ``@pytest.mark.parametrize("world", ["errors"],
indirect=True)`` picks the scenario.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from canaryctl.demo import DEMO_POLICY
from canaryctl.rollout import ANNOTATION
from canaryctl.sandbox.world import Sandbox
from tests.forkcli import ForkedProcess, Zygote
from tests.sandboxes import WorkerSandbox

APP, NS = "rest-apl", "istio-apl"
Process = subprocess.Popen[str] | ForkedProcess

# The demo's policy, faster still (3 s steps), so a whole rollout fits an e2e test.
FAST_POLICY: dict[str, Any] = copy.deepcopy(DEMO_POLICY)
FAST_POLICY["metadata"]["name"] = "e2e"
FAST_POLICY["spec"].update(
    interval="3s",
    minRequests=10,
    inconclusiveLimit=2,
    prometheus={"timeout": "2s", "retryBudget": "3s"},
)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"stdout must be exactly one JSON object, got {self.stdout!r}"
        data = json.loads(lines[0])
        assert isinstance(data, dict)
        return data


class World:
    """One sandbox plus helpers to run canaryctl against it and read what it wrote."""

    def __init__(self, sandbox: Sandbox, tmp: Path, zygote: Zygote | None = None) -> None:
        self.sb = sandbox
        self.tmp = tmp
        self.kubeconfig = str(sandbox.kubeconfig)
        self.zygote = zygote
        self.procs: list[Process] = []
        self.broken = False  # the sandbox cannot be reset for the next test

    # spec fields this world sets on top of FAST_POLICY (the fault world's are stricter)
    spec_defaults: ClassVar[dict[str, Any]] = {}

    def policy(self, **spec: Any) -> Path:
        """A policy file: FAST_POLICY, then ``spec_defaults``, then ``spec``."""
        doc = copy.deepcopy(FAST_POLICY)
        doc["spec"].update(copy.deepcopy(self.spec_defaults))
        doc["spec"].update(spec)
        path = self.tmp / f"policy-{len(list(self.tmp.glob('policy-*')))}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def promote(self, *extra: str, policy: Path | str | None = None) -> list[str]:
        """The arguments of ``promote rest-apl -n istio-apl --policy P EXTRA...`` (P: a fresh
        ``policy()`` unless given)."""
        pol = str(policy if policy is not None else self.policy())
        return ["promote", APP, "-n", NS, "--policy", pol, *extra]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["CANARYCTL_KUBE_RETRY_SECONDS"] = "3"
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return env

    def argv(self, *args: str, prometheus: bool = True) -> list[str]:
        extra = ["--prometheus-url", self.sb.prometheus.url] if prometheus else []
        return [sys.executable, "-m", "canaryctl", *args, *extra]

    def run(self, *args: str, timeout: float = 120, prometheus: bool = True) -> Run:
        """``canaryctl ARGS`` as its own process (forked from the zygote), to completion."""
        if self.zygote is None:
            return self.subprocess_run(*args, timeout=timeout, prometheus=prometheus)
        argv = self.argv(*args, prometheus=prometheus)[3:]  # after `python -m canaryctl`
        return Run(*self.zygote.run(argv, self.env(), timeout=timeout))

    def subprocess_run(self, *args: str, timeout: float = 120, prometheus: bool = True) -> Run:
        """``python -m canaryctl ARGS``, a fresh interpreter."""
        proc = subprocess.run(
            self.argv(*args, prometheus=prometheus),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, quiet: bool = False, fork: bool = True) -> Process:
        """``canaryctl ARGS`` started, forked from the zygote (``fork=False``: ``python -m
        canaryctl``); killed at teardown if still running. Output goes nowhere when ``quiet``,
        else ``communicate()`` returns it."""
        proc: Process
        if self.zygote is not None and fork:
            proc = self.zygote.spawn(self.argv(*args)[3:], self.env(), quiet=quiet)
        else:
            out = subprocess.DEVNULL if quiet else subprocess.PIPE
            proc = subprocess.Popen(
                self.argv(*args), stdout=out, stderr=out, text=True, env=self.env()
            )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Kill what is still running."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def vs(self) -> dict[str, Any]:
        obj = self.sb.emulator.get(
            "networking.istio.io/v1", "VirtualService", "istio-apl", "rest-apl-vs"
        )
        assert obj is not None
        return obj

    def weights(self) -> list[tuple[str, int]]:
        """(subset, weight) of the split route now."""
        route = self.vs()["spec"]["http"][0]["route"]
        return [(d["destination"].get("subset", ""), int(d.get("weight", 0))) for d in route]

    def state(self) -> dict[str, Any] | None:
        text = (self.vs()["metadata"].get("annotations") or {}).get(ANNOTATION)
        return json.loads(text) if text else None

    def vs_writes(self) -> list[Any]:
        return [
            w
            for w in self.sb.emulator.writes
            if "virtualservices" in w.path and w.method == "PATCH" and w.landed
        ]

    def written_weights(self) -> list[int]:
        """The canary weight of every successful VirtualService write, in order."""
        out = []
        for w in self.vs_writes():
            for op in w.body:
                if op.get("path", "").endswith("canaryctl.io~1rollout") and "value" in op:
                    out.append(json.loads(op["value"])["weight"])
        return out

    def stop_prometheus(self) -> None:
        """Prometheus goes away (the process is killed; its port refuses connections). The
        sandbox is replaced after the test."""
        self.broken = True
        proc = self.sb.prometheus._process
        assert proc is not None
        proc.kill()
        proc.wait()

    def distinct_weights(self) -> list[int]:
        """``written_weights`` with repeats collapsed: an inconclusive analysis (possible on a
        loaded machine: a window a scrape short of minRequests) holds the weight and rewrites it;
        the order of the weights is what must not change."""
        out: list[int] = []
        for w in self.written_weights():
            if not out or out[-1] != w:
                out.append(w)
        return out

    def cluster_writes(self) -> list[Any]:
        return [w for w in self.sb.emulator.writes if w.status < 400 or w.applied]


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    worker_sandbox: WorkerSandbox,
    zygote: Zygote | None,
) -> Iterator[World]:
    """The worker's sandbox for the scenario (``request.param``, default healthy), reset."""
    w = World(worker_sandbox.get(getattr(request, "param", "healthy")), tmp_path, zygote)
    try:
        yield w
    finally:
        w.close()
        if w.broken:
            worker_sandbox.discard()
