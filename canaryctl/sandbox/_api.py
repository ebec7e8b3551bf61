"""The Kubernetes API's vocabulary as the emulator speaks it: resources, errors, URLs, RBAC.

A real API server knows which resources exist, which are namespaced, which versions it serves
for each (converting between them), how its URLs are laid out, which RBAC verb a request needs,
and what its error bodies look like. The emulator must know the same, or clients would meet a
friendlier server in tests than in production.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
GATEWAY_GROUP = "gateway.networking.k8s.io"

Obj = dict[str, Any]


class ApiError(Exception):
    """An error the emulator answers with a Kubernetes ``Status`` body (and this HTTP code)."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        """The ``Status`` object a real API server sends with a failure."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


# Reasons a real API server puts in Status bodies, by HTTP code (used for injected faults too).
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class Kind:
    """One served resource: the facts discovery would report about it."""

    group: str
    versions: tuple[str, ...]  # the first one is the storage (and preferred) version
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    scale_subresource: bool = False  # /scale serves an autoscaling/v1 Scale of spec.replicas

    @property
    def subresources(self) -> frozenset[str]:
        return frozenset(
            name
            for name, served in (
                ("status", self.status_subresource),
                ("scale", self.scale_subresource),
            )
            if served
        )

    @property
    def qualified(self) -> str:
        """``virtualservices.networking.istio.io`` (or ``services`` for the core group)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str | None = None) -> str:
        """``group/version`` as in ``apiVersion`` (``v1`` for the core group)."""
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version


# Only what the sandbox world and canaryctl use; `register_kind` adds more at runtime.
BUILTIN_KINDS: tuple[Kind, ...] = (
    Kind("", ("v1",), "namespaces", "Namespace", namespaced=False, status_subresource=True),
    Kind("", ("v1",), "services", "Service", status_subresource=True),
    Kind("", ("v1",), "configmaps", "ConfigMap"),
    Kind("", ("v1",), "secrets", "Secret"),
    Kind("", ("v1",), "pods", "Pod", status_subresource=True),
    Kind("", ("v1",), "serviceaccounts", "ServiceAccount"),
    Kind("", ("v1",), "events", "Event"),
    Kind("apps", ("v1",), "deployments", "Deployment", True, True, scale_subresource=True),
    Kind("autoscaling", ("v2",), "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, True),
    Kind("coordination.k8s.io", ("v1",), "leases", "Lease"),
    # Stored apart from core events: enough for a sandbox, where nobody reads both APIs.
    Kind("events.k8s.io", ("v1",), "events", "Event"),
    Kind(ISTIO_GROUP, ISTIO_VERSIONS, "virtualservices", "VirtualService", True, True),
    Kind(ISTIO_GROUP, ISTIO_VERSIONS, "destinationrules", "DestinationRule", True, True),
    Kind(ISTIO_GROUP, ISTIO_VERSIONS, "gateways", "Gateway", True, True),
    Kind(ISTIO_GROUP, ISTIO_VERSIONS, "serviceentries", "ServiceEntry", True, True),
    Kind(GATEWAY_GROUP, ("v1", "v1beta1"), "httproutes", "HTTPRoute", True, True),
)


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` -> ``("apps", "v1")``; ``v1`` -> ``("", "v1")``."""
    group, _, version = api_version.rpartition("/")
    return group, version


def now_rfc3339() -> str:
    """Timestamps as the API server writes them (seconds, UTC, ``Z``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- URLs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceUrl:
    """A parsed resource URL: /api(s)/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUB]]."""

    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_resource_url(path: str) -> ResourceUrl | None:
    """None for anything else (discovery, /version, health checks)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    # /api/v1/namespaces/x/status is the namespace's own subresource, not resource "status" in x.
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    rest = rest + [""] * (3 - len(rest))
    return ResourceUrl(group, version, rest[0], namespace, rest[1] or None, rest[2] or None)


def rbac_verb(method: str, target: ResourceUrl, query: dict[str, str]) -> str:
    """The RBAC verb of a request, as the API server's authorizer computes it."""
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if target.name else "list"
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    return verbs.get(method, method.lower())
