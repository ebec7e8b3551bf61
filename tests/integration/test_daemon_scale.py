"""The daemon at scale, in-process against the strict emulator: its watch-fed cache
(``canaryctl/cache.py``) and sharding (``run --shards N --shard-index I``).

Rollouts here have no traffic (a real Prometheus with no series answers "no data"), so every
due analysis is inconclusive and held: which daemon held which rollout is what is checked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from canaryctl import cache
from canaryctl.cache import CachedKube
from canaryctl.controller import Controller
from canaryctl.daemon import Daemon
from canaryctl.mesh import get_router
from canaryctl.metrics._base import get_provider
from canaryctl.policy import parse_policy
from canaryctl.reconcile import shard_of
from canaryctl.sandbox import rest_apl_fleet
from canaryctl.sandbox.emulator import EmulatorServer
from canaryctl.sandbox.prometheus import PrometheusServer

NAMESPACES = [f"shop-{i}" for i in range(9)]
VS = "rest-apl-vs"


@pytest.fixture(scope="module")
def prometheus(prometheus_binary: str) -> Iterator[PrometheusServer]:
    """A real Prometheus with nothing to scrape: every query answers "no data"."""
    with PrometheusServer(["127.0.0.1:9"], binary=prometheus_binary) as server:
        yield server


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[EmulatorServer, Path]]:
    with EmulatorServer() as emulator:
        policy = parse_policy({"spec": {"interval": "1s", "inconclusiveLimit": 100}}).snapshot()
        emulator.apply(rest_apl_fleet(NAMESPACES, policy=policy, started_at=time.time() - 1.5))
        yield emulator, emulator.write_kubeconfig(tmp_path / "kubeconfig")


def _kube(kubeconfig: Path) -> CachedKube:
    return CachedKube.connect(kubeconfig=str(kubeconfig))


def _daemon(
    kubeconfig: Path, prometheus: PrometheusServer, shard: tuple[int, int], name: str
) -> Daemon:
    kube = _kube(kubeconfig)
    ctl = Controller(
        kube=kube,
        router=get_router("istio", kube),
        provider_for=get_provider,
        prometheus_url=prometheus.url,
        holder=name,
    )
    kube.start(None)
    return Daemon(
        ctl,
        namespace=None,
        interval=1.0,
        lease_namespace="default",
        port=0,
        stop=threading.Event(),
        shard=shard,
    )


def _driven(daemon: Daemon) -> set[str]:
    """The namespaces of the rollouts one tick of ``daemon`` analysed (none on standby)."""
    report = daemon.tick()
    if report is None:
        return set()
    return {o.namespace for o in report.outcomes if o.action != "skipped"}


def test_cache_answers_reads_from_memory_follows_changes_and_relists_after_410(
    world: tuple[EmulatorServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its first lists, the cache answers reads with get/list denied by RBAC; a change
    made behind its back arrives by the watch; a watch resumed after the history was
    compacted gets 410 and the cache lists again (and sees the change made meanwhile)."""
    emulator, kubeconfig = world
    monkeypatch.setattr(cache, "WATCH_SECONDS", 1)
    kube = _kube(kubeconfig)
    kube.start("shop-1")
    try:
        emulator.set_rbac([("watch", "*", "*"), ("patch", "*", "*")])
        vs = kube.get_virtual_service("shop-1", VS)
        assert [d["metadata"]["name"] for d in kube.list_deployments("shop-1")] == [
            "rest-apl-v1",
            "rest-apl-v2",
        ]
        assert kube.list_istio("destinationrules", "shop-1")[0]["metadata"]["name"] == "rest-apl"
        vs["metadata"]["labels"] = {"seen": "watch"}
        emulator.apply([vs])
        _until(lambda: kube.get_virtual_service("shop-1", VS)["metadata"].get("labels"))
        emulator.set_rbac(None)

        with capture_logs() as logs:
            # the next watch (they last 1 s here) waits 1.5 s, meanwhile: a change, compaction
            emulator.inject("GET", r"/namespaces/shop-1/virtualservices$", None, delay=1.5)
            time.sleep(1.2)
            vs["metadata"]["labels"] = {"seen": "relist"}
            emulator.apply([vs])
            emulator.emulator.store.compact()
            _until(
                lambda: (
                    kube.get_virtual_service("shop-1", VS)["metadata"]["labels"]
                    == {"seen": "relist"}
                )
            )
        assert any(e["event"] == "watch.expired" for e in logs), logs
    finally:
        kube.stop()


def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_three_shards_drive_each_rollout_once_and_a_standby_takes_over_a_killed_one(
    world: tuple[EmulatorServer, Path],
    prometheus: PrometheusServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Daemons for shards 0, 1, 2 of 3 (and a standby for shard 1) over one emulator: each
    rollout is analysed by exactly the daemon of its shard, never by two, the standby by none.
    When shard 1's leader stops without releasing its lease (SIGKILL), the standby takes the
    shard's leader Lease once it expires and drives exactly shard 1's rollouts."""
    monkeypatch.setenv("CANARYCTL_LEASE_SECONDS", "2")
    _, kubeconfig = world
    shards = {ns: shard_of(ns, VS, 3) for ns in NAMESPACES}
    assert set(shards.values()) == {0, 1, 2}  # the hash spreads these over every shard
    daemons = {
        f"shard-{i}": _daemon(kubeconfig, prometheus, (i, 3), f"shard-{i}") for i in range(3)
    }
    standby = _daemon(kubeconfig, prometheus, (1, 3), "standby-1")
    everyone = [*daemons.values(), standby]
    try:
        driven: dict[str, list[str]] = {ns: [] for ns in NAMESPACES}
        for _ in range(3):
            for daemon in everyone:  # the standby ticks last: shard 1's leader is elected
                for ns in _driven(daemon):
                    driven[ns].append(daemon.ctl.holder)
            time.sleep(1.1)
        for ns, holders in driven.items():
            assert set(holders) == {f"shard-{shards[ns]}"}, (ns, holders)
            assert len(holders) >= 2, (ns, holders)  # due again every second

        del daemons["shard-1"]  # killed: no more ticks, its lease not released
        taken: dict[str, list[str]] = {ns: [] for ns in NAMESPACES}
        deadline = time.monotonic() + 15
        while not any(taken[ns] for ns in NAMESPACES if shards[ns] == 1):
            assert time.monotonic() < deadline, "the standby never took over"
            for daemon in [*daemons.values(), standby]:
                for ns in _driven(daemon):
                    taken[ns].append(daemon.ctl.holder)
            time.sleep(0.5)
        for ns, holders in taken.items():
            expected = "standby-1" if shards[ns] == 1 else f"shard-{shards[ns]}"
            assert set(holders) <= {expected}, (ns, holders)
        assert {ns for ns, h in taken.items() if "standby-1" in h} == {
            ns for ns in NAMESPACES if shards[ns] == 1
        }
    finally:
        for daemon in everyone:
            kube = daemon.ctl.kube
            assert isinstance(kube, CachedKube)
            kube.stop()
            daemon.server.server_close()
