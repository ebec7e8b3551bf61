"""Least privilege: ``examples/cronjob/role.yaml`` is exactly what the commands need.

The emulator's RBAC is set to the Role's rules, parsed from the YAML into (verb, apiGroup,
resource) tuples; every command must then succeed. Then each rule is removed in turn and the
same commands run again: some command must fail or be denied (a 403 that a command survives,
e.g. a best-effort Event or the lease release, counts: it is logged as ``forbidden``), else the
rule is not needed and the Role grants more than canaryctl uses.

The commands: ``promote --no-wait``, ``reconcile`` (a due step), ``status``, ``list``,
``pause``, ``resume``, ``rollback``, ``promote --no-wait`` again, ``promote --force --yes``,
``undo`` (the policy's ``spec.finish`` allows it), ``reconcile`` starting a rollout declared by
annotations with its policy in a ConfigMap (the only user of ``configmaps get``), ``rollback``
and ``reconcile`` carrying out the clean-up it scheduled (the only user of ``list
horizontalpodautoscalers`` and ``patch deployments/scale``).

The baseline runs each command as ``python -m canaryctl``; the per-rule matrix (one run of up to
13 commands per rule) runs them as processes forked from ``forkcli.Zygote`` (calling the same
``canaryctl.cli.main``), which skips the ~1.8 s import of the kubernetes client each time.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.sandbox import load_manifests
from tests.e2e.conftest import APP, NS, Run
from tests.faults.conftest import (
    Case,
    FaultWorld,
    error_lines,
    log_events,
    normalise,
    role_rules,
)

Runner = Callable[[list[str]], Run]
Check = Callable[[Run, FaultWorld], str | None]
# The Gateway API's rules (httproutes) are needed in the Gateway API world, where
# tests/e2e/test_gateway_api.py proves them; this world is Istio's.
RULES = sorted(r for r in role_rules() if r[1] != "gateway.networking.k8s.io")


def _rule_id(rule: tuple[str, str, str]) -> str:
    verb, group, resource = rule
    return f"{verb} {resource}{'.' + group if group else ''}"


def _json(res: Run) -> dict[str, Any]:
    try:
        return res.json()
    except (AssertionError, ValueError):
        return {}


def _result(expected: str) -> Check:
    def check(res: Run, world: FaultWorld) -> str | None:
        got = _json(res).get("result")
        return None if got == expected else f"result {got!r}, expected {expected!r}"

    return check


def _reconciled(*actions: str) -> Check:
    def check(res: Run, world: FaultWorld) -> str | None:
        outcomes = _json(res).get("rollouts") or []
        got = [o.get("action") for o in outcomes]
        if len(got) != 1 or got[0] not in actions:
            details = "; ".join(str(o.get("detail", "")) for o in outcomes)
            return f"reconcile actions {got}, expected one of {actions}: {details}"
        return None

    return check


def _cleaned_up(res: Run, world: FaultWorld) -> str | None:
    """One ``cleanup`` outcome that completed: the canary Deployment is at 0 replicas."""
    problem = _reconciled("cleanup")(res, world)
    detail = (_json(res).get("rollouts") or [{}])[0].get("detail")
    if problem is None and detail != "clean-up complete":
        problem = f"clean-up not complete: {detail}"
    return problem


def _declare_rollout(world: FaultWorld) -> None:
    """The VirtualService back at 80/20 with ``canaryctl.io/promote: v2`` and the policy in a
    ConfigMap named by ``canaryctl.io/policy`` (a GitOps start)."""
    vs = copy.deepcopy(next(d for d in load_manifests() if d["kind"] == "VirtualService"))
    vs["metadata"]["annotations"] = {
        "canaryctl.io/promote": "v2",
        "canaryctl.io/policy": "rest-apl-policy",
    }
    policy = yaml.safe_load(_policy(world).read_text())
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "rest-apl-policy", "namespace": NS},
        "data": {"policy.yaml": yaml.safe_dump(policy)},
    }
    world.sb.emulator.apply([config_map, vs])


def _policy(world: FaultWorld) -> Path:
    """1 s steps; after a rollback the canary is scaled down at once; undo allowed for 1m."""
    return world.policy(interval="1s", finish={"abortScaleDownDelay": "0s", "undoWindow": "1m"})


def _commands(world: FaultWorld) -> list[tuple[str, list[str], Check, Callable[[], None]]]:
    policy = _policy(world)
    promote = ["promote", APP, "-n", NS, "--policy", str(policy), "-o", "json"]

    def nothing() -> None:
        pass

    def until_due() -> None:
        time.sleep(1.2)  # interval 1s: the step is due

    return [
        ("promote --no-wait", [*promote, "--no-wait"], _result("started"), nothing),
        (
            "reconcile",
            ["reconcile", "-n", NS, "-o", "json"],
            _reconciled("advanced", "held"),
            until_due,
        ),
        ("status", ["status", APP, "-n", NS, "-o", "json"], _result("in_progress"), nothing),
        ("list", ["list", "-n", NS, "-o", "json"], _result("ok"), nothing),
        ("pause", ["pause", APP, "-n", NS, "-o", "json"], _result("paused"), nothing),
        ("resume", ["resume", APP, "-n", NS, "-o", "json"], _result("resumed"), nothing),
        ("rollback", ["rollback", APP, "-n", NS, "-o", "json"], _result("rolled_back"), nothing),
        ("promote --no-wait (again)", [*promote, "--no-wait"], _result("started"), nothing),
        ("promote --force --yes", [*promote, "--force", "--yes"], _result("promoted"), nothing),
        ("undo", ["undo", APP, "-n", NS, "-o", "json"], _result("undone"), nothing),
        (
            "reconcile (declarative start, policy from ConfigMap)",
            ["reconcile", "-n", NS, "-o", "json"],
            _reconciled("started"),
            lambda: _declare_rollout(world),
        ),
        (
            "rollback (declared)",
            ["rollback", APP, "-n", NS, "-o", "json"],
            _result("rolled_back"),
            nothing,
        ),
        (
            "reconcile (clean-up: scale the canary down)",
            ["reconcile", "-n", NS, "-o", "json"],
            _cleaned_up,
            nothing,
        ),
    ]


def _error_of(res: Run) -> str:
    """The error line on stderr, else (reconcile reports on stdout) the failed outcome."""
    lines = error_lines(res.stderr)
    if lines:
        return lines[-1]
    details = [str(o.get("detail")) for o in _json(res).get("rollouts") or [] if o.get("detail")]
    return "; ".join(details) or "no error message"


def _denied(res: Run) -> str:
    """The first log record mentioning a denial (its message, without the timestamp)."""
    for event in log_events(res.stderr):
        text = " ".join(str(v) for v in event.values() if isinstance(v, str))
        if "forbidden" in text.lower():
            error = event.get("error") or text
            return f"{event.get('event')}: {error}"
    return "forbidden (unparsed)"


def _run_commands(
    world: FaultWorld, run: Runner, *, stop_at_first: bool
) -> list[tuple[str, Run, str | None]]:
    """(command, run, problem) for each command; problem is None when it fully succeeded."""
    out = []
    for name, args, check, before in _commands(world):
        before()
        res = run(args)
        problem = None
        if res.code != 0:
            problem = f"exit {res.code}: {_error_of(res)}"
        elif "forbidden" in res.stderr.lower():
            problem = f"exit 0 but a request was denied: {_denied(res)}"
        else:
            problem = check(res, world)
        out.append((name, res, problem))
        if problem is not None and stop_at_first:
            break
    return out


def test_role_yaml_rules_let_every_command_succeed(world: FaultWorld, case: Case) -> None:
    """RBAC = exactly the rules of examples/cronjob/role.yaml: every command (as a real
    ``python -m canaryctl``) exits 0 with the expected result and nothing is denied."""
    case(
        "RBAC = examples/cronjob/role.yaml; every command",
        "each of the 13 commands exits 0 with its expected result; no request denied",
    )
    world.sb.emulator.set_rbac(role_rules())
    runs = _run_commands(
        world, lambda args: world.subprocess_run(*args, timeout=60), stop_at_first=False
    )
    failed = [(name, problem) for name, _, problem in runs if problem]
    case.observed(
        "all 13 commands succeeded"
        if not failed
        else "; ".join(f"`{name}`: {problem[:200]}" for name, problem in failed)
    )
    assert not failed, failed
    for _, res, _ in runs:
        assert "Traceback" not in res.stderr


@pytest.mark.parametrize("rule", RULES, ids=[_rule_id(r) for r in RULES])
def test_every_role_rule_is_needed_by_some_command(
    world: FaultWorld, case: Case, rule: tuple[str, str, str]
) -> None:
    """RBAC = role.yaml minus this rule: some command fails or is denied (with an error naming
    the verb and the resource when it fails), else the rule is not needed."""
    verb, _group, resource = rule
    case(
        f"role.yaml without `{_rule_id(rule)}`",
        f"some command fails or is denied; a failure names '{verb}' and '{resource}'",
    )
    world.sb.emulator.set_rbac(role_rules() - {rule})
    runs = _run_commands(world, lambda args: world.run(*args, timeout=60), stop_at_first=True)
    name, res, problem = runs[-1]
    case.observed(
        f"first affected: `{name}`: {normalise(problem)[:220]}"
        if problem
        else f"all {len(runs)} commands succeeded without it: NOT NEEDED"
    )
    assert problem is not None, f"{_rule_id(rule)} is not needed by any command"
    assert "Traceback" not in res.stderr
    if res.code != 0:
        assert verb in problem and resource in problem, problem
