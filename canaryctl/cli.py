"""The Typer app: parse flags, set up logging, call the engine, render, map errors to exit codes.

``_execute`` is the one place where exceptions become exit codes (see ``errors.py``) and, with
``-o json``, the JSON error envelope. Machine output goes to stdout, logs to stderr.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from canaryctl import __version__
from canaryctl.errors import EXIT_INFRA, EXIT_INVALID, CanaryctlError, UsageError

app = typer.Typer(
    name="canaryctl",
    help="Progressive canary releases for Istio, judged on Prometheus data. No CRDs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: importing rich costs more than the rest of --help
)
policy_app = typer.Typer(
    help="Validate analysis policies and print their JSON Schema.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(policy_app, name="policy")


class Output(StrEnum):
    text = "text"
    json = "json"


class Level(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


AppArg = Annotated[
    str, typer.Argument(help="The app: the Service/host the VirtualService routes to")
]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the app")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json (stdout)")]
KubeconfigOpt = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig",
        envvar="KUBECONFIG",
        show_envvar=True,
        help="Path to a kubeconfig; in a pod the in-cluster config is used",
    ),
]
ContextOpt = Annotated[str | None, typer.Option("--context", help="kubeconfig context")]
VsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--virtual-service",
        "--http-route",
        help="Move this VirtualService (HTTPRoute with the Gateway API router) (repeatable; "
        "default: every one routing the app)",
    ),
]
RouterOpt = Annotated[
    str,
    typer.Option(
        "--router",
        help="Traffic router: istio | gateway-api | auto (found from what routes the app)",
    ),
]
PromOpt = Annotated[
    str | None, typer.Option("--prometheus-url", help="Overrides spec.prometheus.url")
]
LogOpt = Annotated[Level, typer.Option("--log-level", help="Log level (logs go to stderr)")]


def _check_names(names: dict[str, str | list[str] | None]) -> None:
    """Names reach the API (URL paths) and PromQL (label values): accept only what Kubernetes
    accepts (DNS-1123), so a quote, brace, newline or regex metacharacter never gets that far.
    A list is a repeatable flag: each value is checked."""
    from canaryctl.names import is_subdomain

    pairs = [(f, v) for f, vs in names.items() for v in (vs if isinstance(vs, list) else [vs])]
    for flag, value in pairs:
        if value is None:
            continue
        if not is_subdomain(value):
            shown = json.dumps(value)[:80]
            raise UsageError(
                f"{flag}: must be a Kubernetes name (lower-case a-z, 0-9, '-', '.'), got {shown}"
            )


def _emit(data: dict[str, Any], output: Output, text: str) -> None:
    if output == Output.json:
        sys.stdout.write(json.dumps(data, sort_keys=True, default=str) + "\n")
    else:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _execute(output: Output, level: Level, fn: Callable[[], int]) -> NoReturn:
    """Run a command body; map every error to its exit code in one place."""
    from canaryctl import logs

    logs.setup(level.value)
    try:
        code = fn()
    except CanaryctlError as exc:
        state = getattr(exc, "state", None)
        if output == Output.json:
            envelope: dict[str, Any] = {
                "result": "error",
                "error": exc.message,
                "exitCode": exc.exit_code,
            }
            if state is not None:
                envelope.update(
                    phase=state.phase, weight=state.weight, reason=state.reason, steps=state.history
                )
            sys.stdout.write(json.dumps(envelope, sort_keys=True, default=str) + "\n")
        sys.stderr.write(f"error: {exc.message}\n")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _controller(
    kubeconfig: str | None,
    context: str | None,
    prometheus_url: str | None,
    progress: Callable[..., None] | None = None,
    stop: threading.Event | None = None,
    *,
    namespace: str | None,
    router: str = "auto",
    app: str | None = None,
) -> Any:
    """The controller of one command. SIGTERM and SIGINT set ``stop`` (given by ``run``,
    whose daemon waits on it; made here otherwise), which ``should_stop`` reads. The daemon
    (``stop`` given) reads through a watch-fed cache.

    The first request every command makes (but with ``--router gateway-api``), the Istio API
    version probe (in ``namespace``, None: all), goes out before the controller's modules are
    imported: an unreachable or misconfigured cluster is reported without paying for them
    first."""
    from canaryctl.kube import KubeClient
    from canaryctl.mesh import AUTO, ROUTERS, detect, get_router

    if router != AUTO and router not in ROUTERS:  # before any request
        raise UsageError(f"--router: must be one of {', '.join([AUTO, *ROUTERS])}, got {router!r}")
    if stop is not None:
        from canaryctl.cache import CachedKube

        kube: KubeClient = CachedKube.connect(kubeconfig=kubeconfig, context=context)
    else:
        kube = KubeClient.connect(kubeconfig=kubeconfig, context=context)
    if router != "gateway-api":  # a Role for HTTPRoutes alone may not list VirtualServices
        kube.istio_version(namespace or "default")

    from canaryctl.controller import Controller
    from canaryctl.metrics._base import get_provider

    stopped = stop if stop is not None else threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopped.set()

    # SIGTERM and SIGINT stop at the next wait point: a patch in flight completes (each is
    # atomic), the rollout stays in the cluster for another process to continue (exit 130).
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # --prometheus-url reaches every spec through AnalysisPolicy.with_prometheus_url (here
    # for promote's policy, in Controller.policy_of for stored ones, in reconcile's start)
    ctl = Controller(
        kube=kube,
        router=(
            detect(kube, app=app, namespace=namespace)
            if router == AUTO
            else get_router(router, kube)
        ),
        provider_for=get_provider,
        prometheus_url=prometheus_url,
        progress=progress,
        should_stop=stopped.is_set,
    )
    atexit.register(ctl.notifier.flush, 10.0)  # deliver queued notifications before exiting
    return ctl


@app.command()
def promote(
    app_name: AppArg,
    namespace: NamespaceOpt = "default",
    policy: Annotated[Path | None, typer.Option("--policy", help="AnalysisPolicy YAML")] = None,
    canary: Annotated[
        str | None, typer.Option("--canary", help="Roll out this subset (or host) as the canary")
    ] = None,
    virtual_service: VsOpt = None,
    route: Annotated[
        list[str] | None,
        typer.Option("--route", help="Only the HTTP routes of this name (repeatable)"),
    ] = None,
    prometheus_url: PromOpt = None,
    router: RouterOpt = "auto",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; write nothing")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Start (first step) and exit; reconcile/run go on")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Promote a rollout in progress now (needs --yes)")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --force")] = False,
    output: OutputOpt = Output.text,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    log_level: LogOpt = Level.info,
) -> None:
    """Shift traffic to the canary step by step; promote or roll back on the analysis."""

    def body() -> int:
        from canaryctl import operations
        from canaryctl.policy import load_policy
        from canaryctl.render import Progress, result_text

        if force and not yes:
            raise UsageError("--force skips the remaining analysis; confirm with --yes")
        _check_names(
            {
                "APP": app_name,
                "--namespace": namespace,
                "--canary": canary,
                "--virtual-service": virtual_service,
            }
        )
        pol = load_policy(policy).with_prometheus_url(prometheus_url)
        progress = Progress() if output == Output.text else None
        ctl = _controller(
            kubeconfig,
            context,
            prometheus_url,
            progress,
            namespace=namespace,
            router=router,
            app=app_name,
        )
        try:
            res = operations.promote(
                ctl,
                app=app_name,
                namespace=namespace,
                policy=pol,
                vs_names=virtual_service or [],
                canary=canary,
                route_names=route or None,
                dry_run=dry_run,
                wait=not no_wait,
                force=force,
            )
        finally:
            if progress is not None:
                progress.done()
        data = res.to_dict()
        _emit(data, output, result_text(data))
        return res.exit_code

    _execute(output, log_level, body)


def _simple_verb(verb: str, module: str = "operations") -> Callable[..., None]:
    def command(
        app_name: AppArg,
        namespace: NamespaceOpt = "default",
        virtual_service: VsOpt = None,
        router: RouterOpt = "auto",
        output: OutputOpt = Output.text,
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        log_level: LogOpt = Level.info,
    ) -> None:
        def body() -> int:
            import importlib

            from canaryctl.render import result_text

            _check_names(
                {"APP": app_name, "--namespace": namespace, "--virtual-service": virtual_service}
            )
            ctl = _controller(
                kubeconfig, context, None, namespace=namespace, router=router, app=app_name
            )
            fn = getattr(importlib.import_module(f"canaryctl.{module}"), verb)
            res = fn(ctl, app=app_name, namespace=namespace, vs_names=virtual_service or [])
            data = res.to_dict()
            _emit(data, output, result_text(data))
            return int(res.exit_code)

        _execute(output, log_level, body)

    return command


app.command(
    "rollback", help="Put all traffic back on stable now (records it on a rollout in progress)."
)(_simple_verb("rollback"))
app.command("pause", help="Hold a rollout at its current weight; reconcile skips it.")(
    _simple_verb("pause")
)
app.command("resume", help="Resume a paused rollout (the current step is re-measured).")(
    _simple_verb("resume")
)
app.command("status", help="Show a rollout's state and its analysis history.")(
    _simple_verb("status")
)
# --- finishing cleanly (finish.py) ---
app.command(
    "undo",
    help="Within the policy's undoWindow after a promotion: all traffic back to the "
    "previous version at once (exit 2 if it is no longer available).",
)(_simple_verb("undo", "undo"))


@app.command("list")
def list_cmd(
    namespace: NamespaceOpt = "default",
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
    router: RouterOpt = "auto",
    output: OutputOpt = Output.text,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    log_level: LogOpt = Level.info,
) -> None:
    """List rollouts recorded on VirtualServices."""

    def body() -> int:
        from canaryctl import operations
        from canaryctl.render import list_text

        _check_names({"--namespace": None if all_namespaces else namespace})
        ctl = _controller(
            kubeconfig,
            context,
            None,
            namespace=None if all_namespaces else namespace,
            router=router,
        )
        states = operations.list_rollouts(ctl, namespace=None if all_namespaces else namespace)
        data = {
            "result": "ok",
            "rollouts": [operations.from_state(s, s.app).to_dict() for s in states],
        }
        _emit(data, output, list_text(states))
        return 0

    _execute(output, log_level, body)


@app.command("backtest")
def backtest_cmd(
    app_name: AppArg,
    namespace: NamespaceOpt = "default",
    policy: Annotated[Path | None, typer.Option("--policy", help="AnalysisPolicy YAML")] = None,
    start: Annotated[str, typer.Option("--from", help="RFC 3339, Unix s or now-2h")] = "now-1h",
    end: Annotated[str, typer.Option("--to", help="RFC 3339, Unix s or now")] = "now",
    canary_workload: Annotated[
        str | None, typer.Option(help="Canary Deployment (default: the last rollout's)")
    ] = None,
    stable_workload: Annotated[
        str | None, typer.Option(help="Stable Deployment (default: the last rollout's)")
    ] = None,
    prometheus_url: PromOpt = None,
    output: OutputOpt = Output.text,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    log_level: LogOpt = Level.info,
) -> None:
    """Replay a policy's analyses on past Prometheus data: what would it have decided?"""

    def body() -> int:
        import time

        from canaryctl.backtest import last_workloads, parse_time, run_backtest
        from canaryctl.metrics._base import get_provider
        from canaryctl.policy import load_policy

        names = {"--canary-workload": canary_workload, "--stable-workload": stable_workload}
        _check_names({"APP": app_name, "--namespace": namespace, **names})
        now = time.time()
        t0, t1 = parse_time(start, flag="--from", now=now), parse_time(end, flag="--to", now=now)
        pol = load_policy(policy).with_prometheus_url(prometheus_url)
        canary, stable = canary_workload, stable_workload
        if canary is None or stable is None:
            ctl = _controller(kubeconfig, context, None, namespace=namespace)
            last = last_workloads(ctl, app=app_name, namespace=namespace)
            canary, stable = canary or last[0], stable or last[1]
        result = run_backtest(
            provider=get_provider(pol.spec.prometheus),
            policy=pol,
            app=app_name,
            namespace=namespace,
            canary_workload=canary,
            stable_workload=stable,
            start=t0,
            end=t1,
        )
        _emit(result.to_dict(), output, result.text())
        return 0

    _execute(output, log_level, body)


@app.command("reconcile")
def reconcile_cmd(
    namespace: NamespaceOpt = "default",
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
    router: RouterOpt = "auto",
    prometheus_url: PromOpt = None,
    output: OutputOpt = Output.text,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    log_level: LogOpt = Level.info,
) -> None:
    """One pass (CronJob mode): advance every due rollout by at most one step, then exit."""

    def body() -> int:
        from canaryctl.reconcile import reconcile

        _check_names({"--namespace": None if all_namespaces else namespace})
        ctl = _controller(
            kubeconfig,
            context,
            prometheus_url,
            namespace=None if all_namespaces else namespace,
            router=router,
        )
        report = reconcile(ctl, namespace=None if all_namespaces else namespace)
        lines = [
            f"{o.namespace}/{o.virtual_service}: {o.action}"
            + (f" ({o.phase} {o.weight}%)" if o.phase else "")
            + (f": {o.detail}" if o.detail else "")
            for o in report.outcomes
        ] or ["no rollouts in progress"]
        _emit(report.to_dict(), output, "\n".join(lines))
        failed = [o for o in report.outcomes if o.action in ("failed", "error")]
        if report.exit_code:
            detail = "; ".join(f"{o.namespace}/{o.virtual_service}: {o.detail}" for o in failed)
            sys.stderr.write(f"error: infrastructure failure: {detail}\n"[:2000])
        return report.exit_code

    _execute(output, log_level, body)


@app.command("run")
def run_cmd(
    namespace: NamespaceOpt = "default",
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
    router: RouterOpt = "auto",
    interval: Annotated[str, typer.Option("--interval", help="Time between passes")] = "10s",
    port: Annotated[int, typer.Option("--port", help="/healthz, /readyz, /metrics")] = 8080,
    lease_namespace: Annotated[
        str | None,
        typer.Option(
            "--lease-namespace",
            envvar="POD_NAMESPACE",
            help="Namespace of the leader-election Lease (default: -n)",
        ),
    ] = None,
    shards: Annotated[
        int, typer.Option("--shards", help="Split the rollouts between this many daemons")
    ] = 1,
    shard_index: Annotated[
        int | None,
        typer.Option(
            "--shard-index",
            help="This daemon's shard, 0..N-1 (default: a StatefulSet pod's ordinal mod N)",
        ),
    ] = None,
    prometheus_url: PromOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    log_level: LogOpt = Level.info,
) -> None:
    """Daemon mode: reconcile in a loop with leader election, health checks and metrics."""

    def body() -> int:
        from canaryctl.daemon import Daemon, resolve_shard_index
        from canaryctl.policy import parse_duration

        try:
            every = parse_duration(interval)
        except ValueError as exc:
            raise UsageError(f"--interval: {exc}") from None
        if every <= 0:
            raise UsageError(f"--interval: must be positive, got {interval!r}")
        shard = (resolve_shard_index(shard_index, shards), shards)
        stop = threading.Event()
        ctl = _controller(
            kubeconfig,
            context,
            prometheus_url,
            stop=stop,
            namespace=None if all_namespaces else namespace,
            router=router,
        )
        try:
            daemon = Daemon(
                ctl,
                namespace=None if all_namespaces else namespace,
                interval=every,
                lease_namespace=lease_namespace or namespace,
                port=port,
                stop=stop,
                shard=shard,
            )
        except OSError as exc:
            raise UsageError(f"--port: cannot listen on {port}: {exc}") from None
        return daemon.serve()

    _execute(Output.text, log_level, body)


@policy_app.command("validate")
def policy_validate(
    files: Annotated[list[Path], typer.Argument(help="AnalysisPolicy YAML files")],
    output: OutputOpt = Output.text,
) -> None:
    """Validate policy files. Text: one line per file (expanded steps, interval, judge);
    -o json: the effective policy of each (defaults filled in, steps expanded). Every file is
    checked; any invalid one is exit 2, its error on stderr naming the file and field."""

    def body() -> int:
        from canaryctl.errors import PolicyError
        from canaryctl.policy import load_policy

        effective: dict[str, Any] = {}
        errors: list[str] = []
        for file in files:
            try:
                snap = load_policy(file, flag="FILE").snapshot()
            except PolicyError as exc:
                errors.append(exc.message)
                continue
            effective[str(file)] = snap
            if output == Output.text:
                spec = snap["spec"]
                _emit(
                    {},
                    output,
                    f"{file}: valid (steps {spec['steps']}, interval {spec['interval']},"
                    f" judge {spec['judge']}, {len(spec['metrics'])} metrics)",
                )
        if errors:
            raise PolicyError("; ".join(errors))
        if output == Output.json:
            if len(effective) == 1:
                _emit({"result": "valid", "policy": next(iter(effective.values()))}, output, "")
            else:
                _emit({"result": "valid", "policies": effective}, output, "")
        return 0

    _execute(output, Level.warning, body)


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the AnalysisPolicy JSON Schema (for editors' YAML language servers)."""
    from canaryctl.policy import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command()
def demo(
    scenario: Annotated[
        str, typer.Option("--scenario", help="healthy | errors | latency")
    ] = "healthy",
    router: Annotated[
        str, typer.Option("--router", help="istio | gateway-api: which demo world")
    ] = "istio",
    output: OutputOpt = Output.text,
    log_level: LogOpt = Level.info,
) -> None:
    """Run a whole canary on this machine: API emulator + traffic simulator + real Prometheus."""

    def body() -> int:
        from canaryctl.demo import run_demo

        return run_demo(scenario=scenario, output=output.value, router=router)

    _execute(output, log_level, body)


def version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"canaryctl {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = False,
) -> None:
    """Exit codes: 0 promoted/succeeded, 1 rolled back by analysis, 2 invalid input (nothing
    changed), 3 infrastructure failure (traffic left on stable)."""


def main() -> None:
    # pydantic looks for plugins in every installed package's metadata when it builds a model;
    # the CLI uses none, and the scan costs more than validating a policy
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        app()
    except SystemExit as exc:
        code = exc.code
        if code not in (None, 0) and not isinstance(code, int):
            sys.stderr.write(f"error: {code}\n")
            sys.exit(EXIT_INVALID)
        raise
    except Exception as exc:  # a bug: say so, keep the contract (infrastructure-class exit)
        sys.stderr.write(f"internal error: {type(exc).__name__}: {exc}\n")
        sys.exit(EXIT_INFRA)
