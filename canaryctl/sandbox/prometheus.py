"""A real Prometheus on loopback, scraping the sandbox's targets.

canaryctl's queries (``rate``, ``histogram_quantile``, counter resets, staleness) are only proven
right against a real Prometheus evaluating them, so the sandbox runs the actual binary rather
than faking the HTTP API: a throwaway config and TSDB in a temp dir, a 1 s scrape interval so
tests see data within seconds, and ``--web.enable-lifecycle`` so targets can be added later.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import requests
import yaml

from canaryctl.errors import SandboxError

INSTALL_HINT = (
    "prometheus binary not found: install it with `sudo apt-get install prometheus` (Debian/Ubuntu)"
)
JOB = "sandbox"
DEBIAN_BINARY = Path("/usr/bin/prometheus")  # where apt puts it, in case PATH is minimal


def find_prometheus() -> str:
    """The ``prometheus`` executable on PATH (or Debian's /usr/bin), else SandboxError."""
    found = shutil.which("prometheus")
    if found:
        return found
    if DEBIAN_BINARY.is_file():
        return str(DEBIAN_BINARY)
    raise SandboxError(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    """``prometheus`` scraping ``targets`` (``host:port``, path ``/metrics``) as job ``sandbox``.

    ``honor_labels`` keeps the exporters' labels as they are, as Istio's scrape configs do.
    Expect ~6 s from start (or ``add_target``) to the first scrape: Prometheus's discovery
    manager hands targets to the scrapers in 5 s batches, and 2.42 has no flag to shorten it.
    """

    def __init__(
        self,
        targets: list[str],
        scrape_interval: str = "1s",
        *,
        binary: str | None = None,
        startup_timeout: float = 30.0,
        history: Path | None = None,
    ) -> None:
        """``history``: an OpenMetrics file (with timestamps) written into the TSDB with
        ``promtool tsdb create-blocks-from openmetrics`` before start: recorded data to
        backtest on."""
        self.history = history
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._session = requests.Session()

    def __enter__(self) -> Self:
        binary = self._binary or find_prometheus()
        self._dir = Path(tempfile.mkdtemp(prefix="canaryctl-prometheus-"))
        try:
            self._write_config()
            if self.history is not None:
                self._import(binary, self.history)
            for attempt in range(3):  # the free port can be taken before prometheus binds it
                self._start(binary)
                if self._wait_ready(last_attempt=attempt == 2):
                    return self
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            self._cleanup()
            raise

    def __exit__(self, *_exc: object) -> None:
        self._cleanup()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the base of the HTTP API."""
        if self._port is None:
            raise RuntimeError("prometheus is not running")
        return f"http://127.0.0.1:{self._port}"

    # --- process management ---------------------------------------------------------------

    @property
    def _config_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "prometheus.yml"

    @property
    def _log_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "prometheus.log"

    def _write_config(self) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "honor_labels": True,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        self._config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _import(self, binary: str, path: Path) -> None:
        assert self._dir is not None
        promtool = str(Path(binary).with_name("promtool"))
        cmd = [promtool, "tsdb", "create-blocks-from", "openmetrics", str(path)]
        try:
            subprocess.run(
                [*cmd, str(self._dir / "data")], check=True, capture_output=True, timeout=120
            )
        except (OSError, subprocess.SubprocessError) as exc:
            out = getattr(exc, "stderr", b"") or b""
            why = f"{exc} {out.decode(errors='replace')[-500:]}"
            raise SandboxError(f"promtool could not import {path}: {why}") from exc

    def _start(self, binary: str) -> None:
        assert self._dir is not None
        self._port = _free_port()
        with self._log_path.open("ab") as log_file:
            try:
                self._process = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={self._config_path}",
                        f"--storage.tsdb.path={self._dir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self._port}",
                        "--web.enable-lifecycle",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            except OSError as exc:
                raise SandboxError(f"cannot run prometheus ({binary}): {exc}") from exc

    def _wait_ready(self, *, last_attempt: bool) -> bool:
        """True once ``/-/ready`` answers; False if it died on a taken port (retry)."""
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log_tail = self.log_tail()
                if "address already in use" in log_tail and not last_attempt:
                    return False
                raise SandboxError(
                    f"prometheus exited with code {self._process.returncode}:\n{log_tail}"
                )
            try:
                if self._session.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise SandboxError(
            f"prometheus was not ready within {self._startup_timeout:g}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of prometheus's own log (for error messages)."""
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return "(no log)"

    def _cleanup(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        self._session.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # --- the HTTP API ---------------------------------------------------------------------

    def add_target(self, target: str) -> None:
        """Scrape one more ``host:port`` from now on (config rewrite + ``/-/reload``)."""
        self.targets.append(target)
        self._write_config()
        response = self._session.post(f"{self.url}/-/reload", timeout=10)
        if response.status_code != 200:
            raise SandboxError(f"prometheus reload failed: {response.status_code} {response.text}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's ``data.result`` (a list of ``{metric, value}``)."""
        response = self._session.get(
            f"{self.url}/api/v1/query", params={"query": promql}, timeout=10
        )
        body = response.json()
        if body.get("status") != "success":
            raise SandboxError(f"query {promql!r} failed: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_value(self, promql: str) -> float | None:
        """The value of a query with one result (e.g. a ``sum``), None when it has none."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise SandboxError(f"query {promql!r} has {len(result)} results, not one")
        return float(result[0]["value"][1])

    def wait_for_scrapes(self, min_samples: int = 2, timeout: float = 20.0) -> None:
        """Block until every target is up and has been scraped at least ``min_samples`` times."""
        deadline = time.monotonic() + timeout
        pending = set(self.targets)
        while time.monotonic() < deadline:
            scraped = {
                r["metric"].get("instance"): float(r["value"][1])
                for r in self.query(f'count_over_time(up{{job="{JOB}"}}[1h])')
            }
            up = {
                r["metric"].get("instance"): float(r["value"][1])
                for r in self.query(f'up{{job="{JOB}"}}')
            }
            pending = {t for t in self.targets if up.get(t) != 1 or scraped.get(t, 0) < min_samples}
            if not pending:
                return
            time.sleep(0.2)
        raise SandboxError(
            f"prometheus has not scraped {sorted(pending)} {min_samples} times (up) within "
            f"{timeout:g}s; targets: {self._target_errors()}"
        )

    def _target_errors(self) -> str:
        try:
            active = self._session.get(f"{self.url}/api/v1/targets", timeout=5).json()
            return ", ".join(
                f"{t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}".strip()
                for t in active["data"]["activeTargets"]
            )
        except (requests.RequestException, ValueError, KeyError) as exc:
            return f"(cannot list targets: {exc})"
