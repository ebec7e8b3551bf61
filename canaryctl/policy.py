"""The YAML analysis policy: model, defaults, validation and JSON Schema (pure).

The field names are a public contract: users and pipelines write them, and a snapshot of the
effective policy is stored with every rollout (so a running rollout never changes when a file
does). Validation is strict (unknown fields are errors: a typo like ``minRequest`` must not
silently fall back to a default) and every error names the field path and the value, on one
line, e.g. ``spec.steps: must be strictly increasing and end at 100, got [40, 20, 100]``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from canaryctl.errors import PolicyError
from canaryctl.names import is_label
from canaryctl.policy_base import Duration, StrictModel
from canaryctl.policy_base import format_duration as format_duration  # re-exported
from canaryctl.policy_base import parse_duration as parse_duration  # re-exported
from canaryctl.policy_finish import FinishSpec as FinishSpec  # re-exported
from canaryctl.policy_hooks import Notifications, Webhooks
from canaryctl.policy_prometheus import BasicAuthSpec as BasicAuthSpec  # re-exported
from canaryctl.policy_prometheus import PrometheusSpec as PrometheusSpec  # re-exported
from canaryctl.policy_prometheus import TLSSpec as TLSSpec  # re-exported

API_VERSION = "canaryctl.io/v1alpha1"
KIND = "AnalysisPolicy"
BUILTIN_METRICS = ("request-success-rate", "request-duration")
MAX_POLICY_BYTES = 1024 * 1024  # a policy is a few hundred bytes; refuse megabytes up front
MAX_STEPS = 100

# Variables a custom query may use. Their values are names the controller validated as
# DNS-1123 labels (or durations it rendered itself), so substitution cannot inject PromQL.
TEMPLATE_VARIABLES = (
    "app",
    "namespace",
    "canary_workload",
    "stable_workload",
    "workload",
    "window",
    "interval",
    "reporter",  # one of PrometheusSpec.reporter's three literals
)
_TEMPLATE_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class MetricSpec(StrictModel):
    """One check. Built-ins take no query; any other name needs a PromQL ``query``."""

    name: str = Field(description="request-success-rate, request-duration, or your own name")
    query: str | None = Field(
        default=None,
        description="PromQL returning one number; may use {{ canary_workload }}, "
        "{{ stable_workload }}, {{ workload }}, {{ namespace }}, {{ app }}, {{ window }}, "
        "{{ reporter }}",
    )
    min: float | None = Field(default=None, description="Pass when value >= min")
    max: float | None = Field(default=None, description="Pass when value <= max")
    maxIncrease: float | None = Field(
        default=None, description="Pass when canary - stable <= maxIncrease (same window)"
    )
    maxRatio: float | None = Field(
        default=None, description="Pass when canary <= maxRatio x stable (same window)"
    )
    window: Duration | None = Field(default=None, description="Range window; default interval")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not is_label(v):
            raise ValueError(f"must be a DNS-1123 label (a-z, 0-9, '-'), got {v!r}")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError(f"must be positive, got {v!r}")
        return v

    @field_validator("query")
    @classmethod
    def _query(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("must not be empty")
        for var in _TEMPLATE_RE.findall(v):
            if var not in TEMPLATE_VARIABLES:
                raise ValueError(
                    f"unknown template variable {{{{ {var} }}}} "
                    f"(known: {', '.join(TEMPLATE_VARIABLES)})"
                )
        rest = _TEMPLATE_RE.sub("", v)
        if "{{" in rest or "}}" in rest:
            raise ValueError(f"unbalanced template braces in {v!r}")
        return v

    @field_validator("min", "max", "maxIncrease", "maxRatio")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {v}")
        return v

    @field_validator("maxRatio")
    @classmethod
    def _ratio(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError(f"must be > 0, got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> MetricSpec:
        if self.name in BUILTIN_METRICS and self.query is not None:
            raise ValueError(f"built-in metric {self.name} takes no query")
        if self.name not in BUILTIN_METRICS and self.query is None:
            raise ValueError(
                f"metric {self.name} needs a query (built-ins: {', '.join(BUILTIN_METRICS)})"
            )
        if all(t is None for t in (self.min, self.max, self.maxIncrease, self.maxRatio)):
            raise ValueError(
                f"metric {self.name} needs at least one of min, max, maxIncrease, maxRatio"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_METRICS


def _default_metrics() -> list[MetricSpec]:
    return [
        MetricSpec(name="request-success-rate", min=99),
        MetricSpec(name="request-duration", max=500),
    ]


class PolicySpec(StrictModel):
    steps: list[StrictInt] | None = Field(
        default=None,
        description="Canary weight after each step; strictly increasing, ends at 100",
    )
    stepWeight: StrictInt | None = Field(default=None, description="Shorthand: steps of this size")
    maxWeight: StrictInt | None = Field(
        default=None, description="With stepWeight: last weight before 100 (default 100)"
    )
    interval: Duration = Field(default="1m", description="Wait after each step before analysing")
    failureLimit: StrictInt = Field(
        default=0, ge=0, description="Rolled back when MORE than this many analyses failed"
    )
    minRequests: StrictInt = Field(
        default=50, ge=1, description="Canary requests needed in the window for a verdict"
    )
    maxWindow: Duration = Field(
        default="30m",
        description="A step without enough data holds and its window grows up to this long",
    )
    whenNoEvidence: Literal["pause", "rollback"] = Field(
        default="pause",
        description="When maxWindow is spent without a verdict: pause (exit 4) or roll back",
    )
    inconclusiveLimit: StrictInt | None = Field(
        default=None,
        ge=0,
        description="Legacy: also roll back after this many inconclusive analyses in a row",
    )
    judge: Literal["threshold", "sequential"] = Field(
        default="threshold",
        description="threshold: fixed limits per analysis; sequential: anytime-valid test",
    )
    alpha: float = Field(
        default=0.01, gt=0, lt=1, description="Sequential judge: false-rollback bound"
    )
    psi0: float = Field(
        default=1.2, ge=1, description="Sequential judge: tolerated canary/stable error ratio"
    )
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    metrics: list[MetricSpec] = Field(default_factory=_default_metrics)
    webhooks: Webhooks = Field(
        default_factory=list,
        description="Webhooks called during the rollout: checks, gates, rollback, post-rollout",
    )
    notify: Notifications = Field(
        default_factory=list, description="Slack / Teams / JSON targets told about milestones"
    )
    # --- finishing cleanly (policy_finish.py) ---
    finish: FinishSpec | None = Field(
        default=None,
        description="Opt-in clean-up after the rollout: collapse routes, scale down, undo window",
    )

    @field_validator("interval", "maxWindow")
    @classmethod
    def _interval(cls, v: str) -> str:
        if parse_duration(v) < 1:
            raise ValueError(f"must be at least 1s, got {v!r}")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[MetricSpec]) -> list[MetricSpec]:
        if not v:
            raise ValueError("must list at least one metric (never promote without evidence)")
        names = [m.name for m in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric names must be unique, got duplicates {dupes}")
        return v

    @model_validator(mode="after")
    def _steps(self) -> PolicySpec:
        if self.steps is not None and (self.stepWeight is not None or self.maxWeight is not None):
            raise ValueError("give either steps or stepWeight/maxWeight, not both")
        if self.steps is None:
            if self.stepWeight is None:
                if self.maxWeight is not None:
                    raise ValueError("maxWeight needs stepWeight")
                object.__setattr__(self, "steps", [20, 40, 60, 80, 100])
            else:
                object.__setattr__(self, "steps", _expand(self.stepWeight, self.maxWeight))
        steps = self.steps or []
        shown = steps if len(steps) <= 12 else f"{steps[:6]}... ({len(steps)} steps)"
        if not 0 < len(steps) <= MAX_STEPS:
            raise ValueError(f"steps: must have 1 to {MAX_STEPS} weights, got {shown}")
        if not all(0 < s <= 100 for s in steps):
            raise ValueError(f"steps: weights must be in 1..100, got {shown}")
        if not (all(a < b for a, b in itertools.pairwise(steps)) and steps[-1] == 100):
            raise ValueError(f"steps: must be strictly increasing and end at 100, got {shown}")
        return self

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)

    def window_seconds(self, metric: MetricSpec) -> float:
        return parse_duration(metric.window) if metric.window else self.interval_seconds

    @property
    def weights(self) -> list[int]:
        assert self.steps is not None  # filled by the validator
        return list(self.steps)


def _expand(step: int, max_weight: int | None) -> list[int]:
    top = 100 if max_weight is None else max_weight
    if not 0 < step <= 100:
        raise ValueError(f"stepWeight: must be in 1..100, got {step}")
    if not step <= top <= 100:
        raise ValueError(f"maxWeight: must be in stepWeight..100, got {top}")
    out = list(range(step, top + 1, step))
    if out[-1] != 100:
        out.append(100)
    return out


class Metadata(StrictModel):
    name: str = "default"


class AnalysisPolicy(StrictModel):
    apiVersion: Literal["canaryctl.io/v1alpha1"] = "canaryctl.io/v1alpha1"
    kind: Literal["AnalysisPolicy"] = "AnalysisPolicy"
    metadata: Metadata = Field(default_factory=Metadata)
    spec: PolicySpec = Field(default_factory=PolicySpec)

    def snapshot(self) -> dict[str, Any]:
        """The effective policy as plain data (steps expanded), stored with the rollout."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["spec"].pop("stepWeight", None)
        data["spec"].pop("maxWeight", None)
        return data

    def with_prometheus_url(self, url: str | None) -> AnalysisPolicy:
        if not url:
            return self
        try:
            prom = self.spec.prometheus.model_copy(update={"url": PrometheusSpec(url=url).url})
        except ValidationError as exc:
            raise PolicyError(f"--prometheus-url: {_first_message(exc)}") from exc
        spec = self.spec.model_copy(update={"prometheus": prom})
        return self.model_copy(update={"spec": spec})


def _first_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _loc(parts: tuple[int | str, ...]) -> str:
    if parts and not isinstance(parts[0], str):
        return f"policy: key {_shown(parts[0])}"
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
            continue
        text = p if p.isprintable() and p.strip() == p and p else json.dumps(p)
        out += f".{text}" if out else text
    return out


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(exc: ValidationError) -> str:
    """One line: ``spec.metrics[1].min: Input should be a valid number, got 'abc'``."""
    errors = exc.errors()
    err = errors[0]
    parts = tuple(err.get("loc", ()))
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if msg.startswith("Keys should be strings") and len(parts) == 1:
        loc = f"policy: key {_shown(parts[0])}"  # a non-string top-level key: name it
    else:
        loc = _loc(parts)
    etype = err.get("type", "")
    if etype == "extra_forbidden":
        msg = "unknown field"
    elif etype == "literal_error":
        msg = f"{msg}, got {err.get('input')!r}"
    elif etype != "missing" and not isinstance(err.get("input"), dict):
        shown = _shown(err.get("input"))
        if "got " not in msg or (etype.startswith(("int_", "float_")) and shown not in msg):
            msg = f"{msg}, got {shown}"
    # model-level validators report at the parent; name the field inside the message instead
    for field in ("steps", "stepWeight", "maxWeight"):
        if msg.startswith(f"{field}: ") and not loc.endswith(field):
            loc, msg = f"{loc}.{field}" if loc else field, msg.removeprefix(f"{field}: ")
    msg = " ".join(msg.split())  # one line, whatever the input held
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc or 'policy'}: {msg}{more}"


MAX_DEPTH = 32  # a policy is 5 levels deep; deeper data is a mistake or an attack


def _too_deep(data: Any) -> str | None:
    """The path of the first value nested deeper than MAX_DEPTH (iterative: no recursion)."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            return _loc(path[:MAX_DEPTH]) or "policy"
        if isinstance(value, dict):
            stack.extend(
                (v, (*path, k if isinstance(k, str) else str(k))) for k, v in value.items()
            )
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))
    return None


def parse_policy(data: Any, *, source: str = "policy") -> AnalysisPolicy:
    """Validate already-parsed YAML/JSON data. Raises ``PolicyError`` with a one-line message."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: must be a mapping with apiVersion, kind and spec")
    deep = _too_deep(data)
    if deep is not None:
        raise PolicyError(f"{source}: {deep}: nested more than {MAX_DEPTH} levels deep")
    try:
        try:
            return AnalysisPolicy.model_validate(data)
        except ValidationError as exc:
            message = format_validation_error(exc)
    except RecursionError:
        message = "policy: nested too deeply"
    except (TypeError, ValueError) as exc:  # exotic YAML that pydantic rejects
        message = " ".join(str(exc).split())
    raise PolicyError(f"{source}: {message}")


def parse_policy_text(text: str, *, source: str = "policy") -> AnalysisPolicy:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError(f"{source}: larger than {MAX_POLICY_BYTES // 1024} KiB, refusing")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise PolicyError(f"{source}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise PolicyError(f"{source}: YAML nested too deeply") from None
    return parse_policy(data, source=source)


def load_policy(path: str | Path | None, *, flag: str = "--policy") -> AnalysisPolicy:
    """Load a policy file; ``None`` gives the built-in default policy. ``flag`` names where
    the path came from in error messages."""
    if path is None:
        return AnalysisPolicy()
    p = Path(path)
    try:
        if p.stat().st_size > MAX_POLICY_BYTES:
            raise PolicyError(f"{p}: larger than {MAX_POLICY_BYTES // 1024} KiB, refusing")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{flag}: file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{flag}: cannot read {p}: {exc}") from None
    return parse_policy_text(text, source=str(p))


def json_schema() -> dict[str, Any]:
    """JSON Schema for editors' YAML language servers (``# yaml-language-server: $schema=``)."""
    schema = AnalysisPolicy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://canaryctl.io/schemas/analysispolicy-v1alpha1.json"
    schema["title"] = "canaryctl AnalysisPolicy"
    return schema


def render_query(template: str, variables: dict[str, str]) -> str:
    """Substitute ``{{ var }}``. Values must already be validated names or durations."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise PolicyError(f"query: unknown template variable {{{{ {name} }}}}")
        return variables[name]

    return _TEMPLATE_RE.sub(sub, template)
