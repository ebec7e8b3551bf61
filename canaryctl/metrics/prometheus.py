"""Prometheus provider: the HTTP API (requests + tenacity) and the built-in Istio queries.

Built-in queries use Istio's standard metrics as reported by the destination sidecar
(``reporter="destination"``; ``spec.prometheus.reporter`` chooses ``source`` or, for ambient
mode's waypoints, ``waypoint``), selected by ``destination_workload_namespace`` and
``destination_workload`` (the Deployment's name). Label values are validated names and are
also escaped as PromQL string literals, so a name can never change what a query means.

Failure policy: connection errors, timeouts, 5xx, 429 and malformed answers are retried with
exponential backoff for ``spec.prometheus.retryBudget``; then ``MetricsUnavailableError``
(the controller puts traffic back on stable and exits 3). A query Prometheus rejects as
``bad_data`` is not retried: before the rollout that is a policy error (exit 2), during it
an infrastructure failure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from canaryctl.analysis import Measurement
from canaryctl.errors import MetricsUnavailableError, PolicyError, TransientError
from canaryctl.logs import get_logger
from canaryctl.metrics._base import QueryContext, WorkloadCounts
from canaryctl.names import is_subdomain
from canaryctl.policy import MetricSpec, PrometheusSpec, format_duration, parse_duration
from canaryctl.stats import counter_increase

log = get_logger("canaryctl.prometheus")

Sample = tuple[dict[str, str], float]
Series = tuple[dict[str, str], list[tuple[float, float]]]  # labels, [(time, value)]
REQUESTS = "istio_requests_total"
BUCKETS = "istio_request_duration_milliseconds_bucket"
# How far before a window's start to look for the counter's value at the start (Prometheus's
# own staleness lookback is 5 minutes; scrape intervals are far shorter).
LOOKBACK_SECONDS = 300


class QueryRejectedError(Exception):
    """Prometheus answered ``bad_data``: the query itself is wrong."""


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal for ``value`` (Go escaping rules)."""
    return json.dumps(value)  # JSON escaping is a subset of Go's: \" \\ \n \uXXXX


def checked_name(value: str, what: str) -> str:
    """Names that reach PromQL must be DNS-1123 names (what Kubernetes allows for them)."""
    if not isinstance(value, str) or not is_subdomain(value):
        raise PolicyError(f"{what}: {value!r} is not a valid Kubernetes name (DNS-1123)")
    return value


def selector(namespace: str, workload: str, *, reporter: str = "destination") -> str:
    ns = promql_string(checked_name(namespace, "namespace"))
    wl = promql_string(checked_name(workload, "workload"))
    rep = promql_string(reporter)
    return f"reporter={rep},destination_workload_namespace={ns},destination_workload={wl}"


def builtin_query(
    name: str, *, namespace: str, workload: str, window: str, reporter: str = "destination"
) -> str:
    return _builtin(name, selector(namespace, workload, reporter=reporter), window=window, by="")


WORKLOAD_LABELS = ("destination_workload_namespace", "destination_workload")
GROUP_BY = ", ".join(WORKLOAD_LABELS)


def grouped_query(
    name: str, workloads: list[tuple[str, str]], *, window: str, reporter: str = "destination"
) -> str:
    """``builtin_query`` for many (namespace, workload) pairs at once, one series per pair
    (labelled ``WORKLOAD_LABELS``): the value of each series is the value ``builtin_query``
    gives for that pair, and a pair without data has no series, as it has no sample there."""
    sel = grouped_selector(workloads, reporter=reporter)
    return _builtin(name, sel, window=window, by=GROUP_BY)


def grouped_selector(workloads: list[tuple[str, str]], *, reporter: str = "destination") -> str:
    """``selector`` for many pairs (a superset when they span namespaces: callers pick)."""
    namespaces = sorted({checked_name(ns, "namespace") for ns, _ in workloads})
    names = sorted({checked_name(wl, "workload") for _, wl in workloads})
    return (
        f"reporter={promql_string(reporter)},"
        f"destination_workload_namespace=~{_alternatives(namespaces)},"
        f"destination_workload=~{_alternatives(names)}"
    )


def _alternatives(names: list[str]) -> str:
    """A PromQL regex string matching exactly these names (DNS-1123: only '.' is special)."""
    return promql_string("|".join(n.replace(".", "\\.") for n in names))


def _builtin(name: str, sel: str, *, window: str, by: str) -> str:
    """The built-in queries over ``sel``, summed by ``by`` (nothing: one series)."""
    group = f" by ({by}) " if by else ""
    total = f"sum{group}(rate(istio_requests_total{{{sel}}}[{window}]))"
    if name == "request-success-rate":
        # 100 - error percentage: with no 5xx series at all the error side is 0, not "no data"
        errors = f'sum{group}(rate(istio_requests_total{{{sel},response_code=~"5.*"}}[{window}]))'
        no_errors = f"{total} * 0" if by else "on() vector(0)"
        return f"100 - 100 * ({errors} or {no_errors}) / {total}"
    if name == "request-duration":
        le = f"{by}, le" if by else "le"
        return (
            f"histogram_quantile(0.99, sum by ({le}) "
            f"(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{window}])))"
        )
    if name == "request-count":
        return f"sum{group}(increase(istio_requests_total{{{sel}}}[{window}]))"
    raise ValueError(f"unknown built-in metric {name}")


class _FileSecret:
    """A secret read from a file, re-read when the file changes (rotated tokens keep working).
    Its value never reaches logs, errors, JSON output or events."""

    def __init__(self, path: str, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._stamp: tuple[float, int] | None = None
        self._value = ""

    def value(self) -> str:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime, st.st_size)
            if stamp != self._stamp:
                self._value = self.path.read_text(encoding="utf-8").strip()
                self._stamp = stamp
        except OSError as exc:
            raise MetricsUnavailableError(
                f"cannot read the Prometheus {self.what} file {self.path}: {exc.strerror}"
            ) from None
        return self._value


class PrometheusProvider:
    def __init__(self, spec: PrometheusSpec, *, session: requests.Session | None = None):
        self.spec = spec
        self.url = spec.url.rstrip("/")
        self.timeout = parse_duration(spec.timeout)
        self.retry_seconds = parse_duration(spec.retryBudget)
        self.session = session or requests.Session()
        # answers by (query, evaluation time): the canary's request count, asked once for all
        # the metrics of an analysis, and what ``prefetch`` fetched for many rollouts at once
        self._answers: dict[tuple[str, float], tuple[float | None, str | None]] = {}
        # raw series by (name, namespace, workload, end), with their span: see prefetch_counts
        self._matrices: dict[tuple[str, str, str, float], tuple[int, list[Series]]] = {}
        self.session.headers.update(spec.headers)
        self.reporter = spec.reporter  # which proxy's report the built-in queries read
        # passed with every request: a session-level setting loses to REQUESTS_CA_BUNDLE
        self.verify: bool | str = (
            False if spec.tls.insecureSkipVerify else (spec.tls.caFile or True)
        )
        if spec.tls.insecureSkipVerify:  # the user chose it; warn once in our log, not per query
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            log.warning("prometheus.tls_unverified", url=self.url)
        self._token = (
            _FileSecret(spec.bearerTokenFile, "bearer token") if spec.bearerTokenFile else None
        )
        self._password = (
            _FileSecret(spec.basicAuth.passwordFile, "password") if spec.basicAuth else None
        )

    def _auth(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        headers = {"Authorization": f"Bearer {self._token.value()}"} if self._token else {}
        basic = None
        if self.spec.basicAuth is not None and self._password is not None:
            basic = (self.spec.basicAuth.username, self._password.value())
        return headers, basic

    # --- HTTP -------------------------------------------------------------------------------
    def _once(self, promql: str, at: float | None) -> dict[str, Any]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        headers, basic = self._auth()
        try:
            resp = self.session.post(
                f"{self.url}/api/v1/query",
                data=params,
                timeout=self.timeout,
                headers=headers,
                auth=basic,
                verify=self.verify,
            )
        except requests.exceptions.SSLError as exc:  # configuration, not a hiccup: no retry
            raise QueryRejectedError(
                f"TLS verification failed for {self.url} (set tls.caFile to the CA bundle)"
            ) from exc
        except requests.RequestException as exc:
            raise TransientError(f"Prometheus at {self.url}: {type(exc).__name__}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("errorType") == "bad_data":
            raise QueryRejectedError(str(body.get("error", "bad query")))
        if resp.status_code == 429 or resp.status_code >= 500:
            raise TransientError(f"Prometheus at {self.url}: HTTP {resp.status_code}")
        if resp.status_code in (401, 403):
            raise QueryRejectedError(
                f"HTTP {resp.status_code}: check bearerTokenFile / basicAuth / tls settings"
            )
        if resp.status_code >= 400:
            raise TransientError(f"Prometheus at {self.url}: HTTP {resp.status_code}")
        if not isinstance(body, dict) or body.get("status") != "success":
            err = (
                str(body.get("error") or f"status {body.get('status')!r} without an error")
                if isinstance(body, dict)
                else "malformed JSON answer"
            )
            raise TransientError(f"Prometheus at {self.url}: {err}")
        data = body.get("data")
        if not isinstance(data, dict) or "resultType" not in data:
            raise TransientError(f"Prometheus at {self.url}: answer without data.resultType")
        return data

    def query(self, promql: str, *, at: float | None = None) -> list[Sample]:
        """Instant query with retries. Returns (labels, value) samples."""
        samples: list[Sample] = self._query_data(promql, at, parse=_samples)
        return samples

    def _query_data(
        self, promql: str, at: float | None, *, parse: Callable[[dict[str, Any]], Any] = dict
    ) -> Any:
        """``parse`` of the ``data`` of an instant query, retried for ``retryBudget`` (see module
        doc). A malformed answer (``parse`` raises ``TransientError``) is retried too."""

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            log.warning("prometheus.retry", error=str(exc), attempt=rs.attempt_number)

        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(TransientError),
                stop=stop_after_delay(self.retry_seconds),
                wait=wait_exponential(multiplier=0.25, max=8),
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    data = parse(self._once(promql, at))
        except TransientError as exc:
            raise MetricsUnavailableError(
                f"{exc} (gave up after {self.retry_seconds:g}s of retries)"
            ) from exc
        except QueryRejectedError as exc:
            raise MetricsUnavailableError(f"Prometheus rejected the query: {exc}") from exc
        return data

    def scalar(self, promql: str, *, at: float | None = None) -> tuple[float | None, str | None]:
        """One number, or (None, why) for an empty answer or several series."""
        if at is not None and (promql, at) in self._answers:
            return self._answers[(promql, at)]
        samples = self.query(promql, at=at)
        if not samples:
            return None, "no data"
        if len(samples) > 1:
            return None, f"query returned {len(samples)} series, expected one (aggregate it)"
        return samples[0][1], None

    # --- provider protocol ------------------------------------------------------------------
    def check(self) -> None:
        self.query("vector(1)")

    def validate_query(self, query: str) -> None:
        try:
            self._once(query, None)
        except QueryRejectedError as exc:
            raise PolicyError(f"Prometheus rejects the query {query!r}: {exc}") from None
        except TransientError:
            self.check()  # raises MetricsUnavailableError after retries

    def render(self, metric: MetricSpec, ctx: QueryContext, workload: str) -> str:
        from canaryctl.policy import render_query

        window = format_duration(ctx.window_seconds)
        if metric.builtin:
            return builtin_query(
                metric.name,
                namespace=ctx.namespace,
                workload=workload,
                window=window,
                reporter=self.reporter,
            )
        assert metric.query is not None
        variables = {
            "app": checked_name(ctx.app, "app"),
            "namespace": checked_name(ctx.namespace, "namespace"),
            "canary_workload": checked_name(ctx.canary_workload, "canary workload"),
            "stable_workload": checked_name(ctx.stable_workload, "stable workload"),
            "workload": checked_name(workload, "workload"),
            "window": window,
            "interval": window,
            "reporter": self.reporter,
        }
        return render_query(metric.query, variables)

    def prefetch(self, wanted: list[tuple[MetricSpec, QueryContext]]) -> None:
        """Ask what ``measure`` will ask for these (metric, context) pairs in one query per
        built-in metric and window (evaluated at the same instant), grouped by workload, and
        keep each workload's answer as the answer of its own query. Custom queries are asked
        one by one (a template cannot be grouped safely). Forgets earlier answers."""
        self._answers.clear()
        groups: dict[tuple[str, float, float], set[tuple[str, str]]] = {}
        for metric, ctx in wanted:
            if ctx.at is None:
                continue
            names = ["request-count", metric.name] if metric.builtin else ["request-count"]
            for name in names:
                workloads = groups.setdefault((name, ctx.window_seconds, ctx.at), set())
                workloads.add((ctx.namespace, ctx.canary_workload))
                if name != "request-count":
                    workloads.add((ctx.namespace, ctx.stable_workload))
        for (name, seconds, at), pairs in groups.items():
            window = format_duration(seconds)
            by_pair = {
                (labels.get(WORKLOAD_LABELS[0]), labels.get(WORKLOAD_LABELS[1])): value
                for labels, value in self.query(
                    grouped_query(name, sorted(pairs), window=window, reporter=self.reporter),
                    at=at,
                )
            }
            for ns, wl in pairs:
                value = by_pair.get((ns, wl))
                query = builtin_query(
                    name, namespace=ns, workload=wl, window=window, reporter=self.reporter
                )
                self._answers[(query, at)] = (
                    (value, None) if value is not None else (None, "no data")
                )

    def measure(self, metric: MetricSpec, ctx: QueryContext) -> Measurement:
        window = format_duration(ctx.window_seconds)
        req_q = builtin_query(
            "request-count",
            namespace=ctx.namespace,
            workload=ctx.canary_workload,
            window=window,
            reporter=self.reporter,
        )
        requests_value, req_note = self.scalar(req_q, at=ctx.at)
        if ctx.at is not None:
            self._answers[(req_q, ctx.at)] = (requests_value, req_note)
        canary, note = self.scalar(self.render(metric, ctx, ctx.canary_workload), at=ctx.at)
        stable, _ = self.scalar(self.render(metric, ctx, ctx.stable_workload), at=ctx.at)
        if requests_value is None and req_note != "no data":  # e.g. several series: say so
            return Measurement(metric.name, canary, stable, None, f"request count: {req_note}")
        return Measurement(
            metric=metric.name,
            canary=canary,
            stable=stable,
            canary_requests=0.0 if requests_value is None else requests_value,
            note=note,
        )

    def prefetch_counts(
        self, windows: list[tuple[str, str, float]], *, end: float, buckets: bool
    ) -> None:
        """What ``counts`` (and ``bucket_counts`` when ``buckets``) will ask for these
        (namespace, workload, start) windows ending at ``end``, in one range query per series
        for all of them (reaching back to the earliest start); each workload's series are kept
        for its own windows. Forgets earlier answers."""
        self._matrices.clear()
        if not windows:
            return
        pairs = sorted({(ns, wl) for ns, wl, _ in windows})
        span = _span(min(start for _, _, start in windows), end)
        sel = grouped_selector(pairs, reporter=self.reporter)
        for name in (REQUESTS, BUCKETS) if buckets else (REQUESTS,):
            by_pair: dict[tuple[str, str], list[Series]] = {pair: [] for pair in pairs}
            for labels, points in self._query_data(f"{name}{{{sel}}}[{span}s]", end, parse=_matrix):
                key = (labels.get(WORKLOAD_LABELS[0], ""), labels.get(WORKLOAD_LABELS[1], ""))
                if key in by_pair:
                    by_pair[key].append((labels, points))
            for (ns, wl), found in by_pair.items():
                self._matrices[(name, ns, wl, end)] = (span, found)

    def _increases(
        self, name: str, *, namespace: str, workload: str, start: float, end: float
    ) -> list[Sample]:
        """Per-series counter increase between ``start`` and ``end`` from the raw samples
        (no extrapolation). A sample lower than the previous one is a reset: the counter
        restarted from 0, so the increase continues from there and nothing before it is lost.
        A series with no sample before ``start`` appeared in the window (a new pod): it counts
        from 0."""
        span = _span(start, end)
        fetched = self._matrices.get((name, namespace, workload, end))
        if fetched is not None and fetched[0] >= span:
            series_points = fetched[1]
        else:
            series_points = self._query_data(
                f"{name}{{{selector(namespace, workload, reporter=self.reporter)}}}[{span}s]",
                end,
                parse=_matrix,
            )
        out: list[Sample] = []
        for labels, points in series_points:
            before = [v for t, v in points if t <= start]
            prev = before[-1] if before else 0.0
            inc = 0.0
            for t, v in points:
                if t <= start or not math.isfinite(v):
                    continue
                inc += counter_increase(prev, v)
                prev = v
            out.append((labels, inc))
        return out

    def counts(self, *, namespace: str, workload: str, start: float, end: float) -> WorkloadCounts:
        """Requests and 5xx served by ``workload`` between two instants (counter increases)."""
        total = errors = 0.0
        for labels, inc in self._increases(
            REQUESTS, namespace=namespace, workload=workload, start=start, end=end
        ):
            total += inc
            if labels.get("response_code", "").startswith("5"):
                errors += inc
        return WorkloadCounts(requests=round(total), errors=round(errors))

    def request_count(
        self, *, namespace: str, workload: str, window_seconds: float
    ) -> float | None:
        window = format_duration(window_seconds)
        query = builtin_query(
            "request-count",
            namespace=namespace,
            workload=workload,
            window=window,
            reporter=self.reporter,
        )
        value, _why = self.scalar(query)
        return value

    def bucket_counts(
        self, *, namespace: str, workload: str, start: float, end: float
    ) -> dict[float, float]:
        """Latency-bucket increases (le -> count) in the window, summed over series (each
        series reset-aware, see ``_increases``)."""
        inc: dict[float, float] = {}
        for labels, v in self._increases(
            BUCKETS, namespace=namespace, workload=workload, start=start, end=end
        ):
            le = float(labels.get("le", "inf").replace("+Inf", "inf"))
            inc[le] = inc.get(le, 0.0) + v
        return inc


def _span(start: float, end: float) -> int:
    """Seconds of raw samples needed for a window: the window and the lookback before it."""
    return max(1, math.ceil(end - start)) + LOOKBACK_SECONDS


def _matrix(data: dict[str, Any]) -> list[Series]:
    """Matrix ``data`` -> (labels, [(time, value)]); ``TransientError`` when malformed."""
    if data.get("resultType") != "matrix":
        raise TransientError(
            f"Prometheus answered a {data.get('resultType')} for a range selector, "
            "expected a matrix"
        )
    try:
        return [
            (dict(s.get("metric", {})), [(float(t), _num(v)) for t, v in s.get("values", [])])
            for s in data.get("result") or []
        ]
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        raise TransientError(f"Prometheus answer malformed: {exc}") from exc


def _samples(data: dict[str, Any]) -> list[Sample]:
    """Vector or scalar ``data`` -> samples; ``TransientError`` when malformed (retried)."""
    rtype = data.get("resultType")
    result = data.get("result")
    try:
        if rtype == "scalar":
            return [({}, _num(result[1]))]  # type: ignore[index]
        if rtype == "vector":
            return [(dict(s.get("metric", {})), _num(s["value"][1])) for s in result or []]
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise TransientError(f"Prometheus answer malformed: {exc}") from exc
    raise TransientError(f"Prometheus answered a {rtype}, expected a vector or scalar")


def _num(text: Any) -> float:
    return float(text)  # Prometheus encodes NaN/Inf as "NaN", "+Inf", "-Inf"; float() reads them
