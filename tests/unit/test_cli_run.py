"""``canaryctl run`` flags for sharding: bad values are one-line errors, exit 2, before any
connection to the cluster."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from canaryctl.cli import app


@pytest.mark.parametrize(
    ("args", "hostname", "flag"),
    [
        (["--shards", "3", "--shard-index", "3"], "x", "--shard-index: must be in 0..2, got 3"),
        (["--shards", "0"], "x", "--shards: must be at least 1, got 0"),
        (["--shards", "2"], "laptop", "--shard-index: required with --shards > 1"),
    ],
)
def test_bad_shard_flags_are_exit_2_naming_the_flag(
    args: list[str], hostname: str, flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out-of-range or missing shard settings name the flag and exit 2 (no kubeconfig needed:
    nothing is contacted)."""
    monkeypatch.setenv("HOSTNAME", hostname)
    res = CliRunner().invoke(app, ["run", "-A", "--kubeconfig", "/nonexistent", *args])
    assert res.exit_code == 2, res.output
    assert flag in res.output
    assert "Traceback" not in res.output
