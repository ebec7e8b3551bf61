"""Daemon mode (``canaryctl run``): the reconcile pass in a loop, with leader election,
health endpoints and Prometheus metrics.

Only the leader (holder of the ``canaryctl-leader`` Lease) reconciles; other replicas stand by
and take over when its lease expires. With ``shards`` > 1 the VirtualServices are split by a
hash of namespace/name and each shard has its own leader Lease ``canaryctl-leader-I-of-N``:
replicas running the same shard index stand by for each other. The leader Lease guards all the
shard's rollouts (no per-rollout Lease per tick), and reads come from a watch-fed cache when
the controller's client is a ``CachedKube`` (docs/scale.md). SIGTERM stops the loop between
two writes (each write is one atomic patch, so there is nothing half-done to undo), releases
the leases and exits 0.
"""

from __future__ import annotations

import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from canaryctl.cache import CachedKube
from canaryctl.controller import Controller
from canaryctl.errors import CanaryctlError, UsageError
from canaryctl.leases import Lease, default_duration
from canaryctl.logs import get_logger
from canaryctl.reconcile import Report, reconcile
from canaryctl.rollout import ACTIVE_PHASES, TERMINAL_PHASES, RolloutState

log = get_logger("canaryctl.daemon")
PHASES = (*ACTIVE_PHASES, *TERMINAL_PHASES)


class DaemonMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["namespace", "app", "virtual_service"]
        self.weight = Gauge(
            "canaryctl_rollout_canary_weight",
            "Canary weight in percent",
            labels,
            registry=self.registry,
        )
        self.phase = Gauge(
            "canaryctl_rollout_phase",
            "1 for the rollout's current phase",
            [*labels, "phase"],
            registry=self.registry,
        )
        self.value = Gauge(
            "canaryctl_rollout_metric_value",
            "Last analysed canary value of each metric",
            [*labels, "metric"],
            registry=self.registry,
        )
        self.threshold = Gauge(
            "canaryctl_rollout_metric_threshold",
            "Threshold of each metric (bound: min or max)",
            [*labels, "metric", "bound"],
            registry=self.registry,
        )
        self.finished = Counter(
            "canaryctl_rollouts_finished_total",
            "Rollouts that ended, by outcome and reason",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "canaryctl_reconcile_duration_seconds",
            "Duration of one reconcile pass",
            registry=self.registry,
        )
        self.leader = Gauge(
            "canaryctl_leader", "1 when this replica is the leader", registry=self.registry
        )
        self.errors = Counter(
            "canaryctl_reconcile_errors_total", "Failed reconcile passes", registry=self.registry
        )

    def observe(self, states: list[RolloutState]) -> None:
        for s in states:
            key = (s.namespace, s.app, s.virtual_service)
            self.weight.labels(*key).set(s.weight)
            for phase in PHASES:
                self.phase.labels(*key, phase).set(1 if s.phase == phase else 0)
            for m in s.policy["spec"]["metrics"]:
                for bound in ("min", "max"):
                    if m.get(bound) is not None:
                        self.threshold.labels(*key, m["name"], bound).set(float(m[bound]))
            if s.history:
                for r in s.history[-1].get("metrics", []):
                    if r.get("value") is not None:
                        self.value.labels(*key, r["name"]).set(float(r["value"]))


def _reason_class(reason: str) -> str:
    """A low-cardinality reason label."""
    for key in (
        "sequential",
        "inconclusive",
        "analysis failed",
        "unavailable",
        "operator",
        "force",
    ):
        if key in reason:
            return key.replace(" ", "_")
    return "analysis_passed" if "passed" in reason else "other"


def resolve_shard_index(index: int | None, shards: int) -> int:
    """``--shard-index``, or the ordinal of a StatefulSet pod's name (``canaryctl-4``, from
    $HOSTNAME) modulo ``shards``: with 2 x N replicas, two daemons serve each shard."""
    if shards < 1:
        raise UsageError(f"--shards: must be at least 1, got {shards}")
    if index is None:
        if shards == 1:
            return 0
        ordinal = re.search(r"-(\d+)$", os.environ.get("HOSTNAME", ""))
        if ordinal is None:
            raise UsageError(
                "--shard-index: required with --shards > 1 outside a StatefulSet pod "
                f"(HOSTNAME {os.environ.get('HOSTNAME', '')!r} has no ordinal)"
            )
        return int(ordinal.group(1)) % shards
    if not 0 <= index < shards:
        raise UsageError(f"--shard-index: must be in 0..{shards - 1}, got {index}")
    return index


class Daemon:
    def __init__(
        self,
        ctl: Controller,
        *,
        namespace: str | None,
        interval: float,
        lease_namespace: str,
        port: int,
        stop: threading.Event,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.ctl = ctl
        self.namespace = namespace
        self.interval = interval
        self.stop = stop
        self.shard = shard
        self.metrics = DaemonMetrics()
        index, shards = shard
        self.leader = Lease(
            ctl.kube,
            namespace=lease_namespace,
            name="canaryctl-leader" if shards == 1 else f"canaryctl-leader-{index}-of-{shards}",
            holder=ctl.holder,
            duration=max(default_duration(), int(interval * 3)),
        )
        self.ready = False
        self.server = ThreadingHTTPServer(("0.0.0.0", port), self._handler())
        self.seen_terminal: set[tuple[str, str, float]] = set()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif self.path == "/readyz":
                    ok = daemon.ready
                    self._send(200 if ok else 503, b"ok\n" if ok else b"starting\n", "text/plain")
                elif self.path == "/metrics":
                    self._send(200, generate_latest(daemon.metrics.registry), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def tick(self) -> Report | None:
        """One pass if we lead (its report), else None."""
        now = self.ctl.clock()
        leading = self.leader.acquire(now)
        self.metrics.leader.set(1 if leading else 0)
        if not leading:
            self.ready = True
            log.debug("standby", leader=self.leader.observed_holder)
            return None
        started = time.monotonic()
        try:
            report = reconcile(self.ctl, namespace=self.namespace, shard=self.shard, leader=True)
        except CanaryctlError as exc:  # e.g. the LIST failed: nothing to report on
            self.metrics.errors.inc()
            log.error("reconcile.failed", error=exc.message)
            return None
        finally:
            self.metrics.duration.observe(time.monotonic() - started)
        if report.infra_errors:
            self.metrics.errors.inc()
        states = report.states
        self.metrics.observe(states)
        for s in states:
            key = (s.namespace, s.virtual_service, s.finished_at or 0.0)
            if not s.active and s.finished_at and key not in self.seen_terminal:
                self.seen_terminal.add(key)
                if self.ready:  # count what ended while we watched, not history found at boot
                    self.metrics.finished.labels(s.phase, _reason_class(s.reason)).inc()
        self.ready = True
        return report

    def serve(self) -> int:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        log.info(
            "daemon.start",
            port=self.port,
            namespace=self.namespace or "*",
            interval=self.interval,
            holder=self.ctl.holder,
            shard=f"{self.shard[0]}/{self.shard[1]}",
        )
        kube = self.ctl.kube
        try:
            if isinstance(kube, CachedKube):
                kube.start(self.namespace)
            while not self.stop.is_set():
                self.tick()
                self.stop.wait(self.interval)
        finally:
            if isinstance(kube, CachedKube):
                kube.stop()
            self.leader.release()
            self.server.shutdown()
            log.info("daemon.stop")
        return 0
