"""``spec.prometheus.reporter``: the built-in queries read the report of the proxy the policy
names, against a simulator emitting only that reporter (ambient mode: ``waypoint``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from canaryctl.errors import PolicyError
from canaryctl.metrics._base import QueryContext
from canaryctl.metrics.prometheus import PrometheusProvider
from canaryctl.policy import MetricSpec, PrometheusSpec, parse_policy
from canaryctl.sandbox.world import Sandbox


@pytest.fixture(scope="module")
def waypoint_world() -> Iterator[Sandbox]:
    """The Gateway API world whose metrics only a waypoint reports (ambient mode)."""
    with Sandbox(scenario="healthy", rps=100, router="gateway-api", reporter="waypoint") as sb:
        sb.wait_ready()
        time.sleep(3)  # a few scrapes into the 3 s window
        yield sb


def _ctx() -> QueryContext:
    return QueryContext(
        namespace="gw-apl",
        app="rest-apl",
        canary_workload="rest-apl-v2",
        stable_workload="rest-apl-v1",
        window_seconds=3,
    )


def test_waypoint_reporter_finds_the_ambient_data(waypoint_world: Sandbox) -> None:
    """reporter: waypoint measures both versions and counts the canary's requests."""
    spec = PrometheusSpec(url=waypoint_world.prometheus.url, reporter="waypoint")
    provider = PrometheusProvider(spec)
    m = provider.measure(MetricSpec(name="request-success-rate", min=99), _ctx())
    assert (m.canary, m.stable) == (100.0, 100.0)
    assert m.canary_requests is not None and m.canary_requests > 10
    now = time.time()
    counts = provider.counts(namespace="gw-apl", workload="rest-apl-v2", start=now - 3, end=now)
    assert counts.requests > 10 and counts.errors == 0


def test_the_default_destination_reporter_sees_no_ambient_data(waypoint_world: Sandbox) -> None:
    """Without the field the same data are invisible: no data, which is never a pass."""
    provider = PrometheusProvider(PrometheusSpec(url=waypoint_world.prometheus.url))
    m = provider.measure(MetricSpec(name="request-success-rate", min=99), _ctx())
    assert (m.canary, m.stable, m.canary_requests) == (None, None, 0.0)


def test_an_unknown_reporter_is_a_policy_error_naming_the_field() -> None:
    """Only Istio's three reporters are accepted."""
    doc = {
        "apiVersion": "canaryctl.io/v1alpha1",
        "kind": "AnalysisPolicy",
        "metadata": {"name": "x"},
        "spec": {"prometheus": {"reporter": "ztunnel"}},
    }
    with pytest.raises(PolicyError, match="reporter"):
        parse_policy(doc, source="test")
