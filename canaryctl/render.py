"""Human-readable rendering of results (the JSON form is ``Result.to_dict``)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from canaryctl.rollout import RolloutState


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def history_table(steps: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'STEP':<5}{'WEIGHT':<8}{'VERDICT':<14}{'ACTION':<10}METRICS"]
    for h in steps:
        metrics = ", ".join(
            f"{m['name']}={_num(m.get('value'))} ({m.get('threshold', '')}; "
            f"stable {_num(m.get('stable'))}; {_num(m.get('requests'))} req) {m['verdict']}"
            for m in h.get("metrics", [])
        )
        lines.append(
            f"{h.get('step', '-'):<5}{str(h.get('weight', '-')) + '%':<8}"
            f"{h.get('verdict', '-'):<14}{h.get('action', '-'):<10}{metrics}"
        )
    return lines


def _at(epoch: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))


def cleanup_lines(data: dict[str, Any]) -> list[str]:
    """What the clean-up did and what it still has to do, and from when (finish.py)."""
    lines = []
    if data.get("undoUntil"):
        lines.append(f"  undo possible until {_at(data['undoUntil'])} (`canaryctl undo`)")
    for t in data.get("cleanup") or []:
        what = f"{t['task']} {t['target']}".strip()
        when = f"at {_at(t['at'])}" if t.get("at") else f"due from {_at(t['notBefore'])}"
        lines.append(f"  clean-up {what}: {t['status']} {when}: {t['detail']}")
    return lines


def result_text(data: dict[str, Any]) -> str:
    head = f"{data['result'].replace('_', ' ')}: {data['app']} in {data['namespace']}"
    lines = [head]
    if data.get("message"):
        lines.append(f"  {data['message']}")
    lines += [f"  warning: {w}" for w in data.get("warnings", [])]
    if "phase" in data:
        lines.append(
            f"  {data['virtualService']}: stable {data['stable']} {100 - data['weight']}% / "
            f"canary {data['canary']} {data['weight']}% "
            f"(phase {data['phase']}, step {data['step']}/{data['stepsTotal']}, "
            f"judge {data['judge']}{', forced' if data.get('forced') else ''})"
        )
        if data.get("followers"):
            lines.append(f"  moved with it: {', '.join(data['followers'])}")
        if data.get("reason") and data.get("reason") != data.get("message"):
            lines.append(f"  reason: {data['reason']}")
        lines.extend(cleanup_lines(data))
        if data.get("steps"):
            lines.append("")
            lines.extend("  " + line for line in history_table(data["steps"]))
    if "plan" in data:
        plan = data["plan"]
        lines.append(
            f"  plan: {plan['virtualService']} ({plan['mode']}), steps {plan['steps']}, "
            f"interval {plan['interval']}"
        )
        lines.append(
            f"  weights now {plan['currentWeights']} -> after first patch "
            f"{plan['weightsAfterFirstPatch']} (stable, canary)"
        )
        lines += [
            f"  with {f['virtualService']}: {f['currentWeights']} -> {f['weightsAfterFirstPatch']}"
            for f in plan.get("followers", [])
        ]
        lines.append("  first patch (application/json-patch+json):")
        for op in plan["firstPatch"]:
            value = op.get("value", "")
            shown = value if len(str(value)) < 80 else str(value)[:77] + "..."
            lines.append(f"    {op['op']} {op['path']} {shown}")
    return "\n".join(lines)


def list_text(states: list[RolloutState]) -> str:
    if not states:
        return "no rollouts found"
    lines = [
        f"{'NAMESPACE':<16}{'APP':<20}{'VIRTUALSERVICE':<22}{'PHASE':<13}{'WEIGHT':<8}"
        f"{'STEP':<7}REASON"
    ]
    for s in states:
        lines.append(
            f"{s.namespace:<16}{s.app:<20}{s.virtual_service:<22}{s.phase:<13}"
            f"{str(s.weight) + '%':<8}{f'{s.step_index + 1}/{len(s.steps)}':<7}{s.reason[:80]}"
        )
    return "\n".join(lines)


class Progress:
    """Live one-line progress on a TTY (stderr): weights, countdown, last values."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.last = ""

    def __call__(self, state: RolloutState, left: float) -> None:
        if not self.enabled:
            return
        last = ""
        if state.history:
            h = state.history[-1]
            last = " | " + ", ".join(
                f"{m['name']} {_num(m.get('value'))} ({m.get('threshold')}) {m['verdict']}"
                for m in h.get("metrics", [])
            )
        line = (
            f"{state.phase} step {state.step_index + 1}/{len(state.steps)}: "
            f"stable {100 - state.weight}% / canary {state.weight}% | "
            f"next analysis in {max(0, left):4.0f}s{last}"
        )
        self.stream.write("\r\x1b[2K" + line[:200])
        self.stream.flush()
        self.last = line

    def done(self) -> None:
        if self.enabled and self.last:
            self.stream.write("\n")
            self.stream.flush()
