"""Logging: every line carries the request it belongs to.

``MEMCHAT_LOG_FORMAT=text`` (default): ``time level logger [request id] message key=value ...``.
``MEMCHAT_LOG_FORMAT=json``: one JSON object per line with ``time``, ``level``, ``logger``, ``message``,
``request_id``, ``surface``, ``org_id`` and, where the line has them, ``method``, ``path``, ``status``,
``duration_ms`` (the access log, `app.api.observe`) and ``exc_info``. Never a key: the organisation id
is the one the key resolved to.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from app.obs.context import current

FORMATS = ("text", "json")
# Fields a log call may add with ``extra=``; they appear in both formats.
EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "client")
NOISY = ("httpx2", "httpcore2", "httpx", "httpcore")  # one INFO line per upstream request


class RequestContextFilter(logging.Filter):
    """Adds ``request_id``, ``surface`` and ``org_id`` (``None`` outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = current()
        if info is None:
            record.request_id = record.__dict__.get("request_id")
            record.surface = record.__dict__.get("surface")
            record.org_id = record.__dict__.get("org_id")
        else:
            record.request_id, record.surface, record.org_id = info.request_id, info.surface, info.org_id
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage(), "request_id": getattr(record, "request_id", None),
                               "surface": getattr(record, "surface", None), "org_id": getattr(record, "org_id", None)}
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        line = f"{_timestamp(record)} {record.levelname} {record.name}{f' [{rid}]' if rid else ''}: {record.getMessage()}"
        org = getattr(record, "org_id", None)
        if org and record.name == "memchat.access":
            line += f" org={org}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(fmt: str = "text", level: str | int = "info") -> None:
    """One handler on the root logger (stderr); uvicorn's and memchat's loggers propagate to it."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if isinstance(level, str):
        level = 5 if level.lower() == "trace" else level.upper()  # uvicorn's TRACE is 5
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")  # replaced by memchat.access
    access.handlers.clear()
    access.propagate = False
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
