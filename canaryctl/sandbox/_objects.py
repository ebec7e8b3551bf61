"""What the API server does to an object's content: patches, validation, selectors, status.

Pure functions over JSON-like dicts, with the real server's status codes on failure (raised as
``ApiError``): the store (``_store.py``) applies them under its lock.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from canaryctl.sandbox._api import ApiError, Kind, Obj, now_rfc3339

# Built-in kinds accept strategic merge patches; custom resources (Istio) answer 415.
STRATEGIC_MERGE_GROUPS = frozenset({"", "apps", "coordination.k8s.io", "events.k8s.io"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def spec_changed(old: Obj, new: Obj) -> bool:
    """Whether ``metadata.generation`` must grow: anything but metadata and status changed."""

    def strip(obj: Obj) -> Obj:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    return strip(old) != strip(new)


# --- label selectors ----------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([\w./-]+)\s*(==|!=|=)\s*([\w.-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*$")


def _split_requirements(selector: str) -> list[str]:
    """Split on commas that are not inside ``in (a, b)`` parentheses."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [part for part in parts if part.strip()]


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Evaluate a ``labelSelector`` query parameter; a malformed one is a 400 like on a cluster."""
    for requirement in _split_requirements(selector):
        if m := _SET_RE.match(requirement):
            key, op, raw_values = m.groups()
            values = {v.strip() for v in raw_values.split(",") if v.strip()}
            if (op == "in") != (labels.get(key) in values):
                return False
        elif m := _CMP_RE.match(requirement):
            key, op, value = m.groups()
            if (op == "!=") == (labels.get(key) == value):
                return False
        elif m := _EXISTS_RE.match(requirement):
            negated, key = m.groups()
            if bool(negated) == (key in labels):
                return False
        else:
            raise ApiError(
                400, "BadRequest", f"unable to parse requirement: {requirement.strip()!r}"
            )
    return True


def field_selector_matches(selector: str, obj: Obj) -> bool:
    """The two field selectors every resource supports: metadata.name and metadata.namespace."""
    meta = obj.get("metadata", {})
    for requirement in _split_requirements(selector):
        m = _CMP_RE.match(requirement)
        if not m or m.group(1) not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{requirement.strip()}"')
        field, op, value = m.groups()
        actual = meta.get(field.split(".", 1)[1], "")
        if (op == "!=") == (actual == value):
            return False
    return True


# --- the deployment controller the sandbox does not have ----------------------------------


def deployment_status(obj: Obj, *, available: bool) -> Obj:
    """The status a deployment controller would write once the pods are (or are not) ready.

    There is no kubelet in the sandbox, so the emulator fills this in for every Deployment.
    """
    replicas = obj.get("spec", {}).get("replicas", 1)
    ready = replicas if available else 0
    now = now_rfc3339()
    status: Obj = {
        "observedGeneration": obj.get("metadata", {}).get("generation", 1),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": "ReplicaSet has successfully progressed.",
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            },
        ],
    }
    if not available and replicas:
        status["unavailableReplicas"] = replicas
    return status


def scale_of(obj: Obj) -> Obj:
    """The autoscaling/v1 Scale the API server serves at ``.../deployments/NAME/scale``."""
    meta = obj["metadata"]
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


# --- writes ----------------------------------------------------------------------------------

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
_ACCEPTED = f"{JSON_PATCH}, {MERGE_PATCH}, application/apply-patch+yaml"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _json_type(value: Any) -> str:
    """How Go's encoding/json names a JSON value's type in its errors."""
    names = {dict: "object", list: "array", str: "string", bool: "bool", int: "number"}
    return names.get(type(value), "number" if isinstance(value, float) else "null")


def apply_patch(kind: Kind, current: Obj, body: Any, content_type: str) -> Obj:
    """Patch ``current`` the way the API server does for this content type (or raise ApiError).

    ``body`` is the decoded JSON body. The status codes are the real server's: a body of the wrong
    shape is a 400, a JSON patch whose ops cannot apply (including a failing ``test``) is a 422, a
    strategic merge patch on a custom resource or an unknown content type is a 415.
    """
    # Imported here: jsonpatch is a dependency of kmock (the sandbox extra), not of canaryctl.
    import jsonpatch
    import jsonpointer

    if content_type == JSON_PATCH:
        if not isinstance(body, list):
            raise ApiError(
                400,
                "BadRequest",
                f"json: cannot unmarshal {_json_type(body)} into Go value of type jsonpatch.Patch",
            )
        try:
            patched = jsonpatch.apply_patch(current, body)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from exc
        except (TypeError, KeyError, AttributeError) as exc:  # malformed op objects
            raise ApiError(422, "Invalid", f"invalid JSON patch operation: {exc!r}") from exc
    elif content_type == MERGE_PATCH or (
        content_type == STRATEGIC_MERGE_PATCH and kind.group in STRATEGIC_MERGE_GROUPS
    ):
        # Strategic merge patches on built-ins are treated as merge patches: the sandbox has no
        # patchMergeKey metadata, and canaryctl never sends them.
        if not isinstance(body, dict):
            raise ApiError(
                400,
                "BadRequest",
                f"json: cannot unmarshal {_json_type(body)} into Go value of type "
                "map[string]interface {}",
            )
        patched = merge_patch(current, body)
    else:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{_ACCEPTED}",
        )
    if not isinstance(patched, dict):
        raise ApiError(422, "Invalid", "the patched object is not a JSON object")
    return patched


def validate_object(kind: Kind, obj: Any, *, name: str | None, namespace: str | None) -> Obj:
    """Reject what a real server cannot decode or would not accept, with its status code.

    ``name``/``namespace`` come from the URL (None on create, where the body names the object).
    """
    if not isinstance(obj, dict):
        raise ApiError(
            400, "BadRequest", f"the body must be a JSON object, not {type(obj).__name__}"
        )
    if obj.get("kind") not in (None, kind.kind):
        raise ApiError(
            400, "BadRequest", f"the kind {obj['kind']!r} does not match the resource {kind.kind!r}"
        )
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise ApiError(400, "BadRequest", "metadata must be a JSON object")
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise ApiError(
                400,
                "BadRequest",
                f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{field} of type "
                "string: every value must be a string",
            )
    if name is not None and meta.get("name", name) != name:
        raise ApiError(
            400,
            "BadRequest",
            f"the name of the object ({meta.get('name')}) does not match the name on the URL "
            f"({name})",
        )
    if namespace is not None and meta.get("namespace", namespace) != namespace:
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    object_name = meta.get("name", name)
    if not object_name or len(object_name) > 253 or not _NAME_RE.match(object_name):
        raise ApiError(
            422,
            "Invalid",
            f'{kind.kind} "{object_name or ""}" is invalid: metadata.name: Invalid value: '
            f"{object_name!r}: a lowercase RFC 1123 subdomain must consist of lower case "
            "alphanumeric characters, '-' or '.'",
            {"name": object_name or "", "group": kind.group, "kind": kind.kind},
        )
    return obj
