"""A tiny real HTTP server on 127.0.0.1 that records requests and answers as scripted.

Why: webhooks and notifications are edges; they are tested against real HTTP (sockets,
timeouts, refused connections, slow peers), not against mocks of our own code. Usage::

    with RecordingServer() as server:
        server.script("/gate", [403, 403, 403, 200])   # the last answer repeats
        server.script("/slow", [200], delay=5)          # answer after 5 s
        call(hook_for(server.url("/gate")), ...)
        server.wait_for("/gate", 4, timeout=2)
        server.requests("/gate")[0].json

Unscripted paths answer 200. ``delay`` waits are cut short when the server stops, so a test
never hangs on a client that gave up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # without the query string
    headers: dict[str, str]
    body: bytes
    json: Any  # the decoded body, None when it is not JSON
    at: float  # time.monotonic() when the request arrived


@dataclass
class _Script:
    statuses: list[int]
    delay: float = 0.0
    body: bytes = b"ok"
    served: int = field(default=0)

    def next_status(self) -> int:
        status = self.statuses[min(self.served, len(self.statuses) - 1)]
        self.served += 1
        return status


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients that time out or drop kept-alive connections are part of the tests."""


class RecordingServer:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._scripts: dict[str, _Script] = {}
        self._requests: list[Recorded] = []
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()  # releases handlers sleeping in a delay
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/", *, userinfo: str | None = None) -> str:
        auth = f"{userinfo}@" if userinfo else ""
        return f"http://{auth}127.0.0.1:{self.port}{path}"

    # --- scripting and inspection ------------------------------------------------------------
    def script(
        self, path: str, statuses: Sequence[int], *, delay: float = 0.0, body: bytes = b"ok"
    ) -> None:
        """Answer ``path`` with these statuses in turn (the last one repeats), each after
        ``delay`` seconds."""
        if not statuses:
            raise ValueError("script needs at least one status")
        with self._lock:
            self._scripts[path] = _Script(list(statuses), delay, body)

    def requests(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(self, path: str | None, count: int, timeout: float = 5.0) -> list[Recorded]:
        """Wait until ``count`` requests to ``path`` arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(got := self.requests(path)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{path}: {len(got)} requests after {timeout}s, want {count}"
                    )
                self._lock.wait(left)
        return got

    # --- the handler -------------------------------------------------------------------------
    def _record(self, handler: BaseHTTPRequestHandler) -> _Script | None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        path = urlsplit(handler.path).path
        rec = Recorded(
            handler.command, path, dict(handler.headers.items()), raw, decoded, time.monotonic()
        )
        with self._lock:
            self._requests.append(rec)
            self._lock.notify_all()
            script = self._scripts.get(path)
            if script is None:
                return None
            status = script.next_status()
            return _Script([status], script.delay, script.body)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                plan = server._record(self) or _Script([200])
                if plan.delay and server._stop.wait(plan.delay):
                    self.close_connection = True
                    return  # stopping: hang up without an answer
                try:
                    self.send_response(plan.statuses[0])
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(plan.body)))
                    self.end_headers()
                    self.wfile.write(plan.body)
                except OSError:  # the client gave up (timeout) meanwhile
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
