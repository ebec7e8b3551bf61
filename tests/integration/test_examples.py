"""The manifests under ``examples/`` are what a cluster accepts, and the canaryctl ones are
least-privilege and hardened.

Every YAML document under ``examples/`` that is a Kubernetes object (has ``apiVersion`` and
``kind``; ``kustomization.yaml`` files are skipped, and so is ``ci/github-actions.yaml``, which
has neither) is checked the way an API server would check it, offline:

- built-in kinds with ``kubernetes_validate`` against the Kubernetes 1.30 OpenAPI schemas it ships
  in its wheel (strict: an unknown field fails, as ``kubectl apply``'s strict field validation
  would reject it);
- Istio kinds against the ``openAPIV3Schema`` of Istio's own CRDs in
  ``tests/data/istio`` (a pinned copy): VirtualServices with the shared helper
  ``tests/istio_schema.py``, DestinationRules and Gateways with the small loader below;
- Argo CD's ``Application`` and Flux's ``Kustomization`` (``gitops/``), whose CRDs are not
  available offline, with the small structural check ``tests/gitops_shape.py``.

The validation tests run with sockets disabled, so a schema that would be fetched from the
network fails instead of passing slowly. The rest pins down what the examples promise: the
CronJob never overlaps and runs ``reconcile``, the RBAC grants exactly what canaryctl calls (no
wildcards), the policy ConfigMap parses, and the containers run as non-root on a read-only root.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer.main
import yaml

from canaryctl.cli import app
from canaryctl.kube import KubeClient
from canaryctl.policy import load_policy, parse_duration, parse_policy_text
from tests import gitops_shape, istio_schema
from tests.gateway_schema import validate_http_route
from tests.istio_schema import validate_virtual_service

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
KUBERNETES_VERSION = "1.30"
ISTIO_GROUP = "networking.istio.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
ISTIO_PLURALS = {
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "Gateway": "gateways",
}

# What canaryctl needs, per KubeClient method (canaryctl/kube.py is the only module that talks to
# the API server): (API group, resource, verb).
CALLS: dict[str, set[tuple[str, str, str]]] = {
    "connect": set(),
    "istio_version": {(ISTIO_GROUP, "virtualservices", "list")},
    "list_istio": {
        (ISTIO_GROUP, "virtualservices", "list"),
        (ISTIO_GROUP, "destinationrules", "list"),
    },
    "get_virtual_service": {(ISTIO_GROUP, "virtualservices", "get")},
    "patch_virtual_service": {(ISTIO_GROUP, "virtualservices", "patch")},
    # the Gateway API router (canaryctl/mesh/gateway.py) reads and patches HTTPRoutes
    "list_custom": {(GATEWAY_GROUP, "httproutes", "list")},
    "get_custom": {(GATEWAY_GROUP, "httproutes", "get")},
    "patch_custom": {(GATEWAY_GROUP, "httproutes", "patch")},
    "list_deployments": {("apps", "deployments", "list")},
    "scale_deployment": {("apps", "deployments/scale", "patch")},
    "list_hpas": {("autoscaling", "horizontalpodautoscalers", "list")},
    "get_service": {("", "services", "get")},
    "get_config_map": {("", "configmaps", "get")},
    "create_event": {("", "events", "create")},
    "get_lease": {("coordination.k8s.io", "leases", "get")},
    "create_lease": {("coordination.k8s.io", "leases", "create")},
    "replace_lease": {("coordination.k8s.io", "leases", "update")},
    "api_version_of": {(ISTIO_GROUP, "virtualservices", "list")},
    "list_objects": {
        (ISTIO_GROUP, "virtualservices", "list"),
        (ISTIO_GROUP, "destinationrules", "list"),
        ("apps", "deployments", "list"),
        ("coordination.k8s.io", "leases", "list"),
    },
    "watch_objects": {
        (ISTIO_GROUP, "virtualservices", "watch"),
        (ISTIO_GROUP, "destinationrules", "watch"),
        ("apps", "deployments", "watch"),
        ("coordination.k8s.io", "leases", "watch"),
    },
}
# Verbs granted on top of those calls: none (least privilege; every rule is needed, as
# tests/faults/test_least_privilege.py shows).
EXTRA_READS: set[tuple[str, str, str]] = set()
# The rules of the CronJob's Role and of the daemon's ClusterRole, exactly.
EXPECTED_RULES = {
    (ISTIO_GROUP, "virtualservices", "get"),
    (ISTIO_GROUP, "virtualservices", "list"),
    (ISTIO_GROUP, "virtualservices", "patch"),
    (ISTIO_GROUP, "destinationrules", "list"),
    (GATEWAY_GROUP, "httproutes", "get"),
    (GATEWAY_GROUP, "httproutes", "list"),
    (GATEWAY_GROUP, "httproutes", "patch"),
    ("apps", "deployments", "list"),
    ("apps", "deployments/scale", "patch"),
    ("autoscaling", "horizontalpodautoscalers", "list"),
    ("", "services", "get"),
    ("", "configmaps", "get"),
    ("", "events", "create"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
}
# The daemon's cache (canaryctl/cache.py) lists and watches what a pass reads.
WATCH_RULES = {
    (ISTIO_GROUP, "virtualservices", "watch"),
    (ISTIO_GROUP, "destinationrules", "watch"),
    ("apps", "deployments", "watch"),
    ("coordination.k8s.io", "leases", "list"),
    ("coordination.k8s.io", "leases", "watch"),
}
LEADER_RULES = {
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
}


# --- loading ---------------------------------------------------------------------------------
def _is_object(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def _load_all() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted([*EXAMPLES.rglob("*.yaml"), *EXAMPLES.rglob("*.yml")]):
        if path.name in ("kustomization.yaml", "kustomization.yml"):
            continue
        with path.open() as fh:
            for index, doc in enumerate(yaml.safe_load_all(fh)):
                if _is_object(doc):
                    docs.append((f"{path.relative_to(EXAMPLES)}#{index}", doc))
    return docs


DOCS = _load_all()


def _objects(folder: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for where, doc in DOCS
        if where.startswith(f"{folder}/") and (kind is None or doc["kind"] == kind)
    ]


def _one(folder: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _objects(folder, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''} in examples/{folder}/: {found}"
    return found[0]


# --- Istio objects: checked like the API server would, from Istio's CRDs ---------------------
def istio_errors(doc: Mapping[str, Any]) -> list[str]:
    """What the API server would reject (or prune) in an Istio object, from its CRD."""
    group, _, version = doc["apiVersion"].partition("/")
    assert group == ISTIO_GROUP, doc["apiVersion"]
    plural = ISTIO_PLURALS.get(doc["kind"])
    assert plural, f"no Istio CRD check for kind {doc['kind']}"
    meta = doc.get("metadata") or {}
    errors = [f"metadata.{f}: required" for f in ("name", "namespace") if not meta.get(f)]
    return errors + istio_schema.istio_errors(doc, plural, version)


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection or resolve a name fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access during schema validation: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --- every manifest is valid -----------------------------------------------------------------
def test_examples_are_found() -> None:
    """The loader finds the examples (a glob that finds nothing would make every check vacuous)
    and skips what is not an API object: kustomization.yaml and the GitHub Actions workflow."""
    where = {w.split("/")[0] for w, _ in DOCS}
    assert {"rest-apl", "rest-apl-mesh", "cronjob", "daemon", "gitops"} <= where
    assert not any(w.startswith("ci/github-actions.yaml") for w, _ in DOCS)
    assert not any(d["apiVersion"].startswith("kustomize.config.k8s.io/") for _, d in DOCS)
    kinds = {d["kind"] for _, d in DOCS}
    assert {"CronJob", "Deployment", "Role", "ClusterRole", "VirtualService"} <= kinds
    assert {"Application", "Kustomization"} <= kinds  # Argo CD's and Flux's (gitops/)


def test_kubernetes_schemas_ship_offline() -> None:
    """kubernetes_validate reads its schemas from its own package (no download): the strict
    1.30 schemas are files in the installed wheel."""
    schemas = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    strict = schemas / f"v{KUBERNETES_VERSION}.0-local-strict"
    assert (strict / "_definitions.json").is_file()
    assert (strict / "cronjob-batch-v1.json").is_file()


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[w for w, _ in DOCS])
def test_manifest_is_valid(where: str, doc: dict[str, Any]) -> None:
    """The object is accepted as written: built-in kinds by the Kubernetes 1.30 OpenAPI schema
    (strict: unknown fields fail), Istio kinds and HTTPRoutes by the openAPIV3Schema of their
    CRD (Istio's; Gateway API v1.6.1)."""
    if gitops_shape.handles(doc):  # no schema offline: the structural check, see its docstring
        assert gitops_shape.gitops_errors(doc) == [], where
        return
    if doc["apiVersion"] == f"{GATEWAY_GROUP}/v1" and doc["kind"] == "HTTPRoute":
        validate_http_route(doc)
        return
    if doc["apiVersion"].startswith(f"{ISTIO_GROUP}/"):
        if doc["kind"] == "VirtualService":
            validate_virtual_service(doc, doc["apiVersion"].partition("/")[2])
        else:
            assert istio_errors(doc) == [], where
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.path))
        pytest.fail(f"{where}: {doc['kind']} invalid at {path or '<root>'}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"{where}: {exc.message}")


def test_istio_check_rejects_bad_objects() -> None:
    """The local Istio check is not vacuous: a misspelled field, a wrong type and a broken CEL
    rule (two TLS credential sources) are all reported."""
    dr = copy.deepcopy(_one("rest-apl", "DestinationRule"))
    dr["spec"]["subsets"][0]["lables"] = dr["spec"]["subsets"][0].pop("labels")
    dr["spec"]["host"] = 7
    errors = istio_errors(dr)
    assert any("lables: unknown field" in e for e in errors), errors
    assert any("host" in e and "string" in e for e in errors), errors
    gw = copy.deepcopy(_one("rest-apl", "Gateway"))
    gw["spec"]["servers"][0]["tls"] = {
        "mode": "SIMPLE",
        "credentialName": "a",
        "credentialNames": ["b"],
    }
    assert any("only one of" in e for e in istio_errors(gw))


@pytest.mark.parametrize("folder", ["cronjob", "daemon"])
def test_kustomization_lists_every_manifest(folder: str) -> None:
    """kustomization.yaml lists exactly the other YAML files of its folder, so that
    `kubectl apply -k` applies everything and nothing is forgotten."""
    base = EXAMPLES / folder
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    files = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == files


# --- CronJob ---------------------------------------------------------------------------------
def _command(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Parse container args with canaryctl's own CLI (without running the command)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    group = typer.main.get_command(app)
    command = group.commands[args[0]]  # type: ignore[attr-defined]
    with command.make_context(args[0], list(args[1:])) as ctx:
        return ctx.params


def test_cronjob_never_overlaps_and_runs_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CronJob runs `canaryctl reconcile -n istio-apl -o json` every minute, forbids
    concurrent Jobs, bounds history and run time, keeps the Istio sidecar out of its pods (so
    the Jobs complete) and runs as the ServiceAccount its RoleBinding grants to."""
    cron = _one("cronjob", "CronJob")
    spec = cron["spec"]
    assert cron["metadata"]["namespace"] == "istio-apl"
    assert spec["schedule"] == "* * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3
    assert spec["failedJobsHistoryLimit"] == 3
    assert 10 <= spec["startingDeadlineSeconds"] < 60
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] <= 300
    pod = job["template"]
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pod["spec"]["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/canaryctl/canaryctl:0.1.0"
    assert container["args"] == ["reconcile", "-n", "istio-apl", "-o", "json"]
    params = _command(container["args"], {}, monkeypatch)
    assert params["namespace"] == "istio-apl"
    assert params["output"] == "json"
    assert params["all_namespaces"] is False

    sa = _one("cronjob", "ServiceAccount")
    assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["metadata"]["namespace"] == "istio-apl"


# --- RBAC ------------------------------------------------------------------------------------
def _grants(role: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    }


def test_no_wildcards_in_any_rbac_rule() -> None:
    """No Role or ClusterRole in examples/ uses "*" for groups, resources, verbs or names, nor
    grants non-resource URLs, escalate, bind or impersonate."""
    roles = [d for _, d in DOCS if d["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in v for v in rule.get(key, [])), (role["metadata"], rule)
            assert "nonResourceURLs" not in rule, rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_rbac_covers_exactly_what_kube_py_calls() -> None:
    """Every API call canaryctl makes (the methods of KubeClient, the only module that talks to
    the API server) is granted, and the grants beyond them are the listed read-only verbs. A new
    KubeClient method fails this test until its permissions are reviewed."""
    methods = {  # properties are the generated API classes, not calls
        n
        for n, v in vars(KubeClient).items()
        if not n.startswith("_") and not isinstance(v, property)
    }
    assert methods == set(CALLS), "KubeClient changed: review examples/*/role RBAC and CALLS"
    needed = set().union(*CALLS.values())
    assert needed | EXTRA_READS == EXPECTED_RULES | WATCH_RULES
    assert not needed & EXTRA_READS
    assert all(verb in ("get", "list", "watch") for _, _, verb in EXTRA_READS)


def test_cronjob_role_grants_exactly_the_listed_verbs() -> None:
    """The CronJob's Role in istio-apl grants exactly: get/list/patch virtualservices and
    httproutes (the Gateway API router), list destinationrules and deployments, patch
    deployments/scale, list horizontalpodautoscalers, get services and configmaps, create
    events (core group), get/create/update leases. Nothing else (no watch, no patch on events
    or deployments, no delete)."""
    role = _one("cronjob", "Role")
    assert role["metadata"]["namespace"] == "istio-apl"
    assert _grants(role) == EXPECTED_RULES
    assert not [r for r in role["rules"] if "resourceNames" in r]
    binding = _one("cronjob", "RoleBinding")
    sa = _one("cronjob", "ServiceAccount")
    assert binding["metadata"]["namespace"] == "istio-apl"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "istio-apl"}
    ]


def test_daemon_rbac_is_the_same_rules_cluster_wide_plus_leader_lease() -> None:
    """The daemon's ClusterRole has the CronJob Role's rules (needed cluster-wide for -A) and
    list/watch for its cache, bound to its ServiceAccount by a ClusterRoleBinding; the Role
    `leader-election` grants get/create/update on leases in canaryctl-system, bound by the
    RoleBinding of the same name."""
    sa = _one("daemon", "ServiceAccount")
    subject = {
        "kind": "ServiceAccount",
        "name": sa["metadata"]["name"],
        "namespace": "canaryctl-system",
    }
    assert sa["metadata"]["namespace"] == "canaryctl-system"

    cluster_role = _one("daemon", "ClusterRole")
    assert _grants(cluster_role) == EXPECTED_RULES | WATCH_RULES
    assert _grants(_one("cronjob", "Role")) == EXPECTED_RULES
    crb = _one("daemon", "ClusterRoleBinding")
    assert crb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": cluster_role["metadata"]["name"],
    }
    assert crb["subjects"] == [subject]

    leader = _one("daemon", "Role", "leader-election")
    assert leader["metadata"]["namespace"] == "canaryctl-system"
    assert _grants(leader) == LEADER_RULES
    binding = _one("daemon", "RoleBinding", "leader-election")
    assert binding["metadata"]["namespace"] == "canaryctl-system"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "leader-election",
    }
    assert binding["subjects"] == [subject]


# --- policy ConfigMap ------------------------------------------------------------------------
def test_policy_configmap_parses_as_the_default_policy() -> None:
    """The ConfigMap's `policy.yaml` parses with canaryctl.policy.parse_policy_text, points at
    http://prometheus.istio-system:9090 and is the same policy as policies/default.yaml."""
    cm = _one("cronjob", "ConfigMap")
    assert cm["metadata"]["namespace"] == "istio-apl"
    assert set(cm["data"]) == {"policy.yaml"}
    policy = parse_policy_text(cm["data"]["policy.yaml"], source="examples/cronjob/configmap.yaml")
    assert policy.spec.prometheus.url == "http://prometheus.istio-system:9090"
    default = load_policy(REPO / "policies" / "default.yaml")
    assert policy.snapshot() == default.snapshot()


# --- pods ------------------------------------------------------------------------------------
def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    cron = _one("cronjob", "CronJob")
    deploy = _one("daemon", "Deployment")
    sharded = _one("sharded", "StatefulSet")
    return [
        ("cronjob", cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        ("daemon", deploy["spec"]["template"]["spec"]),
        ("sharded", sharded["spec"]["template"]["spec"]),
    ]


@pytest.mark.parametrize(("where", "pod"), _pod_specs(), ids=[w for w, _ in _pod_specs()])
def test_containers_run_as_non_root_on_a_read_only_root(where: str, pod: dict[str, Any]) -> None:
    """Each canaryctl container runs as UID 65532 (non-root), with a read-only root filesystem,
    no privilege escalation, all capabilities dropped, the RuntimeDefault seccomp profile (the
    "restricted" Pod Security Standard), an emptyDir on /tmp, and resource requests and limits."""
    pod_sc = pod.get("securityContext") or {}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod["containers"]:
        sc = {**pod_sc, **(container.get("securityContext") or {})}
        assert sc["runAsNonRoot"] is True, where
        assert sc["runAsUser"] == 65532, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert not sc["capabilities"].get("add"), where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not sc.get("privileged"), where
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]], where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (where, kind)


# --- daemon ----------------------------------------------------------------------------------
def test_daemon_deployment_runs_leader_elected_with_probes_and_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon runs 2 replicas of `canaryctl run -A --interval 10s --port 8080` in
    canaryctl-system; POD_NAMESPACE (downward API) becomes the leader Lease's namespace; the
    liveness/readiness probes hit /healthz and /readyz on port 8080 (named http-metrics), which
    Prometheus scrapes through the pod annotations and the metrics Service."""
    deploy = _one("daemon", "Deployment")
    assert deploy["metadata"]["namespace"] == "canaryctl-system"
    assert _one("daemon", "Namespace")["metadata"]["name"] == "canaryctl-system"
    assert deploy["spec"]["replicas"] == 2
    template = deploy["spec"]["template"]
    assert (
        template["spec"]["serviceAccountName"]
        == _one("daemon", "ServiceAccount")["metadata"]["name"]
    )
    (container,) = template["spec"]["containers"]
    assert container["image"] == "ghcr.io/canaryctl/canaryctl:0.1.0"
    assert container["args"] == ["run", "-A", "--interval", "10s", "--port", "8080"]

    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    params = _command(container["args"], {"POD_NAMESPACE": "canaryctl-system"}, monkeypatch)
    assert params["all_namespaces"] is True
    assert params["lease_namespace"] == "canaryctl-system"
    assert parse_duration(params["interval"]) == 10
    assert params["port"] == 8080

    (port,) = container["ports"]
    assert port == {"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"

    labels = template["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = _one("daemon", "Service")
    assert svc["metadata"]["namespace"] == "canaryctl-system"
    assert svc["spec"]["selector"].items() <= labels.items()
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["port"] == 8080
    assert svc_port["targetPort"] == "http-metrics"


def test_sharded_statefulset_gives_each_shard_a_leader_and_a_standby(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The StatefulSet runs 6 pods of `canaryctl run -A --shards 3` (no --shard-index) in
    canaryctl-system, with the daemon's ServiceAccount and a headless Service; each pod's shard
    is the ordinal of its name (HOSTNAME) mod 3, so every shard has two pods."""
    from canaryctl.daemon import resolve_shard_index

    sts = _one("sharded", "StatefulSet")
    assert sts["metadata"]["namespace"] == "canaryctl-system"
    spec = sts["spec"]
    assert spec["replicas"] == 6
    assert spec["podManagementPolicy"] == "Parallel"
    headless = _one("sharded", "Service")
    assert headless["spec"]["clusterIP"] == "None"
    assert spec["serviceName"] == headless["metadata"]["name"]
    template = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert (
        template["spec"]["serviceAccountName"]
        == _one("daemon", "ServiceAccount")["metadata"]["name"]
    )
    (container,) = template["spec"]["containers"]
    params = _command(container["args"], {"POD_NAMESPACE": "canaryctl-system"}, monkeypatch)
    assert params["all_namespaces"] is True
    assert (params["shards"], params["shard_index"]) == (3, None)
    shards = []
    for ordinal in range(spec["replicas"]):
        monkeypatch.setenv("HOSTNAME", f"{sts['metadata']['name']}-{ordinal}")
        shards.append(resolve_shard_index(None, params["shards"]))
    assert sorted(shards) == [0, 0, 1, 1, 2, 2]
