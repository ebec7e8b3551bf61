"""The whole exception hierarchy, grouped by what the caller must do.

Exit codes are a public API (see README "Exit codes"). Every exception that can reach the
CLI carries its exit code, so `cli.py` maps errors to exit codes in exactly one place:

- ``InputError`` (exit 2): the user must fix something (flags, policy, target). Raised before
  any cluster write. Never retried.
- ``InfraError`` (exit 3): the cluster or Prometheus could not be used after retries. The
  controller puts traffic back on stable (when it can) before letting it escape.
- ``TransientError``: worth retrying (API 5xx, timeouts, Prometheus hiccups). Retried by the
  edges with tenacity; when the budget is spent they raise ``InfraError``.
- ``ConflictError`` (HTTP 409): not retried as is; the caller re-reads and recomputes.

A failed analysis is not an error: it is an outcome (exit 1) carried by the result object, and
so is a rollout paused for lack of evidence (exit 4: ``whenNoEvidence: pause``). That one gets
its own code rather than 0 (nothing was promoted), 1 (nothing was rolled back: the canary still
serves its weight), 2 (the input was fine) or 3 (the infrastructure worked): a pipeline must be
able to tell "a human must look" from every other outcome without parsing output.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ROLLED_BACK = 1
EXIT_INVALID = 2
EXIT_INFRA = 3
EXIT_PAUSED = 4  # `promote`: paused without a verdict (maxWindow spent); traffic still split


class CanaryctlError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with when this escapes."""

    exit_code: int = EXIT_INFRA

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- permanent: the user must change something -------------------------------------------


class InputError(CanaryctlError):
    """Invalid input. Nothing in the cluster was (or will be) changed."""

    exit_code = EXIT_INVALID


class PolicyError(InputError):
    """The analysis policy is invalid; the message names the field path and value."""


class UsageError(InputError):
    """A flag or argument is invalid or missing; the message names the flag."""


class TargetNotFoundError(InputError):
    """The app, VirtualService, DestinationRule or Deployment cannot be found."""


class PreflightError(InputError):
    """The target exists but is not ready for a rollout (missing subset, unavailable canary)."""


class RolloutStateError(InputError):
    """The requested verb does not fit the rollout's current state (e.g. pause with no rollout)."""


# --- infrastructure: retries were spent ---------------------------------------------------


class InfraError(CanaryctlError):
    """The cluster or Prometheus was unusable after retries."""

    exit_code = EXIT_INFRA


class ClusterUnavailableError(InfraError):
    """The Kubernetes API could not be reached or kept failing."""


class PermissionDeniedError(InfraError):
    """RBAC forbade a call; the message names the verb and the resource."""


class MetricsUnavailableError(InfraError):
    """Prometheus could not be reached or kept failing."""


class SandboxError(InfraError):
    """The local sandbox (demo / tests) could not be started, e.g. Prometheus is missing."""


# --- temporary: retried by the edges ------------------------------------------------------


class TransientError(CanaryctlError):
    """Worth retrying; converted into an ``InfraError`` when the retry budget is spent."""


class ConflictError(CanaryctlError):
    """The object changed since it was read (HTTP 409): the caller re-reads and recomputes
    (resending the same request would only conflict again)."""


class NotFoundError(CanaryctlError):
    """A Kubernetes object does not exist (HTTP 404). Callers decide what that means."""

    exit_code = EXIT_INVALID


class LeaseHeldError(CanaryctlError):
    """Another canaryctl process holds the rollout's lease; this process must not act."""

    exit_code = EXIT_INFRA
