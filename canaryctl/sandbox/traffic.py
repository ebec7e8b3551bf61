"""A traffic simulator that obeys the routes and reports what Istio's proxies would.

canaryctl judges a canary on ``istio_requests_total`` and ``istio_request_duration_milliseconds``
as Prometheus scrapes them from Envoy. In the sandbox there is no Envoy, so this module plays
both the clients and the mesh: every tick it reads the VirtualService from the API emulator over
HTTP (as Istio's control plane would watch it), sends ``rps`` requests per second split by the
route weights to workloads with configurable error rate and latency, and serves the resulting
metrics, named and labelled exactly as Istio's standard metrics, at ``/metrics``. With
``httproute`` it follows a Gateway API HTTPRoute instead (the ingress gateway, or an ambient
waypoint, applying its ``backendRefs`` weights); ``reporter`` is the proxy whose report it
emits (``destination`` sidecars, ``source`` sidecars, or an ambient ``waypoint``).

Request counts per tick are Poisson-distributed around ``rps * elapsed * weight`` (seeded
``random.Random``), not the expected value, because the analysis tests sequential statistics and
needs the noise of real traffic; errors are Bernoulli per request, latencies lognormal.

Two things of a real mesh matter once a release finishes (``finish.py``): sidecars apply a
changed route some time after it was written (``propagation`` seconds: istiod's push), so the
previous version keeps receiving requests for a while after the switch; and a destination whose
Deployment has no available replica answers 503 "no healthy upstream" at the caller. Those
requests never reach a destination sidecar, so they are not in the destination-reported
metrics; ``unrouted(workload)`` counts them (what a too-early scale-down costs).
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import requests

log = logging.getLogger(__name__)

# Istio's default buckets for istio_request_duration_milliseconds (+Inf is implicit).
DURATION_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)  # fmt: skip

DestinationKey = tuple[str, str | None]  # (host short name, subset or None)


@dataclass(frozen=True)
class Profile:
    """How a workload answers: the share of 503s and a lognormal latency (median, in ms)."""

    error_rate: float
    latency_ms: float
    latency_sigma: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {self.error_rate}")
        if self.latency_ms <= 0 or self.latency_sigma < 0:
            raise ValueError("latency_ms must be > 0 and latency_sigma >= 0")


@dataclass
class _Series:
    """One (workload, response code) label set: the counter and the histogram behind it."""

    requests: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_MS))
    duration_sum: float = 0.0


@dataclass(frozen=True)
class _Workload:
    name: str
    namespace: str
    host: str
    version: str


class TrafficSimulator:
    """Follows ``namespace/virtualservice`` on ``kube_url`` and serves Istio metrics.

    ``workloads`` maps a route destination (host short name, subset) to the workload that serves
    it, e.g. ``{("rest-apl", "v2"): "rest-apl-v2"}``; ``profiles`` gives each workload's
    behaviour (default: no errors, 40 ms). If the VirtualService cannot be read (error, deleted)
    the last weights are kept, as sidecars keep their last configuration.
    """

    def __init__(
        self,
        kube_url: str,
        *,
        namespace: str,
        virtualservice: str = "",
        httproute: str = "",
        reporter: str = "destination",
        workloads: Mapping[DestinationKey, str],
        profiles: Mapping[str, Profile] | None = None,
        rps: float = 40.0,
        tick: float = 0.2,
        seed: int = 0,
    ) -> None:
        if bool(virtualservice) == bool(httproute):
            raise ValueError("follow either a virtualservice or an httproute")
        api, plural = (
            ("gateway.networking.k8s.io/v1", "httproutes")
            if httproute
            else ("networking.istio.io/v1", "virtualservices")
        )
        self._route_url = (
            f"{kube_url.rstrip('/')}/apis/{api}/namespaces/{namespace}"
            f"/{plural}/{httproute or virtualservice}"
        )
        self._weights_of = httproute_weights if httproute else route_weights
        self.reporter = reporter
        self._deployments_url = (
            f"{kube_url.rstrip('/')}/apis/apps/v1/namespaces/{namespace}/deployments"
        )
        self.propagation = 0.0  # seconds before a route change reaches the sidecars
        self._seen: list[tuple[float, dict[DestinationKey, int]]] = []  # not yet in force
        self._available: dict[str, int] = {}  # workload -> available replicas (last read)
        self._unrouted: dict[str, int] = {}
        self._last_served: dict[str, float] = {}
        self._destinations = {
            key: _Workload(name, namespace, key[0], key[1] or "unknown")
            for key, name in workloads.items()
        }
        self._profiles = {w: Profile(error_rate=0.0, latency_ms=40.0) for w in workloads.values()}
        self._profiles.update(profiles or {})
        self.rps = rps
        self.tick = tick
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, int], _Series] = {}
        self._served: dict[str, list[int]] = {w: [0, 0] for w in workloads.values()}
        self._weights: dict[DestinationKey, int] = {}
        self._paused = False
        self._vs_failing = False  # only touched by the traffic thread
        self._unknown: set[DestinationKey] = set()  # destinations already warned about
        self._stop = threading.Event()
        self._session = requests.Session()
        self._thread: threading.Thread | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _metrics_handler(self))
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="sandbox-metrics", daemon=True
        )
        self._http_thread.start()
        self._thread = threading.Thread(target=self._run, name="sandbox-traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
        self._session.close()

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``, for a Prometheus scrape config."""
        if self._http is None:
            raise RuntimeError("the traffic simulator is not running")
        return f"127.0.0.1:{self._http.server_address[1]}"

    @property
    def url(self) -> str:
        """The ``/metrics`` URL."""
        return f"http://{self.target}/metrics"

    # --- controls and assertions (any thread) ---------------------------------------------

    def set_profile(self, workload: str, profile: Profile) -> None:
        """Change how a workload answers from now on."""
        with self._lock:
            self._profiles[workload] = profile

    def pause(self) -> None:
        """Stop sending traffic (the counters stay as they are)."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        """Send traffic again."""
        with self._lock:
            self._paused = False

    def reset_counters(self, workload: str) -> None:
        """Simulate a pod restart: the workload's counters and histograms start again at 0."""
        with self._lock:
            for key in [k for k in self._series if k[0] == workload]:
                self._series[key] = _Series()

    def served(self, workload: str) -> tuple[int, int]:
        """(requests, errors) sent to a workload since start; not affected by resets."""
        with self._lock:
            requests_, errors = self._served.get(workload, [0, 0])
            return requests_, errors

    def unrouted(self, workload: str) -> int:
        """Requests routed to ``workload`` while it had no available replica (503 at the caller)."""
        with self._lock:
            return self._unrouted.get(workload, 0)

    def last_served(self, workload: str) -> float | None:
        """When (epoch seconds) ``workload`` last received a request, or None."""
        with self._lock:
            return self._last_served.get(workload)

    @property
    def weights(self) -> dict[str, int]:
        """The weights in force, by workload (as last read from the VirtualService)."""
        with self._lock:
            return {
                self._destinations[key].name: weight
                for key, weight in self._weights.items()
                if key in self._destinations
            }

    # --- the simulation -------------------------------------------------------------------

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick):
            self._refresh_weights()
            now = time.monotonic()
            elapsed, last = min(now - last, 5 * self.tick), now
            self._send(elapsed)

    def _refresh_weights(self) -> None:
        try:
            response = self._session.get(self._route_url, timeout=max(self.tick, 1.0))
            response.raise_for_status()
            weights = self._weights_of(response.json())
        except (requests.RequestException, ValueError) as exc:
            if not self._vs_failing:  # once per outage, not five times a second
                log.warning("traffic: cannot read the route, keeping weights: %s", exc)
            self._vs_failing = True
            return
        if self._vs_failing:
            log.warning("traffic: the route is readable again")
        self._vs_failing = False
        for key in weights.keys() - self._destinations.keys() - self._unknown:
            log.warning("traffic: no workload for destination %s: its requests are dropped", key)
            self._unknown.add(key)
        available = self._read_available()
        now = time.monotonic()
        with self._lock:
            self._available.update(available)
            if not self._seen or self._seen[-1][1] != weights:
                self._seen.append((now, weights))
            while self._seen and self._seen[0][0] <= now - self.propagation:
                self._weights = self._seen.pop(0)[1]

    def _read_available(self) -> dict[str, int]:
        """Available replicas of each workload's Deployment, one GET each: a LIST would take
        the faults tests inject into canaryctl's own LIST. One that cannot be read is left out
        (its last known value is kept)."""
        out = {}
        for name in {w.name for w in self._destinations.values()}:
            try:
                response = self._session.get(
                    f"{self._deployments_url}/{name}", timeout=max(self.tick, 1.0)
                )
                response.raise_for_status()
                status = response.json().get("status") or {}
            except (requests.RequestException, ValueError):
                continue
            out[name] = int(status.get("availableReplicas") or 0)
        return out

    def _send(self, elapsed: float) -> None:
        with self._lock:
            if self._paused:
                return
            total = sum(self._weights.values())
            for key, weight in self._weights.items():
                workload = self._destinations.get(key)
                if workload is None or weight <= 0 or total <= 0:
                    continue
                count = self._poisson(self.rps * elapsed * weight / total)
                if count and self._available.get(workload.name, 1) == 0:
                    self._unrouted[workload.name] = self._unrouted.get(workload.name, 0) + count
                    continue
                profile = self._profiles[workload.name]
                for _ in range(count):
                    self._record(workload.name, profile)
                if count:
                    self._last_served[workload.name] = time.time()

    def _record(self, workload: str, profile: Profile) -> None:
        error = self._random.random() < profile.error_rate
        latency = profile.latency_ms * math.exp(self._random.gauss(0.0, profile.latency_sigma))
        series = self._series.setdefault((workload, 503 if error else 200), _Series())
        series.requests += 1
        series.duration_sum += latency
        for index in range(bisect.bisect_left(DURATION_BUCKETS_MS, latency), len(series.buckets)):
            series.buckets[index] += 1
        served = self._served.setdefault(workload, [0, 0])
        served[0] += 1
        served[1] += int(error)

    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 30:  # the normal approximation; Knuth's loop underflows for large lambdas
            return max(0, round(self._random.gauss(lam, math.sqrt(lam))))
        threshold, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self._random.random()
            if p <= threshold:
                return k
            k += 1

    # --- exposition -----------------------------------------------------------------------

    def render_metrics(self) -> str:
        """The Prometheus text exposition (format 0.0.4) of the current counters."""
        lines = [
            "# HELP istio_requests_total Total requests.",
            "# TYPE istio_requests_total counter",
        ]
        with self._lock:
            series = sorted(self._series.items())
            by_name = {w.name: w for w in self._destinations.values()}
        for (workload, code), s in series:
            labels = _labels(by_name[workload], code, self.reporter)
            lines.append(f"istio_requests_total{{{labels}}} {s.requests}")
        lines += [
            "# HELP istio_request_duration_milliseconds Request duration in milliseconds.",
            "# TYPE istio_request_duration_milliseconds histogram",
        ]
        name = "istio_request_duration_milliseconds"
        for (workload, code), s in series:
            labels = _labels(by_name[workload], code, self.reporter)
            for bound, count in zip(DURATION_BUCKETS_MS, s.buckets, strict=True):
                lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {count}')
            lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {s.requests}')
            lines.append(f"{name}_sum{{{labels}}} {s.duration_sum:.3f}")
            lines.append(f"{name}_count{{{labels}}} {s.requests}")
        return "\n".join(lines) + "\n"


def route_weights(virtualservice: Mapping[str, Any]) -> dict[DestinationKey, int]:
    """The weights of the route ordinary requests take: (host short name, subset) -> weight.

    That is the first HTTP route without header, query or method conditions (header-matched
    routes only catch testers' requests); a lone destination without a weight gets 100.
    """
    routes = virtualservice.get("spec", {}).get("http") or []
    plain = [r for r in routes if not any(_is_special(m) for m in r.get("match") or [])]
    chosen = plain[0] if plain else (routes[0] if routes else {})
    destinations = chosen.get("route") or []
    weights: dict[DestinationKey, int] = {}
    for dest in destinations:
        target = dest.get("destination", {})
        key = (str(target.get("host", "")).split(".")[0], target.get("subset"))
        default = 100 if len(destinations) == 1 else 0
        weights[key] = weights.get(key, 0) + int(dest.get("weight", default))
    return weights


def httproute_weights(route: Mapping[str, Any]) -> dict[DestinationKey, int]:
    """``route_weights`` for a Gateway API HTTPRoute: the first rule without header, query or
    method matches; each Service backendRef weighs its ``weight`` (default 1, as in the API)."""
    rules = route.get("spec", {}).get("rules") or []
    plain = [r for r in rules if not any(_is_special(m) for m in r.get("matches") or [])]
    chosen = plain[0] if plain else (rules[0] if rules else {})
    weights: dict[DestinationKey, int] = {}
    for ref in chosen.get("backendRefs") or []:
        key = (str(ref.get("name", "")), None)
        weights[key] = weights.get(key, 0) + int(ref.get("weight", 1))
    return weights


def _is_special(match: Mapping[str, Any]) -> bool:
    return any(k in match for k in ("headers", "queryParams", "method", "withoutHeaders"))


def _labels(workload: _Workload, code: int, reporter: str) -> str:
    ns = workload.namespace
    labels = {
        "reporter": reporter,
        "source_workload": "istio-ingressgateway",
        "source_workload_namespace": "istio-system",
        "source_app": "istio-ingressgateway",
        "source_version": "unknown",
        "source_canonical_service": "istio-ingressgateway",
        "source_principal": "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        "source_cluster": "Kubernetes",
        "destination_workload": workload.name,
        "destination_workload_namespace": ns,
        "destination_service": f"{workload.host}.{ns}.svc.cluster.local",
        "destination_service_name": workload.host,
        "destination_service_namespace": ns,
        "destination_version": workload.version,
        "destination_app": workload.host,
        "destination_canonical_service": workload.host,
        "destination_canonical_revision": workload.version,
        "destination_principal": f"spiffe://cluster.local/ns/{ns}/sa/default",
        "destination_cluster": "Kubernetes",
        "request_protocol": "http",
        "response_code": str(code),
        "grpc_response_status": "",
        "response_flags": "-",
        "connection_security_policy": "mutual_tls",
    }
    return ",".join(f'{key}="{value}"' for key, value in labels.items())


def _metrics_handler(simulator: TrafficSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """Serves ``/metrics`` only, like an Envoy stats endpoint."""

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = simulator.render_metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the demo's output

    return Handler
