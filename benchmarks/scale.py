"""Fleet scale and start-up speed: what one reconcile pass and one daemon tick cost at N rollouts.

The world (in a child process, so its CPU is not counted as canaryctl's): the strict API
emulator holding N copies of rest-apl (namespaces ``scale-0000``...), each with a rollout in
progress whose step is due, and a Prometheus stand-in that answers every query with plausible
numbers (success 100 %, p99 120 ms, 1000 requests) and counts the queries. A query grouped
``by (destination_workload_namespace, destination_workload)`` gets one series per workload.

Measured per N:
- ``reconcile -A`` as a real subprocess (what a CronJob runs): wall, CPU (user+sys), peak RSS,
  Kubernetes requests by verb, Prometheus queries.
- the daemon (``run -A``) in this process at a 30 s interval: ``TICKS`` ticks back to back on a
  clock that advances 30 s per tick (so every rollout is due at every tick); its share of one
  core is the CPU of a steady tick / 30 s, and a tick longer than 30 s is a missed interval.

Start-up: medians over ``--repeat`` runs of ``python -c pass``, ``canaryctl --help``,
``canaryctl policy validate policies/default.yaml`` and ``canaryctl status`` until its first
API request reaches a listening socket.

    nice -n 10 .venv/bin/python benchmarks/scale.py            # N = 10, 100, 1000; ~5 min
    nice -n 10 .venv/bin/python benchmarks/scale.py --sizes 10 --no-write

Writes the table to ``docs/scale.md`` (between markers) and a summary to the README.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = 30.0
TICKS = 4  # the first tick warms up (cache fill, connection pool); the rest are steady
MARKERS = ("<!-- scale:begin -->", "<!-- scale:end -->")
SUMMARY = ("<!-- scale-summary:begin -->", "<!-- scale-summary:end -->")
GROUPED = re.compile(r"by \(destination_workload_namespace, ?destination_workload")


# --- the world (child process) ----------------------------------------------------------------


def _namespace(i: int) -> str:
    return f"scale-{i:04d}"


def _policy() -> dict[str, Any]:
    from canaryctl.policy import parse_policy

    # 1 % steps: no rollout ends within the benchmark, every tick advances each one
    spec = {"stepWeight": 1, "interval": f"{INTERVAL:g}s", "minRequests": 50}
    return parse_policy({"spec": spec}).snapshot()


def _seed(server: Any, n: int, now: float) -> None:
    """N copies of rest-apl, each with a rollout begun one interval ago (due now)."""
    from canaryctl.sandbox import rest_apl_fleet

    namespaces = [_namespace(i) for i in range(n)]
    server.apply(rest_apl_fleet(namespaces, policy=_policy(), started_at=now - INTERVAL - 1))


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def take(self) -> dict[str, int]:
        with self.lock:
            out = dict(self.counts)
            self.counts.clear()
            return out


def _prometheus(counter: _Counter, workloads: list[tuple[str, str]]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            self._answer(form.get("query", [""])[0])

        def do_GET(self) -> None:
            self._answer(parse_qs(self.path.partition("?")[2]).get("query", [""])[0])

        def _answer(self, query: str) -> None:
            counter.add("query")
            value = (
                "120" if "histogram_quantile" in query else "1000" if "increase" in query else "100"
            )
            if query == "vector(1)":
                value = "1"
            if GROUPED.search(query):
                labels = [
                    {"destination_workload_namespace": ns, "destination_workload": wl}
                    for ns, wl in workloads
                ]
            else:
                labels = [{}]
            result = [{"metric": m, "value": [time.time(), value]} for m in labels]
            body = json.dumps(
                {"status": "success", "data": {"resultType": "vector", "result": result}}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _world(conn: Connection, n: int, kubeconfig: str) -> None:
    """Child process: serve the emulator and the Prometheus stand-in; answer commands."""
    from canaryctl.sandbox import _api
    from canaryctl.sandbox.emulator import EmulatorServer, StrictEmulator

    kube_counter = _Counter()

    class CountingEmulator(StrictEmulator):
        async def __call__(self, raw: Any) -> Any:
            target = _api.parse_resource_url(raw.path)
            if target is None:
                kube_counter.add("discovery")
            elif raw.query.get("watch") in ("true", "1"):
                kube_counter.add("watch")
            else:
                kube_counter.add(_api.rbac_verb(raw.method.upper(), target, dict(raw.query)))
            return await super().__call__(raw)

    prom_counter = _Counter()
    workloads = [(_namespace(i), f"rest-apl-v{v}") for i in range(n) for v in (1, 2)]
    prom = _prometheus(prom_counter, workloads)
    with EmulatorServer(CountingEmulator()) as emulator:
        _seed(emulator, n, time.time())
        emulator.write_kubeconfig(kubeconfig)
        conn.send((emulator.url, f"http://127.0.0.1:{prom.server_address[1]}"))
        while True:
            cmd = conn.recv()
            if cmd == "stop":
                break
            if cmd == "seed":
                _seed(emulator, n, time.time())
            conn.send({"kube": kube_counter.take(), "prometheus": prom_counter.take()})
    prom.shutdown()


class World:
    def __init__(self, n: int) -> None:
        self.n = n
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.tmp = tempfile.TemporaryDirectory(prefix="canaryctl-scale-")
        self.kubeconfig = Path(self.tmp.name) / "kubeconfig"
        self.proc = ctx.Process(target=_world, args=(child, n, str(self.kubeconfig)), daemon=True)

    def __enter__(self) -> World:
        self.proc.start()
        self.kube_url, self.prom_url = self.conn.recv()
        return self

    def counts(self, cmd: str = "counts") -> dict[str, dict[str, int]]:
        self.conn.send(cmd)
        answer: dict[str, dict[str, int]] = self.conn.recv()
        return answer

    def __exit__(self, *_exc: object) -> None:
        self.conn.send("stop")
        self.proc.join(timeout=30)
        self.tmp.cleanup()


# --- measurements ----------------------------------------------------------------------------


def _canaryctl() -> list[str]:
    script = Path(sys.executable).parent / "canaryctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "canaryctl"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


def measure_pass(world: World) -> dict[str, Any]:
    """One ``reconcile -A`` pass as a subprocess."""
    world.counts("seed")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            *_canaryctl(),
            "reconcile",
            "-A",
            "--kubeconfig",
            str(world.kubeconfig),
            "--prometheus-url",
            world.prom_url,
            "--log-level",
            "error",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(proc.stdout)
    advanced = sum(1 for r in report["rollouts"] if r["action"] == "advanced")
    if proc.returncode != 0 or advanced != world.n:
        raise SystemExit(f"reconcile advanced {advanced}/{world.n}: {proc.stderr[-2000:]}")
    counts = world.counts()
    return {
        "wall": wall,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "rss_mb": after.ru_maxrss / 1024,
        "kube": counts["kube"],
        "prometheus": counts["prometheus"].get("query", 0),
    }


def measure_daemon(world: World) -> dict[str, Any]:
    """``TICKS`` daemon ticks in this process on a clock advancing ``INTERVAL`` per tick."""
    import structlog

    from canaryctl.cache import CachedKube
    from canaryctl.controller import Controller
    from canaryctl.daemon import Daemon
    from canaryctl.mesh._base import get_router
    from canaryctl.metrics._base import get_provider

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    world.counts("seed")
    clock = [time.time()]
    kube = CachedKube.connect(kubeconfig=str(world.kubeconfig))
    ctl = Controller(
        kube=kube,
        router=get_router("istio", kube),
        provider_for=get_provider,
        prometheus_url=world.prom_url,
        clock=lambda: clock[0],
    )
    stop = threading.Event()
    daemon = Daemon(
        ctl, namespace=None, interval=INTERVAL, lease_namespace="default", port=0, stop=stop
    )
    ticks = []
    kube.start(None)  # what Daemon.serve does first: list + watch
    world.counts()  # the lists: paid once at start, not per tick
    try:
        for _ in range(TICKS):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            daemon.tick()
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            counts = world.counts()
            ticks.append(
                {
                    "wall": wall,
                    "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                    "kube": counts["kube"],
                    "prometheus": counts["prometheus"].get("query", 0),
                }
            )
            clock[0] += INTERVAL
    finally:
        kube.stop()
        daemon.server.server_close()
    steady = ticks[1:]
    kube_total = collections.Counter[str]()
    for t in steady:
        kube_total.update(t["kube"])
    return {
        "tick_wall": statistics.median(t["wall"] for t in steady),
        "tick_cpu": statistics.median(t["cpu"] for t in steady),
        "max_wall": max(t["wall"] for t in ticks),
        "kube": {k: v / len(steady) for k, v in kube_total.items()},
        "prometheus": statistics.median(t["prometheus"] for t in steady),
        "first_wall": ticks[0]["wall"],
        # the peak of this process, which holds the daemon and its cache (and the largest N)
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _cpu_of(pid: int) -> float:
    """CPU seconds (user+sys) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _first_request_time(cmd: list[str]) -> tuple[float, float]:
    """Seconds (wall, CPU) from spawning ``cmd`` until it connects to the API server."""
    with socket.socket() as listener, tempfile.TemporaryDirectory() as tmp:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        kubeconfig = Path(tmp) / "kubeconfig"
        cluster = {"server": url}
        user = {"token": "benchmark"}
        kubeconfig.write_text(
            json.dumps(  # JSON is YAML
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": cluster}],
                    "users": [{"name": "u", "user": user}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*cmd, "--kubeconfig", str(kubeconfig)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**_env(), "CANARYCTL_KUBE_RETRY_SECONDS": "0"},
        )
        listener.settimeout(30)
        conn, _ = listener.accept()
        elapsed = time.perf_counter() - t0
        cpu = _cpu_of(proc.pid)
        conn.close()
        proc.kill()
        proc.wait()
        return elapsed, cpu


def _run_time(cmd: list[str]) -> tuple[float, float]:
    """Seconds (wall, CPU) of running ``cmd`` to its end."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped by wait4
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def measure_startup(repeat: int) -> dict[str, tuple[float, float]]:
    """Median wall and median CPU (ms) per command. On a shared machine the wall time
    includes waiting for a core; the CPU time is what the command itself costs."""
    cli = _canaryctl()
    policy = str(ROOT / "policies" / "default.yaml")
    cases = {
        "python -c pass": lambda: _run_time([sys.executable, "-c", "pass"]),
        "canaryctl --help": lambda: _run_time([*cli, "--help"]),
        "canaryctl policy validate": lambda: _run_time([*cli, "policy", "validate", policy]),
        "canaryctl status (to first API request)": lambda: _first_request_time(
            [*cli, "status", "rest-apl", "-n", "istio-apl"]
        ),
    }
    out = {}
    for name, fn in cases.items():
        runs = [fn() for _ in range(repeat)]
        out[name] = (
            statistics.median(w for w, _ in runs) * 1000,
            statistics.median(c for _, c in runs) * 1000,
        )
    return out


# --- report ----------------------------------------------------------------------------------


def _verbs(kube: dict[str, float], n: int) -> str:
    skip = {"discovery"}
    return ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(kube.items()) if k not in skip)


def table(results: dict[int, dict[str, Any]]) -> str:
    sizes = sorted(results)
    head = "| figure | " + " | ".join(f"N = {n:,}" for n in sizes) + " |"
    rows = [head, "|---|" + "---|" * len(sizes)]

    def row(name: str, fn: Any) -> None:
        rows.append(f"| {name} | " + " | ".join(fn(n, results[n]) for n in sizes) + " |")

    row("one `reconcile -A` pass, wall", lambda n, r: f"{r['pass']['wall']:.2f} s")
    row("same pass, CPU (user+sys)", lambda n, r: f"{r['pass']['cpu']:.2f} s")
    row("same pass, peak memory (RSS)", lambda n, r: f"{r['pass']['rss_mb']:.0f} MB")
    row(
        "pass: Kubernetes requests per rollout",
        lambda n, r: f"{sum(r['pass']['kube'].values()) / n:.2f}",
    )
    row("pass: by verb, per rollout", lambda n, r: _verbs(r["pass"]["kube"], n))
    row("pass: Prometheus queries", lambda n, r: f"{r['pass']['prometheus']}")
    row(
        "daemon tick (`run -A`, 30 s), wall / CPU",
        lambda n, r: f"{r['daemon']['tick_wall']:.2f} s / {r['daemon']['tick_cpu']:.2f} s",
    )
    row("daemon: peak memory (RSS, with its cache)", lambda n, r: f"{r['daemon']['rss_mb']:.0f} MB")
    row(
        "daemon: share of one core at a 30 s interval",
        lambda n, r: f"{100 * r['daemon']['tick_cpu'] / INTERVAL:.1f} %",
    )
    row(
        "daemon: missed intervals (a tick > 30 s)",
        lambda n, r: "yes" if r["daemon"]["max_wall"] > INTERVAL else "none",
    )
    row(
        "daemon: Kubernetes requests per due rollout per tick",
        lambda n, r: f"{sum(v for k, v in r['daemon']['kube'].items() if k != 'watch') / n:.2f}",
    )
    row("daemon: by verb, per rollout", lambda n, r: _verbs(r["daemon"]["kube"], n))
    row("daemon: Prometheus queries per tick", lambda n, r: f"{r['daemon']['prometheus']:g}")
    return "\n".join(rows)


def startup_table(startup: dict[str, tuple[float, float]]) -> str:
    base = startup["python -c pass"][0]
    rows = [
        "| command | median wall | x `python -c pass` | median CPU (user+sys) |",
        "|---|---|---|---|",
    ]
    for name, (wall, cpu) in startup.items():
        rows.append(f"| `{name}` | {wall:.0f} ms | {wall / base:.1f} | {cpu:.0f} ms |")
    return "\n".join(rows)


def summary(results: dict[int, dict[str, Any]], startup: dict[str, tuple[float, float]]) -> str:
    n = max(results)
    daemon = results[n]["daemon"]
    requests = sum(v for k, v in daemon["kube"].items() if k != "watch") / n
    missed = "a missed interval" if daemon["max_wall"] > INTERVAL else "no missed interval"
    medians = ", ".join(
        f"`{name}` {wall:.0f} ms ({cpu:.0f} ms CPU)" for name, (wall, cpu) in startup.items()
    )
    return (
        f"- N = {n:,} due rollouts, one daemon tick every 30 s: "
        f"{100 * daemon['tick_cpu'] / INTERVAL:.1f} % of one core, {missed}, "
        f"{requests:.2f} Kubernetes requests per due rollout, "
        f"{daemon['prometheus']:g} Prometheus queries per tick.\n"
        f"- One `reconcile -A` pass (CronJob) at N = {n:,}: {results[n]['pass']['wall']:.1f} s, "
        f"{results[n]['pass']['prometheus']} Prometheus queries.\n"
        f"- Start-up medians, wall (CPU): {medians}."
    )


def _replace(path: Path, text: str, markers: tuple[str, str]) -> None:
    begin, end = markers
    head, _, rest = path.read_text().partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=11, help="start-up runs per command")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    results: dict[int, dict[str, Any]] = {}
    for n in (int(s) for s in args.sizes.split(",")):
        with World(n) as world:
            results[n] = {"pass": measure_pass(world), "daemon": measure_daemon(world)}
        print(f"N={n}: {json.dumps(results[n], default=str)}", file=sys.stderr, flush=True)
    startup = measure_startup(args.repeat)
    text = (
        f"{table(results)}\n\nStart-up, median of {args.repeat} runs:\n\n{startup_table(startup)}"
    )
    print(text)
    if not args.no_write:
        _replace(ROOT / "docs" / "scale.md", text, MARKERS)
        _replace(ROOT / "README.md", summary(results, startup), SUMMARY)


if __name__ == "__main__":
    main()
