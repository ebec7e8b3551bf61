"""The metrics provider protocol and its factory.

A provider turns the policy's metrics into ``Measurement``s for one window. Adding a backend
(Datadog, CloudWatch) means one module here and one line in ``get_provider``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from canaryctl.analysis import Measurement
from canaryctl.policy import MetricSpec, PrometheusSpec


@dataclass(frozen=True)
class QueryContext:
    """Names the queries are about. Every value is validated before it reaches a query."""

    namespace: str
    app: str
    canary_workload: str
    stable_workload: str
    window_seconds: float
    at: float | None = None  # evaluation time (epoch seconds); None = now


@dataclass(frozen=True)
class WorkloadCounts:
    """Requests and 5xx errors served by one workload between two instants (counter increases,
    reset-aware), and the same for requests slower than a latency bound."""

    requests: int
    errors: int


class MetricsProvider(Protocol):
    def check(self) -> None:
        """Raise ``MetricsUnavailableError`` when the backend cannot be used."""

    def validate_query(self, query: str) -> None:
        """Raise ``PolicyError`` when the backend rejects a (rendered) custom query."""

    def render(self, metric: MetricSpec, ctx: QueryContext, workload: str) -> str:
        """The query for ``metric`` about ``workload``, as sent to the backend."""

    def measure(self, metric: MetricSpec, ctx: QueryContext) -> Measurement: ...

    def counts(
        self, *, namespace: str, workload: str, start: float, end: float
    ) -> WorkloadCounts: ...

    def bucket_counts(
        self, *, namespace: str, workload: str, start: float, end: float
    ) -> dict[float, float]:
        """Increase of each cumulative latency bucket (le -> count) from ``start`` to ``end``."""
        ...

    def request_count(
        self, *, namespace: str, workload: str, window_seconds: float
    ) -> float | None:
        """Requests ``workload`` received in the last ``window_seconds``; None when the backend
        has no series for it (no data is not zero: it never lets a Deployment be scaled down)."""
        ...


def get_provider(spec: PrometheusSpec) -> MetricsProvider:
    from canaryctl.metrics.prometheus import PrometheusProvider

    return PrometheusProvider(spec)
