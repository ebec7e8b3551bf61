"""structlog setup: logs always go to stderr (stdout is for machine output).

On a TTY the console renderer is used; otherwise one JSON object per line, so a CronJob's or a
pipeline's logs can be parsed.

structlog is imported on the first log call, not at import: a command that never logs
(``--help``, ``policy validate``) does not pay for it (with ``rich`` installed, importing it
costs more than the rest of such a command). ``get_logger`` is the modules' way to a logger.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import Any

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (tests and embedders swap it; a logger bound to
    an old, closed stream would fail)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_pending: dict[str, Any] | None = None  # setup() called before structlog was imported


def _structlog() -> ModuleType:
    global _pending
    import structlog

    if _pending is not None:
        settings, _pending = _pending, None
        _configure(**settings)
    return structlog


class _Logger:
    """A named structlog logger, resolved at each call (so configuration changes, such as
    ``structlog.testing.capture_logs``, apply)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(_structlog().get_logger(self._name), attr)


def get_logger(name: str) -> Any:
    return _Logger(name)


def setup(level: str = "info", *, json_logs: bool | None = None) -> None:
    """Configure logging now if structlog is loaded, else at the first log call."""
    global _pending
    if "structlog" in sys.modules:
        _pending = None
        _configure(level, json_logs)
    else:
        _pending = {"level": level, "json_logs": json_logs}


def _configure(level: str, json_logs: bool | None) -> None:
    import structlog

    tty = sys.stderr.isatty()
    use_json = (not tty) if json_logs is None else json_logs
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if use_json:
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=tty)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
