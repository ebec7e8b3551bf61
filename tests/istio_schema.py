"""Check VirtualServices the way a real API server would, from Istio's own CRD (tests only).

The schema is read once from the pinned copy ``tests/data/istio/crd-networking.gen.yaml`` (see
that directory's README for its provenance). A Kubernetes API server checks a custom resource in
four ways, and so does ``virtual_service_errors``:

1. The structural OpenAPI v3 schema: types, ``required``, ``enum``, ``minimum``/``maximum`` and
   the ``oneOf``/``anyOf``/``not`` Istio uses for "at most one of exact/prefix/regex". Checked
   with ``jsonschema``'s Draft 4 validator (Kubernetes' ``JSONSchemaProps`` is Draft 4 based),
   after turning ``nullable: true`` into "null is also accepted" as the server does. Formats
   (``int32``, ``double``...) are not string formats the server validates, so they are ignored.
2. ``x-kubernetes-validations`` (CEL). The CRD only uses ``duration(self) >= duration('1ms')``,
   implemented here; any other rule raises ``NotImplementedError`` so that a newer CRD cannot
   silently weaken the tests.
3. Unknown fields. The schema has no ``additionalProperties: false``: the server *prunes*
   unknown fields (silently drops them; only ``status`` has
   ``x-kubernetes-preserve-unknown-fields``), or rejects them with ``fieldValidation=Strict``
   (kubectl's default). A pruned field is a lost write, so ``strict=True`` (the default)
   reports them; ``strict=False`` checks only what the schema itself enforces.
4. ObjectMeta: labels and annotations are string -> string maps with qualified-name keys.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ISTIO_DIR = Path(__file__).resolve().parent / "data" / "istio"
CRD_FILE = ISTIO_DIR / "crd-networking.gen.yaml"
VERSIONS = ("v1", "v1beta1", "v1alpha3")

_DURATION_RULE = "duration(self) >= duration('1ms')"
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9}
_NANOS |= {"m": 60 * 10**9, "h": 3600 * 10**9}
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class VirtualServiceInvalid(AssertionError):
    """The object would be rejected (or silently pruned) by the API server."""


def go_duration_nanos(text: str) -> int:
    """Parse a Go ``time.ParseDuration`` string (what CEL's ``duration()`` accepts)."""
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    if body == "0":
        return 0
    total, pos = 0.0, 0
    for match in _GO_DURATION.finditer(body):
        number = match.group(1)
        if match.start() != pos or number in ("", "."):
            break
        total += float(number) * _NANOS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f"invalid duration {text!r}")
    return sign * int(total)


_HAS_AT_MOST_ONE = re.compile(
    r"\(has\(self\.(\w+)\) \? 1 : 0\) \+ \(has\(self\.(\w+)\) \? 1 : 0\) <= 1"
)


def _cel(rule: str, value: Any) -> bool:
    """The CEL rules Istio's networking CRDs use; any other rule raises ``NotImplementedError``
    so that a newer CRD cannot silently weaken the tests."""
    if rule == _DURATION_RULE:
        try:
            return go_duration_nanos(str(value)) >= 10**6
        except ValueError:
            return False
    if rule == 'self.all(key, !key.contains("*"))':
        return all("*" not in key for key in value)
    if rule == "self.all(key, key.size() != 0)":
        return all(len(key) != 0 for key in value)
    if rule == '!self.contains("*")':
        return "*" not in value
    if match := _HAS_AT_MOST_ONE.fullmatch(rule):
        return sum(field in value for field in match.groups()) <= 1
    raise NotImplementedError(f"CEL rule not implemented by the test helper: {rule}")


def _x_validations(validator: Any, rules: Any, instance: Any, schema: Any) -> Iterator[Any]:
    for rule in rules:
        if not _cel(rule["rule"], instance):
            yield jsonschema.ValidationError(f"{instance!r}: {rule.get('message', rule['rule'])}")


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-validations": _x_validations}
)


def _nullable(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {k: _nullable(v) for k, v in schema.items()}
        if schema.get("nullable") and isinstance(schema.get("type"), str):
            schema["type"] = [schema["type"], "null"]
        return schema
    if isinstance(schema, list):
        return [_nullable(v) for v in schema]
    return schema


@functools.cache
def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(plural, version) -> openAPIV3Schema of every networking.istio.io CRD."""
    if not CRD_FILE.is_file():
        raise FileNotFoundError(f"Istio CRDs not found at {CRD_FILE} (pinned under tests/data)")
    found = {}
    with CRD_FILE.open() as fh:
        for doc in yaml.load_all(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if doc and doc["spec"]["group"] == "networking.istio.io":
                for v in doc["spec"]["versions"]:
                    key = (doc["spec"]["names"]["plural"], v["name"])
                    found[key] = _nullable(v["schema"]["openAPIV3Schema"])
    if not any(plural == "virtualservices" for plural, _ in found):
        raise LookupError(f"no VirtualService CRD in {CRD_FILE}")
    return found


def crd_schema(plural: str, version: str) -> dict[str, Any]:
    """A copy of the ``openAPIV3Schema`` of ``plural.networking.istio.io/version``."""
    schemas = _schemas()
    if (plural, version) not in schemas:
        known = sorted(v for p, v in schemas if p == plural)
        raise ValueError(f"unknown {plural} version {version!r} (known: {known})")
    return copy.deepcopy(schemas[(plural, version)])


def schema(version: str = "v1") -> dict[str, Any]:
    """A copy of the VirtualService ``openAPIV3Schema`` of ``version``."""
    return crd_schema("virtualservices", version)


def _unknown(obj: Any, node: Mapping[str, Any], path: str) -> Iterator[str]:
    """Paths the API server would prune (structural-schema pruning rules)."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(obj, dict) and node.get("type") == "object":
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        for key, value in obj.items():
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub is None:
                yield f"{path}/{key}"
            else:
                yield from _unknown(value, sub, f"{path}/{key}")
    elif isinstance(obj, list) and isinstance(node.get("items"), dict):
        for index, value in enumerate(obj):
            yield from _unknown(value, node["items"], f"{path}/{index}")


def _metadata_errors(meta: Any) -> Iterator[str]:
    if not isinstance(meta, dict):
        yield "metadata: must be an object"
        return
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if not isinstance(values, dict):
            yield f"metadata.{field}: must be an object"
            continue
        for key, value in values.items():
            prefix, _, name = key.rpartition("/")
            if not isinstance(value, str):
                yield f"metadata.{field}[{key!r}]: value must be a string, got {value!r}"
            if not (len(name) <= 63 and _NAME.fullmatch(name)) or (
                "/" in key and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix))
            ):
                yield f"metadata.{field}[{key!r}]: not a qualified name"


def istio_errors(
    obj: Mapping[str, Any], plural: str, version: str, *, strict: bool = True
) -> list[str]:
    """Everything the API server would reject in an Istio object (and prune, when ``strict``)."""
    root = crd_schema(plural, version)
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _Validator(root).iter_errors(body)
    ]
    errors += _metadata_errors(obj.get("metadata", {}))
    if strict:
        errors += [
            f"{p}: unknown field (pruned by the API server)" for p in _unknown(body, root, "")
        ]
    return errors


def virtual_service_errors(
    obj: Mapping[str, Any], version: str = "v1", *, strict: bool = True
) -> list[str]:
    """Everything the API server would reject in a VirtualService (and prune, when ``strict``)."""
    return istio_errors(obj, "virtualservices", version, strict=strict)


def validate_virtual_service(
    obj: Mapping[str, Any], version: str = "v1", *, strict: bool = True
) -> None:
    """Raise ``VirtualServiceInvalid`` listing every problem of ``obj``."""
    errors = virtual_service_errors(obj, version, strict=strict)
    if errors:
        raise VirtualServiceInvalid(f"VirtualService ({version}) invalid: " + "; ".join(errors))
