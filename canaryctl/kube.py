"""The only module that imports ``kubernetes``: builds clients and maps API errors.

Every call goes through ``KubeClient._call`` which retries transient failures (connection
errors, timeouts, 5xx, 429) with tenacity and maps the rest to canaryctl errors: 404 ->
``NotFoundError``, 409 -> ``ConflictError`` (the caller re-reads and recomputes), 401/403 ->
``PermissionDeniedError`` naming the verb and resource, anything else -> ``InfraError``.
The urllib3 retries of the client are switched off so that there is one retry policy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from canaryctl.errors import (
    ClusterUnavailableError,
    ConflictError,
    InfraError,
    NotFoundError,
    PermissionDeniedError,
    TransientError,
    UsageError,
)

log = structlog.get_logger("canaryctl.kube")
T = TypeVar("T")

ISTIO_GROUP = "networking.istio.io"
JSON_PATCH = "application/json-patch+json"
# Total time spent retrying one transient API failure; CANARYCTL_KUBE_RETRY_SECONDS overrides.
DEFAULT_RETRY_SECONDS = 30.0
REQUEST_TIMEOUT = (5.0, 20.0)  # connect, read


def _retry_seconds() -> float:
    try:
        return float(os.environ.get("CANARYCTL_KUBE_RETRY_SECONDS", DEFAULT_RETRY_SECONDS))
    except ValueError:
        return DEFAULT_RETRY_SECONDS


def _as_dict(obj: object) -> dict[str, Any]:
    """Custom-object calls are typed as ``object``; they return JSON objects."""
    if not isinstance(obj, dict):
        raise ClusterUnavailableError(f"unexpected answer from the API: {type(obj).__name__}")
    return obj


def _status_message(exc: ApiException) -> str:
    import json

    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason or "")
    except (ValueError, TypeError):
        return str(exc.reason or "")


class KubeClient:
    """Thin, typed wrapper over the generated API classes with one error policy."""

    def __init__(self, api_client: client.ApiClient, *, retry_seconds: float | None = None):
        self.api = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.retry_seconds = _retry_seconds() if retry_seconds is None else retry_seconds
        self._istio_version: str | None = None

    @classmethod
    def connect(cls, *, kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
        """KUBECONFIG / --kubeconfig / --context; in-cluster config when running in a pod."""
        cfg = client.Configuration()
        try:
            in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ and not (
                kubeconfig or context or os.environ.get("KUBECONFIG")
            )
            if in_cluster:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context, client_configuration=cfg
                )
        except (ConfigException, FileNotFoundError, OSError) as exc:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            flag = "--context" if context and "context" in str(exc).lower() else "--kubeconfig"
            raise UsageError(f"{flag}: cannot load Kubernetes config from {where}: {exc}") from None
        cfg.retries = False  # one retry policy: ours
        return cls(client.ApiClient(configuration=cfg))

    def _plain(self, obj: Any) -> Any:
        """Generated model objects -> plain JSON-like dicts (what the pure modules take)."""
        return self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]

    # --- the one error policy ---------------------------------------------------------------
    def _call(self, verb: str, resource: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        def once() -> T:
            try:
                return fn()
            except ApiException as exc:
                raise self._map(exc, verb, resource) from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise TransientError(f"{verb} {resource}: {type(exc).__name__}: {exc}") from exc

        if not retry:
            return once()

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            log.warning(
                "kube.retry",
                verb=verb,
                resource=resource,
                error=str(exc),
                attempt=rs.attempt_number,
            )

        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(TransientError),
                stop=stop_after_delay(self.retry_seconds),
                wait=wait_exponential(multiplier=0.25, max=4),
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    return once()
        except TransientError as exc:
            raise ClusterUnavailableError(
                f"Kubernetes API unavailable after {self.retry_seconds:g}s of retries: {exc}"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _map(exc: ApiException, verb: str, resource: str) -> Exception:
        status = exc.status or 0
        msg = _status_message(exc)
        if status == 404:
            return NotFoundError(f"{resource} not found")
        if status == 409:
            return ConflictError(f"{verb} {resource}: conflict: {msg}")
        if status in (401, 403):
            return PermissionDeniedError(
                f"forbidden: cannot {verb} {resource} ({status}): {msg or exc.reason}"
            )
        if status == 429 or status >= 500 or status == 0:
            return TransientError(f"{verb} {resource}: HTTP {status}: {msg}")
        return InfraError(f"{verb} {resource} rejected (HTTP {status}): {msg}")

    # --- Istio ------------------------------------------------------------------------------
    def istio_version(self, namespace: str) -> str:
        """networking.istio.io/v1 when served (Istio >= 1.22), else v1beta1."""
        if self._istio_version is None:
            try:
                self._call(
                    "list",
                    "virtualservices.networking.istio.io/v1",
                    lambda: self.custom.list_namespaced_custom_object(
                        ISTIO_GROUP,
                        "v1",
                        namespace,
                        "virtualservices",
                        limit=1,
                        _request_timeout=REQUEST_TIMEOUT,
                    ),
                )
                self._istio_version = "v1"
            except NotFoundError:
                self._istio_version = "v1beta1"
        return self._istio_version

    def list_istio(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        version = self.istio_version(namespace or "default")
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        if namespace is None:
            res = self._call(
                "list",
                f"{plural}.{ISTIO_GROUP} {where}",
                lambda: self.custom.list_cluster_custom_object(
                    ISTIO_GROUP, version, plural, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        else:
            res = self._call(
                "list",
                f"{plural}.{ISTIO_GROUP} {where}",
                lambda: self.custom.list_namespaced_custom_object(
                    ISTIO_GROUP, version, namespace, plural, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        return list(_as_dict(res).get("items", []))

    def get_virtual_service(self, namespace: str, name: str) -> dict[str, Any]:
        version = self.istio_version(namespace)
        return _as_dict(
            self._call(
                "get",
                f'virtualservices.{ISTIO_GROUP} "{name}" in namespace {namespace}',
                lambda: self.custom.get_namespaced_custom_object(
                    ISTIO_GROUP,
                    version,
                    namespace,
                    "virtualservices",
                    name,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        )

    def patch_virtual_service(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """One RFC 6902 JSON patch. The content type is passed explicitly: the generated client
        would send merge-patch for a list body, which a real API server rejects."""
        version = self.istio_version(namespace)
        return _as_dict(
            self._call(
                "patch",
                f'virtualservices.{ISTIO_GROUP} "{name}" in namespace {namespace}',
                lambda: self.custom.patch_namespaced_custom_object(
                    ISTIO_GROUP,
                    version,
                    namespace,
                    "virtualservices",
                    name,
                    ops,
                    _content_type=JSON_PATCH,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        )

    # --- core / apps ------------------------------------------------------------------------
    def list_deployments(self, namespace: str) -> list[dict[str, Any]]:
        res = self._call(
            "list",
            f"deployments.apps in namespace {namespace}",
            lambda: self.apps.list_namespaced_deployment(
                namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return [self._plain(d) for d in res.items]

    # --- clean-up: scaling (finish.py) ---------------------------------------------------------
    def scale_deployment(self, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        """Set replicas through the ``scale`` subresource (RBAC ``patch deployments/scale``, not
        ``patch deployments``), as ``kubectl scale`` does; returns the autoscaling/v1 Scale."""
        ops = [{"op": "replace", "path": "/spec/replicas", "value": replicas}]
        res = self._call(
            "patch",
            f'deployments.apps/scale "{name}" in namespace {namespace}',
            lambda: self.apps.patch_namespaced_deployment_scale(
                name, namespace, ops, _content_type=JSON_PATCH, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return dict(self._plain(res))

    def list_hpas(self, namespace: str) -> list[dict[str, Any]]:
        """autoscaling/v2 HorizontalPodAutoscalers: one targeting a Deployment owns its replicas."""
        res = self._call(
            "list",
            f"horizontalpodautoscalers.autoscaling in namespace {namespace}",
            lambda: self.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return [self._plain(h) for h in res.items]

    def get_service(self, namespace: str, name: str) -> dict[str, Any]:
        res = self._call(
            "get",
            f'services "{name}" in namespace {namespace}',
            lambda: self.core.read_namespaced_service(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return dict(self._plain(res))

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any]:
        res = self._call(
            "get",
            f'configmaps "{name}" in namespace {namespace}',
            lambda: self.core.read_namespaced_config_map(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return dict(self._plain(res))

    def create_event(
        self,
        *,
        namespace: str,
        involved: dict[str, Any],
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """A core/v1 Event on the object, so ``kubectl describe`` tells the story.
        Best effort: an event that cannot be written is logged, never fatal."""
        now = datetime.now(UTC)
        meta = involved.get("metadata", {})
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{meta.get('name', 'canaryctl')}.{time.time_ns():x}", namespace=namespace
            ),
            involved_object=client.V1ObjectReference(
                api_version=involved.get("apiVersion"),
                kind=involved.get("kind", "VirtualService"),
                name=meta.get("name"),
                namespace=namespace,
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=client.V1EventSource(component="canaryctl"),
            reporting_component="canaryctl",
            reporting_instance=os.environ.get("HOSTNAME", "canaryctl"),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self._call(
                "create",
                f"events in namespace {namespace}",
                lambda: self.core.create_namespaced_event(
                    namespace, body, _request_timeout=REQUEST_TIMEOUT
                ),
                retry=False,
            )
        except Exception as exc:
            log.warning("event.failed", reason=reason, error=str(exc))

    # --- leases -----------------------------------------------------------------------------
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            res = self._call(
                "get",
                f'leases.coordination.k8s.io "{name}" in namespace {namespace}',
                lambda: self.coordination.read_namespaced_lease(
                    name, namespace, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        except NotFoundError:
            return None
        return dict(self._plain(res))

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        res = self._call(
            "create",
            f"leases.coordination.k8s.io in namespace {namespace}",
            lambda: self.coordination.create_namespaced_lease(
                namespace,
                body,  # type: ignore[arg-type]
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return dict(self._plain(res))

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the resourceVersion read before: 409 when someone else renewed it."""
        res = self._call(
            "update",
            f'leases.coordination.k8s.io "{name}" in namespace {namespace}',
            lambda: self.coordination.replace_namespaced_lease(
                name,
                namespace,
                body,  # type: ignore[arg-type]
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return dict(self._plain(res))
