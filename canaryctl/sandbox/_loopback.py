"""Serve an aiohttp handler on loopback from a background thread with its own event loop.

The sandbox's callers are synchronous (the ``kubernetes`` client, test code, the CLI in a
subprocess), while kmock is asyncio. A dedicated thread and loop per server keeps the two apart:
callers only see a URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Self

import aiohttp.web

from canaryctl.errors import SandboxError

Handler = Callable[[aiohttp.web.BaseRequest], Awaitable[aiohttp.web.StreamResponse]]


class LoopbackServer:
    """``handler`` on ``host``:<free port> while entered; an async-with-able handler is entered."""

    def __init__(self, handler: Handler, *, name: str, host: str = "127.0.0.1") -> None:
        self._handler = handler
        self._name = name
        self._host = host
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=15):
            raise SandboxError(f"{self._name} did not start within 15s")
        if self._error is not None:
            raise SandboxError(f"{self._name} failed to start: {self._error!r}")
        return self

    def __exit__(self, *_exc: object) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._port = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (no trailing slash)."""
        if self._port is None:
            raise RuntimeError(f"{self._name} is not running")
        return f"http://{self._host}:{self._port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(self._handler, contextlib.AbstractAsyncContextManager):
                await stack.enter_async_context(self._handler)
            server = aiohttp.web.Server(self._handler, access_log=None)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = aiohttp.web.TCPSite(runner, self._host, 0)
            await site.start()
            self._port = runner.addresses[0][1]
            self._ready.set()
            await self._stop.wait()
