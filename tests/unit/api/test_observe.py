"""The outermost ASGI layer: request ids on every response, request metrics, the access log."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from app.api.observe import Observe, surface_of
from app.obs.context import current
from app.obs.logs import JsonFormatter, RequestContextFilter
from app.obs.metrics import Metrics


class App:
    def __init__(self, status: int = 200, fail: bool = False) -> None:
        self.status, self.fail = status, fail
        self.seen: str | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        info = current()
        self.seen = info.request_id if info else None
        if self.fail:
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"a", b"b")]})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def call(app: Observe, headers: list[tuple[bytes, bytes]], path: str = "/v1/chat/completions") -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await app(scope, None, send)
    return sent


def count(metrics: Metrics, surface: str, status: str) -> float:
    return metrics.registry.get_sample_value("memchat_http_requests_total", {"surface": surface, "status": status}) or 0


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_request_id_is_echoed_and_counted() -> None:
    metrics, inner = Metrics(), App()
    access, handler = logging.getLogger("memchat.access"), Lines()
    access.addHandler(handler)
    level, access.level = access.level, logging.INFO
    try:
        sent = await call(Observe(inner, metrics), [(b"x-request-id", b"client-1")])
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert (b"x-request-id", b"client-1") in sent[0]["headers"] and (b"a", b"b") in sent[0]["headers"]
    assert inner.seen == "client-1" and current() is None
    assert count(metrics, "openai", "200") == 1
    [line] = handler.lines
    assert line["request_id"] == "client-1" and line["status"] == 200 and line["surface"] == "openai"
    assert line["path"] == "/v1/chat/completions" and line["method"] == "POST"


async def test_a_new_id_when_none_is_sent_and_errors_are_counted() -> None:
    metrics, inner = Metrics(), App(status=404)
    sent = await call(Observe(inner, metrics), [], path="/nope")
    rid = dict(sent[0]["headers"])[b"x-request-id"]
    assert len(rid) == 32 and inner.seen == rid.decode()
    assert count(metrics, "other", "404") == 1
    with pytest.raises(RuntimeError):
        await call(Observe(App(fail=True), metrics), [], path="/api/v1/memory")
    assert count(metrics, "rest", "500") == 1


def test_surfaces_are_bounded() -> None:
    assert surface_of("/v1/memory/chat/completions") == "openai"
    assert surface_of("/serve/api/v1/chat_personal") == "personal"
    assert surface_of("/ws/chat", "websocket") == "ws"
    assert surface_of("/metrics") == "ops"
    assert surface_of("/user-chosen/" + "x" * 50) == "other"
