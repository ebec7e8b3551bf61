"""The demo world: rest-apl on an emulated cluster, simulated traffic, a real Prometheus.

``canaryctl demo`` and the e2e tests need the same thing a user has before a rollout: the
rest-apl manifests applied (VirtualService at 80/20), traffic flowing by those weights, and
Prometheus holding Istio metrics. A *scenario* decides how the canary (v2) behaves, so the same
world shows a promotion (healthy), or a rollback on errors or on latency. ``router`` chooses the
world: ``istio`` (VirtualService ``istio-apl/rest-apl-vs``, subsets v1/v2) or ``gateway-api``
(HTTPRoute ``gw-apl/rest-apl-route``, Services ``rest-apl-primary``/``rest-apl-canary``,
``examples/gateway-api``).
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Self, TypeVar

from canaryctl.sandbox import load_manifests, manifests_dir
from canaryctl.sandbox.emulator import EmulatorServer
from canaryctl.sandbox.prometheus import PrometheusServer
from canaryctl.sandbox.traffic import Profile, TrafficSimulator

STABLE_PROFILE = Profile(error_rate=0.0, latency_ms=40.0)
_T = TypeVar("_T")

SCENARIOS: dict[str, Profile] = {
    "healthy": STABLE_PROFILE,
    "errors": Profile(error_rate=0.25, latency_ms=40.0),
    "latency": Profile(error_rate=0.0, latency_ms=900.0),
}


# router -> (namespace, the routing object's name, the manifests under examples/)
WORLDS: dict[str, tuple[str, str, str]] = {
    "istio": ("istio-apl", "rest-apl-vs", "rest-apl"),
    "gateway-api": ("gw-apl", "rest-apl-route", "gateway-api"),
}


class Sandbox:
    """Emulator + traffic + Prometheus for ``istio-apl/rest-apl``, as one context manager."""

    app = "rest-apl"
    stable_workload = "rest-apl-v1"
    canary_workload = "rest-apl-v2"

    def __init__(
        self,
        scenario: str = "healthy",
        rps: float = 40,
        seed: int = 0,
        *,
        router: str = "istio",
        reporter: str = "destination",
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(
                f"unknown scenario {scenario!r}: valid scenarios are {', '.join(SCENARIOS)}"
            )
        if router not in WORLDS:
            raise ValueError(f"unknown router {router!r}: valid routers are {', '.join(WORLDS)}")
        self.router = router
        self.reporter = reporter
        self.namespace, self.virtualservice, self._manifests = WORLDS[router]
        self.scenario = scenario
        self.rps = rps
        self.seed = seed
        self._stack = ExitStack()
        self._tmp: Path | None = None
        self._emulator: EmulatorServer | None = None
        self._traffic: TrafficSimulator | None = None
        self._prometheus: PrometheusServer | None = None
        self._kubeconfig: Path | None = None

    def __enter__(self) -> Self:
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix="canaryctl-sandbox-"))
            self._stack.callback(shutil.rmtree, self._tmp, ignore_errors=True)
            gateway = self.router == "gateway-api"
            self._emulator = self._stack.enter_context(EmulatorServer())
            self._emulator.apply(load_manifests(manifests_dir(self._manifests)))
            self._kubeconfig = self._emulator.write_kubeconfig(self._tmp / "kubeconfig")
            self._traffic = self._stack.enter_context(
                TrafficSimulator(
                    self._emulator.url,
                    namespace=self.namespace,
                    virtualservice="" if gateway else self.virtualservice,
                    httproute=self.virtualservice if gateway else "",
                    reporter=self.reporter,
                    workloads={
                        (f"{self.app}-primary", None) if gateway else (self.app, "v1"): (
                            self.stable_workload
                        ),
                        (f"{self.app}-canary", None) if gateway else (self.app, "v2"): (
                            self.canary_workload
                        ),
                    },
                    profiles={
                        self.stable_workload: STABLE_PROFILE,
                        self.canary_workload: SCENARIOS[self.scenario],
                    },
                    rps=self.rps,
                    seed=self.seed,
                )
            )
            self._prometheus = self._stack.enter_context(PrometheusServer([self._traffic.target]))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stack.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until Prometheus has scraped the simulated traffic (twice)."""
        self.prometheus.wait_for_scrapes(min_samples=2, timeout=timeout)

    @property
    def emulator(self) -> EmulatorServer:
        """The Kubernetes API emulator, preloaded with the rest-apl manifests."""
        return _running(self._emulator)

    @property
    def traffic(self) -> TrafficSimulator:
        """The traffic simulator following ``rest-apl-vs``."""
        return _running(self._traffic)

    @property
    def prometheus(self) -> PrometheusServer:
        """The Prometheus scraping the simulator."""
        return _running(self._prometheus)

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig for the emulator (context ``sandbox``, namespace ``default``)."""
        return _running(self._kubeconfig)


def _running(value: _T | None) -> _T:
    if value is None:
        raise RuntimeError("the sandbox is not running: use it as a context manager")
    return value
