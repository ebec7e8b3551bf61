"""The CLI's policy commands and its input checks that run before any cluster access.

typer's CliRunner keeps stdout and stderr apart (``result.stdout`` / ``result.stderr``).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner, Result

from canaryctl import __version__
from canaryctl.cli import app
from canaryctl.policy import json_schema, load_policy

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "policies" / "default.yaml"
BAD_STEPS = "spec.steps: must be strictly increasing and end at 100, got [40, 20, 100]"


@pytest.fixture
def bad_policy(tmp_path: Path) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(
        "apiVersion: canaryctl.io/v1alpha1\nkind: AnalysisPolicy\nspec:\n  steps: [40, 20, 100]\n"
    )
    return p


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def assert_one_error_line(result: Result, text: str) -> None:
    assert result.stderr == f"error: {text}\n"
    assert "Traceback" not in result.output


# --- policy validate -------------------------------------------------------------------------


def test_validate_valid_file_exits_0_and_prints_the_steps() -> None:
    result = invoke("policy", "validate", str(DEFAULT))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{DEFAULT}: valid (steps [20, 40, 60, 80, 100], interval 1m, judge threshold, 2 metrics)\n"
    )
    assert result.stderr == ""


def test_validate_prints_expanded_step_weight(tmp_path: Path) -> None:
    p = tmp_path / "sw.yaml"
    p.write_text("spec:\n  stepWeight: 30\n  interval: 30s\n")
    result = invoke("policy", "validate", str(p))
    assert result.exit_code == 0, result.output
    assert "valid (steps [30, 60, 90, 100], interval 30s" in result.stdout


def test_validate_json_output_is_exactly_one_json_object() -> None:
    result = invoke("policy", "validate", str(DEFAULT), "-o", "json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data == {"result": "valid", "policy": load_policy(DEFAULT).snapshot()}
    assert result.stderr == ""


def test_validate_every_preset_at_once() -> None:
    """`policy validate policies/*.yaml` checks each file and prints one line per file."""
    presets = sorted(DEFAULT.parent.glob("*.yaml"))
    assert len(presets) >= 3
    result = invoke("policy", "validate", *map(str, presets))
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == list(map(str, presets))
    as_json = json.loads(invoke("policy", "validate", *map(str, presets), "-o", "json").stdout)
    assert as_json["policies"] == {str(p): load_policy(p).snapshot() for p in presets}


def test_validate_reports_every_invalid_file_and_exits_2(bad_policy: Path) -> None:
    """A valid file among invalid ones is still reported; the error line names each bad file."""
    result = invoke("policy", "validate", str(DEFAULT), str(bad_policy), str(bad_policy))
    assert result.exit_code == 2
    assert result.stdout.startswith(f"{DEFAULT}: valid")
    assert_one_error_line(result, f"{bad_policy}: {BAD_STEPS}; {bad_policy}: {BAD_STEPS}")


def test_validate_invalid_file_exits_2_with_one_error_line(bad_policy: Path) -> None:
    result = invoke("policy", "validate", str(bad_policy))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert_one_error_line(result, f"{bad_policy}: {BAD_STEPS}")


def test_validate_invalid_file_with_json_output_prints_an_error_envelope(bad_policy: Path) -> None:
    result = invoke("policy", "validate", str(bad_policy), "--output", "json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "result": "error",
        "error": f"{bad_policy}: {BAD_STEPS}",
        "exitCode": 2,
    }
    assert len(result.stdout.splitlines()) == 1
    assert_one_error_line(result, f"{bad_policy}: {BAD_STEPS}")


def test_validate_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = invoke("policy", "validate", str(missing))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert str(missing) in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_validate_invalid_yaml_exits_2_with_the_line(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("spec:\n  steps: [20, 40\n  interval: 1m\n")
    result = invoke("policy", "validate", str(p))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {p}: invalid YAML at line 3: ")
    assert len(result.stderr.splitlines()) == 1


def test_validate_date_key_in_a_list_exits_2_not_a_crash(tmp_path: Path) -> None:
    """YAML dates as keys inside a wrong-typed value must give exit 2, not an exception."""
    p = tmp_path / "dates.yaml"
    p.write_text("metadata: [{2020-01-01: 1}]\n")
    result = invoke("policy", "validate", str(p))
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {p}: metadata")


def test_invalid_output_format_exits_2() -> None:
    result = invoke("policy", "validate", str(DEFAULT), "-o", "yaml")
    assert result.exit_code == 2
    assert "yaml" in result.stderr
    assert result.stdout == ""


# --- policy schema / --version ---------------------------------------------------------------


def test_schema_prints_the_json_schema() -> None:
    result = invoke("policy", "schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json_schema()


def test_version_prints_name_and_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"canaryctl {__version__}\n"


# --- promote: input checks before any Kubernetes access --------------------------------------


def test_promote_force_without_yes_exits_2_naming_yes_before_kubernetes() -> None:
    """A kubeconfig that does not exist proves the check runs before connecting."""
    result = invoke("promote", "web", "--force", "--kubeconfig", "/nonexistent")
    assert result.exit_code == 2
    assert_one_error_line(result, "--force skips the remaining analysis; confirm with --yes")
    assert result.stdout == ""


def test_promote_force_without_yes_json_envelope() -> None:
    result = invoke("promote", "web", "--force", "--kubeconfig", "/nonexistent", "-o", "json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["result"] == "error"
    assert data["exitCode"] == 2
    assert "--yes" in data["error"]


def test_promote_with_bad_policy_exits_2_naming_the_file(bad_policy: Path) -> None:
    result = invoke("promote", "web", "--policy", str(bad_policy), "--kubeconfig", "/nonexistent")
    assert result.exit_code == 2
    assert_one_error_line(result, f"{bad_policy}: {BAD_STEPS}")


def test_promote_with_missing_policy_exits_2_naming_flag_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = invoke("promote", "web", "--policy", str(missing), "--kubeconfig", "/nonexistent")
    assert result.exit_code == 2
    assert_one_error_line(result, f"--policy: file not found: {missing}")


def test_promote_with_bad_prometheus_url_exits_2_naming_the_flag() -> None:
    result = invoke(
        "promote", "web", "--prometheus-url", "localhost:9090", "--kubeconfig", "/nonexistent"
    )
    assert result.exit_code == 2
    assert_one_error_line(result, "--prometheus-url: must be an http(s) URL, got 'localhost:9090'")


def test_promote_invalid_output_format_exits_2() -> None:
    result = invoke("promote", "web", "-o", "yaml", "--kubeconfig", "/nonexistent")
    assert result.exit_code == 2
    assert "yaml" in result.stderr
