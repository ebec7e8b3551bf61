"""``canaryctl backtest``: what a policy would have decided on past Prometheus data.

Tuning a policy on production before trusting it is guesswork unless it can be replayed on
your own history. A backtest starts a rollout at ``--from`` (in memory: nothing in the cluster
is read or written, no webhook or notification is sent) and drives it through the product's
own ``Controller.analyse`` and ``rollout.decide``: every analysis is due when the policy says
(one interval after the window's start, a longer window after an inconclusive hold, a dwell,
the final dwell) and reads Prometheus *at that instant*: the same instant queries and counter
reads ``promote`` makes, with ``time=`` set to the past boundary. The replay stops at the first
decision that ends or pauses the rollout, or when the next analysis would be due after ``--to``
(outcome ``undecided``).

What a backtest cannot replay: the traffic split. The data are whatever the mesh served then;
the replay judges them at the policy's step boundaries, so the weights it reports are the ones
the policy *would* have set, not the ones in the data. Gates (confirm webhooks) are not asked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from canaryctl import rollout
from canaryctl.controller import Controller
from canaryctl.errors import UsageError
from canaryctl.metrics._base import MetricsProvider
from canaryctl.operations import locate
from canaryctl.policy import AnalysisPolicy, parse_duration

OUTCOMES = {"Promoted": "promoted", "RolledBack": "rolled_back", "Paused": "paused"}
_RELATIVE = re.compile(r"^now(?:-(.+))?$")


def parse_time(text: str, *, flag: str, now: float) -> float:
    """``--from`` / ``--to``: RFC 3339 (``2026-12-02T17:00:00Z``), Unix seconds, ``now`` or
    ``now-<duration>`` (``now-2h``). ``UsageError`` naming the flag otherwise."""
    value = text.strip()
    rel = _RELATIVE.fullmatch(value)
    try:
        if rel:
            return now - (parse_duration(rel.group(1)) if rel.group(1) else 0.0)
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return float(value)
        stamp = datetime.fromisoformat(value)
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return stamp.timestamp()
    except ValueError:
        pass
    raise UsageError(
        f"{flag}: must be RFC 3339 (2026-12-02T17:00:00Z), Unix seconds, now or now-2h, "
        f"got {text!r}"
    )


@dataclass
class Backtest:
    """The replay's outcome: ``analyses`` are the rollout's history entries, all of them."""

    app: str
    namespace: str
    policy: str
    start: float
    end: float
    outcome: str = "undecided"
    reason: str = ""
    analyses: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": "backtest",
            "app": self.app,
            "namespace": self.namespace,
            "policy": self.policy,
            "from": _iso(self.start),
            "to": _iso(self.end),
            "outcome": self.outcome,
            "reason": self.reason,
            "analyses": self.analyses,
        }

    def text(self) -> str:
        lines = [
            f"backtest of {self.app} in {self.namespace} with policy {self.policy}, "
            f"{_iso(self.start)} .. {_iso(self.end)}",
            f"{'time':20} {'step':>4} {'weight':>6} {'window':>7}  {'verdict':12} {'action':8}",
        ]
        for a in self.analyses:
            lines.append(
                f"{_iso(a['at']):20} {a['step']:>4} {a['weight']:>5}% {a['window']:>6g}s  "
                f"{a['verdict']:12} {a['action']:8} {a['reason']}"
            )
        lines.append(f"outcome: {self.outcome}: {self.reason}")
        return "\n".join(lines)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_workloads(ctl: Controller, *, app: str, namespace: str) -> tuple[str, str]:
    """(canary, stable) workloads of the app's last rollout recorded in the cluster."""
    _, last = locate(ctl, app=app, namespace=namespace, vs_names=[])
    if last is None:
        raise UsageError(
            f"--canary-workload/--stable-workload: no rollout of {app} recorded in {namespace} "
            "to take them from; name both"
        )
    return last.canary_workload, last.stable_workload


def run_backtest(
    *,
    provider: MetricsProvider,
    policy: AnalysisPolicy,
    app: str,
    namespace: str,
    stable_workload: str,
    canary_workload: str,
    start: float,
    end: float,
) -> Backtest:
    """Replay ``policy`` on ``[start, end]``; see the module docstring."""
    if not end > start:
        raise UsageError(f"--to: must be after --from, got {_iso(start)} .. {_iso(end)}")
    # no webhooks or notifications: a replay must not call anyone
    spec = policy.spec.model_copy(update={"webhooks": [], "notify": []})
    snapshot = policy.model_copy(update={"spec": spec}).snapshot()
    ctl = Controller(
        kube=None,  # type: ignore[arg-type]  # analyse() reads metrics only
        router=None,  # type: ignore[arg-type]
        provider_for=lambda _spec: provider,
    )
    dest: dict[str, str | None] = {"host": app, "subset": None}
    state = rollout.begin(
        app=app,
        namespace=namespace,
        virtual_service=app,
        mode="host",
        stable=dest,
        canary=dest,
        stable_workload=stable_workload,
        canary_workload=canary_workload,
        policy=snapshot,
        current_canary_weight=0,
        now=start,
    )
    out = Backtest(app, namespace, policy.metadata.name, start, end)
    while state.phase == "Progressing" and state.due_at() <= end:
        now = state.due_at()
        decision = rollout.decide(state, ctl.analyse(state, now), now=now)
        state = decision.state
        out.analyses.append(state.history[-1])
        state = replace(state, history=[])  # the replay keeps every entry, not the last 20
    out.outcome = OUTCOMES.get(state.phase, "undecided")
    if out.outcome == "undecided":
        due = state.due_at()
        out.reason = (
            f"no decision before --to: the next analysis (step {state.step_index + 1}, "
            f"{state.weight}%) would be due at {_iso(due) if math.isfinite(due) else due}"
        )
    else:
        out.reason = state.reason
    return out
