"""Scale-down after a promotion: a fixed delay vs canaryctl's "idle in Prometheus" rule.

Sidecars apply a changed route when istiod's push reaches them; until then the previous version
still receives requests. The sandbox's traffic simulator plays that delay (``propagation``) and
answers 503 "no healthy upstream" for requests routed to a Deployment without an available
replica. For each delay, one rollout (steps 50/100, 3 s interval, routes collapsed) is promoted
by canaryctl itself (in this process, against the emulator and a real Prometheus), then v1 is
scaled down either

- (fixed) 3 s after the promotion, like Argo Rollouts' ``scaleDownDelaySeconds``, or
- (idle) by canaryctl, once Prometheus has shown v1 no requests for 3 s (``scaleDownIdle: 3s``),

and the requests lost to 503s are counted. Writes ``benchmarks/results/scale_down.md``.

    python benchmarks/scale_down.py [--delays 0,2,5,8]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from canaryctl import operations
from canaryctl.controller import Controller
from canaryctl.kube import KubeClient
from canaryctl.mesh._base import get_router
from canaryctl.metrics.prometheus import PrometheusProvider
from canaryctl.policy import parse_policy
from canaryctl.sandbox import load_manifests
from canaryctl.sandbox.world import Sandbox

APP, NS, V1 = "rest-apl", "istio-apl", "rest-apl-v1"
OUT = Path(__file__).resolve().parent / "results" / "scale_down.md"


def run(sb: Sandbox, *, propagation: float, strategy: str) -> dict[str, Any]:
    sb.emulator.apply(load_manifests())
    traffic = sb.traffic
    traffic.propagation = propagation
    time.sleep(propagation + 1)  # the re-applied 80/20 has reached every "sidecar"
    finish: dict[str, Any] = {"collapseRoutes": True}
    if strategy == "idle":
        finish["scaleDownIdle"] = "3s"
    spec = {"steps": [50, 100], "interval": "3s", "minRequests": 10, "finish": finish}
    policy = parse_policy({"spec": spec}).with_prometheus_url(sb.prometheus.url)
    kube = KubeClient.connect(kubeconfig=str(sb.kubeconfig))
    ctl = Controller(kube=kube, router=get_router("istio", kube), provider_for=PrometheusProvider)
    lost_before = traffic.unrouted(V1)
    res = operations.promote(ctl, app=APP, namespace=NS, policy=policy)
    assert res.state is not None and res.result == "promoted", res.message
    promoted = float(res.state.finished_at or 0)
    if strategy == "fixed":
        time.sleep(max(0.0, promoted + 3 - time.time()))
        kube.scale_deployment(NS, V1, 0)
        scaled = time.time()
    else:
        scaled = float(res.state.cleanup[-1]["at"])
    time.sleep(propagation + 1.5)  # whatever was still routed to v1 has arrived by now
    last = traffic.last_served(V1) or promoted
    return {
        "propagation": propagation,
        "strategy": strategy,
        "lost": traffic.unrouted(V1) - lost_before,
        "last_request_after_promotion": max(0.0, last - promoted),
        "scaled_after_promotion": scaled - promoted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0,2,5,8", help="propagation delays in seconds")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    rows = []
    with Sandbox(rps=40) as sb:
        sb.wait_ready()
        for delay in (float(d) for d in args.delays.split(",")):
            for strategy in ("fixed", "idle"):
                rows.append(run(sb, propagation=delay, strategy=strategy))
                print(rows[-1], flush=True)
    lines = [
        "# Scale-down after a promotion: fixed 3 s delay vs idle for 3 s in Prometheus",
        "",
        "Written by `benchmarks/scale_down.py` (40 req/s, 1 s scrapes, steps 50/100 every 3 s).",
        "",
        "| route propagation (s) | strategy | requests lost (503) | last v1 request after "
        "promotion (s) | v1 scaled after promotion (s) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['propagation']:g} | {r['strategy']} | {r['lost']} | "
            f"{r['last_request_after_promotion']:.1f} | {r['scaled_after_promotion']:.1f} |"
        )
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
