"""Run ``canaryctl`` commands as real processes without paying its import time for each one.

Importing the ``kubernetes`` client costs ~1.8 s of CPU per ``python -m canaryctl``, and the
e2e and fault tests start hundreds of commands. So they use a *zygote*: one single-threaded
process that imports ``canaryctl.cli`` once, then forks a child per command. The child sets its
environment and argv, redirects stdout/stderr to files and calls ``canaryctl.cli.main()``
(what ``python -m canaryctl`` calls), so each command still runs in its own process, with its own
pid, exit code, signal handlers, clients and state: tests signal it and SIGKILL it like any
process. ``CANARYCTL_TESTS_SUBPROCESS=1`` makes the fixtures start ``python -m canaryctl``
instead (``tests/conftest.py``).

Protocol: one JSON request per line on stdin (``{"id", "args", "env", "stdout", "stderr",
"timeout"}``); the zygote answers ``{"id", "pid"}`` once the child is forked and ``{"id",
"code"}`` once it has reaped it (a pidfd per child, so the zygote never needs a thread). Run as
``python -m tests.forkcli`` from the repository.
"""

from __future__ import annotations

import importlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Self


class ForkedProcess:
    """A command forked by the zygote, with the part of ``subprocess.Popen``'s interface the
    tests use (``pid``, ``poll``, ``wait``, ``send_signal``, ``kill``, ``communicate``)."""

    stdout = None  # output goes to files, read by communicate(); no pipes to close
    stderr = None

    def __init__(self, out: Path | None, err: Path | None) -> None:
        self.pid = 0
        self.returncode: int | None = None
        self._out, self._err = out, err
        self._started = threading.Event()
        self._ended = threading.Event()

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"canaryctl (pid {self.pid})", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None and self.pid > 0:  # not reaped yet: the pid is still ours
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        self.wait(timeout)
        return tuple(p.read_text() if p else None for p in (self._out, self._err))  # type: ignore[return-value]


class Zygote:
    """The client side: ``spawn(args, env)`` -> ``ForkedProcess``; ``run`` waits for it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="canaryctl-zygote-"))
        self._lock = threading.Lock()
        self._count = 0
        self._children: dict[int, ForkedProcess] = {}
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.forkcli"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parents[1]),
        )
        assert self._proc.stdout is not None
        ready = self._proc.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the canaryctl zygote did not start: {ready!r}")
        self._reader = threading.Thread(target=self._read, name="zygote-answers", daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()  # the zygote kills what still runs, then exits
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=10)
            if self._proc.stdout:
                self._proc.stdout.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            answer = json.loads(line)
            child = self._children[answer["id"]]
            if "pid" in answer:
                child.pid = answer["pid"]
                child._started.set()
            else:
                del self._children[answer["id"]]
                child._exited(int(answer["code"]))
        for child in list(self._children.values()):  # the zygote died: nothing will answer
            child._started.set()
            child._exited(-int(signal.SIGKILL))

    def spawn(
        self, args: list[str], env: dict[str, str], *, quiet: bool = False, timeout: float = 0
    ) -> ForkedProcess:
        """``canaryctl ARGS`` in a forked child with this environment, running; output is
        discarded when ``quiet``; a child still running after ``timeout`` seconds (0: never)
        is killed by SIGALRM (exit code -14)."""
        assert self._proc is not None and self._proc.stdin
        with self._lock:
            self._count += 1
            ident = self._count
            out = None if quiet else self._dir / f"{ident}.out"
            err = None if quiet else self._dir / f"{ident}.err"
            child = ForkedProcess(out, err)
            self._children[ident] = child
            request: dict[str, Any] = {
                "id": ident,
                "args": args,
                "env": env,
                "stdout": str(out or os.devnull),
                "stderr": str(err or os.devnull),
                "timeout": max(1, round(timeout)) if timeout else 0,
            }
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        child._started.wait()
        return child

    def run(
        self, args: list[str], env: dict[str, str], timeout: float = 120
    ) -> tuple[int, str, str]:
        """``canaryctl ARGS`` to completion: (exit code, stdout, stderr)."""
        child = self.spawn(args, env, timeout=timeout)
        out, err = child.communicate()
        return child.wait(), out or "", err or ""


def _child(request: dict[str, Any]) -> None:  # pragma: no cover - runs in the forked child
    import canaryctl.cli

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
        if request["timeout"]:
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


def _serve() -> None:  # pragma: no cover - runs in the zygote process
    # What the commands import lazily: paid once here, not in every child.
    for module in (
        "canaryctl.cli",
        "canaryctl.controller",
        "canaryctl.kube",
        "canaryctl.logs",
        "canaryctl.mesh.istio",
        "canaryctl.metrics.prometheus",
        "canaryctl.operations",
        "canaryctl.policy",
        "canaryctl.reconcile",
        "canaryctl.render",
    ):
        importlib.import_module(module)
    from kubernetes import client

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

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (request id, pid)
    pending = b""
    print("ready", flush=True)

    def answer(**fields: int) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def reap(pidfd: int) -> None:
        ident, pid = children.pop(pidfd)
        selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        answer(id=ident, code=os.waitstatus_to_exitcode(status))

    open_stdin = True
    while open_stdin or children:
        for key, _ in selector.select():
            if key.fd != 0:
                reap(key.fd)
                continue
            data = os.read(0, 1 << 16)
            if not data:  # the tests are done: end what still runs
                open_stdin = False
                selector.unregister(0)
                for _ident, pid in children.values():
                    os.kill(pid, signal.SIGKILL)
                continue
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    for fd in children:
                        os.close(fd)
                    _child(request)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (request["id"], pid)
                selector.register(pidfd, selectors.EVENT_READ)
                answer(id=request["id"], pid=pid)


if __name__ == "__main__":
    _serve()
