"""One sandbox per xdist worker, put back in its seed state for each test.

Starting a ``Sandbox`` costs ~8 s of wall time (Prometheus's start-up and first scrapes), more
than most e2e tests take, and every running Prometheus costs CPU, so the ``worker_sandbox``
fixture (``tests/conftest.py``) starts one per worker and ``WorkerSandbox.get(scenario, rps)``
hands it to each test reset to the seed state:

- the cluster: every namespaced object that is not one of the rest-apl manifests is deleted
  (Leases, Events, ConfigMaps, extra VirtualServices, objects of CRDs a test registered...),
  the manifests are applied again (VirtualService at 80/20, no rollout annotation), both
  Deployments are available, no injected fault, RBAC open, the writes log empty;
- the traffic: sending ``rps`` requests per second, the stable profile and the scenario's
  canary profile (``healthy``, ``errors``, ``latency``), no propagation delay, and the
  simulator already following the 80/20 route;
- Prometheus running (a test that stops it, ``World.stop_prometheus``, gets the sandbox
  replaced: ``WorkerSandbox.discard``).

What a reset does not undo, by design, is history: Prometheus keeps the earlier tests' series
and the simulator's lifetime counters (``served``, ``unrouted``, ``last_served``) keep counting.
canaryctl only queries windows that start after its own first write, so the history is
invisible to it; a test that asserts on a lifetime counter compares it with its value at the
start of the test.
"""

from __future__ import annotations

import time

from canaryctl.sandbox import load_manifests
from canaryctl.sandbox.world import SCENARIOS, STABLE_PROFILE, Sandbox


def _api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def reset(sandbox: Sandbox) -> None:
    """Back to the seed state (see the module docstring)."""
    seed = load_manifests()
    emu = sandbox.emulator
    emu.clear_faults()
    emu.set_rbac(None)
    keep = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in seed}
    served = {  # every resource the emulator serves, CRDs a test registered included
        (res.group, res.plural): (_api_version(res.group, res.version), info.kind)
        for res, info in emu.emulator.resources.items()
        if info.namespaced
    }
    for api_version, kind in served.values():
        for obj in emu.list(api_version, kind):
            meta = obj["metadata"]
            if (kind, meta.get("namespace"), meta["name"]) not in keep:
                emu.delete(api_version, kind, meta.get("namespace"), meta["name"])
    emu.apply(seed)
    for workload in (sandbox.stable_workload, sandbox.canary_workload):
        emu.set_deployment_available(sandbox.namespace, workload, True)
    traffic = sandbox.traffic
    traffic.propagation = 0.0
    traffic.resume()
    traffic.set_profile(sandbox.stable_workload, STABLE_PROFILE)
    traffic.set_profile(sandbox.canary_workload, SCENARIOS[sandbox.scenario])
    deadline = time.monotonic() + 10
    while traffic.weights.get(sandbox.canary_workload) != 20:
        assert time.monotonic() < deadline, "the traffic simulator did not follow the reset"
        time.sleep(0.05)
    emu.clear_writes()


class WorkerSandbox:
    """The sandbox of one worker, started on first use."""

    def __init__(self) -> None:
        self._sandbox: Sandbox | None = None

    def get(self, scenario: str = "healthy", rps: float = 40) -> Sandbox:
        """The sandbox in its seed state, its canary answering as ``scenario`` says, with
        ``rps`` requests per second."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}")
        if self._sandbox is None:
            sandbox = Sandbox(scenario=scenario, rps=rps).__enter__()
            self._sandbox = sandbox
            try:
                sandbox.wait_ready()
            except BaseException:
                self.discard()
                raise
        sandbox = self._sandbox
        sandbox.scenario, sandbox.rps, sandbox.traffic.rps = scenario, rps, rps
        reset(sandbox)
        return sandbox

    def discard(self) -> None:
        """Stop the sandbox (a test broke it); the next ``get`` starts a new one."""
        if self._sandbox is not None:
            self._sandbox, sandbox = None, self._sandbox
            sandbox.__exit__(None, None, None)
