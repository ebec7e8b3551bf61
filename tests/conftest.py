"""Shared fixtures: the sandbox's pieces, as real servers on loopback.

The edges (kube, mesh, metrics) are tested against real HTTP servers, not mocks of our own code:
the strict API emulator and a real Prometheus (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported lazily in the fixtures: unit tests need neither kmock nor kubernetes
    from kubernetes.client import ApiClient

    from canaryctl.sandbox.emulator import EmulatorServer

ISTIO_DATA = Path(__file__).resolve().parent / "data" / "istio"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh API emulator preloaded with the rest-apl manifests (writes log empty)."""
    from canaryctl.sandbox import load_manifests
    from canaryctl.sandbox.emulator import EmulatorServer

    with EmulatorServer() as server:
        server.apply(load_manifests())
        yield server


@pytest.fixture
def kube_api(emulator: EmulatorServer, tmp_path: Path) -> Iterator[ApiClient]:
    """A real ``kubernetes`` ApiClient configured from the emulator's kubeconfig."""
    import kubernetes

    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def istio_data() -> Path:
    """Istio's CRDs and bookinfo samples: the pinned copy under ``tests/data/istio``."""
    return ISTIO_DATA


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The prometheus executable; fails (never skips) with the install hint when missing."""
    from canaryctl.errors import SandboxError
    from canaryctl.sandbox.prometheus import find_prometheus

    try:
        return find_prometheus()
    except SandboxError as exc:
        pytest.fail(str(exc))


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Each test starts from structlog's defaults: a CLI command run in-process (CliRunner)
    calls ``logs.setup``, whose level filter (``policy validate`` uses warning) would otherwise
    hide the info events a later test of the same worker captures with ``capture_logs``."""
    yield
    import structlog

    structlog.reset_defaults()
