"""The clean-up after a rollout ended (pure): which tasks, when, and what was done.

``plan`` turns the policy's ``spec.finish`` (``policy_finish.py``) into tasks when a rollout
reaches a terminal phase; they are stored in the rollout state (``RolloutState.cleanup``) in
the same patch that writes the phase, so a crash never loses them and any canaryctl process
(``promote`` still following, ``reconcile``, ``run``) carries them out when they fall due.

Tasks (plain dicts, because they live in the state's JSON)::

    {"task": "collapse" | "scale-down", "target": VirtualService or Deployment,
     "status": "pending" | "done" | "skipped", "notBefore": epoch s, "detail": str,
     "idleFor": s (scale-down of the previous version only), "at": epoch s when settled,
     "destination": {host, subset} the Deployment serves (scale-down),
     "routes": {VirtualService: [http indexes]} (collapse, once done)}

Decisions:
- After a promotion: ``collapse`` (``collapseRoutes``) now, then ``scale-down`` of the previous
  version once Prometheus shows it idle for ``scaleDownIdle``; it waits for the collapse, so a
  route never names a destination without pods. After a rollback (by analysis, an operator, a
  webhook or ``undo``): ``scale-down`` of the canary after ``abortScaleDownDelay``, like Argo
  Rollouts. After an infrastructure failure (``Failed``): nothing; the canary was not judged.
- A new rollout on the same VirtualService carries the previous one's pending scale-downs
  (``carry``) and they run once it has ended, with its own tasks (``kept``).
- A task is settled once (``done`` or ``skipped``, e.g. an HPA targets the Deployment: scaling
  it to 0 would fight the HPA; or a route of the namespace still sends to its ``destination``,
  such as bookinfo's tester route ``jason`` -> v2 after v3 was promoted: scaling it to 0 would
  turn those requests into 503s, whatever Prometheus saw in the idle window). Waiting is not
  written to the VirtualService: every write makes istiod push configuration to every
  sidecar, so re-checks stay in memory and ``status`` shows what is still to do and from when.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canaryctl.policy_base import parse_duration

Task = dict[str, Any]


def plan(
    spec: dict[str, Any],
    *,
    phase: str,
    stable_workload: str,
    canary_workload: str,
    stable: dict[str, Any],
    canary: dict[str, Any],
    now: float,
) -> list[Task]:
    """The clean-up tasks of a rollout that just reached ``phase`` (``spec``: policy spec;
    ``stable``/``canary``: the destinations the workloads serve, kept in each scale-down)."""
    finish = spec.get("finish") or {}
    tasks: list[Task] = []

    def task(kind: str, target: str, not_before: float, detail: str, **extra: Any) -> None:
        tasks.append(
            {"task": kind, "target": target, "status": "pending", "notBefore": round(not_before, 3)}
            | {"detail": detail, **extra}
        )

    if phase == "Promoted":
        if finish.get("collapseRoutes"):
            task("collapse", "", now, "split routes to one plain route to the new stable")
        if finish.get("scaleDownIdle"):
            idle = parse_duration(finish["scaleDownIdle"])
            task(
                "scale-down",
                stable_workload,
                now,
                f"to 0 once Prometheus shows it no requests for {finish['scaleDownIdle']}",
                idleFor=idle,
                destination=stable,
            )
    elif phase == "RolledBack" and finish.get("abortScaleDownDelay"):
        delay = parse_duration(finish["abortScaleDownDelay"])
        task(
            "scale-down",
            canary_workload,
            now + delay,
            "to 0 after the rollback",
            destination=canary,
        )
    return tasks


def carry(tasks: list[Task], *, workloads: set[str]) -> list[Task]:
    """Pending scale-downs of a finished rollout that a new rollout on the same VirtualService
    takes over (marked ``carried``), except those of the new rollout's own Deployments: the
    next release must not lose "scale v1 down once idle", nor scale down what it rolls out."""
    return [
        {**t, "carried": True}
        for t in pending(tasks)
        if t["task"] == "scale-down" and t["target"] not in workloads
    ]


def kept(tasks: list[Task]) -> list[Task]:
    """The carried tasks still pending when the rollout ends (its own plan is added to them)."""
    return [t for t in pending(tasks) if t.get("carried")]


def pending(tasks: list[Task]) -> list[Task]:
    return [t for t in tasks if t["status"] == "pending"]


def ready(tasks: list[Task], now: float) -> list[tuple[int, Task]]:
    """(index, task) of the tasks to try now, in order: a scale-down waits for a collapse."""
    out = []
    for i, t in enumerate(tasks):
        if t["status"] != "pending":
            continue
        if t["task"] == "scale-down" and any(
            o["task"] == "collapse" and o["status"] == "pending" for o in tasks
        ):
            continue
        if t["notBefore"] <= now:
            out.append((i, t))
    return out


def settle(
    tasks: list[Task], index: int, *, status: str, detail: str, now: float, **extra: Any
) -> list[Task]:
    """A copy of ``tasks`` with task ``index`` done or skipped."""
    out = [dict(t) for t in tasks]
    out[index].update(status=status, detail=detail, at=round(now, 3), **extra)
    return out


@dataclass(frozen=True)
class Idle:
    ok: bool
    detail: str


def judge_idle(requests: float | None, *, workload: str, idle_for: str) -> Idle:
    """Scale down only on evidence: ``requests`` in the last ``idle_for`` is exactly 0.
    None (no series: Prometheus has no data for the workload) is not "no requests"."""
    if requests is None:
        return Idle(False, f"no data for {workload} in Prometheus (missing data is not idle)")
    if requests > 0:
        return Idle(False, f"{workload} received {requests:.4g} requests in the last {idle_for}")
    return Idle(True, f"{workload} received no requests for {idle_for}")


def undo_deadline(spec: dict[str, Any], finished_at: float | None) -> float | None:
    """Until when ``undo`` may be used after a promotion (None: not enabled)."""
    window = (spec.get("finish") or {}).get("undoWindow")
    if not window or finished_at is None:
        return None
    return finished_at + parse_duration(window)
