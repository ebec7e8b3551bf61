"""Prometheus connection settings of the policy (``spec.prometheus``) (pure)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from canaryctl.policy_base import Duration, StrictModel, parse_duration


class BasicAuthSpec(StrictModel):
    username: str = Field(description="User name")
    passwordFile: str = Field(description="File holding the password (re-read on change)")


class TLSSpec(StrictModel):
    caFile: str | None = Field(default=None, description="CA bundle to verify the server with")
    insecureSkipVerify: bool = Field(
        default=False, description="Do not verify the server certificate (not recommended)"
    )


class PrometheusSpec(StrictModel):
    """Where and how to query. Secrets only ever come from files: the effective policy is
    stored with the rollout on the VirtualService, so it must never hold a credential."""

    url: str = Field(
        default="http://prometheus.istio-system:9090",
        description="Base URL of the Prometheus HTTP API; --prometheus-url overrides it",
    )
    timeout: Duration = Field(default="10s", description="Timeout of one query")
    retryBudget: Duration = Field(
        default="60s",
        description="How long a failing query is retried (with backoff) before the rollout "
        "is abandoned with traffic on stable (exit 3)",
    )
    bearerTokenFile: str | None = Field(
        default=None,
        description="File holding a bearer token (re-read when it changes, so rotation works)",
    )
    basicAuth: BasicAuthSpec | None = Field(default=None, description="HTTP basic auth")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. X-Scope-OrgID for Cortex/Mimir/Thanos tenants "
        "(not for secrets: the policy is stored with the rollout)",
    )
    tls: TLSSpec = Field(default_factory=TLSSpec, description="TLS verification")
    reporter: Literal["destination", "source", "waypoint"] = Field(
        default="destination",
        description="Which proxy's report of Istio's standard metrics the built-in queries "
        "read (the label `reporter`): the destination sidecar (default), the source sidecar "
        "(callers' view, including their retries and timeouts), or the waypoint (ambient "
        "mode, where pods have no sidecar and only ztunnel/waypoints report); also "
        "{{ reporter }} in custom queries",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        if "@" in v.split("/")[2]:
            raise ValueError(
                "must not contain credentials (they would be stored with the rollout; "
                "use basicAuth.passwordFile or bearerTokenFile), got a URL with user info"
            )
        return v.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not re.fullmatch(r"[A-Za-z0-9-]+", k) or any(c in val for c in "\r\n"):
                raise ValueError(f"invalid header {k!r}")
            if k.lower() in ("authorization", "proxy-authorization", "cookie"):
                raise ValueError(
                    f"header {k} would store a secret with the rollout; use bearerTokenFile"
                )
        return v

    @field_validator("timeout", "retryBudget")
    @classmethod
    def _timeout(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError(f"must be positive, got {v!r}")
        return v
