"""Shared pieces of the policy models: durations and the strict model base (pure)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> float:
    """``"4s"``, ``"30s"``, ``"1m"``, ``"1h"``, ``"1m30s"``, ``"500ms"`` -> seconds."""
    m = _DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not text or m is None or not any(m.groups()):
        raise ValueError(f"must be a duration like 30s, 1m, 1h or 1m30s, got {text!r}")
    h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def format_duration(seconds: float) -> str:
    """Seconds -> a Prometheus range duration (integer ms or s, which Prometheus accepts)."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    return f"{int(seconds)}s"


Duration = Annotated[str, Field(description="Duration: 500ms, 4s, 30s, 1m, 1h, 1m30s")]


class StrictModel(BaseModel):
    """Unknown fields are errors (a typo must not fall back to a default); values are frozen.
    Validators are built at first use: commands that read no policy do not pay for them."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, defer_build=True)
