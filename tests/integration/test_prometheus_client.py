"""The Prometheus provider against real servers: the real Prometheus scraping the traffic
simulator (built-in queries, counts), and a recording HTTP(S) server for auth, TLS and errors."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import structlog
import trustme

from canaryctl.errors import MetricsUnavailableError, PolicyError
from canaryctl.metrics._base import QueryContext
from canaryctl.metrics.prometheus import PrometheusProvider, builtin_query, promql_string
from canaryctl.policy import MetricSpec, PrometheusSpec
from canaryctl.sandbox.traffic import Profile
from canaryctl.sandbox.world import Sandbox
from tests.recording_server import RecordingServer

ANSWER = json.dumps(
    {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "42"]}]},
    }
).encode()


@pytest.fixture(scope="module")
def world() -> Iterator[Sandbox]:
    """rest-apl at 50/50 with a canary answering 10 % 503s at ~300 ms."""
    with Sandbox(scenario="healthy", rps=100) as sb:
        sb.traffic.set_profile("rest-apl-v2", Profile(error_rate=0.10, latency_ms=300))
        vs = sb.emulator.get("networking.istio.io/v1", "VirtualService", "istio-apl", "rest-apl-vs")
        assert vs is not None
        for d in vs["spec"]["http"][0]["route"]:
            d["weight"] = 50
        sb.emulator.apply([vs])
        sb.wait_ready()
        time.sleep(6)  # fill a 5 s window at the new weights
        yield sb


def _ctx(window: float = 5) -> QueryContext:
    return QueryContext(
        namespace="istio-apl",
        app="rest-apl",
        canary_workload="rest-apl-v2",
        stable_workload="rest-apl-v1",
        window_seconds=window,
    )


def test_builtin_queries_measure_the_canary_and_stable(world: Sandbox) -> None:
    """Success rate ~90 % for the canary and 100 % for stable; p99 of a 300 ms canary within
    its buckets; enough requests counted in the window."""
    p = PrometheusProvider(PrometheusSpec(url=world.prometheus.url))
    m = p.measure(MetricSpec(name="request-success-rate", min=99), _ctx())
    assert m.canary is not None and 75 < m.canary < 98
    assert m.stable == 100.0
    assert m.canary_requests is not None and m.canary_requests > 100
    lat = p.measure(MetricSpec(name="request-duration", max=500), _ctx())
    assert lat.canary is not None and 250 < lat.canary <= 1000
    assert lat.stable is not None and lat.stable < 100


def test_counts_are_counter_differences_and_survive_a_reset(world: Sandbox) -> None:
    """counts() over a window equals what the simulator served, within one scrape, also when
    the canary's counters reset (pod restart) inside the window."""
    p = PrometheusProvider(PrometheusSpec(url=world.prometheus.url))
    start = time.time()
    served0 = world.traffic.served("rest-apl-v2")
    time.sleep(3)
    world.traffic.reset_counters("rest-apl-v2")
    time.sleep(4)
    end = time.time()
    served1 = world.traffic.served("rest-apl-v2")
    time.sleep(2)  # let the scrapes of the window land
    c = p.counts(namespace="istio-apl", workload="rest-apl-v2", start=start, end=end)
    true_requests = served1[0] - served0[0]
    # exact up to one scrape interval (1 s of ~50 req/s) at each end; the reset loses nothing
    assert 0.75 * true_requests < c.requests <= 1.15 * true_requests
    assert 0.03 < c.errors / c.requests < 0.2


def test_custom_query_template_and_rejection(world: Sandbox) -> None:
    """A custom query renders its variables; one Prometheus rejects is a policy error."""
    p = PrometheusProvider(PrometheusSpec(url=world.prometheus.url))
    metric = MetricSpec(
        name="errors-per-second",
        query='sum(rate(istio_requests_total{destination_workload="{{ workload }}",'
        'response_code="503"}[{{ window }}]))',
        max=100,
    )
    m = p.measure(metric, _ctx())
    assert m.canary is not None and m.canary > 0 and m.stable is None
    with pytest.raises(PolicyError, match="rejects the query"):
        p.validate_query("sum(rate(istio_requests_total[5s])")


def test_label_values_cannot_change_the_query() -> None:
    """Names reaching PromQL are validated; quoting is exact Go/PromQL escaping."""
    with pytest.raises(PolicyError, match="not a valid Kubernetes name"):
        builtin_query("request-count", namespace='x"} or vector(1) #', workload="w", window="5s")
    with pytest.raises(PolicyError):
        builtin_query("request-count", namespace="ns", workload="w\n", window="5s")
    assert promql_string('a"b\\c') == '"a\\"b\\\\c"'


def test_request_count_is_asked_once_per_analysis_time() -> None:
    """Every metric of one analysis (fixed evaluation time) needs the canary's request count:
    it is queried once; the metrics' own queries are not reused, and without a fixed time
    nothing is."""
    with RecordingServer() as server:
        server.script("/api/v1/query", [200], body=ANSWER)
        p = PrometheusProvider(PrometheusSpec(url=server.url("").rstrip("/")))
        at = time.time()
        ctx = QueryContext(
            namespace="istio-apl",
            app="rest-apl",
            canary_workload="rest-apl-v2",
            stable_workload="rest-apl-v1",
            window_seconds=5,
            at=at,
        )
        p.measure(MetricSpec(name="request-success-rate", min=99), ctx)
        p.measure(MetricSpec(name="request-duration", max=500), ctx)
        count_q = builtin_query(
            "request-count", namespace="istio-apl", workload="rest-apl-v2", window="5s"
        )
        asked = [parse_qs(r.body.decode())["query"][0] for r in server.requests()]
        assert asked.count(count_q) == 1
        assert len(asked) == 1 + 2 * 2  # the count, then canary and stable of each metric
        p.measure(MetricSpec(name="request-success-rate", min=99), replace(ctx, at=None))
        asked = [parse_qs(r.body.decode())["query"][0] for r in server.requests()]
        assert asked.count(count_q) == 2


def test_bearer_token_is_reread_when_rotated_and_never_logged(tmp_path: Path) -> None:
    """The token file is read per query when it changes; the token is sent, never logged."""
    token = tmp_path / "token"
    token.write_text("first-secret-token\n")
    with RecordingServer() as server, structlog.testing.capture_logs() as logs:
        server.script("/api/v1/query", [503, 200], body=ANSWER)
        spec = PrometheusSpec(
            url=server.url("").rstrip("/"),
            bearerTokenFile=str(token),
            retryBudget="5s",
            headers={"X-Scope-OrgID": "tenant-a"},
        )
        p = PrometheusProvider(spec)
        assert p.scalar("vector(1)") == (42.0, None)
        token.write_text("second-secret-token-longer\n")
        assert p.scalar("vector(1)") == (42.0, None)
        sent = [r.headers.get("Authorization") for r in server.requests("/api/v1/query")]
        assert sent == [
            "Bearer first-secret-token",
            "Bearer first-secret-token",
            "Bearer second-secret-token-longer",
        ]
        assert server.requests()[0].headers.get("X-Scope-OrgID") == "tenant-a"
    assert logs, "the 503 retry is logged"
    assert "secret" not in json.dumps(logs, default=str)


def test_basic_auth_and_401_fail_fast_without_leaking(tmp_path: Path) -> None:
    """Basic auth reads the password from a file; a 401 is not retried and the error names
    the settings to check, never the password."""
    pw = tmp_path / "pw"
    pw.write_text("hunter2-very-secret")
    with RecordingServer() as server:
        server.script("/api/v1/query", [401])
        spec = PrometheusSpec(
            url=server.url("").rstrip("/"),
            retryBudget="30s",
            basicAuth={"username": "canary", "passwordFile": str(pw)},
        )
        t0 = time.monotonic()
        with pytest.raises(MetricsUnavailableError) as exc:
            PrometheusProvider(spec).query("vector(1)")
        assert time.monotonic() - t0 < 5
        assert "basicAuth" in str(exc.value) and "hunter2" not in str(exc.value)
        auth = server.requests()[0].headers["Authorization"]
        assert auth.startswith("Basic ") and len(server.requests()) == 1


class _TLSServer:
    def __init__(self, cert: trustme.LeafCert) -> None:
        handler = _json_handler()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"https://localhost:{self.httpd.server_address[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _json_handler() -> type[http.server.BaseHTTPRequestHandler]:
    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return H


def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_given(tmp_path: Path) -> None:
    """An unknown CA fails (never silently accepted); caFile makes it work."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with _TLSServer(cert) as url:
        with pytest.raises(MetricsUnavailableError, match="TLS verification failed"):
            PrometheusProvider(PrometheusSpec(url=url, retryBudget="30s")).query("vector(1)")
        ok = PrometheusProvider(PrometheusSpec(url=url, tls={"caFile": str(ca_file)}))
        assert ok.scalar("vector(1)") == (42.0, None)


def test_prefetch_answers_each_rollout_as_its_own_queries_would(world: Sandbox) -> None:
    """One grouped query per built-in metric and window gives every workload the value its
    own query gives, and a workload absent from the answer is "no data" (inconclusive)."""
    spec = PrometheusSpec(url=world.prometheus.url)
    at = time.time()
    ghost = replace(_ctx(), canary_workload="ghost-v2", stable_workload="ghost-v1", at=at)
    wanted = [
        (MetricSpec(name=name, **bound), ctx)  # type: ignore[arg-type]
        for name, bound in (("request-success-rate", {"min": 99}), ("request-duration", {"max": 1}))
        for ctx in (replace(_ctx(), at=at), ghost)
    ]
    sent: list[Any] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *_a, **_k: sent.append(r))
    batched = PrometheusProvider(spec, session=session)
    batched.prefetch(wanted)
    assert len(sent) == 3  # request count, success rate, p99: each once for all workloads
    one_by_one = PrometheusProvider(spec)
    for metric, ctx in wanted:
        assert batched.measure(metric, ctx) == one_by_one.measure(metric, ctx)
    assert len(sent) == 3  # measure asked nothing more
    m = batched.measure(*wanted[1])
    assert m.canary is None and m.note == "no data" and m.canary_requests == 0.0


def test_prefetch_counts_equal_per_workload_counts(world: Sandbox) -> None:
    """The sequential judge's counts from one range query per series for many workloads equal
    the counts asked workload by workload (and are zero for a workload without series)."""
    spec = PrometheusSpec(url=world.prometheus.url)
    end = time.time()
    windows = [
        ("istio-apl", "rest-apl-v2", end - 4),
        ("istio-apl", "rest-apl-v1", end - 3),
        ("istio-apl", "ghost-v1", end - 3),
    ]
    batched = PrometheusProvider(spec)
    batched.prefetch_counts(windows, end=end, buckets=True)
    one_by_one = PrometheusProvider(spec)
    for ns, wl, start in windows:
        kw = {"namespace": ns, "workload": wl, "start": start, "end": end}
        assert batched.counts(**kw) == one_by_one.counts(**kw)  # type: ignore[arg-type]
        assert batched.bucket_counts(**kw) == one_by_one.bucket_counts(**kw)  # type: ignore[arg-type]
    assert (
        batched.counts(
            namespace="istio-apl", workload="rest-apl-v2", start=end - 4, end=end
        ).requests
        > 0
    )
