"""Hostile and oversized input: rejected early and clearly (exit 2, one line naming the flag),
before any cluster access, or handled quickly; never a hang or a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from canaryctl.cli import app
from canaryctl.mesh.routes import find_target, weight_patch

HOSTILE = [
    'rest"apl',
    "rest'apl",
    "rest-apl}",
    "{rest-apl",
    "rest\napl",
    "rest-apl\n",
    "rest.*",
    "rest|apl",
    "rest$",
    "(rest)",
    "rest apl",
    "REST-APL",
    "ünïcode",
    "rest\\apl",
    'x"} or vector(1) #',
    "rest-",
    "a" * 300,
    "",
]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:20])
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["promote", "{v}", "-n", "istio-apl"], "APP"),
        (["promote", "rest-apl", "-n", "{v}"], "--namespace"),
        (["promote", "rest-apl", "--canary", "{v}"], "--canary"),
        (["promote", "rest-apl", "--virtual-service", "{v}"], "--virtual-service"),
        (
            ["promote", "rest-apl", "--virtual-service", "a", "--virtual-service", "{v}"],
            "--virtual-service",
        ),
        (
            ["pause", "rest-apl", "--virtual-service", "a", "--virtual-service", "{v}"],
            "--virtual-service",
        ),
        (["status", "{v}"], "APP"),
        (["rollback", "rest-apl", "-n", "{v}"], "--namespace"),
        (["reconcile", "-n", "{v}"], "--namespace"),
    ],
)
def test_hostile_names_exit_2_naming_the_flag_before_any_cluster_access(
    value: str, args: list[str], flag: str
) -> None:
    """Quotes, braces, newlines, regex metacharacters, unicode: exit 2, one line, the flag named.
    The kubeconfig does not exist, so any cluster access would fail differently."""
    argv = [a.replace("{v}", value) for a in args] + ["--kubeconfig", "/nonexistent/kubeconfig"]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {flag}:"), res.stderr
    assert "Traceback" not in res.output


def test_ten_megabyte_policy_fails_fast(tmp_path: Path) -> None:
    """A 10 MB policy file is refused by its size before it is parsed (the message says so;
    how fast that is belongs to the benchmarks, not to a timed test)."""
    path = tmp_path / "huge.yaml"
    path.write_text("spec:\n  metrics:\n" + "    - {name: x, query: 'up', max: 1}\n" * 300_000)
    assert path.stat().st_size > 10_000_000
    res = CliRunner().invoke(app, ["policy", "validate", str(path)])
    assert res.exit_code == 2 and "larger than 1024 KiB" in res.stderr


def test_ten_thousand_steps_fail_fast_naming_the_field(tmp_path: Path) -> None:
    """10,000 steps: a clear error on spec.steps."""
    path = tmp_path / "steps.yaml"
    path.write_text(yaml.safe_dump({"spec": {"steps": list(range(1, 10_001))}}))
    res = CliRunner().invoke(app, ["policy", "validate", str(path)])
    assert res.exit_code == 2 and "spec.steps: must have 1 to 100 weights" in res.stderr


def test_virtual_service_with_500_routes_is_handled_quickly() -> None:
    """500 pinned header routes plus the split: the split is found and only its weights
    change."""
    routes = [
        {
            "match": [{"headers": {"x-user": {"exact": f"user-{i}"}}}],
            "route": [{"destination": {"host": "rest-apl", "subset": "v2"}}],
        }
        for i in range(500)
    ]
    routes.append(
        {
            "route": [
                {"destination": {"host": "rest-apl", "subset": "v1"}, "weight": 80},
                {"destination": {"host": "rest-apl", "subset": "v2"}, "weight": 20},
            ]
        }
    )
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "big", "namespace": "istio-apl", "resourceVersion": "7"},
        "spec": {"hosts": ["rest-apl"], "http": routes},
    }
    target = find_target([vs], app="rest-apl", namespace="istio-apl")
    ops = weight_patch(target, canary_weight=40, vs=vs)
    assert [r.http_index for r in target.routes] == [500]
    assert all("/spec/http/500/" in op["path"] for op in ops[1:])


@pytest.mark.parametrize(
    "args",
    [
        ["status", "rest-apl", "--router", "linkerd"],
        ["reconcile", "--router", "linkerd"],
        ["demo", "--router", "linkerd"],
    ],
    ids=["status", "reconcile", "demo"],
)
def test_an_unknown_router_is_exit_2_naming_the_flag_before_any_cluster_access(
    args: list[str], tmp_path: Path
) -> None:
    """--router takes a known router's name; anything else is one line, exit 2, no request
    (the kubeconfig points nowhere)."""
    res = CliRunner().invoke(
        app, [*args, "--log-level", "error"], env={"KUBECONFIG": str(tmp_path / "none")}
    )
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: --router: must be one of ")
    assert "gateway-api" in res.stderr and "linkerd" in res.stderr
    assert "Traceback" not in res.output
