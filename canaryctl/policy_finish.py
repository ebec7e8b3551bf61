"""Finishing cleanly after the rollout (``spec.finish``), opt-in (pure).

Without ``finish`` canaryctl behaves as before: the route stays split at 0/100 (or 100/0) and no
Deployment is touched. The names follow Argo Rollouts where the meaning matches
(``abortScaleDownDelay`` is its ``abortScaleDownDelaySeconds``); ``scaleDownIdle`` differs on
purpose from its ``scaleDownDelaySeconds``: a fixed delay scales the old version down while
sidecars that have not yet received the new route still send to it, which answers 503
(argoproj/argo-rollouts#587). canaryctl waits until Prometheus has *shown* the previous version
receiving no requests for that long; no data is not "no requests".
"""

from __future__ import annotations

from pydantic import Field, field_validator

from canaryctl.policy_base import Duration, StrictModel, parse_duration


class FinishSpec(StrictModel):
    """What happens after the rollout ended; every part is off unless set."""

    collapseRoutes: bool = Field(
        default=False,
        description="After a promotion, rewrite the split routes to one plain route to the new "
        "stable, so the next release starts from a plain route",
    )
    scaleDownIdle: Duration | None = Field(
        default=None,
        description="After a promotion, scale the previous version's Deployment to 0 once "
        "Prometheus has shown it receiving no requests for this long (missing data never counts)",
    )
    abortScaleDownDelay: Duration | None = Field(
        default=None,
        description="After a rollback, scale the failed canary's Deployment to 0 this long later",
    )
    undoWindow: Duration | None = Field(
        default=None,
        description="`canaryctl undo` may send all traffic back to the previous version for this "
        "long after a promotion (while that version is still available)",
    )

    @field_validator("scaleDownIdle", "abortScaleDownDelay", "undoWindow")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)  # ValueError names the value
        return v
