"""The emulator's state: what etcd plus the built-in controllers would hold and do.

Kept apart from the HTTP surface (``emulator.py``) so the object lifecycle reads in one place:
one object per group+resource whatever version it is written or read through, a global
resourceVersion bumped on every write, server-owned metadata (uid, creationTimestamp,
generation), the status-subresource rule, and the two controllers the sandbox lacks (namespace
deletion, Deployment availability). Every method is thread-safe: the HTTP handler runs in the
server thread while tests set up and assert from theirs.
"""

from __future__ import annotations

import builtins
import collections
import copy
import random
import string
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from canaryctl.sandbox import _api, _objects
from canaryctl.sandbox._api import ApiError, Kind, Obj

Key = tuple[str, str, str, str]  # group, plural, namespace ("" if cluster-scoped), name
Event = tuple[int, str, Key, "Obj"]  # resourceVersion, ADDED/MODIFIED/DELETED, key, object
# Changes kept for watches that resume from a resourceVersion; older ones are compacted away,
# as etcd does, and a watch from before them is answered 410 Gone (the client must re-list).
WATCH_HISTORY = 20_000

_NOT_FOUND = "the server could not find the requested resource"


class ObjectStore:
    """In-memory objects with API-server semantics; see the module docstring."""

    def __init__(self, kinds: Iterable[Kind] = _api.BUILTIN_KINDS) -> None:
        self.lock = threading.RLock()
        self._kinds: dict[tuple[str, str], Kind] = {}
        self._objects: dict[Key, Obj] = {}
        self._rv = 0
        self._unavailable: set[tuple[str, str]] = set()
        self._events: collections.deque[Event] = collections.deque(maxlen=WATCH_HISTORY)
        self._compacted = 0  # changes up to this resourceVersion are no longer in _events
        for kind in kinds:
            self.register_kind(kind)

    # --- kinds ----------------------------------------------------------------------------

    def register_kind(self, kind: Kind) -> None:
        """Serve one more resource."""
        with self.lock:
            self._kinds[kind.group, kind.plural] = kind

    def kind_at(self, group: str, version: str, plural: str) -> Kind:
        """The resource behind a URL, or the real server's 404."""
        with self.lock:
            kind = self._kinds.get((group, plural))
        if kind is None or version not in kind.versions:
            raise ApiError(404, "NotFound", _NOT_FOUND)
        return kind

    def kind_for(self, api_version: str, kind_name: str) -> Kind:
        """The resource for an ``apiVersion``/``kind`` pair (KeyError if not served)."""
        group, version = _api.split_api_version(api_version)
        with self.lock:
            for kind in self._kinds.values():
                if kind.group == group and kind.kind == kind_name and version in kind.versions:
                    return kind
        raise KeyError(f"{api_version} {kind_name} is not served by the emulator")

    # --- the API verbs (raise ApiError like the server) -----------------------------------

    def get(self, kind: Kind, namespace: str | None, name: str, api_version: str) -> Obj:
        """GET one object."""
        with self.lock:
            return _render(self._existing(kind, namespace, name), api_version)

    def list(
        self,
        kind: Kind,
        namespace: str | None,
        api_version: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj:
        """GET a collection (all namespaces when ``namespace`` is None), as a ``...List``."""
        with self.lock:
            items = []
            for key in sorted(self._objects):
                if key[:2] != (kind.group, kind.plural) or namespace not in (None, key[2]):
                    continue
                obj = self._objects[key]
                labels = obj["metadata"].get("labels") or {}
                if label_selector and not _objects.label_selector_matches(label_selector, labels):
                    continue
                if field_selector and not _objects.field_selector_matches(field_selector, obj):
                    continue
                items.append(_render(obj, api_version))
            return {
                "apiVersion": api_version,
                "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    def create(
        self, kind: Kind, namespace: str | None, data: Any, api_version: str, *, dry_run: bool
    ) -> Obj:
        """POST: a new object; 409 AlreadyExists, 404 if its namespace does not exist."""
        if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
            meta = data["metadata"]
            if not meta.get("name") and meta.get("generateName"):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                meta["name"] = f"{meta['generateName']}{suffix}"
        obj = _objects.validate_object(kind, data, name=None, namespace=namespace)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        if namespace:
            meta["namespace"] = namespace
        with self.lock:
            self._require_namespace(kind, namespace)
            if _key(kind, namespace, meta["name"]) in self._objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{kind.qualified} "{meta["name"]}" already exists',
                    {"name": meta["name"], "group": kind.group, "kind": kind.plural},
                )
            return _render(self._commit(kind, obj, None, dry_run=dry_run), api_version)

    def write(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        api_version: str,
        *,
        body: Any,
        content_type: str | None,
        subresource: str | None,
        dry_run: bool,
    ) -> Obj:
        """PUT (``content_type`` None: ``body`` is the whole object) or PATCH.

        Either way the written object's resourceVersion, when present, is a precondition: a stale
        one answers 409 Conflict. Without one the write is unconditional, as on a real server.
        """
        with self.lock:
            current = self._existing(kind, namespace, name)
            if content_type is not None:
                body = _objects.apply_patch(kind, _render(current, api_version), body, content_type)
            new = _objects.validate_object(kind, body, name=name, namespace=namespace)
            _require_version(kind, name, new["metadata"].get("resourceVersion"), current)
            stored = self._commit(kind, new, current, subresource=subresource, dry_run=dry_run)
            return _render(stored, api_version)

    def scale(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        body: Any,
        content_type: str | None,
    ) -> Obj:
        """The ``scale`` subresource: GET (``body`` None), PUT or PATCH of an autoscaling/v1
        Scale whose ``spec.replicas`` is the object's. Its resourceVersion, when given, is a
        precondition like on the object itself."""
        with self.lock:
            current = self._existing(kind, namespace, name)
            scale = _objects.scale_of(current)
            if body is None:
                return scale
            if content_type is not None:
                body = _objects.apply_patch(kind, scale, body, content_type)
            replicas = (body.get("spec") or {}).get("replicas") if isinstance(body, dict) else None
            if type(replicas) is not int or replicas < 0:
                raise ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                    f"{replicas!r}: must be greater than or equal to 0",
                )
            _require_version(
                kind, name, (body.get("metadata") or {}).get("resourceVersion"), current
            )
            new = copy.deepcopy(current)
            new["spec"]["replicas"] = replicas
            return _objects.scale_of(self._commit(kind, new, current, dry_run=False))

    def delete(
        self, kind: Kind, namespace: str | None, name: str, options: Any, *, dry_run: bool
    ) -> Obj:
        """DELETE, honouring ``preconditions`` in the DeleteOptions body; answers a Status."""
        preconditions = options.get("preconditions") if isinstance(options, dict) else None
        with self.lock:
            meta = self._existing(kind, namespace, name)["metadata"]
            for field in ("resourceVersion", "uid"):
                if (preconditions or {}).get(field) not in (None, meta[field]):
                    raise _conflict(kind, name, f"Precondition failed: {field}")
            if not dry_run:
                self._drop(_key(kind, namespace, name))
                if kind.plural == "namespaces" and not kind.group:  # the namespace controller
                    for key in [k for k in self._objects if k[2] == name]:
                        self._drop(key)
        details = {"name": name, "group": kind.group, "kind": kind.plural, "uid": meta["uid"]}
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    # --- direct access: setup and assertions (no HTTP, not recorded as writes) ------------

    def apply(self, objs: Iterable[Obj | None]) -> builtins.list[Obj]:
        """Create or replace parsed manifests (Namespaces first), as ``kubectl apply`` would."""
        docs = sorted((o for o in objs if o), key=lambda o: o.get("kind") != "Namespace")
        stored = []
        with self.lock:
            for doc in docs:
                kind = self.kind_for(doc.get("apiVersion", ""), doc.get("kind", ""))
                obj = copy.deepcopy(doc)
                meta = obj.setdefault("metadata", {})
                meta.pop("resourceVersion", None)
                namespace = meta.setdefault("namespace", "default") if kind.namespaced else None
                _objects.validate_object(kind, obj, name=None, namespace=namespace)
                self._require_namespace(kind, namespace)
                old = self._objects.get(_key(kind, namespace, meta["name"]))
                stored.append(self._commit(kind, obj, old, dry_run=False))
        return [copy.deepcopy(obj) for obj in stored]

    def read(
        self, api_version: str, kind_name: str, namespace: str | None, name: str
    ) -> Obj | None:
        """The object as ``api_version`` serves it, or None."""
        kind = self.kind_for(api_version, kind_name)
        with self.lock:
            obj = self._objects.get(_key(kind, namespace, name))
            return _render(obj, api_version) if obj else None

    def read_all(
        self, api_version: str, kind_name: str, namespace: str | None = None
    ) -> builtins.list[Obj]:
        """Objects of a kind in one namespace (or all), sorted by namespace and name."""
        kind = self.kind_for(api_version, kind_name)
        return self.list(kind, namespace, api_version)["items"]  # type: ignore[no-any-return]

    def remove(self, api_version: str, kind_name: str, namespace: str | None, name: str) -> bool:
        """Delete without a request (e.g. "someone deleted the VirtualService")."""
        kind = self.kind_for(api_version, kind_name)
        with self.lock:
            return self._drop(_key(kind, namespace, name))

    # --- watch ----------------------------------------------------------------------------

    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    def changes(
        self, kind: Kind, namespace: str | None, since: int, api_version: str
    ) -> builtins.list[tuple[str, Obj]]:
        """(type, object) of every change to ``kind`` (in ``namespace``, or all) after
        resourceVersion ``since``, oldest first; 410 Gone when some were compacted away."""
        with self.lock:
            if since < self._compacted:
                raise ApiError(
                    410, "Expired", f"too old resource version: {since} ({self._compacted})"
                )
            later = []
            for rv, change, key, obj in reversed(self._events):  # newest first: stop at since
                if rv <= since:
                    break
                if key[:2] == (kind.group, kind.plural) and namespace in (None, key[2]):
                    later.append((change, _render(obj, api_version)))
            return later[::-1]

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: watches from before now get
        410 Gone."""
        with self.lock:
            self._events.clear()
            self._compacted = self._rv

    def set_deployment_available(self, namespace: str, name: str, available: bool) -> Obj:
        """Play the deployment controller: all replicas ready, or none; bumps the RV."""
        kind = self.kind_for("apps/v1", "Deployment")
        with self.lock:
            old = self._objects.get(_key(kind, namespace, name))
            if old is None:
                raise KeyError(f"deployment {namespace}/{name} not found")
            if available:
                self._unavailable.discard((namespace, name))
            else:
                self._unavailable.add((namespace, name))
            return copy.deepcopy(self._commit(kind, old, old, dry_run=False))

    # --- the object lifecycle -------------------------------------------------------------

    def _existing(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        obj = self._objects.get(_key(kind, namespace, name))
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{kind.qualified} "{name}" not found',
                {"name": name, "group": kind.group, "kind": kind.plural},
            )
        return obj

    def _require_namespace(self, kind: Kind, namespace: str | None) -> None:
        if kind.namespaced and ("", "namespaces", "", namespace) not in self._objects:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )

    def _commit(
        self,
        kind: Kind,
        new: Obj,
        old: Obj | None,
        *,
        subresource: str | None = None,
        dry_run: bool,
    ) -> Obj:
        """Store ``new`` in place of ``old``: server-owned metadata, generation, status rules."""
        new = copy.deepcopy(new)
        if old is not None and kind.status_subresource:
            if subresource == "status":  # only the status changes through /status ...
                new = {**copy.deepcopy(old), "status": new.get("status")}
            elif "status" in old:  # ... and never through the main resource
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        new["apiVersion"], new["kind"] = kind.api_version(), kind.kind
        meta = new["metadata"]
        if not kind.namespaced:
            meta.pop("namespace", None)
        if old is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_api.now_rfc3339(), generation=1)
            if kind.plural == "namespaces" and not kind.group:
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
                new["status"] = {"phase": "Active"}
        else:
            old_meta = old["metadata"]
            meta.update(uid=old_meta["uid"], creationTimestamp=old_meta["creationTimestamp"])
            meta["generation"] = old_meta["generation"] + int(_objects.spec_changed(old, new))
        if (kind.group, kind.plural) == ("apps", "deployments") and subresource != "status":
            available = (meta.get("namespace"), meta["name"]) not in self._unavailable
            new["status"] = _objects.deployment_status(new, available=available)
        if dry_run:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"] if old else ""
            return new
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        key = _key(kind, meta.get("namespace"), meta["name"])
        self._objects[key] = new
        self._record("ADDED" if old is None else "MODIFIED", key, new)
        return new

    def _drop(self, key: Key) -> bool:
        """Delete a stored object; its DELETED change gets a new resourceVersion."""
        obj = self._objects.pop(key, None)
        if obj is None:
            return False
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._record("DELETED", key, obj)
        return True

    def _record(self, change: str, key: Key, obj: Obj) -> None:
        if len(self._events) == self._events.maxlen:
            self._compacted = self._events[0][0]
        self._events.append((self._rv, change, key, copy.deepcopy(obj)))


def _key(kind: Kind, namespace: str | None, name: str) -> Key:
    return (kind.group, kind.plural, (namespace or "") if kind.namespaced else "", name)


def _render(obj: Obj, api_version: str) -> Obj:
    """A copy as served under ``api_version``: the server converts between versions."""
    rendered = copy.deepcopy(obj)
    rendered["apiVersion"] = api_version
    return rendered


def _require_version(kind: Kind, name: str, wanted: Any, current: Obj) -> None:
    """A resourceVersion in the written object is a precondition: stale -> 409 Conflict."""
    if wanted and wanted != current["metadata"]["resourceVersion"]:
        raise _conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version "
            "and try again",
        )


def _conflict(kind: Kind, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": {why}',
        {"name": name, "group": kind.group, "kind": kind.plural},
    )
