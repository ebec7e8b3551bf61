"""Drives one rollout: read state, ask the mesh and the metrics, decide (``rollout.py``), act.

All writes go through ``Controller.commit``: one JSON patch carrying the weights and the state
annotation, guarded by the resourceVersion just read. On 409 it re-reads; if the stored
rollout state is still the one this decision was made from (someone edited another field),
the patch is recomputed against the new object and retried, so their edit is kept; if the
rollout state itself changed (another process or an operator acted), ``StateChangedError``
hands the newer state back and this process adopts it instead of overwriting it. A write the
API server carried out but whose answer was lost (a 504 after etcd committed, a dropped
connection) is retried, refused with 409 because the resourceVersion moved, and recognised on
the re-read: the stored state is exactly the one being written, so the write counts as done
and its events and notifications go out once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from canaryctl import followers, notify, rollout
from canaryctl.analysis import StepAnalysis, combine, judge_metric
from canaryctl.errors import (
    ClusterUnavailableError,
    ConflictError,
    InfraError,
    MetricsUnavailableError,
    PermissionDeniedError,
    RolloutStateError,
    TargetNotFoundError,
)
from canaryctl.hooks import HookRunner, as_failed_checks
from canaryctl.kube import KubeClient
from canaryctl.leases import Lease, default_duration, identity, lease_name
from canaryctl.logs import get_logger
from canaryctl.mesh import TrafficRouter
from canaryctl.metrics._base import MetricsProvider, QueryContext
from canaryctl.policy import AnalysisPolicy, MetricSpec, PrometheusSpec, parse_policy
from canaryctl.policy_hooks import GateKind
from canaryctl.rollout import (
    ANNOTATION,
    POLICY_ANNOTATION,
    PROMOTE_ANNOTATION,
    RolloutState,
    outcome_of,
)

log = get_logger("canaryctl.controller")
ProgressFn = Callable[[RolloutState, float], None]


def _written_since(stored: RolloutState | None, seen: RolloutState) -> bool:
    """The stored rollout state is no longer the one ``seen`` (another write happened)."""
    return stored is None or (stored.updated_at, stored.phase) != (seen.updated_at, seen.phase)


class StateChangedError(Exception):
    """The stored rollout state changed under us; carries the newer state."""

    def __init__(self, state: RolloutState | None, vs: dict[str, Any]):
        super().__init__("rollout state changed by another actor")
        self.state = state
        self.vs = vs


class RolloutInfraError(InfraError):
    """Infrastructure failure during a rollout; carries the state left behind (for -o json)."""

    def __init__(self, message: str, state: RolloutState | None):
        super().__init__(message)
        self.state = state


class WeightsChangedError(Exception):
    """Another writer changed the weights canaryctl wrote; the message says how."""


class Interrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM) while waiting; the rollout stays in the cluster."""


def read_state(vs: dict[str, Any]) -> RolloutState | None:
    text = ((vs.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if not text:
        return None
    try:
        return RolloutState.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        name = vs.get("metadata", {}).get("name")
        raise RolloutStateError(
            f"VirtualService {name}: annotation {ANNOTATION} is not valid rollout state ({exc}); "
            "remove it or run `canaryctl rollback`"
        ) from None


@dataclass
class Controller:
    kube: KubeClient
    router: TrafficRouter
    provider_for: Callable[[PrometheusSpec], MetricsProvider]
    prometheus_url: str | None = None  # --prometheus-url: overrides the stored snapshot too
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    holder: str = field(default_factory=identity)
    progress: ProgressFn | None = None
    should_stop: Callable[[], bool] = lambda: False
    notifier: notify.Notifier = field(default_factory=notify.Notifier, repr=False)
    hooks: HookRunner = field(init=False, repr=False)
    lease_duration: int = field(default_factory=default_duration)
    _providers: dict[str, MetricsProvider] = field(default_factory=dict, init=False, repr=False)
    _policies: dict[str, AnalysisPolicy] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.hooks = HookRunner(clock=self.clock)  # webhooks come from each state's snapshot

    def provider(self, spec: PrometheusSpec) -> MetricsProvider:
        """One provider per Prometheus (its connections, and what ``prefetch`` asked)."""
        key = spec.model_dump_json()
        if key not in self._providers:
            self._providers[key] = self.provider_for(spec)
        return self._providers[key]

    # --- reading ----------------------------------------------------------------------------
    def policy_of(self, state: RolloutState) -> AnalysisPolicy:
        """The rollout's stored policy, parsed once per distinct snapshot (a daemon asks for
        each rollout's at every tick)."""
        key = json.dumps(state.policy, sort_keys=True)
        if key not in self._policies:
            if len(self._policies) > 1000:
                self._policies.clear()
            self._policies[key] = parse_policy(
                state.policy, source="stored policy"
            ).with_prometheus_url(self.prometheus_url)
        return self._policies[key]

    def lease_for(self, state: RolloutState) -> Lease:
        return Lease(
            self.kube,
            namespace=state.namespace,
            name=lease_name(state.virtual_service),
            holder=self.holder,
            duration=self.lease_duration,
        )

    def event(
        self, vs: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        ns = vs.get("metadata", {}).get("namespace", "")
        self.kube.create_event(
            namespace=ns, involved=vs, reason=reason, message=message, warning=warning
        )

    # --- writing ----------------------------------------------------------------------------
    def commit(
        self,
        state: RolloutState,
        *,
        expect: RolloutState | None,
        canary_override: str | None = None,
        guard: bool = False,
        attempts: int = 20,
    ) -> dict[str, Any]:
        """Write weights + state in one guarded patch (see module docstring), then the
        followers. A pause writes only the state: it never changes weights, and a pause for
        another writer's change must leave that change as it is. ``guard``: raise
        ``WeightsChangedError`` instead of writing over weights another writer changed."""
        for attempt in range(attempts):
            vs = (
                self.router.read(state.namespace, state.virtual_service)
                if expect is None
                else self.read_vs(state)
            )
            stored = read_state(vs)
            if attempt and stored is not None and stored.to_json() == state.to_json():
                log.info("write.recognised", vs=state.virtual_service, weight=state.weight)
                self._announce(expect, state)
                return vs
            if expect is None:
                if stored is not None and stored.active:
                    raise StateChangedError(stored, vs)
            elif _written_since(stored, expect):
                raise StateChangedError(stored, vs)
            annotations: dict[str, str | None] = {
                ANNOTATION: state.to_json(),
                PROMOTE_ANNOTATION: None,
                POLICY_ANNOTATION: None,
            }
            try:
                if state.phase == "Paused":
                    written = self.router.annotate(vs, annotations)
                else:
                    target = followers.target_of(self.router, state, vs, canary_override)
                    changed = (
                        self.router.drift(vs, target, expect.weight) if guard and expect else None
                    )
                    if changed is not None:
                        raise WeightsChangedError(changed)
                    written = self.router.write(
                        target, vs, canary_weight=state.weight, annotations=annotations
                    )
            except ConflictError:
                log.info("write.conflict", attempt=attempt + 1, vs=state.virtual_service)
                self.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            if state.phase != "Paused":
                followers.sync(self.router, state, guard=guard, sleep=self.sleep)
            self._announce(expect, state)
            return written
        raise ClusterUnavailableError(
            f"VirtualService {state.namespace}/{state.virtual_service} kept changing "
            f"({attempts} conflicting writes)"
        )

    def _announce(self, before: RolloutState | None, after: RolloutState) -> None:
        """Tell the notification targets (and post-rollout webhooks) about a written change."""
        event = notify.event_for(before, after)
        if event is None:
            return
        self.notifier.send(event, after, message=after.reason)
        outcome = outcome_of(after)
        if outcome is not None:
            self.hooks.post_rollout(after, outcome)

    # --- one analysis -----------------------------------------------------------------------
    @staticmethod
    def queries(
        state: RolloutState, policy: AnalysisPolicy, now: float
    ) -> list[tuple[MetricSpec, QueryContext]]:
        """The metrics an analysis at ``now`` measures through ``provider.measure``."""
        spec = policy.spec
        window = max(1.0, round(now - state.window_start))
        out = []
        from canaryctl.judges import threshold_part

        for judged in spec.metrics:
            metric = threshold_part(judged) if spec.judge == "sequential" else judged
            if metric is None:
                continue  # judged on counts (judges.py), not on rate() or one window's quantile
            ctx = QueryContext(
                namespace=state.namespace,
                app=state.app,
                canary_workload=state.canary_workload,
                stable_workload=state.stable_workload,
                window_seconds=spec.window_seconds(metric) if metric.window else window,
                at=now,
            )
            out.append((metric, ctx))
        return out

    def prefetch(self, states: list[RolloutState], now: float) -> None:
        """Ask each Prometheus once per metric and window for all these rollouts' analyses at
        ``now`` (providers that cannot group are left to ask per rollout). A failure here is
        not fatal: each analysis then asks on its own and fails (or not) as it would have."""
        from canaryctl.judges import latency_slo

        wanted: dict[str, list[tuple[MetricSpec, QueryContext]]] = {}
        windows: dict[str, list[tuple[str, str, float]]] = {}  # sequential judge's counts
        buckets: set[str] = set()
        for state in states:
            policy = self.policy_of(state)
            if not hasattr(self.provider(policy.spec.prometheus), "prefetch"):
                continue
            key = policy.spec.prometheus.model_dump_json()
            wanted.setdefault(key, []).extend(self.queries(state, policy, now))
            if policy.spec.judge == "sequential":
                windows.setdefault(key, []).extend(
                    (state.namespace, wl, state.step_started_at)
                    for wl in (state.canary_workload, state.stable_workload)
                )
                if latency_slo(policy) is not None:
                    buckets.add(key)
        for key, items in wanted.items():
            provider: Any = self._providers[key]
            try:
                provider.prefetch(items)
                provider.prefetch_counts(windows.get(key, []), end=now, buckets=key in buckets)
            except MetricsUnavailableError as exc:
                log.warning("prefetch.failed", error=str(exc))

    def analyse(self, state: RolloutState, now: float) -> StepAnalysis:
        policy = self.policy_of(state)
        spec = policy.spec
        provider = self.provider(spec.prometheus)
        results = as_failed_checks(self.hooks.rollout(state))  # a failing one fails the analysis
        sequential = spec.judge == "sequential"
        from canaryctl.judges import measure_counts, sequential_results

        for metric, ctx in self.queries(state, policy, now):
            m = provider.measure(metric, ctx)
            r = judge_metric(metric, m, min_requests=spec.minRequests)
            log.info(
                "analysis",
                metric=r.name,
                value=r.value,
                stable=r.stable,
                threshold=r.threshold,
                requests=r.requests,
                verdict=r.verdict,
            )
            results.append(r)
        if sequential:
            entry = measure_counts(provider, state, policy, now)
            extra, reject, dwell = sequential_results(state, policy, entry=entry)
            for r in extra:
                log.info(
                    "analysis", metric=r.name, value=r.value, verdict=r.verdict, reason=r.reason
                )
            return combine([*results, *extra], sequential_reject=reject, counts=entry, dwell=dwell)
        return combine(results)

    def step(self, state: RolloutState, *, at: float | None = None) -> RolloutState:
        """Analyse the current step once (its window ending ``at``, default now: a reconcile
        pass measures all its rollouts at the same instant, see ``prefetch``) and apply the
        decision (one guarded write).

        When Prometheus or the cluster stays unusable beyond the retry budget, traffic is put
        back on stable (phase Failed, with the reason) if the VirtualService can still be
        written, and ``RolloutInfraError`` says which happened (exit 3). ``state`` must still
        be the stored state (the caller's checks, e.g. "not paused, due", were made on it);
        if another actor wrote since, ``StateChangedError`` hands the newer one back before
        anything is asked or measured."""
        now = self.clock()
        try:
            vs = self.read_vs(state)
            stored = read_state(vs)
            if _written_since(stored, state):
                raise StateChangedError(stored, vs)
            others = followers.sync(self.router, state, guard=True, sleep=self.sleep)  # repair 1st
            changed = followers.drift(self.router, state, vs, others)
            if changed is not None:
                return self.pause_for_change(state, changed)
            target = followers.target_of(self.router, state, vs)
            ok, why = self.router.canary_available(target, state.canary_workload)
            if not ok:
                new = rollout.rollback(
                    state, reason=f"canary {state.canary_workload} unavailable: {why}", now=now
                )
                return self.finish(new, expect=state, event=("RolledBack", True))
            if self.hooks.rollback_requested(state):
                new = rollout.rollback(state, reason="rollback requested by a webhook", now=now)
                return self.finish(new, expect=state, event=("RolledBack", True))
            analysis = self.analyse(state, now if at is None else at)
        except MetricsUnavailableError as exc:
            self._fail_to_stable(state, f"metrics unavailable: {exc}", now, exc)
        except (ClusterUnavailableError, PermissionDeniedError) as exc:
            self._fail_to_stable(state, f"cluster unavailable: {exc}", now, exc)
        decision = rollout.decide(state, analysis, now=now)
        if decision.action in ("advance", "promote"):
            kind: GateKind = "confirm-step" if decision.action == "advance" else "confirm-promotion"
            gate = self.hooks.gate(kind, state, since=state.waiting_since)
            if gate.expired:
                new = rollout.rollback(state, reason=f"{gate.detail}: maxWait exceeded", now=now)
                return self.finish(new, expect=state, event=("RolledBack", True))
            if not gate.open:
                new = rollout.wait_for_gate(
                    state, now=now, since=gate.waiting_since or now, reason=gate.detail
                )
                try:
                    vs = self.commit(new, expect=state, guard=True)
                except WeightsChangedError as exc:
                    return self.pause_for_change(state, str(exc))
                self.event(vs, "AwaitingApproval", gate.detail)
                log.info("gate.closed", kind=kind, detail=gate.detail)
                return new
        try:  # a rollback always goes through; any other decision never overwrites a change
            vs = self.commit(decision.state, expect=state, guard=decision.action != "rollback")
        except WeightsChangedError as exc:
            return self.pause_for_change(state, str(exc))
        reason = {
            "advance": "StepAdvanced",
            "hold": "AnalysisHeld",
            "dwell": "AnalysisDwell",
            "promote": "Promoted",
            "rollback": "RolledBack",
            "pause": "PausedNoEvidence",
        }[decision.action]
        warn = decision.action == "rollback" or analysis.verdict != "pass"
        self.event(vs, reason, f"{decision.reason} (canary {decision.state.weight}%)", warning=warn)
        log.info(
            "decision",
            action=decision.action,
            weight=decision.state.weight,
            verdict=analysis.verdict,
            reason=decision.reason,
        )
        return decision.state

    def pause_for_change(self, state: RolloutState, change: str) -> RolloutState:
        """Another writer changed the weights: pause (writing only the state), never write
        over them; ``resume`` re-applies canaryctl's weights, ``rollback`` ends the rollout."""
        reason = (
            f"weights changed by another writer: {change}; paused without touching them "
            f"(`canaryctl resume` re-applies {100 - state.weight}/{state.weight}, "
            "`canaryctl rollback` sends all traffic to stable)"
        )
        new = rollout.pause(state, reason=reason, now=self.clock())
        self.event(self.commit(new, expect=state), "WeightsChanged", reason, warning=True)
        log.warning("weights.changed", change=change)
        return new

    def _fail_to_stable(
        self, state: RolloutState, reason: str, now: float, cause: InfraError
    ) -> NoReturn:
        new = rollout.fail(state, reason=reason, now=now)
        try:
            self.finish(new, expect=state, event=("RolloutFailed", True))
        except InfraError as exc2:  # a StateChangedError (another actor wrote) passes through
            raise RolloutInfraError(
                f"{cause}; could not put traffic back on stable: {exc2}", state
            ) from cause
        raise RolloutInfraError(f"{cause}; traffic is back on stable", new) from cause

    def finish(
        self, state: RolloutState, *, expect: RolloutState | None, event: tuple[str, bool]
    ) -> RolloutState:
        """Write a change decided outside an analysis (failure, operator's pause, resume,
        rollback, forced promotion) and record its Event ``(reason, warning)``."""
        vs = self.commit(state, expect=expect)
        self.event(vs, event[0], f"{state.reason} (canary {state.weight}%)", warning=event[1])
        log.info("state.written", phase=state.phase, reason=state.reason, weight=state.weight)
        return state

    # --- the loop ---------------------------------------------------------------------------
    def read_vs(self, state: RolloutState) -> dict[str, Any]:
        """The VirtualService of a rollout in progress. Its disappearance is not bad input
        (the rollout had already changed the cluster) but an infrastructure failure: exit 3."""
        try:
            return self.router.read(state.namespace, state.virtual_service)
        except TargetNotFoundError:
            raise RolloutInfraError(
                f"VirtualService {state.namespace}/{state.virtual_service} was deleted during "
                f"the rollout of {state.app} (last canary weight {state.weight}%); "
                "nothing left to roll back",
                state,
            ) from None

    def refresh(self, state: RolloutState) -> RolloutState:
        vs = self.read_vs(state)
        stored = read_state(vs)
        if stored is None:
            raise RolloutStateError(
                f"rollout state vanished from VirtualService {state.virtual_service}"
            )
        return stored

    def wait_until_due(self, state: RolloutState, lease: Lease | None) -> RolloutState:
        """Sleep until the step's window is complete, renewing the lease and noticing what
        other actors (pause, rollback, force) wrote meanwhile."""
        poll = min(5.0, max(0.5, state.interval / 4))
        last_read = self.clock()
        while True:
            now = self.clock()
            if self.should_stop():
                raise Interrupted()
            if lease is not None:
                lease.renew(now)
            if now - last_read >= poll:
                last_read = now
                latest = self.refresh(state)
                if _written_since(latest, state):
                    log.info("state.changed", phase=latest.phase, reason=latest.reason)
                    state = latest
                if not state.active:
                    return state
            analysed = state.phase in rollout.ANALYSED_PHASES
            if analysed and now >= state.due_at():
                return state
            left = state.due_at() - now if analysed else poll
            if self.progress is not None:
                self.progress(state, left)
            self.sleep(max(0.05, min(poll, left, 0.5)))

    def drive(self, state: RolloutState, lease: Lease | None) -> RolloutState:
        """Run the rollout to a terminal phase (or until interrupted), after repairing the
        followers a process that died between two patches left behind."""
        followers.sync(self.router, state, guard=True, sleep=self.sleep)
        while state.active:
            state = self.wait_until_due(state, lease)
            if state.phase not in rollout.ANALYSED_PHASES:
                continue
            try:
                state = self.step(state)
            except StateChangedError as exc:
                if exc.state is None:
                    raise RolloutStateError("rollout state removed by another actor") from None
                log.info("state.adopted", phase=exc.state.phase, reason=exc.state.reason)
                state = exc.state
                continue
            if self.progress is not None:
                self.progress(state, 0.0)
            if state.phase == "Paused":  # the analysis paused it (whenNoEvidence): a human's turn
                return state
        return state

    def follow(self, state: RolloutState) -> RolloutState:
        """Attach read-only to a rollout another process drives, until it ends or we may take
        over (its lease expired)."""
        lease = self.lease_for(state)
        while state.active:
            if lease.acquire(self.clock()):
                try:
                    return self.drive(self.refresh(state), lease)
                finally:
                    lease.release()
            if self.should_stop():
                raise Interrupted()
            if self.progress is not None:
                self.progress(state, max(0.0, state.due_at() - self.clock()))
            self.sleep(1.0)
            state = self.refresh(state)
        return state
