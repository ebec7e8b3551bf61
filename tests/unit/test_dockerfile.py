"""The image runs as a non-root numeric user and needs nothing writable but /tmp."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    """Kubernetes' runAsNonRoot can only verify a numeric USER."""
    final = DOCKERFILE.read_text().split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)", final, flags=re.M)
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_entrypoint_is_canaryctl_and_home_is_tmp() -> None:
    """The CLI is the entrypoint; HOME points at /tmp so nothing writes to the root fs."""
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["canaryctl"]' in text
    assert re.search(r"HOME=/tmp", text)
    assert "PYTHONDONTWRITEBYTECODE=1" in text
