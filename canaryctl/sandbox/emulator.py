"""A Kubernetes API emulator strict enough to test canaryctl against, served over real HTTP.

kmock's ``KubernetesEmulator`` is a lenient in-memory store: no resourceVersion, no conflicts,
every PATCH body deep-merged whatever its content type, a history of versions per object. A
controller whose correctness rests on optimistic concurrency (docs/architecture.md, "Writes to
the VirtualService") would pass every test against it and still lose updates on a cluster.
``StrictEmulator`` keeps kmock's HTTP plumbing and discovery endpoints and answers resource
requests itself, with the state and rules of ``_store.py``/``_api.py``. On top it offers what
tests need from "the cluster": a log of writes, injected faults, and an RBAC allow-list.

Resource URLs are parsed here, not by kmock: kmock 0.8 fails on ``/api/v1/namespaces`` (500) and
reads ``/api/v1/namespaces/x`` as a request inside namespace x. kmock's ``objects`` store stays
empty (and kmock's own watch streams none of our objects), so watches are served here too:
``?watch=true&resourceVersion=RV`` streams ``{"type", "object"}`` lines for every change after
RV, and answers a resourceVersion older than the kept history (``ObjectStore.compact``) with an
``ERROR`` event holding a 410 ``Expired`` Status, as a real API server does.

``EmulatorServer`` runs it on loopback, in a thread with its own event loop, so the synchronous
``kubernetes`` client and subprocesses can use it like a cluster.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from canaryctl.sandbox import _api
from canaryctl.sandbox._api import ApiError, Kind, Obj
from canaryctl.sandbox._loopback import LoopbackServer
from canaryctl.sandbox._store import ObjectStore

__all__ = ["EmulatorServer", "Kind", "StrictEmulator", "WriteRecord"]

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "istio-system")
DEFAULT_USER = "system:serviceaccount:default:canaryctl"
_NOT_FOUND = ApiError(404, "NotFound", "the server could not find the requested resource")
WATCH_TIMEOUT = 1800.0  # seconds a watch lasts when the client gives no timeoutSeconds
WATCH_POLL = 0.02  # seconds between looks for changes


@dataclass(frozen=True)
class WriteRecord:
    """One mutating request as answered: what tests assert "zero writes" and patch shapes on."""

    method: str
    path: str
    content_type: str
    status: int
    body: Any  # the decoded JSON body (None if absent or not JSON)
    dry_run: bool = False
    applied: bool = False  # carried out although answered with an injected error

    @property
    def landed(self) -> bool:
        """The write changed the store (whatever the client was told)."""
        return self.status < 300 or self.applied


@dataclass
class _Fault:
    method: str | None
    pattern: re.Pattern[str]
    status: int | None
    remaining: int
    delay: float
    body: dict[str, Any] | None
    applied: bool = False


def _fault_answer(fault: _Fault) -> aiohttp.web.Response:
    assert fault.status is not None
    reason = _api.REASONS.get(fault.status, "InternalError")
    error = ApiError(fault.status, reason, f"injected fault: {fault.status} {reason}")
    return aiohttp.web.json_response(fault.body or error.status(), status=fault.status)


@attrs.define(kw_only=True)
class StrictEmulator(kmock.KubernetesEmulator):
    """The API-server behaviour canaryctl relies on. Thread-safe: tests read while it serves."""

    user: str = DEFAULT_USER  # who RBAC denials name
    store: ObjectStore = attrs.field(factory=ObjectStore)
    # Not `_lock`: kmock's own asyncio lock has that name.
    _guard: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _writes: builtins.list[WriteRecord] = attrs.field(factory=list, init=False)
    _faults: builtins.list[_Fault] = attrs.field(factory=list, init=False)
    _rbac: frozenset[tuple[str, str, str]] | None = attrs.field(default=None, init=False)
    closing: threading.Event = attrs.field(factory=threading.Event, init=False)  # ends watches

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in _api.BUILTIN_KINDS:
            self.register_kind(kind)
        self.store.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            for name in DEFAULT_NAMESPACES
        )

    def register_kind(self, kind: Kind) -> None:
        """Serve one more resource, and list it in discovery."""
        self.store.register_kind(kind)
        for version in kind.versions:
            self.resources[kmock.resource(kind.group, version, kind.plural)] = kmock.ResourceInfo(
                kind=kind.kind,
                namespaced=kind.namespaced,
                verbs={"get", "list", "create", "update", "patch", "delete"},
                subresources=set(kind.subresources),
            )

    # --- fault injection, RBAC, the writes log (any thread) ------------------------------

    def inject(
        self,
        method: str | None,
        path_regex: str,
        status: int | None,
        times: int = 1,
        delay: float = 0.0,
        body: dict[str, Any] | None = None,
        applied: bool = False,
    ) -> None:
        """Make the next ``times`` matching requests wait ``delay`` s, then fail with ``status``.

        ``method`` None matches any method; ``path_regex`` is searched in the URL path. With
        ``status`` None the request is only delayed, then served. ``body`` replaces the default
        ``Status`` body (reason from the code, message "injected fault"). With ``applied`` the
        request is carried out first and only its answer is the error: a real API server's
        504 "request did not complete within the allotted timeout" after etcd has committed
        the write, or a proxy losing the answer.
        """
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        pattern = re.compile(path_regex)
        fault = _Fault(
            method.upper() if method else None, pattern, status, times, delay, body, applied
        )
        with self._guard:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop every pending injected fault."""
        with self._guard:
            self._faults.clear()

    def set_rbac(
        self, rules: Iterable[tuple[str, str, str]] | None, user: str | None = None
    ) -> None:
        """Allow only these (verb, group, resource) triples ("*" matches any); None allows all.

        Subresources are named like ``deployments/status``. A denial answers 403 with the real
        server's message. Discovery (``/api``, ``/apis``) stays allowed, as for any user.
        """
        with self._guard:
            self._rbac = None if rules is None else frozenset(rules)
            if user is not None:
                self.user = user

    @property
    def writes(self) -> builtins.list[WriteRecord]:
        """Every mutating request so far, in order (a copy)."""
        with self._guard:
            return builtins.list(self._writes)

    def clear_writes(self) -> None:
        """Forget the writes so far (e.g. after test setup)."""
        with self._guard:
            self._writes.clear()

    # --- HTTP -----------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        method = raw.method.upper()
        content_type = raw.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        response: aiohttp.web.StreamResponse | None = None
        applied = False
        try:
            response, applied = await self._serve(raw, method, content_type, bool(body), data)
            return response
        finally:
            if method in MUTATING_METHODS:
                record = WriteRecord(
                    method=method,
                    path=raw.path,
                    content_type=content_type,
                    status=response.status if response is not None else 500,
                    body=data,
                    dry_run="dryRun" in raw.query,
                    applied=applied,
                )
                with self._guard:
                    self._writes.append(record)

    async def _serve(
        self,
        raw: aiohttp.web.BaseRequest,
        method: str,
        content_type: str,
        has_body: bool,
        data: Any,
        faults: bool = True,
    ) -> tuple[aiohttp.web.StreamResponse, bool]:
        """The answer, and whether an injected fault replaced the answer of a request that
        was nevertheless carried out. ``faults`` False: serve it as if none was injected."""
        fault = self._take_fault(method, raw.path) if faults else None
        if fault is not None:
            served = None
            if fault.applied:
                served, _ = await self._serve(raw, method, content_type, has_body, data, False)
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                return _fault_answer(fault), served is not None and served.status < 300
            if served is not None:
                return served, False
        if raw.path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok"), False
        target = _api.parse_resource_url(raw.path)
        if target is None and method == "GET":  # discovery (/api, /apis/..., /version): kmock's
            return await super().__call__(raw), False
        if target is None:  # kmock would treat a write here as one to its own (unused) store
            return aiohttp.web.json_response(_NOT_FOUND.status(), status=404), False
        try:
            if method == "GET" and raw.query.get("watch") in ("true", "1"):
                return await self._watch(raw, target), False
            if has_body and data is None:
                raise ApiError(400, "BadRequest", "the request body is not valid JSON")
            payload, code = self._dispatch(method, target, dict(raw.query), content_type, data)
        except ApiError as exc:
            payload, code = exc.status(), exc.code
        return aiohttp.web.json_response(payload, status=code), False

    async def _watch(
        self, raw: aiohttp.web.BaseRequest, target: _api.ResourceUrl
    ) -> aiohttp.web.StreamResponse:
        """A watch: changes after ``resourceVersion`` (unset or "0": the current objects as
        ADDED first), one JSON line each, until ``timeoutSeconds`` or the client leaves."""
        kind = self.store.kind_at(target.group, target.version, target.plural)
        if target.name or (target.namespace is not None and not kind.namespaced):
            raise _NOT_FOUND
        self._authorize("watch", kind, target)
        api_version = kind.api_version(target.version)
        try:
            since = int(raw.query.get("resourceVersion") or 0)
            timeout = float(raw.query.get("timeoutSeconds") or WATCH_TIMEOUT)
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid resourceVersion or timeoutSeconds") from None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        changes: builtins.list[tuple[str, Obj]] = []
        if since == 0:
            since = self.store.resource_version()
            listed = self.store.list(kind, target.namespace, api_version)["items"]
            changes = [("ADDED", obj) for obj in listed]
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                for change, obj in changes:
                    line = json.dumps({"type": change, "object": obj}) + "\n"
                    await response.write(line.encode())
                    since = max(since, int(obj["metadata"]["resourceVersion"]))
                if asyncio.get_running_loop().time() >= deadline or self.closing.is_set():
                    break
                await asyncio.sleep(WATCH_POLL)
                changes = self.store.changes(kind, target.namespace, since, api_version)
        except ApiError as exc:  # too old: the client must list again
            line = json.dumps({"type": "ERROR", "object": exc.status()}) + "\n"
            await response.write(line.encode())
        except ConnectionResetError:  # the client left
            return response
        await response.write_eof()
        return response

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._guard:
            for fault in self._faults:
                if fault.method in (None, method) and fault.pattern.search(path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _dispatch(
        self,
        method: str,
        target: _api.ResourceUrl,
        query: dict[str, str],
        content_type: str,
        data: Any,
    ) -> tuple[Any, int]:
        kind = self.store.kind_at(target.group, target.version, target.plural)
        scoped_ok = kind.namespaced == (target.namespace is not None)
        if (target.name or method == "POST") and not scoped_ok:
            raise _NOT_FOUND
        if target.subresource and target.subresource not in kind.subresources:
            raise _NOT_FOUND
        verb = _api.rbac_verb(method, target, query)
        self._authorize(verb, kind, target)
        api_version = kind.api_version(target.version)
        dry_run = "dryRun" in query
        ns, name = target.namespace, target.name
        if target.subresource == "scale" and name:
            if verb not in ("get", "update", "patch"):
                raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported on scale")
            body = None if verb == "get" else data
            patch_type = content_type if verb == "patch" else None
            return self.store.scale(kind, ns, name, body=body, content_type=patch_type), 200
        match verb:
            case "list":
                return self.store.list(
                    kind,
                    ns,
                    api_version,
                    label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"),
                ), 200
            case "create" if name is None:
                return self.store.create(kind, ns, data, api_version, dry_run=dry_run), 201
            case "get" if name:
                return self.store.get(kind, ns, name, api_version), 200
            case "update" | "patch" if name:
                result = self.store.write(
                    kind,
                    ns,
                    name,
                    api_version,
                    body=data,
                    content_type=content_type if verb == "patch" else None,
                    subresource=target.subresource,
                    dry_run=dry_run,
                )
                return result, 200
            case "delete" if name:
                return self.store.delete(kind, ns, name, data, dry_run=dry_run), 200
        raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported by the sandbox emulator")

    def _authorize(self, verb: str, kind: Kind, target: _api.ResourceUrl) -> None:
        with self._guard:
            rules, user = self._rbac, self.user
        if rules is None:
            return
        resource = f"{kind.plural}/{target.subresource}" if target.subresource else kind.plural
        for rule_verb, rule_group, rule_resource in rules:
            if (
                rule_verb in (verb, "*")
                and rule_group in (kind.group, "*")
                and rule_resource in (resource, "*")
            ):
                return
        subject = f'{kind.qualified} "{target.name}"' if target.name else kind.qualified
        scope = f'the namespace "{target.namespace}"' if target.namespace else "the cluster scope"
        where = f" in {scope}" if target.namespace else f" at {scope}"
        raise ApiError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{kind.group}"{where}',
            {"name": target.name or "", "group": kind.group, "kind": kind.plural},
        )


class EmulatorServer(LoopbackServer):
    """A ``StrictEmulator`` on 127.0.0.1:<free port>, served by a background thread.

    The thread owns its own event loop, so synchronous callers (the ``kubernetes`` client, the
    CLI in a subprocess, test code) talk plain HTTP to it without touching asyncio.
    """

    def __init__(self, emulator: StrictEmulator | None = None, *, host: str = "127.0.0.1") -> None:
        self.emulator = emulator if emulator is not None else StrictEmulator()
        super().__init__(self.emulator, name="the Kubernetes API emulator", host=host)

    def __exit__(self, *_exc: object) -> None:
        self.emulator.closing.set()  # open watches end before the server stops
        time.sleep(3 * WATCH_POLL)
        super().__exit__()

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """A kubeconfig (context ``sandbox``) pointing at this server, with a fake token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sandbox",
                    "cluster": {"server": self.url, "insecure-skip-tls-verify": True},
                }
            ],
            "users": [{"name": "sandbox", "user": {"token": "sandbox-token"}}],
            "contexts": [
                {
                    "name": "sandbox",
                    "context": {"cluster": "sandbox", "user": "sandbox", "namespace": namespace},
                }
            ],
            "current-context": "sandbox",
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # --- the emulator's direct access, for setup and assertions ---------------------------

    def apply(self, objs: Iterable[Obj | None]) -> builtins.list[Obj]:
        """Create or replace parsed manifests (not recorded as writes)."""
        return self.emulator.store.apply(objs)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        """The object as ``api_version`` serves it, or None."""
        return self.emulator.store.read(api_version, kind, namespace, name)

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> builtins.list[Obj]:
        """Objects of a kind in one namespace, or in all."""
        return self.emulator.store.read_all(api_version, kind, namespace)

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Remove an object behind the clients' backs; False if it did not exist."""
        return self.emulator.store.remove(api_version, kind, namespace, name)

    def set_deployment_available(self, namespace: str, name: str, available: bool) -> Obj:
        """Mark all replicas of a Deployment ready (or none), as its controller would."""
        return self.emulator.store.set_deployment_available(namespace, name, available)

    @property
    def writes(self) -> builtins.list[WriteRecord]:
        """Every mutating request so far, in order."""
        return self.emulator.writes

    def clear_writes(self) -> None:
        """Forget the writes so far."""
        self.emulator.clear_writes()

    def inject(
        self,
        method: str | None,
        path_regex: str,
        status: int | None,
        times: int = 1,
        delay: float = 0.0,
        body: dict[str, Any] | None = None,
        applied: bool = False,
    ) -> None:
        """See ``StrictEmulator.inject``."""
        self.emulator.inject(method, path_regex, status, times, delay, body, applied)

    def clear_faults(self) -> None:
        """Drop every pending injected fault."""
        self.emulator.clear_faults()

    def set_rbac(
        self, rules: Iterable[tuple[str, str, str]] | None, user: str | None = None
    ) -> None:
        """See ``StrictEmulator.set_rbac``."""
        self.emulator.set_rbac(rules, user)
