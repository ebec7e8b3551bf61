"""A small scriptable HTTP fault proxy in front of the sandbox's real Prometheus.

canaryctl is given the proxy's URL as ``--prometheus-url``. Every request is forwarded to the
real Prometheus unless a scripted fault matches it: a fault applies to the next ``times``
matching requests, or to every matching request for ``seconds`` from now, and ``match`` (a
regex searched in the PromQL query) narrows it to some queries (e.g. only the canary's success
rate). A fault can delay the answer, replace it (HTTP status + body), or forward and rewrite
the real answer (empty vector, NaN, several series). ``stop()`` closes the listening socket, so
new connections are refused, and ``start()`` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Transform = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Fault:
    """What to do with a matching request. ``kind`` names it in the log."""

    kind: str
    match: re.Pattern[str] | None = None
    times: int | None = None  # the next N matching requests ...
    until: float | None = None  # ... or every matching request until this monotonic time
    delay: float = 0.0  # wait before answering (then answer as below, or forward)
    status: int | None = None  # answer this status with ``body`` instead of forwarding
    body: str = ""
    transform: Transform | None = None  # forward, then rewrite the JSON answer
    when: Callable[[], bool] | None = None  # armed only while this is true (checked per request)
    hits: int = 0

    def live(self, now: float) -> bool:
        if self.times is not None:
            return self.hits < self.times
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Served:
    at: float  # monotonic
    query: str
    action: str  # "forwarded" or the fault's kind


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    log: list[Served] = field(default_factory=list)


class PrometheusFaultProxy:
    """See the module docstring. Thread-safe; use as a context manager."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._lock = threading.Lock()
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> PrometheusFaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        if self._server is not None:
            return
        for _attempt in range(50):  # the old socket may linger for a moment after stop()
            try:
                server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port} again")
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket: connections are refused until ``start()``."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # --- scripting ------------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        *,
        times: int | None = None,
        seconds: float | None = None,
        match: str | None = None,
        delay: float = 0.0,
        status: int | None = None,
        body: str | dict[str, Any] = "",
        transform: Transform | None = None,
        when: Callable[[], bool] | None = None,
    ) -> Fault:
        """Script a fault for the next ``times`` matching requests or for ``seconds``
        (neither: until ``clear()``); with ``when``, only requests arriving while ``when()`` is
        true match (e.g. "from the second rollout write on", with no race against a poller)."""
        fault = Fault(
            kind=kind,
            match=re.compile(match) if match else None,
            times=times,
            until=None if seconds is None else time.monotonic() + seconds,
            delay=delay,
            status=status,
            body=body if isinstance(body, str) else json.dumps(body),
            transform=transform,
            when=when,
        )
        with self._lock:
            self._state.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._state = _State()

    def log(self) -> list[Served]:
        with self._lock:
            return list(self._state.log)

    def hits(self, kind: str) -> int:
        return sum(1 for s in self.log() if s.action == kind)

    # --- serving --------------------------------------------------------------------------

    def _take(self, query: str) -> Fault | None:
        now = time.monotonic()
        with self._lock:
            for fault in self._state.faults:
                if not fault.live(now):
                    continue
                if fault.match is not None and not fault.match.search(query):
                    continue
                if fault.when is not None and not fault.when():
                    continue
                fault.hits += 1
                return fault
        return None

    def _record(self, query: str, action: str) -> None:
        with self._lock:
            self._state.log.append(Served(time.monotonic(), query, action))

    def forward(
        self, method: str, path: str, body: bytes, content_type: str
    ) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            headers = {"Content-Type": content_type} if content_type else {}
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", "application/json"), resp.read()
        finally:
            conn.close()


def _query_of(path: str, body: bytes) -> str:
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    params.update(urllib.parse.parse_qs(body.decode("utf-8", "replace")))
    return (params.get("query") or [""])[0]


def _handler(proxy: PrometheusFaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "")
            query = _query_of(self.path, body)
            fault = proxy._take(query) if self.path.startswith("/api/") else None
            proxy._record(query, fault.kind if fault else "forwarded")
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.status is not None:
                self._answer(fault.status, "application/json", fault.body.encode())
                return
            try:
                status, ctype, payload = proxy.forward(self.command, self.path, body, content_type)
            except OSError as exc:  # Prometheus itself is gone (e.g. the session is ending)
                self._answer(502, "text/plain", f"upstream: {exc}".encode())
                return
            if fault is not None and fault.transform is not None and status == 200:
                payload = json.dumps(fault.transform(json.loads(payload))).encode()
            self._answer(status, ctype, payload)

        def _answer(self, status: int, ctype: str, payload: bytes) -> None:
            with contextlib.suppress(OSError):  # the client gave up (timeout): nothing to do
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# --- answer rewrites (``transform``) ----------------------------------------------------------


def empty_vector(answer: dict[str, Any]) -> dict[str, Any]:
    """The query matched no series."""
    answer["data"]["result"] = []
    return answer


def with_value(value: str) -> Transform:
    """Every sample's value replaced, e.g. "NaN", "+Inf", "-Inf" (Prometheus's encodings)."""

    def transform(answer: dict[str, Any]) -> dict[str, Any]:
        data = answer["data"]
        if data.get("resultType") == "vector":
            result = data.get("result") or [{"metric": {}, "value": [time.time(), "0"]}]
            data["result"] = [{**s, "value": [s["value"][0], value]} for s in result]
        return answer

    return transform


def several_series(count: int) -> Transform:
    """The one series answered ``count`` times with a distinguishing ``pod`` label."""

    def transform(answer: dict[str, Any]) -> dict[str, Any]:
        data = answer["data"]
        result = data.get("result") or [{"metric": {}, "value": [time.time(), "1"]}]
        first = result[0]
        data["result"] = [
            {**first, "metric": {**first.get("metric", {}), "pod": f"rest-apl-v2-{i}"}}
            for i in range(count)
        ]
        return answer

    return transform
