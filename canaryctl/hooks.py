"""Flagger-style webhooks: what a rollout asks or tells other systems (an edge: HTTP I/O).

Why: metrics alone cannot ask a human for approval, drive a load test or tell a pipeline that
a rollout ended. The policy lists webhooks (``spec.webhooks``); the controller calls them:

- ``pre-rollout``: before the first traffic shift; all must answer 2xx or nothing starts.
- ``rollout``: at every analysis. Failures are returned; we recommend counting them as a
  failed analysis, as Flagger does (``as_failed_checks``), so ``failureLimit`` applies.
- ``confirm-step`` / ``confirm-promotion``: gates before each weight increase / the promotion,
  open only while every gate of the kind answers 2xx. A gate with ``maxWait`` still closed
  that long after it was first asked at this step *expires*: the rollout is rolled back.
  Without ``maxWait`` the rollout waits at its current weight as long as it takes.
- ``rollback``: asked at every analysis; any 2xx rolls the rollout back at once.
- ``post-rollout``: once after Promoted / RolledBack / Failed; fire-and-forget.

A failure (4xx, 5xx after retries, timeout, refused connection, redirect, any exception) is
NEVER an approval, and ``call`` never raises: a webhook may hold or end a rollout, never crash
the controller. Connection errors, timeouts and 5xx are retried (backoff 0.2 s doubling, max
2 s). Payload (POSTed JSON; ``payload_schema()`` is its JSON Schema)::

    {"name": "approve", "type": "confirm-step", "app": "reviews", "namespace": "shop",
     "virtualService": "reviews", "phase": "Progressing", "step": 2, "stepsTotal": 5,
     "canaryWeight": 40, "stableWeight": 60, "canary": "reviews/v2", "stable": "reviews/v1",
     "metadata": {...},                                            # the webhook's metadata
     "outcome": "promoted|rolled_back|failed", "reason": "..."}    # post-rollout only

``canary``/``stable`` are ``host/subset`` (``host`` in host mode). URLs may hold secrets
(``user:pass@`` is sent as basic auth; Slack puts tokens in the path): logs show only
``scheme://host:port``, errors only the exception class and OS reason (requests quotes the
URL path in its messages), and headers are never logged.

Where the URL comes from: ``url`` (kept in the policy, hence in the policy snapshot stored with
the rollout on the VirtualService, readable by anyone who can read it) or ``urlFile``, a file
(in a pod: a mounted Secret) read at every call, so the URL is never stored in the cluster
state and a rotated Secret is picked up. A ``urlFile`` that cannot be read is a failed call
(never an approval); ``promote`` checks every ``urlFile`` before the first write (exit 2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canaryctl.logs import get_logger
from canaryctl.policy_base import parse_duration as seconds
from canaryctl.policy_hooks import (
    GATE_KINDS,
    HOOK_TYPES,
    GateKind,
    NotifySpec,
    UrlSource,
    WebhookSpec,
    check_url,
    endpoint,
)
from canaryctl.rollout import OUTCOMES, PHASES, Outcome, outcome_of

if TYPE_CHECKING:  # imported on first use: policy validation needs no HTTP client
    from requests import Session
    from tenacity import RetryCallState

    from canaryctl.analysis import MetricResult
    from canaryctl.rollout import RolloutState

log = get_logger("canaryctl.hooks")

_UA = {"User-Agent": "canaryctl"}
# No redirects (a redirect is not an approval); the body is never read (stream).
_POST: dict[str, Any] = {"allow_redirects": False, "stream": True, "headers": _UA}


class UrlFileError(ValueError):
    """A ``urlFile`` could not be read or does not hold a URL (the message never quotes it)."""


def read_url_file(path: str) -> str:
    """The URL kept in ``path``, whitespace stripped and checked like ``url``."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UrlFileError(f"cannot read {path}: {why}") from None
    try:
        return check_url(text)
    except ValueError:
        raise UrlFileError(f"{path} does not hold an http(s) URL") from None


def target_url(source: UrlSource) -> str:
    """The URL to POST to (``urlFile`` read now). Raises ``UrlFileError``."""
    if source.url is not None:
        return source.url
    assert source.urlFile is not None
    return read_url_file(source.urlFile)


def specs_from_policy(policy: dict[str, Any]) -> list[WebhookSpec]:
    """The webhooks of a stored policy snapshot (a running rollout keeps those it began with)."""
    return [WebhookSpec.model_validate(d) for d in policy["spec"].get("webhooks") or []]


@dataclass(frozen=True)
class HookResult:
    ok: bool  # only a 2xx answer
    status: int | None  # last HTTP status, None when no answer came
    error: str | None  # "HTTP 403", "ReadTimeout", "ConnectionError (Connection refused)"
    attempts: int
    name: str = ""


@dataclass(frozen=True)
class GateResult:
    open: bool
    waiting_since: float | None  # when this process (or ``since``) first saw it closed
    expired: bool  # closed for longer than a closed gate's maxWait: roll back
    detail: str


def dest(d: dict[str, str | None]) -> str:
    return f"{d['host']}/{d['subset']}" if d.get("subset") else str(d["host"])


def build_payload(
    hook: WebhookSpec, state: RolloutState, *, outcome: Outcome | None = None
) -> dict[str, Any]:
    """The JSON body for ``hook`` (see the module docstring and ``payload_schema``)."""
    body: dict[str, Any] = {
        "name": hook.name,
        "type": hook.type,
        "app": state.app,
        "namespace": state.namespace,
        "virtualService": state.virtual_service,
        "phase": state.phase,
        "step": state.step_index + 1,
        "stepsTotal": len(state.steps),
        "canaryWeight": state.weight,
        "stableWeight": 100 - state.weight,
        "canary": dest(state.canary),
        "stable": dest(state.stable),
        "metadata": dict(hook.metadata),
    }
    if hook.type == "post-rollout":
        outcome = outcome or outcome_of(state)
        if outcome not in OUTCOMES:
            raise ValueError(f"post-rollout needs an outcome in {OUTCOMES}, got {outcome!r}")
        body.update(outcome=outcome, reason=state.reason)
    elif outcome is not None:
        raise ValueError(f"only post-rollout webhooks carry an outcome, not {hook.type}")
    return body


def payload_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of the payload, for the teams writing webhook receivers."""
    text = {"type": "string", "minLength": 1}
    weight = {"type": "integer", "minimum": 0, "maximum": 100}
    props: dict[str, Any] = {
        "name": text,
        "type": {"enum": list(HOOK_TYPES)},
        "app": text,
        "namespace": text,
        "virtualService": text,
        "phase": {"enum": list(PHASES)},
        "step": {"type": "integer", "minimum": 1, "description": "1-based"},
        "stepsTotal": {"type": "integer", "minimum": 1},
        "canaryWeight": weight,
        "stableWeight": weight,
        "canary": {**text, "description": "host/subset (host in host mode)"},
        "stable": {**text, "description": "host/subset (host in host mode)"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "outcome": {"enum": list(OUTCOMES), "description": "post-rollout only"},
        "reason": {"type": "string", "description": "post-rollout only"},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "canaryctl webhook payload",
        "type": "object",
        "properties": props,
        "required": [k for k in props if k not in ("outcome", "reason")],
        "additionalProperties": False,
        "if": {"properties": {"type": {"const": "post-rollout"}}},
        "then": {"required": ["outcome", "reason"]},
        "else": {"not": {"anyOf": [{"required": ["outcome"]}, {"required": ["reason"]}]}},
    }


class _Retryable(Exception):
    """A connection error, timeout or 5xx: worth another attempt. ``args``: (status, error)."""


def describe(exc: BaseException) -> str:
    """Exception class plus the OS reason found in its chain; never the message (URLs)."""
    todo = [exc]
    for e in todo:  # breadth-first over causes, contexts, urllib3 reasons and args
        if isinstance(e, OSError) and isinstance(e.strerror, str) and e.strerror:
            return f"{type(exc).__name__} ({e.strerror})"
        linked = (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
        todo += [x for x in linked if isinstance(x, BaseException) and x not in todo][:3]
    return type(exc).__name__


def post_json(
    url: str, body: Any, *, timeout: float, retries: int, session: Session | None, **label: Any
) -> HookResult:
    """POST ``body`` with retries; ``ok`` only for 2xx. Never raises (notify uses it too).
    ``label`` (name, type, endpoint: never the URL) goes into the retry logs."""
    attempts, name = 0, str(label.get("name", ""))
    # imported here: policy validation imports this module and needs no HTTP client
    import requests
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt
    from tenacity import wait_exponential as backoff

    s = session if session is not None else requests.Session()

    def before_sleep(rs: RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        err = exc.args[1] if isinstance(exc, _Retryable) else type(exc).__name__
        log.info("http.retry", **label, attempt=rs.attempt_number, error=err)

    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(retries + 1),
            wait=backoff(multiplier=0.2, max=2),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                attempts += 1
                try:
                    with s.post(url, json=body, timeout=timeout, **_POST) as resp:
                        status = int(resp.status_code)
                except (requests.ConnectionError, requests.Timeout) as exc:
                    raise _Retryable(None, describe(exc)) from None
                if status >= 500:
                    raise _Retryable(status, f"HTTP {status}")
    except _Retryable as exc:
        return HookResult(False, exc.args[0], exc.args[1], attempts, name)
    except Exception as exc:  # never raises: a webhook must not crash the controller
        return HookResult(False, None, describe(exc), attempts, name)
    finally:
        if session is None:
            s.close()
    ok = 200 <= status < 300
    return HookResult(ok, status, None if ok else f"HTTP {status}", attempts, name)


def deliver(
    spec: WebhookSpec | NotifySpec, body: Any, *, session: Session | None
) -> tuple[dict[str, Any], HookResult]:
    """POST ``body`` where ``spec`` points (``urlFile`` read now) with its timeout and
    retries. Returns the log label (name, type, endpoint: never the URL) and the result; an
    unreadable ``urlFile`` is a result with 0 attempts. Never raises."""
    label: dict[str, Any] = {"name": spec.name, "type": spec.type, "endpoint": spec.where()}
    try:
        url = target_url(spec)
    except UrlFileError as exc:
        return label, HookResult(False, None, f"urlFile: {exc}", 0, spec.name)
    label["endpoint"] = endpoint(url)
    timeout, retries = seconds(spec.timeout), spec.retries
    return label, post_json(url, body, timeout=timeout, retries=retries, session=session, **label)


def call(hook: WebhookSpec, payload: Any, *, session: Session | None = None) -> HookResult:
    """Call one webhook and log the answer. Never raises; a failure is never approval."""
    label, r = deliver(hook, payload, session=session)
    report = log.info if r.attempts else log.warning  # no attempt: the urlFile is unreadable
    report("webhook", **label, status=r.status, ok=r.ok, attempts=r.attempts, error=r.error)
    return r


def as_failed_checks(results: Sequence[HookResult]) -> list[MetricResult]:
    """Failed ``rollout`` webhooks as failing checks, to add to an analysis' metric results."""
    from canaryctl.analysis import MetricResult

    why = "rollout webhook {} failed: {}".format
    return [
        MetricResult(f"webhook-{r.name}", "fail", None, None, "2xx", None, why(r.name, r.error))
        for r in results
        if not r.ok
    ]


class HookRunner:
    """Calls the webhooks at the controller's points; remembers since when gates wait.
    Without ``hooks`` they come from each rollout's stored policy snapshot, so one runner
    serves every rollout of a process (reconcile, daemon). ``clock`` times gate waits only."""

    def __init__(
        self,
        hooks: Sequence[WebhookSpec] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        session: Session | None = None,
    ) -> None:
        self._hooks = None if hooks is None else tuple(hooks)
        self._clock, self._session = clock, session
        self._waiting: dict[tuple[Any, ...], float] = {}

    def hooks_of(self, state: RolloutState, kind: str) -> list[WebhookSpec]:
        hooks = self._hooks if self._hooks is not None else specs_from_policy(state.policy)
        return [h for h in hooks if h.type == kind]

    def _fire(self, hook: WebhookSpec, state: RolloutState, outcome: Any = None) -> HookResult:
        return call(hook, build_payload(hook, state, outcome=outcome), session=self._session)

    def pre_rollout(self, state: RolloutState) -> HookResult | None:
        """None when every pre-rollout hook answered 2xx, else the first failure."""
        for hook in self.hooks_of(state, "pre-rollout"):
            if not (r := self._fire(hook, state)).ok:
                return r
        return None

    def rollout(self, state: RolloutState) -> list[HookResult]:
        """Call every ``rollout`` hook; returns the failures (empty: all passed)."""
        return [r for h in self.hooks_of(state, "rollout") if not (r := self._fire(h, state)).ok]

    def gate(
        self, kind: GateKind, state: RolloutState, *, since: float | None = None
    ) -> GateResult:
        """Ask every gate of ``kind`` (open only if all answer 2xx). ``since``: when the wait
        began, if the caller persisted it (a CronJob pass has no memory of earlier passes)."""
        if kind not in GATE_KINDS:
            raise ValueError(f"not a gate kind: {kind!r}")
        hooks = self.hooks_of(state, kind)
        if not hooks:
            return GateResult(True, None, False, f"no {kind} webhooks")
        now = self._clock()
        key = (state.namespace, state.virtual_service, state.started_at, kind, state.step_index)
        closed = [(h, r) for h in hooks if not (r := self._fire(h, state)).ok]
        if not closed:
            self._waiting.pop(key, None)
            return GateResult(True, None, False, f"{kind} approved")
        started = min(self._waiting.get(key, now), now if since is None else since)
        self._waiting[key] = started
        waited = now - started
        limits = [seconds(h.maxWait) for h, _ in closed if h.maxWait is not None]
        expired = any(waited >= limit for limit in limits)
        why = "; ".join(f"{h.name}: {r.error}" for h, r in closed)
        if expired:
            log.warning("webhook.gate_expired", kind=kind, waited=round(waited, 3), detail=why)
        limit = f", maxWait {min(limits):g}s" if limits else ""
        detail = f"{kind} not approved ({why}); waiting {waited:.0f}s{limit}"
        return GateResult(False, started, expired, detail)

    def rollback_requested(self, state: RolloutState) -> bool:
        """True when any ``rollback`` hook answers 2xx (a failure never requests one)."""
        hit = next((h for h in self.hooks_of(state, "rollback") if self._fire(h, state).ok), None)
        if hit is not None:
            log.warning("webhook.rollback_requested", name=hit.name)
        return hit is not None

    def post_rollout(self, state: RolloutState, outcome: Outcome) -> list[HookResult]:
        """Tell every ``post-rollout`` hook the outcome (with retries). Never raises."""
        me = (state.namespace, state.virtual_service, state.started_at)
        self._waiting = {k: v for k, v in self._waiting.items() if k[:3] != me}  # it ended
        try:
            return [self._fire(h, state, outcome) for h in self.hooks_of(state, "post-rollout")]
        except Exception as exc:  # never raises: the rollout has already ended
            log.warning("webhook.post_rollout_error", error=describe(exc))
            return []
