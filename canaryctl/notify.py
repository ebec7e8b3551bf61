"""Notifications of a rollout's milestones to Slack, Microsoft Teams or any JSON webhook.

Why: the people behind a release want to hear when it starts, pauses, is promoted or rolls
back -- and on which metric -- without tailing logs. Unlike webhooks (``hooks.py``),
notifications never influence a rollout, so they must never slow it down or fail it either:
``send`` only formats the message and puts it on a bounded queue; one background daemon
thread delivers it (POST JSON, ``retries`` after connection errors, timeouts and 5xx, with
backoff). A full queue drops the message; every failure is logged, nothing is raised.
``flush(timeout)`` waits for the queue to drain (call it before the process exits).

Events: ``start``, ``step`` (each weight increase; off by default: noisy), ``pause``,
``resume``, ``rollback``, ``promotion``, ``failure`` (infrastructure: traffic back on stable),
``cleanup`` (after the rollout: routes collapsed, a Deployment scaled down, or not because an
HPA targets it; see ``finish.py``).
``event_for(before, after)`` maps a state transition to its event. A rollback decided by an
analysis names the failing metric, its value and threshold, taken from the state's last history
entry (``metrics: [{name, value, threshold, verdict}]``).

Bodies: ``slack`` -- an incoming-webhook message (``text`` plus one attachment with fields;
Mattermost and Rocket.Chat accept it too); ``teams`` -- a legacy Office 365 connector
``MessageCard``; ``webhook`` -- ``{"event", "app", "namespace", "phase", "canaryWeight",
"message", "metric": {"name", "value", "threshold"} | null}``. URLs are secrets here (Slack
and Teams put the token in the path), so logs show only ``scheme://host:port``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from canaryctl.hooks import deliver, describe, dest
from canaryctl.logs import get_logger
from canaryctl.policy_hooks import Event, NotifySpec

if TYPE_CHECKING:
    import requests

    from canaryctl.rollout import RolloutState

log = get_logger("canaryctl.notify")

TITLES = {
    "start": "Rollout started",
    "step": "Canary weight increased",
    "pause": "Rollout paused",
    "resume": "Rollout resumed",
    "rollback": "Rolled back",
    "promotion": "Promoted",
    "failure": "Rollout failed",
    "cleanup": "Clean-up after the rollout",
}
COLORS = {"pause": "DAA038", "rollback": "D00000", "promotion": "2EB886", "failure": "D00000"}
BLUE = "439FE0"


def specs_from_policy(policy: dict[str, Any]) -> list[NotifySpec]:
    """The notification targets of a stored policy snapshot."""
    return [NotifySpec.model_validate(d) for d in policy["spec"].get("notify") or []]


def event_for(before: RolloutState | None, after: RolloutState) -> Event | None:
    """The event a transition written by the controller is (None: nothing to announce)."""
    if before is None or not before.active:
        return "start" if after.active else None
    if after.phase == "Waiting" or (before.phase, after.phase) == ("Waiting", "Progressing"):
        # waiting on a gate is not news; the gate opening shows as the step it allowed
        return "step" if after.step_index > before.step_index else None
    if after.phase != before.phase:
        return {
            "Paused": "pause",
            "Progressing": "resume",
            "Promoted": "promotion",
            "RolledBack": "rollback",
            "Failed": "failure",
        }[after.phase]  # type: ignore[return-value]
    if after.phase == "Progressing" and after.step_index > before.step_index:
        return "step"
    return None


def failing_metric(state: RolloutState) -> dict[str, Any] | None:
    """The metric that made the last analysis roll back: failed first, else inconclusive."""
    last = state.history[-1] if state.history else {}
    if last.get("action") != "rollback":  # an operator's rollback has no failing metric
        return None
    metrics = last.get("metrics") or []
    for verdict in ("fail", "inconclusive"):
        for m in metrics:
            if m.get("verdict") == verdict:
                return {k: m.get(k) for k in ("name", "value", "threshold")}
    return None


def _value(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, int | float) else "no data"


def render(
    kind: str, event: Event, state: RolloutState, *, message: str, metric: dict[str, Any] | None
) -> dict[str, Any]:
    """The JSON body of one notification for a target of ``kind``."""
    if kind == "webhook":
        return {
            "event": event,
            "app": state.app,
            "namespace": state.namespace,
            "phase": state.phase,
            "canaryWeight": state.weight,
            "message": message,
            "metric": metric,
        }
    title = f"{TITLES[event]}: {state.app} in {state.namespace}"
    facts = [
        ("Phase", state.phase),
        ("Canary weight", f"{state.weight}%"),
        ("Canary", dest(state.canary)),
        ("Stable", dest(state.stable)),
    ]
    text = message
    if metric is not None:
        shown = f"{metric['name']} = {_value(metric['value'])} (threshold {metric['threshold']})"
        text = f"{message}\nFailing metric: {shown}"
        facts.append(("Failing metric", shown))
    color = COLORS.get(event, BLUE)
    if kind == "slack":  # &, < and > are control characters in Slack text
        esc = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
        title, text = title.translate(esc), text.translate(esc)
        facts = [(k, v.translate(esc)) for k, v in facts]
        return {
            "text": f"*{title}*\n{text}",
            "attachments": [
                {
                    "color": f"#{color}",
                    "fallback": f"{title}: {text}",
                    "fields": [{"title": k, "value": v, "short": len(v) < 40} for k, v in facts],
                }
            ],
        }
    if kind == "teams":
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": title,
            "themeColor": color,
            "title": title,
            "text": text.replace("\n", "\n\n"),  # Teams markdown needs a blank line per break
            "sections": [{"facts": [{"name": k, "value": v} for k, v in facts]}],
        }
    raise ValueError(f"unknown notification type {kind!r}")


_STOP = object()


class Notifier:
    """Sends notifications from one background daemon thread; ``send`` never blocks or raises.

    Without ``specs`` the targets come from each rollout's stored policy snapshot.
    """

    def __init__(
        self,
        specs: Sequence[NotifySpec] | None = None,
        *,
        session: requests.Session | None = None,
        queue_size: int = 100,
    ) -> None:
        self._specs = None if specs is None else tuple(specs)
        self._session = session  # used by the sender thread only
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._cond = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def send(
        self,
        event: Event,
        state: RolloutState,
        *,
        message: str,
        metric: dict[str, Any] | None = None,
    ) -> None:
        """Queue the notification for every target subscribed to ``event``. Returns at once."""
        try:
            specs = self._specs if self._specs is not None else specs_from_policy(state.policy)
            specs = tuple(s for s in specs if event in s.events)
            if metric is None and event == "rollback":
                metric = failing_metric(state)
            for spec in specs:
                body = render(spec.type, event, state, message=message, metric=metric)
                self._put((spec, event, body))
        except Exception as exc:  # a notification must never fail a rollout
            log.warning("notify.error", notify_event=event, error=describe(exc))

    def _put(self, item: tuple[NotifySpec, Event, dict[str, Any]]) -> None:
        with self._cond:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1
                log.warning("notify.dropped", name=item[0].name, notify_event=item[1])
                return
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="canaryctl-notify", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            spec, event, body = item
            try:
                self._deliver(spec, event, body)
            except Exception as exc:  # the sender thread must survive anything
                log.warning("notify.error", name=spec.name, notify_event=event, error=describe(exc))
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _deliver(self, spec: NotifySpec, event: Event, body: dict[str, Any]) -> None:
        label, r = deliver(spec, body, session=self._session)
        report = log.info if r.ok else log.warning
        report("notify", **label, notify_event=event, ok=r.ok, status=r.status, error=r.error)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued notification was delivered or given up on (True), or
        ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """``flush``, then stop the sender thread if it is idle (a daemon thread still busy
        with a slow target is left to die with the process). True when everything was sent."""
        if not self.flush(timeout):
            return False
        with self._cond:
            thread, self._thread = self._thread, None
            if thread is not None:
                try:
                    self._queue.put_nowait(_STOP)  # normally empty: flush drained it
                except queue.Full:  # a burst of sends since: leave the thread running
                    self._thread = thread
                    return False
        if thread is not None:
            thread.join(timeout)
        return True
