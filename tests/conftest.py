"""Shared fixtures: the sandbox's pieces, as real servers on loopback.

The edges (kube, mesh, metrics) are tested against real HTTP servers, not mocks of our own code:
the strict API emulator and a real Prometheus (see docs/architecture.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import pytest

if TYPE_CHECKING:  # imported lazily in the fixtures: unit tests need neither kmock nor kubernetes
    from kubernetes.client import ApiClient

    from canaryctl.sandbox.emulator import EmulatorServer
    from tests.forkcli import Zygote
    from tests.sandboxes import WorkerSandbox

ISTIO_DATA = Path(__file__).resolve().parent / "data" / "istio"


class _TestStderr:
    """Where structlog writes in tests: the ``sys.stderr`` of the running test as it was when the
    test started (pytest's capture: shown when the test fails), even while pytest has suspended
    capturing between the phases of the test (a background thread may log then). Lines written
    between tests come from background threads of a test that already ended (a notifier still
    retrying a dead endpoint); they are dropped instead of being printed into pytest's own
    output."""

    stream: TextIO | None = None  # set while a test runs

    def write(self, text: str) -> int:
        stream = self.stream
        return len(text) if stream is None else stream.write(text)

    def flush(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.flush()


_TEST_STDERR = _TestStderr()


@pytest.fixture(scope="session", autouse=True)
def _structured_logs() -> None:
    """structlog as the CLI configures it (JSON lines), written to ``_TEST_STDERR``."""
    import structlog

    from canaryctl import logs

    logs.setup("debug", json_logs=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=_TEST_STDERR))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _logs_belong_to_this_test() -> Iterator[None]:
    _TEST_STDERR.stream = sys.stderr
    yield
    _TEST_STDERR.stream = None


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
def _restore_structlog() -> Iterator[None]:
    """A CLI run in this process (CliRunner) configures structlog for its own stderr and log
    level; undo it, or a later test's ``capture_logs`` misses what the level filters out."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def worker_sandbox() -> Iterator[WorkerSandbox]:
    """This worker's sandbox (emulator + traffic + Prometheus), handed to each test reset to the
    seed state: see ``tests/sandboxes.py``."""
    from tests.sandboxes import WorkerSandbox

    sandbox = WorkerSandbox()
    try:
        yield sandbox
    finally:
        sandbox.discard()


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote | None]:
    """This worker's ``canaryctl`` zygote (``tests/forkcli.py``); None when
    ``CANARYCTL_TESTS_SUBPROCESS=1`` asks for ``python -m canaryctl`` processes instead."""
    if os.environ.get("CANARYCTL_TESTS_SUBPROCESS") == "1":
        yield None
        return
    from tests.forkcli import Zygote

    with Zygote() as z:
        yield z
