"""The webhook and notification parts of the policy (``spec.webhooks``, ``spec.notify``) (pure).

Why a module of its own: ``policy.py`` declares these fields, and ``hooks.py`` / ``notify.py``
(the I/O that calls them) import these models, never the other way round, so that the pure
policy layer does not pull in ``requests``, ``tenacity`` or ``structlog``. What the webhooks and
notifications do is documented in ``hooks.py`` and ``notify.py``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from canaryctl.names import check_label as check_name
from canaryctl.policy_base import Duration, StrictModel, parse_duration

HookType = Literal[
    "pre-rollout", "rollout", "confirm-step", "confirm-promotion", "rollback", "post-rollout"
]
GateKind = Literal["confirm-step", "confirm-promotion"]
HOOK_TYPES: tuple[str, ...] = get_args(HookType)
GATE_KINDS: tuple[str, ...] = get_args(GateKind)
Event = Literal["start", "step", "pause", "resume", "rollback", "promotion", "failure", "cleanup"]
EVENTS: tuple[str, ...] = get_args(Event)
_USERINFO_RE = re.compile(r"//[^/@\s]*@")


def endpoint(url: str) -> str:
    """What logs may show of a URL: ``scheme://host:port`` (no credentials, path or query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def check_url(v: str) -> str:
    try:
        parts = urlsplit(v)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # e.g. a non-numeric port
        ok = False
    if not ok or re.search(r"\s", v):  # the message must not print a password
        raise ValueError(f"must be an http(s) URL, got {_USERINFO_RE.sub('//***@', v)[:120]!r}")
    return v


def _check_optional_url(v: str | None) -> str | None:
    return None if v is None else check_url(v)


class UrlSource(StrictModel):
    """Where a webhook or notification is sent: exactly one of ``url`` and ``urlFile``."""

    model_config = ConfigDict(
        **StrictModel.model_config,
        json_schema_extra={"oneOf": [{"required": ["url"]}, {"required": ["urlFile"]}]},
    )

    url: str | None = Field(
        default=None,
        description="http(s) URL to POST to; stored with the rollout (use urlFile for secrets)",
    )
    urlFile: str | None = Field(
        default=None,
        min_length=1,
        description="File holding the URL (e.g. a mounted Secret), read at every call; the "
        "URL is then never stored in the cluster",
    )

    _url = field_validator("url")(_check_optional_url)

    @model_validator(mode="after")
    def _one_source(self) -> UrlSource:
        if (self.url is None) == (self.urlFile is None):
            raise ValueError("set exactly one of url and urlFile")
        return self

    def where(self) -> str:
        """What logs may say about the destination, without reading any file."""
        return endpoint(self.url) if self.url is not None else f"file:{self.urlFile}"


def check_duration(v: str | None) -> str | None:
    if v is not None and parse_duration(v) <= 0:
        raise ValueError(f"must be positive, got {v!r}")
    return v


def unique_names(items: list[Any]) -> list[Any]:
    names = [i.name for i in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"names must be unique, got duplicates {dupes}")
    return items


class WebhookSpec(UrlSource):
    """One webhook of the policy (``spec.webhooks[]``)."""

    name: str = Field(description="DNS-1123 label, unique among the webhooks; shown in logs")
    type: HookType = Field(
        description="pre-rollout / rollout: checks; confirm-step / confirm-promotion: gates; "
        "rollback: a 2xx answer rolls back; post-rollout: told the outcome"
    )
    timeout: Duration = Field(default="10s", description="Timeout of one attempt")
    retries: int = Field(default=2, ge=0, le=10, description="Extra attempts on errors and 5xx")
    maxWait: Duration | None = Field(
        default=None,
        description="Gates only: when the gate has not answered 2xx for this long at one "
        "step, the rollout is rolled back; unset: wait as long as it takes",
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="Sent in the payload")

    _name = field_validator("name")(check_name)
    _durations = field_validator("timeout", "maxWait")(check_duration)

    @model_validator(mode="after")
    def _gate_only(self) -> WebhookSpec:
        if self.maxWait is not None and self.type not in GATE_KINDS:
            raise ValueError(f"webhook {self.name}: maxWait is for gates only, not {self.type}")
        return self


# What PolicySpec declares: ``webhooks: Webhooks = Field(default_factory=list, ...)``.
Webhooks = Annotated[list[WebhookSpec], AfterValidator(unique_names)]


def _default_events() -> list[Event]:
    return ["start", "pause", "resume", "rollback", "promotion", "failure", "cleanup"]


class NotifySpec(UrlSource):
    """One notification target of the policy (``spec.notify[]``)."""

    name: str = Field(description="DNS-1123 label, unique among the targets; shown in logs")
    type: Literal["slack", "teams", "webhook"] = Field(
        description="slack: incoming webhook; teams: MessageCard; webhook: plain JSON"
    )
    timeout: Duration = Field(default="5s", description="Timeout of one attempt")
    retries: int = Field(default=2, ge=0, le=10, description="Extra attempts on errors and 5xx")
    events: list[Event] = Field(
        default_factory=_default_events,
        description="Events to send: start, step, pause, resume, rollback, promotion, failure, "
        "cleanup (default: all but step)",
    )

    _name = field_validator("name")(check_name)
    _timeout = field_validator("timeout")(check_duration)

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[Event]) -> list[Event]:
        if not v:
            raise ValueError("must list at least one event (or remove the target)")
        return list(dict.fromkeys(v))


# What PolicySpec declares: ``notify: Notifications = Field(default_factory=list, ...)``.
Notifications = Annotated[list[NotifySpec], AfterValidator(unique_names)]
