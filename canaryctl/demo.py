"""``canaryctl demo``: the whole job on a laptop, without a cluster.

It starts the sandbox (the same code the tests use: a Kubernetes API emulator preloaded with
``examples/rest-apl``, a traffic simulator that follows the VirtualService weights and serves
Istio's metrics, and a real Prometheus on loopback) and runs the real ``promote`` against it
with a fast policy (4 s steps), so a healthy canary is promoted and a bad one rolled back in
well under a minute. ``--router gateway-api`` runs the same on the Gateway API world
(``examples/gateway-api``: an HTTPRoute splitting ``rest-apl-primary``/``rest-apl-canary``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from canaryctl.logs import get_logger
from canaryctl.policy import parse_policy

log = get_logger("canaryctl.demo")

SCENARIOS = {
    "healthy": "v2 behaves like v1: expect promotion (exit 0)",
    "errors": "v2 answers 25% of requests with 503: expect rollback (exit 1)",
    "latency": "v2 takes ~900 ms per request: expect rollback (exit 1)",
}

DEMO_POLICY: dict[str, Any] = {
    "apiVersion": "canaryctl.io/v1alpha1",
    "kind": "AnalysisPolicy",
    "metadata": {"name": "demo"},
    "spec": {
        "steps": [20, 40, 60, 80, 100],
        "interval": "4s",
        "failureLimit": 0,
        "minRequests": 20,
        "inconclusiveLimit": 3,
        "prometheus": {"timeout": "5s", "retryBudget": "10s"},
        "metrics": [
            {"name": "request-success-rate", "min": 99},
            {"name": "request-duration", "max": 500},
        ],
    },
}


def run_demo(*, scenario: str, output: str = "text", router: str = "istio") -> int:
    from canaryctl import operations
    from canaryctl.controller import Controller
    from canaryctl.errors import UsageError
    from canaryctl.kube import KubeClient
    from canaryctl.mesh import ROUTERS, get_router
    from canaryctl.metrics.prometheus import PrometheusProvider
    from canaryctl.render import Progress, result_text

    if scenario not in SCENARIOS:
        raise UsageError(f"--scenario: must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    if router not in ROUTERS:
        raise UsageError(f"--router: must be one of {', '.join(ROUTERS)}, got {router!r}")
    try:
        from canaryctl.sandbox.world import Sandbox
    except ImportError as exc:
        raise UsageError(
            f"the demo needs the sandbox extra ({exc.name} is missing): "
            "pip install 'canaryctl[sandbox]'"
        ) from None

    started = time.monotonic()
    log.info("demo.start", scenario=scenario, router=router, expect=SCENARIOS[scenario])
    with Sandbox(scenario=scenario, router=router) as sandbox:
        sandbox.wait_ready()
        log.info(
            "demo.ready",
            prometheus=sandbox.prometheus.url,
            kube=sandbox.emulator.url,
            seconds=round(time.monotonic() - started, 1),
        )
        policy = parse_policy(DEMO_POLICY, source="demo policy").with_prometheus_url(
            sandbox.prometheus.url
        )
        kube = KubeClient.connect(kubeconfig=str(sandbox.kubeconfig))
        progress = Progress() if output == "text" else None
        ctl = Controller(
            kube=kube,
            router=get_router(router, kube),
            provider_for=PrometheusProvider,
            progress=progress,
        )
        try:
            res = operations.promote(
                ctl, app=sandbox.app, namespace=sandbox.namespace, policy=policy
            )
        finally:
            if progress is not None:
                progress.done()
    data = res.to_dict()
    data["scenario"] = scenario
    data["router"] = router
    data["seconds"] = round(time.monotonic() - started, 1)
    if output == "json":
        sys.stdout.write(json.dumps(data, sort_keys=True, default=str) + "\n")
    else:
        sys.stdout.write(f"demo scenario {scenario!r} ({SCENARIOS[scenario]})\n")
        sys.stdout.write(result_text(data) + f"\n  took {data['seconds']}s\n")
    return res.exit_code
