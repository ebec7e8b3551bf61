"""Istio's bookinfo, as a new user tries it: ``bookinfo.yaml``, ``destination-rule-all.yaml`` and
``virtual-service-reviews-test-v2.yaml`` (a tester route ``end-user: jason`` -> v2, every other
request -> v1; no split anywhere) in the emulator, the traffic simulator following ``reviews``,
a real Prometheus, and ``canaryctl promote`` as a real subprocess."""

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

from canaryctl.sandbox.emulator import EmulatorServer
from canaryctl.sandbox.prometheus import PrometheusServer
from canaryctl.sandbox.traffic import TrafficSimulator
from tests.e2e.conftest import FAST_POLICY
from tests.istio_schema import ISTIO_DIR, validate_virtual_service

NS = "default"
FILES = [
    "platform/bookinfo.yaml",
    "bookinfo-networking/destination-rule-all.yaml",
    "bookinfo-networking/virtual-service-reviews-test-v2.yaml",
]


class Bookinfo:
    def __init__(self, emulator: EmulatorServer, prometheus: PrometheusServer, tmp: Path):
        self.emulator, self.prometheus, self.tmp = emulator, prometheus, tmp
        self.kubeconfig = emulator.write_kubeconfig(tmp / "kubeconfig")
        policy = copy.deepcopy(FAST_POLICY)
        policy["spec"]["steps"] = [50, 100]
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
        yield Bookinfo(emulator, prometheus, tmp_path)


def test_release_after_release_from_a_plain_route_leaves_the_tester_route_alone(
    bookinfo: Bookinfo,
) -> None:
    """``--canary v2`` from the plain route to v1 is promoted; then ``--canary v3`` from there
    is promoted; the ``jason`` route is exactly as in the sample throughout."""
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
        weights = {d["destination"]["subset"]: d["weight"] for d in http[1]["route"]}
        assert weights == {stable: 0, canary: 100}  # v3 replaces the entry v1 had
