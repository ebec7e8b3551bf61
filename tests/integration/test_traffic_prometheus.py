"""The simulated traffic follows the VirtualService and reaches a real Prometheus as Istio's would.

Prometheus needs ~6 s before its first scrape (its discovery manager batches target updates every
5 s), so the Prometheus-backed tests share one module-scoped sandbox; the rest use the simulator
alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.errors import SandboxError
from canaryctl.sandbox import prometheus as prometheus_module
from canaryctl.sandbox.emulator import EmulatorServer
from canaryctl.sandbox.prometheus import PrometheusServer, find_prometheus
from canaryctl.sandbox.traffic import Profile, TrafficSimulator, route_weights
from canaryctl.sandbox.world import Sandbox

NS = "istio-apl"
VS_PATH = f"/apis/networking.istio.io/v1/namespaces/{NS}/virtualservices/rest-apl-vs"
WORKLOADS = {("rest-apl", "v1"): "rest-apl-v1", ("rest-apl", "v2"): "rest-apl-v2"}
CANARY = Profile(error_rate=0.25, latency_ms=900)

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, timeout: float, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy (its last value is in the error)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s; last value: {value!r}")


def set_weights(kube_url: str, v1: int, v2: int) -> None:
    """Change the split the way canaryctl does: a JSON patch with the resourceVersion first."""
    with requests.Session() as http:
        rv = http.get(kube_url + VS_PATH).json()["metadata"]["resourceVersion"]
        ops = [
            {"op": "replace", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": v1},
            {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": v2},
        ]
        response = http.patch(
            kube_url + VS_PATH, json=ops, headers={"Content-Type": "application/json-patch+json"}
        )
        response.raise_for_status()


def simulator(emulator: EmulatorServer, **kwargs: Any) -> TrafficSimulator:
    options: dict[str, Any] = {"rps": 400, "tick": 0.05, "seed": 1} | kwargs
    return TrafficSimulator(
        emulator.url, namespace=NS, virtualservice="rest-apl-vs", workloads=WORKLOADS, **options
    )


# --- the sandbox world with a real Prometheus (one per module) -----------------------------


@pytest.fixture(scope="module")
def world(prometheus_binary: str) -> Iterator[Sandbox]:
    """The demo world, canary failing 25% of requests at a 900 ms median, 100 rps."""
    with Sandbox("latency", rps=100, seed=7) as sandbox:
        sandbox.traffic.set_profile(sandbox.canary_workload, CANARY)
        sandbox.wait_ready()
        yield sandbox


def test_world_rejects_unknown_scenarios() -> None:
    with pytest.raises(ValueError, match="healthy, errors, latency"):
        Sandbox("flaky")


def test_world_kubeconfig_reaches_the_emulator(world: Sandbox) -> None:
    config = yaml.safe_load(world.kubeconfig.read_text())
    assert config["current-context"] == "sandbox"
    server = config["clusters"][0]["cluster"]["server"]
    assert requests.get(server + VS_PATH, timeout=5).json()["metadata"]["name"] == "rest-apl-vs"


def test_canary_errors_show_up_as_503_in_prometheus(world: Sandbox) -> None:
    prom = world.prometheus
    canary = 'istio_requests_total{destination_workload="rest-apl-v2"'
    errors = f'sum(rate({canary},response_code="503"}}[5s]))'
    total = f"sum(rate({canary}}}[5s]))"
    # Polled until the 5 s window is full: right after the first scrapes it holds ~25 requests.
    eventually(lambda: 0.15 < (prom.query_value(f"{errors} / {total}") or 0) < 0.35, timeout=10)
    stable_503 = 'istio_requests_total{destination_workload="rest-apl-v1",response_code="503"}'
    assert prom.query(stable_503) == []


def test_slow_canary_has_a_p99_above_500ms_and_stable_does_not(world: Sandbox) -> None:
    def p99(workload: str) -> float | None:
        return world.prometheus.query_value(
            "histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket"
            f'{{destination_workload="{workload}",reporter="destination"}}[5s])))'
        )

    assert eventually(lambda: p99("rest-apl-v2"), timeout=10) > 500
    assert eventually(lambda: p99("rest-apl-v1"), timeout=10) < 250


def test_series_carry_istio_labels_in_prometheus(world: Sandbox) -> None:
    series = world.prometheus.query('istio_requests_total{destination_workload="rest-apl-v2"}')
    labels = series[0]["metric"]
    assert (
        labels
        | {
            "reporter": "destination",
            "source_workload": "istio-ingressgateway",
            "destination_service": "rest-apl.istio-apl.svc.cluster.local",
            "destination_service_name": "rest-apl",
            "destination_workload_namespace": NS,
            "destination_version": "v2",
            "request_protocol": "http",
            "connection_security_policy": "mutual_tls",
            "job": "sandbox",
        }
        == labels
    )


def test_weights_set_on_the_virtualservice_split_the_traffic(world: Sandbox) -> None:
    set_weights(world.emulator.url, 50, 50)
    eventually(lambda: world.traffic.weights == {"rest-apl-v1": 50, "rest-apl-v2": 50}, timeout=5)
    canary = 'sum(rate(istio_requests_total{destination_workload="rest-apl-v2"}[5s]))'
    total = "sum(rate(istio_requests_total[5s]))"
    eventually(
        lambda: abs((world.prometheus.query_value(f"{canary} / {total}") or 0) - 0.5) < 0.06,
        timeout=15,
    )


def test_add_target_reloads_the_scrape_config(world: Sandbox) -> None:
    """Runs last in the module: the added target is never scraped by the other tests."""
    world.prometheus.add_target("127.0.0.1:9")
    config = requests.get(f"{world.prometheus.url}/api/v1/status/config", timeout=5).json()
    targets = yaml.safe_load(config["data"]["yaml"])["scrape_configs"][0]["static_configs"]
    assert "127.0.0.1:9" in targets[0]["targets"]


# --- the simulator alone --------------------------------------------------------------------


def test_metrics_are_valid_prometheus_text_with_istio_buckets(emulator: EmulatorServer) -> None:
    with simulator(emulator) as traffic:
        eventually(lambda: traffic.served("rest-apl-v2")[0], timeout=5)
        text = requests.get(traffic.url, timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["istio_requests"].type == "counter"
    histogram = families["istio_request_duration_milliseconds"]
    assert histogram.type == "histogram"
    bounds = [s.labels["le"] for s in histogram.samples if s.name.endswith("_bucket")][:20]
    assert bounds[0] == "0.5" and bounds[-1] == "+Inf" and len(bounds) == 20
    assert "3600000" in bounds


def test_counts_follow_weights_and_profiles(emulator: EmulatorServer) -> None:
    with simulator(emulator, profiles={"rest-apl-v2": Profile(error_rate=1.0, latency_ms=5)}) as tr:
        eventually(lambda: tr.served("rest-apl-v1")[0] >= 400, timeout=10)
        v1, v2 = tr.served("rest-apl-v1"), tr.served("rest-apl-v2")
    assert v1[1] == 0 and v2[0] == v2[1] > 0  # v2 fails every request, v1 none
    assert 0.12 < v2[0] / (v1[0] + v2[0]) < 0.28  # 80/20


def test_pause_stops_traffic_and_resume_restarts_it(emulator: EmulatorServer) -> None:
    with simulator(emulator) as traffic:
        eventually(lambda: traffic.served("rest-apl-v1")[0], timeout=5)
        traffic.pause()  # returns once no tick is sending
        paused_at = traffic.served("rest-apl-v1")
        time.sleep(0.3)
        assert traffic.served("rest-apl-v1") == paused_at
        traffic.resume()
        eventually(lambda: traffic.served("rest-apl-v1")[0] > paused_at[0], timeout=5)


def test_reset_counters_restarts_the_series_at_zero(emulator: EmulatorServer) -> None:
    with simulator(emulator) as traffic:
        eventually(lambda: traffic.served("rest-apl-v2")[0] > 20, timeout=5)
        traffic.pause()
        traffic.reset_counters("rest-apl-v2")
        text = requests.get(traffic.url, timeout=5).text
        assert traffic.served("rest-apl-v2")[0] > 20  # lifetime totals are not reset
    samples = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("destination_workload") == "rest-apl-v2"
    ]
    assert samples and all(s.value == 0 for s in samples)


def test_keeps_last_weights_when_the_virtualservice_is_gone(emulator: EmulatorServer) -> None:
    with simulator(emulator) as traffic:
        set_weights(emulator.url, 0, 100)
        eventually(lambda: traffic.weights == {"rest-apl-v1": 0, "rest-apl-v2": 100}, timeout=5)
        emulator.inject("GET", "virtualservices", 500, times=5)
        emulator.delete("networking.istio.io/v1", "VirtualService", NS, "rest-apl-vs")
        before = traffic.served("rest-apl-v2")[0]
        eventually(lambda: traffic.served("rest-apl-v2")[0] > before + 50, timeout=5)
        assert traffic.weights == {"rest-apl-v1": 0, "rest-apl-v2": 100}


def test_route_weights_pick_the_route_ordinary_requests_take() -> None:
    vs = {
        "spec": {
            "http": [
                {
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                },
                {"route": [{"destination": {"host": "reviews.default.svc.cluster.local"}}]},
            ]
        }
    }
    assert route_weights(vs) == {("reviews", None): 100}


# --- the Prometheus launcher ---------------------------------------------------------------


def test_missing_prometheus_fails_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    monkeypatch.setattr(prometheus_module, "DEBIAN_BINARY", Path("/nonexistent/prometheus"))
    with pytest.raises(SandboxError, match="sudo apt-get install prometheus"):
        find_prometheus()
    server = PrometheusServer(["127.0.0.1:9"], binary="/nonexistent/prometheus")
    with pytest.raises(SandboxError, match="cannot run prometheus"), server:
        pass


def test_route_changes_reach_the_traffic_only_after_the_propagation_delay(
    emulator: EmulatorServer,
) -> None:
    """With ``propagation`` 1 s, v1 keeps receiving requests for about a second after the
    VirtualService sends everything to v2 (sidecars apply istiod's push late)."""
    with simulator(emulator) as traffic:
        traffic.propagation = 1.0
        eventually(lambda: traffic.served("rest-apl-v1")[0], timeout=5)
        set_weights(emulator.url, 0, 100)
        switched = time.time()
        eventually(lambda: traffic.weights == {"rest-apl-v1": 0, "rest-apl-v2": 100}, timeout=5)
        last = traffic.last_served("rest-apl-v1")
    assert last is not None and 0.8 <= last - switched <= 2.0


def test_a_workload_without_available_replicas_gets_no_requests_only_unrouted_503s(
    emulator: EmulatorServer,
) -> None:
    """v1 with no available replica: requests routed to it are counted as unrouted (503 at the
    caller) and never reach its destination metrics."""
    with simulator(emulator) as traffic:
        eventually(lambda: traffic.served("rest-apl-v1")[0], timeout=5)
        emulator.set_deployment_available(NS, "rest-apl-v1", False)
        eventually(lambda: traffic.unrouted("rest-apl-v1") > 50, timeout=5)
        served = traffic.served("rest-apl-v1")
        time.sleep(0.3)
        assert traffic.served("rest-apl-v1") == served
        assert traffic.unrouted("rest-apl-v2") == 0
