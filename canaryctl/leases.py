"""One actor per rollout: coordination.k8s.io/v1 Leases taken with resourceVersion guards.

Each rollout has a Lease ``canaryctl.<virtualservice>`` in its namespace; the daemon's leader
election uses ``canaryctl-leader``. A Lease (rather than a field in the rollout annotation) is
used so that renewals do not rewrite the VirtualService every few seconds (each VirtualService
write makes istiod push configuration to every sidecar). A holder renews while it works; a dead
holder's lease expires after ``duration`` seconds and the next process takes over. Every
take-over and renewal is a PUT with the resourceVersion read before, so two processes racing
for an expired lease cannot both win: the loser gets 409.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from canaryctl.errors import ConflictError, LeaseHeldError
from canaryctl.kube import KubeClient
from canaryctl.logs import get_logger

log = get_logger("canaryctl.lease")
DEFAULT_DURATION = 15  # seconds; renewed every duration/3


def default_duration() -> int:
    """``CANARYCTL_LEASE_SECONDS`` overrides the lease duration (tests use short leases so a
    killed holder's lease expires quickly)."""
    try:
        return max(1, int(os.environ.get("CANARYCTL_LEASE_SECONDS", DEFAULT_DURATION)))
    except ValueError:
        return DEFAULT_DURATION


def identity() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


def lease_name(virtual_service: str) -> str:
    return f"canaryctl.{virtual_service}"[:253]


def _ts(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(ts: Any) -> float:
    if not ts:
        return 0.0
    if isinstance(ts, datetime):
        return ts.timestamp()
    text = str(ts).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


class Lease:
    """A lease held by ``holder``. ``acquire`` never blocks: it says whether we hold it."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        holder: str,
        duration: int = DEFAULT_DURATION,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.holder = holder
        self.duration = duration
        self.held = False
        self.renewed_at = 0.0
        self.observed_holder: str | None = None

    def _body(self, now: float, current: dict[str, Any] | None) -> dict[str, Any]:
        spec = (current or {}).get("spec") or {}
        prev = spec.get("holderIdentity")
        transitions = int(spec.get("leaseTransitions") or 0) + (1 if prev != self.holder else 0)
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": self.duration,
                "acquireTime": _ts(now) if prev != self.holder else spec.get("acquireTime"),
                "renewTime": _ts(now),
                "leaseTransitions": transitions,
            },
        }

    def _held_elsewhere(self, current: dict[str, Any] | None, now: float) -> bool:
        spec = (current or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        expires = _parse(spec.get("renewTime")) + float(
            spec.get("leaseDurationSeconds") or self.duration
        )
        if holder and holder != self.holder and expires > now:
            self.observed_holder = holder
            return True
        return False

    def held_elsewhere(self, now: float) -> bool:
        """Another live process holds it. Read only: for a daemon, whose leader lease already
        keeps its replicas apart, and which must only stay off rollouts that a ``promote``
        (or another process) is driving."""
        return self._held_elsewhere(self.kube.get_lease(self.namespace, self.name), now)

    def acquire(self, now: float) -> bool:
        current = self.kube.get_lease(self.namespace, self.name)
        try:
            if current is None:
                self.kube.create_lease(self.namespace, self._body(now, None))
            else:
                if self._held_elsewhere(current, now):
                    self.held = False
                    return False
                self.kube.replace_lease(self.namespace, self.name, self._body(now, current))
        except ConflictError:
            self.held = False
            return False
        self.held = True
        self.renewed_at = now
        log.debug("lease.acquired", lease=self.name, holder=self.holder)
        return True

    def renew(self, now: float) -> None:
        """Renew when a third of the duration has passed; raise when the lease was lost."""
        if now - self.renewed_at < self.duration / 3:
            return
        if not self.acquire(now):
            raise LeaseHeldError(
                f"lost the lease {self.namespace}/{self.name} to {self.observed_holder}"
            )

    def release(self) -> None:
        """Expire the lease at once so the next process need not wait (best effort)."""
        if not self.held:
            return
        self.held = False
        try:
            current = self.kube.get_lease(self.namespace, self.name)
            if current and (current.get("spec") or {}).get("holderIdentity") == self.holder:
                body = self._body(0.0, current)
                body["spec"]["holderIdentity"] = ""
                body["spec"]["renewTime"] = _ts(0.0)
                self.kube.replace_lease(self.namespace, self.name, body)
        except Exception as exc:
            log.warning("lease.release_failed", lease=self.name, error=str(exc))
