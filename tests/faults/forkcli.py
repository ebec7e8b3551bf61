"""Run ``canaryctl`` commands as real processes without paying its import time for each one.

Importing the ``kubernetes`` client costs ~1.8 s of CPU per ``python -m canaryctl``. The
least-privilege matrix runs dozens of commands, so it uses a *zygote*: one single-threaded
process that imports ``canaryctl.cli`` once, then forks a child per command. The child sets its
environment and argv, redirects stdout/stderr to files and calls ``canaryctl.cli.main()``
(what ``python -m canaryctl`` calls), so each command still runs in its own process with its
own exit code and its own clients and state. Protocol: one JSON request per line on stdin, one
JSON answer per line on stdout. Run as ``python -m tests.faults.forkcli`` from the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Self


@dataclass
class ForkRun:
    code: int
    stdout: str
    stderr: str


class Zygote:
    """The client side: ``run(args, env)`` -> ``ForkRun``."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="canaryctl-zygote-"))
        self._lock = threading.Lock()
        self._count = 0

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.forkcli"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        ready = self._proc.stdout.readline() if self._proc.stdout else ""
        if ready.strip() != "ready":
            raise RuntimeError(f"the canaryctl zygote did not start: {ready!r}")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout:
                self._proc.stdout.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def run(self, args: list[str], env: dict[str, str], timeout: float = 120) -> ForkRun:
        """``canaryctl ARGS`` in a forked child with this environment; a child still running
        after ``timeout`` seconds is killed by SIGALRM (exit code -14)."""
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        with self._lock:
            self._count += 1
            out = self._dir / f"{self._count}.out"
            err = self._dir / f"{self._count}.err"
            request = {
                "args": args,
                "env": env,
                "stdout": str(out),
                "stderr": str(err),
                "timeout": max(1, round(timeout)),
            }
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            answer = json.loads(self._proc.stdout.readline())
        return ForkRun(int(answer["code"]), out.read_text(), err.read_text())


def _serve() -> None:  # pragma: no cover - runs in the zygote process
    # What the commands import lazily: paid once here, not in every child.
    from kubernetes import client

    import canaryctl.cli
    import canaryctl.controller
    import canaryctl.kube
    import canaryctl.logs
    import canaryctl.mesh.istio
    import canaryctl.metrics.prometheus
    import canaryctl.operations
    import canaryctl.policy
    import canaryctl.reconcile
    import canaryctl.render

    for name in (
        "CoreV1Api",
        "AppsV1Api",
        "CustomObjectsApi",
        "CoordinationV1Api",
        "CoreV1Event",
        "V1ObjectMeta",
        "V1ObjectReference",
        "V1EventSource",
        "V1Lease",
    ):
        getattr(client, name)

    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.environ.clear()
                os.environ.update(request["env"])
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
                    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(target, fd)
                    os.close(target)
                sys.argv = ["canaryctl", *request["args"]]
                signal.alarm(int(request["timeout"]))
                try:
                    canaryctl.cli.main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    _serve()
