"""Structured logs: one JSON object per line, carrying the ids of the work at hand.

A line reads ``{"time": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger":
"delivery.worker", "message": "...", "request_id": "...", "file_id": 3}``; the
ids appear when known. They come from :func:`log_context` (a ``contextvars``
binding: the worker sets it around each file, the API around each HTTP
request, with ``correlation_id`` too) or from a call's ``extra={...}``.

Format: ``setup_logging(fmt)``, else ``DELIVERY_LOG_FORMAT`` (``json`` or
``text``), else ``json`` when stderr is not a terminal (a service under a
supervisor, a container, a CI log) and ``text`` when a person is watching.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import IO, Any

__all__ = ["JsonFormatter", "TextFormatter", "log_context", "bind", "unbind", "context_ids", "setup_logging",
           "resolve_format", "current_format", "IDS", "FORMATS"]

IDS = ("request_id", "file_id", "correlation_id", "worker")
FORMATS = ("json", "text")
_ids: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "delivery_log_ids", default=None)
_configured: str | None = None
_MARK = "_delivery_handler"  # tags our own handler, so a second setup replaces it


def context_ids() -> dict[str, Any]:
    """The ids bound in this context (thread or task)."""
    return dict(_ids.get() or {})


Token = contextvars.Token[dict[str, Any] | None]


def bind(**ids: Any) -> Token:
    """Add ids (None values are skipped) to this context; undo with :func:`unbind`."""
    return _ids.set({**context_ids(), **{k: v for k, v in ids.items() if v is not None}})


def unbind(token: Token) -> None:
    _ids.reset(token)


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind ids (None values are skipped) to every log line written inside the block."""
    token = bind(**ids)
    try:
        yield
    finally:
        unbind(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    found = {k: v for k, v in context_ids().items() if k in IDS}
    for key in IDS:  # extra={...} on the call wins over the context
        value = getattr(record, key, None)
        if value is not None:
            found[key] = value
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # default=str: a stray non-JSON value in an id must not lose the line
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: the same facts on one readable line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = _fields(record)
        return text + ("  [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]"
                       if ids else "")


def resolve_format(fmt: str | None = None, stream: IO[str] | None = None) -> str:
    """The format to use: the argument, else ``DELIVERY_LOG_FORMAT``, else by terminal."""
    chosen = (fmt or os.environ.get("DELIVERY_LOG_FORMAT") or "").strip().lower()
    if chosen in ("", "auto"):
        out = stream or sys.stderr
        return "text" if getattr(out, "isatty", lambda: False)() else "json"
    if chosen not in FORMATS:
        raise ValueError(f"log format must be json or text, not {chosen!r}")
    return chosen


def setup_logging(fmt: str | None = None, level: int | str = logging.INFO,
                  stream: IO[str] | None = None) -> str:
    """Send the root logger's lines to ``stream`` (stderr) in ``fmt``; returns the format.

    Idempotent: a second call replaces the handler the first one installed.
    """
    global _configured
    chosen = resolve_format(fmt, stream)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(level)
    # pika logs every connection step at INFO: a flood that hides our own lines.
    logging.getLogger("pika").setLevel(logging.WARNING)
    _configured = chosen
    return chosen


def current_format() -> str | None:
    """What :func:`setup_logging` chose in this process (None: never called)."""
    return _configured
