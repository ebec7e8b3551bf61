"""The only module that imports ``kubernetes``: builds clients and maps API errors.

Every call goes through ``KubeClient._call`` which retries transient failures (connection
errors, timeouts, 5xx, 429) with tenacity and maps the rest to canaryctl errors: 404 ->
``NotFoundError``, 409 -> ``ConflictError`` (the caller re-reads and recomputes), 401/403 ->
``PermissionDeniedError`` naming the verb and resource, anything else -> ``InfraError``.
The urllib3 retries of the client are switched off so that there is one retry policy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import urllib3

from canaryctl.errors import (
    ClusterUnavailableError,
    ConflictError,
    InfraError,
    NotFoundError,
    PermissionDeniedError,
    TransientError,
    UsageError,
)
from canaryctl.logs import get_logger


def _register_kubernetes_package() -> None:
    """Make ``kubernetes`` importable without running its ``__init__``, which imports every
    subpackage: the dynamic client (with jsonschema), watch, stream (websockets), leader
    election, informers. We use ``config`` and ``client.ApiClient`` only; importing just those
    saves about a third of the package's import time at every command's start. Submodules
    import as usual; a process that imported the whole package before keeps it."""
    if "kubernetes" in sys.modules:
        return
    spec = importlib.util.find_spec("kubernetes")
    if spec is not None and spec.submodule_search_locations is not None:
        sys.modules["kubernetes"] = importlib.util.module_from_spec(spec)


_register_kubernetes_package()

from kubernetes import config  # noqa: E402
from kubernetes.client.api_client import ApiClient  # noqa: E402
from kubernetes.client.configuration import Configuration  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.config.config_exception import ConfigException  # noqa: E402

log = get_logger("canaryctl.kube")
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
    """The API answers JSON objects; anything else is a broken answer."""
    if not isinstance(obj, dict):
        raise ClusterUnavailableError(f"unexpected answer from the API: {type(obj).__name__}")
    return obj


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason or "")
    except (ValueError, TypeError):
        return str(exc.reason or "")


class KubeClient:
    """Typed calls for our few resources, sent as plain JSON through the client's ``ApiClient``
    (kubeconfig, exec/OIDC auth, in-cluster config, TLS), with one error policy. The generated
    per-group API classes are not used: importing them costs most of a second at start-up and
    their models would only be converted back to the dicts the pure modules take."""

    def __init__(self, api_client: ApiClient, *, retry_seconds: float | None = None):
        self.api = api_client
        # Configuration.host looks the proxy settings up in the environment at every call
        self._host = api_client.configuration.host
        self.retry_seconds = _retry_seconds() if retry_seconds is None else retry_seconds
        self._istio_version: str | None = None

    @classmethod
    def connect(cls, *, kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
        """KUBECONFIG / --kubeconfig / --context; in-cluster config when running in a pod."""
        cfg = Configuration()
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
        return cls(ApiClient(configuration=cfg))

    # The generated API classes, for calls not (yet) written as plain requests: each is
    # imported on first use only, so commands that do not use them do not pay for it.
    def _generated(self, name: str) -> Any:
        from kubernetes import client

        return getattr(client, name)(self.api)

    custom = property(lambda self: self._generated("CustomObjectsApi"))
    core = property(lambda self: self._generated("CoreV1Api"))
    apps = property(lambda self: self._generated("AppsV1Api"))
    coordination = property(lambda self: self._generated("CoordinationV1Api"))

    def _plain(self, obj: Any) -> Any:
        """Generated model objects -> plain JSON-like dicts (what the pure modules take)."""
        return self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Any = REQUEST_TIMEOUT,
    ) -> Any:
        """One request; the raw urllib3 response (not read yet: a watch streams it)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _host=self._host,
        )
        resp: Any = self.api.call_api(*request, _request_timeout=timeout)
        if not 200 <= resp.status <= 299:
            text = resp.read().decode("utf-8", "replace")
            raise ApiException.from_response(http_resp=resp, body=text, data=None)
        return resp.response

    def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        raw = self._send(method, path, **kw)
        try:
            return _as_dict(json.loads(raw.data or b"{}"))
        except ValueError as exc:
            raise TransientError(f"{method} {path}: malformed answer: {exc}") from exc

    def _request(
        self, verb: str, resource: str, method: str, path: str, **kw: Any
    ) -> dict[str, Any]:
        """``method path`` (JSON in, JSON out) under the one error policy; ``verb resource``
        name it in errors ("get", 'leases "x" in namespace y')."""
        retry = kw.pop("retry", True)
        return self._call(verb, resource, lambda: self._json(method, path, **kw), retry=retry)

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
        try:  # the first attempt needs no retry machinery (importing it costs start-up time)
            return once()
        except TransientError as exc:
            failed = [exc]  # tenacity's first attempt: logged, waited on, then retried
        from tenacity import (
            RetryCallState,
            Retrying,
            retry_if_exception_type,
            stop_after_delay,
            wait_exponential,
        )

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
                    if failed:
                        raise failed.pop()
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

    # --- paths -----------------------------------------------------------------------------
    @staticmethod
    def _path(
        group_version: str, plural: str, namespace: str | None, name: str | None = None
    ) -> str:
        """``/api/v1/...`` or ``/apis/GROUP/VERSION/...`` of a collection or of one object."""
        root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        where = f"/namespaces/{quote(namespace, safe='')}" if namespace else ""
        return f"{root}{where}/{plural}" + (f"/{quote(name, safe='')}" if name else "")

    def _istio_path(self, plural: str, namespace: str | None, name: str | None = None) -> str:
        version = self.istio_version(namespace or "default")
        return self._path(f"{ISTIO_GROUP}/{version}", plural, namespace, name)

    # --- list + watch (the daemon's cache, cache.py) --------------------------------------
    def api_version_of(self, plural: str, namespace: str | None) -> str:
        """The group/version we read ``plural`` at (Istio's depends on the cluster)."""
        if plural in ("virtualservices", "destinationrules"):
            return f"{ISTIO_GROUP}/{self.istio_version(namespace or 'default')}"
        return {"deployments": "apps/v1", "leases": "coordination.k8s.io/v1"}[plural]

    def list_objects(self, plural: str, namespace: str | None) -> dict[str, Any]:
        """A whole collection, with the resourceVersion a watch continues from."""
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        path = self._path(self.api_version_of(plural, namespace), plural, namespace)
        return self._request("list", f"{plural} {where}", "GET", path)

    def watch_objects(
        self, plural: str, namespace: str | None, *, resource_version: str, timeout: int
    ) -> Iterator[dict[str, Any]]:
        """The changes after ``resource_version`` as ``{"type", "object"}`` events, until the
        server ends the watch (after about ``timeout`` seconds). Opening it follows the one
        error policy; a broken stream raises ``TransientError`` (the caller watches again)."""
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        path = self._path(self.api_version_of(plural, namespace), plural, namespace)
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout,
            "allowWatchBookmarks": "true",
        }

        def open_watch() -> Any:
            try:
                return self._send("GET", path, query=query, timeout=(5.0, timeout + 30.0))
            except ApiException as exc:
                if exc.status == 410:  # some servers refuse a too old version up front
                    return None
                raise

        raw = self._call("watch", f"{plural} {where}", open_watch)
        if raw is None:
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
            return
        buffered = b""
        try:
            for chunk in raw.stream(64 * 1024):
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise TransientError(f"watch {plural} {where}: {type(exc).__name__}: {exc}") from exc
        finally:
            raw.release_conn()

    # --- Istio ------------------------------------------------------------------------------
    def istio_version(self, namespace: str) -> str:
        """networking.istio.io/v1 when served (Istio >= 1.22), else v1beta1."""
        if self._istio_version is None:
            try:
                self._request(
                    "list",
                    "virtualservices.networking.istio.io/v1",
                    "GET",
                    self._path(f"{ISTIO_GROUP}/v1", "virtualservices", namespace),
                    query={"limit": 1},
                )
                self._istio_version = "v1"
            except NotFoundError:
                self._istio_version = "v1beta1"
        return self._istio_version

    def list_istio(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        res = self._request(
            "list", f"{plural}.{ISTIO_GROUP} {where}", "GET", self._istio_path(plural, namespace)
        )
        return list(res.get("items") or [])

    def get_virtual_service(self, namespace: str, name: str) -> dict[str, Any]:
        return self._request(
            "get",
            f'virtualservices.{ISTIO_GROUP} "{name}" in namespace {namespace}',
            "GET",
            self._istio_path("virtualservices", namespace, name),
        )

    def patch_virtual_service(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """One RFC 6902 JSON patch, sent with its own content type (a real API server rejects
        a list body sent as merge-patch)."""
        return self._request(
            "patch",
            f'virtualservices.{ISTIO_GROUP} "{name}" in namespace {namespace}',
            "PATCH",
            self._istio_path("virtualservices", namespace, name),
            body=ops,
            content_type=JSON_PATCH,
        )

    # --- any other routing API (mesh/ routers beyond Istio: Gateway API, ...) ---------------
    # Generic, so that a new router needs no change here: ``group_version`` is "group/version".
    def list_custom(
        self, group_version: str, plural: str, namespace: str | None
    ) -> list[dict[str, Any]]:
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        group = group_version.split("/")[0]
        path = self._path(group_version, plural, namespace)
        res = self._request("list", f"{plural}.{group} {where}", "GET", path)
        return list(res.get("items") or [])

    def get_custom(
        self, group_version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any]:
        group = group_version.split("/")[0]
        path = self._path(group_version, plural, namespace, name)
        what = f'{plural}.{group} "{name}" in namespace {namespace}'
        return self._request("get", what, "GET", path)

    def patch_custom(
        self,
        group_version: str,
        plural: str,
        *,
        namespace: str,
        name: str,
        ops: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """One RFC 6902 JSON patch (sent with its own content type, as for VirtualServices)."""
        group = group_version.split("/")[0]
        return self._request(
            "patch",
            f'{plural}.{group} "{name}" in namespace {namespace}',
            "PATCH",
            self._path(group_version, plural, namespace, name),
            body=ops,
            content_type=JSON_PATCH,
        )

    # --- core / apps ------------------------------------------------------------------------
    def list_deployments(self, namespace: str) -> list[dict[str, Any]]:
        res = self._request(
            "list",
            f"deployments.apps in namespace {namespace}",
            "GET",
            self._path("apps/v1", "deployments", namespace),
        )
        return list(res.get("items") or [])

    # --- clean-up: scaling (finish.py) ---------------------------------------------------------
    def scale_deployment(self, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        """Set replicas through the ``scale`` subresource (RBAC ``patch deployments/scale``, not
        ``patch deployments``), as ``kubectl scale`` does; returns the autoscaling/v1 Scale."""
        ops = [{"op": "replace", "path": "/spec/replicas", "value": replicas}]
        return self._request(
            "patch",
            f'deployments.apps/scale "{name}" in namespace {namespace}',
            "PATCH",
            self._path("apps/v1", "deployments", namespace, name) + "/scale",
            body=ops,
            content_type=JSON_PATCH,
        )

    def list_hpas(self, namespace: str) -> list[dict[str, Any]]:
        """autoscaling/v2 HorizontalPodAutoscalers: one targeting a Deployment owns its replicas."""
        res = self._request(
            "list",
            f"horizontalpodautoscalers.autoscaling in namespace {namespace}",
            "GET",
            self._path("autoscaling/v2", "horizontalpodautoscalers", namespace),
        )
        return list(res.get("items") or [])

    def get_service(self, namespace: str, name: str) -> dict[str, Any]:
        return self._request(
            "get",
            f'services "{name}" in namespace {namespace}',
            "GET",
            self._path("v1", "services", namespace, name),
        )

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any]:
        return self._request(
            "get",
            f'configmaps "{name}" in namespace {namespace}',
            "GET",
            self._path("v1", "configmaps", namespace, name),
        )

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
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = involved.get("metadata", {})
        ref = {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind", "VirtualService"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name', 'canaryctl')}.{time.time_ns():x}",
                "namespace": namespace,
            },
            "involvedObject": {k: v for k, v in ref.items() if v is not None},
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "canaryctl"},
            "reportingComponent": "canaryctl",
            "reportingInstance": os.environ.get("HOSTNAME", "canaryctl"),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._request(
                "create",
                f"events in namespace {namespace}",
                "POST",
                self._path("v1", "events", namespace),
                body=body,
                retry=False,
            )
        except Exception as exc:
            log.warning("event.failed", reason=reason, error=str(exc))

    # --- leases -----------------------------------------------------------------------------
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._request(
                "get",
                f'leases.coordination.k8s.io "{name}" in namespace {namespace}',
                "GET",
                self._path("coordination.k8s.io/v1", "leases", namespace, name),
            )
        except NotFoundError:
            return None

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request(
            "create",
            f"leases.coordination.k8s.io in namespace {namespace}",
            "POST",
            self._path("coordination.k8s.io/v1", "leases", namespace),
            body=body,
        )

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the resourceVersion read before: 409 when someone else renewed it."""
        return self._request(
            "update",
            f'leases.coordination.k8s.io "{name}" in namespace {namespace}',
            "PUT",
            self._path("coordination.k8s.io/v1", "leases", namespace, name),
            body=body,
        )
