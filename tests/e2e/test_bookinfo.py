"""Istio's bookinfo, as a new user tries it: ``bookinfo.yaml``, ``destination-rule-all.yaml``,
``virtual-service-all-v1.yaml`` (every route pinned to v1), then
``virtual-service-reviews-test-v2.yaml`` on top, as Istio's request-routing task does (a tester
route ``end-user: jason`` -> v2 before the route to v1; no split anywhere) in the emulator, the
traffic simulator following ``reviews``, a real Prometheus, and ``canaryctl promote`` as a real
subprocess."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.rollout import ANNOTATION
from canaryctl.sandbox.emulator import EmulatorServer
from canaryctl.sandbox.prometheus import PrometheusServer
from canaryctl.sandbox.traffic import TrafficSimulator
from tests.e2e.conftest import FAST_POLICY
from tests.istio_schema import ISTIO_DIR, validate_virtual_service

NS = "default"
FILES = [
    "platform/bookinfo.yaml",
    "bookinfo-networking/destination-rule-all.yaml",
    "bookinfo-networking/virtual-service-all-v1.yaml",
    "bookinfo-networking/virtual-service-reviews-test-v2.yaml",
]
IDLE = 2.0  # finish.scaleDownIdle, seconds


class Bookinfo:
    def __init__(
        self,
        emulator: EmulatorServer,
        prometheus: PrometheusServer,
        traffic: TrafficSimulator,
        tmp: Path,
    ):
        self.emulator, self.prometheus, self.traffic = emulator, prometheus, traffic
        self.kubeconfig = emulator.write_kubeconfig(tmp / "kubeconfig")
        policy = copy.deepcopy(FAST_POLICY)
        finish = {"collapseRoutes": True, "scaleDownIdle": f"{IDLE:g}s"}
        policy["spec"].update(steps=[50, 100], interval="2s", finish=finish, maxWindow="40s")
        # a window short of requests on a loaded machine holds and grows (the product default),
        # instead of FAST_POLICY's legacy "two inconclusive analyses roll back"
        del policy["spec"]["inconclusiveLimit"]
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(yaml.safe_dump(policy))

    def promote(self, canary: str) -> subprocess.CompletedProcess[str]:
        argv = ["promote", "reviews", "-n", NS, "--canary", canary, "--policy", str(self.policy)]
        argv += ["--prometheus-url", self.prometheus.url, "-o", "json"]
        env = {"KUBECONFIG": str(self.kubeconfig), "CANARYCTL_KUBE_RETRY_SECONDS": "3"}
        return subprocess.run(
            [sys.executable, "-m", "canaryctl", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env={**_environ(), **env},
            check=False,
        )

    def reviews(self) -> dict[str, Any]:
        vs = self.emulator.get("networking.istio.io/v1", "VirtualService", NS, "reviews")
        assert vs is not None
        validate_virtual_service(vs)
        return vs

    def replicas(self, version: str) -> int:
        deployment = self.emulator.get("apps/v1", "Deployment", NS, f"reviews-{version}")
        assert deployment is not None
        return int(deployment["spec"]["replicas"])


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}


@pytest.fixture
def bookinfo(tmp_path: Path) -> Iterator[Bookinfo]:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    ]
    for file in FILES:
        for doc in yaml.safe_load_all((ISTIO_DIR / file).read_text()):
            if doc:
                doc["metadata"].setdefault("namespace", NS)
                docs.append(doc)
    with ExitStack() as stack:
        emulator = stack.enter_context(EmulatorServer())
        emulator.apply(docs)
        traffic = stack.enter_context(
            TrafficSimulator(
                emulator.url,
                namespace=NS,
                virtualservice="reviews",
                workloads={("reviews", v): f"reviews-{v}" for v in ("v1", "v2", "v3")},
            )
        )
        prometheus = stack.enter_context(PrometheusServer([traffic.target]))
        prometheus.wait_for_scrapes(min_samples=2, timeout=30)
        yield Bookinfo(emulator, prometheus, traffic, tmp_path)


def test_release_cycle_from_all_v1_collapses_scales_idle_v1_down_and_spares_the_tester_route(
    bookinfo: Bookinfo,
) -> None:
    """``--canary v2`` from the plain route to v1 is promoted and collapsed to a plain route to
    v2; v1 is scaled to 0 only after its last request (sidecars see routes 3 s late); then
    ``--canary v3`` from that plain route is promoted and collapsed; the ``jason`` route is
    exactly as in the sample throughout, so v2, which it names, is not scaled down; the
    VirtualService passes the CRD schema after each release (each read validates it)."""
    bookinfo.traffic.propagation = 3.0  # longer than a step: v1 still served after promotion
    jason = copy.deepcopy(bookinfo.reviews()["spec"]["http"][0])
    for canary, stable in (("v2", "v1"), ("v3", "v2")):
        res = bookinfo.promote(canary)
        assert res.returncode == 0, res.stderr
        data = json.loads(res.stdout)
        assert (data["result"], data["stable"], data["canary"]) == (
            "promoted",
            f"reviews/{stable}",
            f"reviews/{canary}",
        )
        http = bookinfo.reviews()["spec"]["http"]
        assert http[0] == jason
        assert http[1]["route"] == [{"destination": {"host": "reviews", "subset": canary}}]
        tasks = {t["task"]: t for t in data["cleanup"]}
        assert tasks["collapse"]["routes"] == {"reviews": [1]}
        scale = tasks["scale-down"]
        if stable == "v1":
            assert (scale["target"], scale["status"]) == ("reviews-v1", "done")
            assert bookinfo.replicas("v1") == 0
            last = bookinfo.traffic.last_served("reviews-v1")
            finished = json.loads(bookinfo.reviews()["metadata"]["annotations"][ANNOTATION])
            assert last is not None and last > finished["finished_at"]  # the sidecars lagged
            assert scale["at"] - last >= IDLE - 1.0  # Prometheus saw it idle (1 scrape slack)
            assert bookinfo.traffic.unrouted("reviews-v1") == 0
    # v2 went idle too (the simulator sends no jason requests), but the tester route names it
    assert (scale["target"], scale["status"]) == ("reviews-v2", "skipped")
    assert "VirtualService reviews http[0] still sends traffic to it" in scale["detail"]
    assert bookinfo.replicas("v2") > 0 and bookinfo.traffic.served("reviews-v3")[0] > 0
