"""The daemon's reads from memory: list + watch, as client-go's informers do.

A reconcile pass reads every VirtualService, and for each due rollout its DestinationRules,
Deployments and Lease. Asked of the API server, that is several requests per rollout per tick
(docs/scale.md). The daemon instead lists each of those resources once, then watches them from
the list's resourceVersion; every reconcile read is answered from memory. A watch that ends is
resumed from the last resourceVersion seen; one answered 410 Gone (the server no longer has the
history) lists again.

Writes are not cached: they go to the API server as before, each guarded by the
resourceVersion read (from the cache, now), so a stale cache can cost a 409, never a lost
update. A 409 makes the next read of that object a live GET; a successful write is stored at
once, so the next read sees it even before its watch event arrives. Until every watch has
synced (or for a namespace the cache does not hold) reads go to the API server.
"""

from __future__ import annotations

import json
import threading
from typing import Any, TypeVar

from canaryctl.errors import CanaryctlError, ConflictError, NotFoundError
from canaryctl.kube import KubeClient
from canaryctl.logs import get_logger

log = get_logger("canaryctl.cache")
T = TypeVar("T")
WATCH_SECONDS = 300  # the server ends each watch about this often; we resume it
SYNC_SECONDS = 60.0  # how long start() waits for the first lists
PLURALS = ("virtualservices", "destinationrules", "deployments", "leases")


def _copy(obj: T) -> T:
    """A deep copy of JSON data (a few times faster than ``copy.deepcopy``)."""
    copied: T = json.loads(json.dumps(obj))
    return copied


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


class Informer:
    """One resource in one namespace (or all), kept current by list + watch in a thread."""

    def __init__(self, kube: KubeClient, plural: str, namespace: str | None) -> None:
        self.kube = kube
        self.plural = plural
        self.namespace = namespace
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, dict[str, Any]]] = {}  # namespace -> name -> object
        self._thread = threading.Thread(target=self._run, name=f"watch {plural}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def items(self, namespace: str | None) -> list[dict[str, Any]]:
        """Copies (callers may change what they get), sorted by namespace and name."""
        with self._lock:
            spaces = sorted(self._objects) if namespace is None else [namespace]
            found = [obj for ns in spaces for _, obj in sorted(self._objects.get(ns, {}).items())]
        return _copy(found)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get(namespace, {}).get(name)
        return _copy(obj) if obj is not None else None

    def store(self, obj: dict[str, Any], *, deleted: bool = False) -> None:
        """Keep ``obj`` unless what we hold is newer (a write's answer can race its event)."""
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        with self._lock:
            space = self._objects.setdefault(ns, {})
            held = space.get(name)
            if held is not None and _rv(held) > _rv(obj):
                return
            if deleted:
                space.pop(name, None)
            else:
                space[name] = obj

    def _list(self) -> str:
        listed = self.kube.list_objects(self.plural, self.namespace)
        objects: dict[str, dict[str, dict[str, Any]]] = {}
        for obj in listed.get("items") or []:
            meta = obj["metadata"]
            objects.setdefault(meta.get("namespace", ""), {})[meta["name"]] = obj
        with self._lock:
            self._objects = objects
        self.synced.set()
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def _run(self) -> None:
        version = ""
        while not self.stopped.is_set():
            try:
                version = version or self._list()
                version = self._watch(version)
            except CanaryctlError as exc:  # the API server is unreachable: try again shortly
                log.warning("watch.failed", resource=self.plural, error=exc.message)
                self.stopped.wait(2.0)

    def _watch(self, version: str) -> str:
        """Apply changes after ``version``; the version to resume from ("": list again)."""
        for event in self.kube.watch_objects(
            self.plural, self.namespace, resource_version=version, timeout=WATCH_SECONDS
        ):
            if self.stopped.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                log.info("watch.expired", resource=self.plural, status=obj.get("code"))
                return ""  # 410 Gone (or another error): list again
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.store(obj, deleted=kind == "DELETED")
        return version


class CachedKube(KubeClient):
    """``KubeClient`` whose reads of the informers' resources come from memory (see module
    docstring). ``start`` begins watching; before that it behaves as ``KubeClient``."""

    def __init__(self, api_client: Any, *, retry_seconds: float | None = None) -> None:
        super().__init__(api_client, retry_seconds=retry_seconds)
        self.informers: dict[str, Informer] = {}
        self._stale: set[tuple[str, str]] = set()  # VirtualServices whose write got a 409

    def start(self, namespace: str | None) -> None:
        """Watch ``PLURALS`` in ``namespace`` (None: all); wait for their first lists."""
        self.informers = {p: Informer(self, p, namespace) for p in PLURALS}
        for informer in self.informers.values():
            informer.start()
        for informer in self.informers.values():
            if not informer.synced.wait(SYNC_SECONDS):
                log.warning("watch.not_synced", resource=informer.plural)

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stopped.set()

    def _cached(self, plural: str, namespace: str | None) -> Informer | None:
        informer = self.informers.get(plural)
        if informer is None or not informer.synced.is_set():
            return None
        return informer if informer.namespace in (None, namespace) else None

    # --- reads ------------------------------------------------------------------------------
    def list_istio(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        informer = self._cached(plural, namespace)
        if informer is None:
            return super().list_istio(plural, namespace)
        return informer.items(namespace)

    def get_virtual_service(self, namespace: str, name: str) -> dict[str, Any]:
        informer = self._cached("virtualservices", namespace)
        if informer is None or (namespace, name) in self._stale:
            vs = super().get_virtual_service(namespace, name)
            self._stale.discard((namespace, name))
            if informer is not None:
                informer.store(vs)
            return vs
        cached = informer.get(namespace, name)
        if cached is None:
            raise NotFoundError(f'virtualservices "{name}" not found')
        return cached

    def list_deployments(self, namespace: str) -> list[dict[str, Any]]:
        informer = self._cached("deployments", namespace)
        if informer is None:
            return super().list_deployments(namespace)
        return informer.items(namespace)

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self._cached("leases", namespace)
        if informer is None:
            return super().get_lease(namespace, name)
        return informer.get(namespace, name)

    # --- writes: to the API server, then into the cache -------------------------------------
    def patch_virtual_service(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        try:
            written = super().patch_virtual_service(namespace, name, ops)
        except ConflictError:
            self._stale.add((namespace, name))  # re-read it from the API server
            raise
        self._keep("virtualservices", written)
        return written

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._keep("leases", super().create_lease(namespace, body))

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._keep("leases", super().replace_lease(namespace, name, body))
        except ConflictError:
            lease = KubeClient.get_lease(self, namespace, name)  # someone else wrote it
            if lease is not None:
                self._keep("leases", lease)
            raise

    def _keep(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        informer = self.informers.get(plural)
        if informer is not None:
            informer.store(_copy(obj))
        return obj
