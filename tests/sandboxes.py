"""One sandbox per xdist worker (and per scenario), put back in its seed state for each test.

Starting a ``Sandbox`` costs ~8 s of wall time and ~1 s of CPU (Prometheus's start-up and first
scrapes), more than most e2e tests take, so the ``sandbox_pool`` fixture (``tests/conftest.py``)
keeps the sandboxes a worker has started and ``SandboxPool.get`` hands one back reset to the
seed state:

- the cluster: every namespaced object that is not one of the rest-apl manifests is deleted
  (Leases, Events, ConfigMaps, extra VirtualServices...), the manifests are applied again
  (VirtualService at 80/20, no rollout annotation), both Deployments are available, no injected
  fault, RBAC open, the writes log empty;
- the traffic: sending, the stable and the scenario's canary profiles, no propagation delay,
  and the simulator already following the 80/20 route;
- Prometheus running (a test that stops it, ``World.stop_prometheus``, gets its sandbox
  replaced: ``SandboxPool.discard``).

What a reset does not undo, by design, is history: Prometheus keeps the earlier tests' series
and the simulator's lifetime counters (``served``, ``unrouted``, ``last_served``) keep counting.
canaryctl only queries windows that start after its own first write, so the history is
invisible to it; a test that asserts on a lifetime counter compares it with its value at the
start of the test. While one sandbox is in use the worker's others send no traffic (paused),
so idle sandboxes cost next to no CPU.
"""

from __future__ import annotations

import time

from canaryctl.sandbox import load_manifests
from canaryctl.sandbox._api import BUILTIN_KINDS
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
    for kind in BUILTIN_KINDS:
        if not kind.namespaced:
            continue
        api_version = _api_version(kind.group, kind.versions[-1])
        for obj in emu.list(api_version, kind.kind):
            meta = obj["metadata"]
            if (kind.kind, meta.get("namespace"), meta["name"]) not in keep:
                emu.delete(api_version, kind.kind, meta.get("namespace"), meta["name"])
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


class SandboxPool:
    """The sandboxes of one worker, by (scenario, requests per second)."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, float], Sandbox] = {}

    def get(self, scenario: str = "healthy", rps: float = 40) -> Sandbox:
        """A running sandbox in its seed state (the others paused)."""
        for key, other in self._running.items():
            if key != (scenario, rps):
                other.traffic.pause()
        sandbox = self._running.get((scenario, rps))
        if sandbox is None:
            sandbox = Sandbox(scenario=scenario, rps=rps).__enter__()
            self._running[scenario, rps] = sandbox
            try:
                sandbox.wait_ready()
            except BaseException:
                self.discard(sandbox)
                raise
        reset(sandbox)
        return sandbox

    def discard(self, sandbox: Sandbox) -> None:
        """Stop a sandbox a test broke; the next ``get`` starts a new one."""
        self._running.pop((sandbox.scenario, sandbox.rps), None)
        sandbox.__exit__(None, None, None)

    def close(self) -> None:
        for sandbox in list(self._running.values()):
            self.discard(sandbox)
