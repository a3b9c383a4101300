"""The outermost ASGI layer: a request id, the access log and the request metrics, for every HTTP request
and websocket handshake (404s and errors included).

- ``x-request-id``: the client's when it is usable (`app.obs.context.accept_request_id`), else a new one;
  returned on every response (the websocket handshake's too), sent upstream (`app.llm.upstream`) and put
  in every log line of the request (`app.obs.logs`).
- One ``memchat.access`` line per request at INFO: method, path (no query string), status, duration.
- ``memchat_http_requests_total{surface,status}`` and ``memchat_http_request_duration_seconds{surface}``.

Per streamed chunk the only work is the wrapped ``send``'s type check.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from app.obs.context import CURRENT, HEADER, RequestInfo, accept_request_id
from app.obs.metrics import SURFACES, Metrics

log = logging.getLogger("memchat.access")

_HEADER = HEADER.encode()
_START = frozenset({"http.response.start", "websocket.http.response.start"})


def surface_of(path: str, kind: str = "http") -> str:
    """A bounded label for a path (never anything the client chose beyond the route)."""
    if kind == "websocket" or path.startswith("/ws/"):
        return "ws"
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/serve/"):
        return "personal"
    if path.startswith("/api/"):
        return "rest"
    if path in ("/healthz", "/readyz", "/metrics") or path.startswith("/schema"):
        return "ops"
    if path == "/" or path.startswith(("/static", "/auth/", "/web", "/favicon")):
        return "web"
    return "other"


def _client_request_id(scope: dict[str, Any]) -> bytes | None:
    for name, value in scope.get("headers") or ():
        if name == _HEADER:
            return value  # type: ignore[no-any-return]
    return None


class Observe:
    def __init__(self, app: Any, metrics: Metrics, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log
        self.metrics = metrics
        self._requests = metrics.requests
        self._durations = {surface: metrics.request_seconds.labels(surface) for surface in SURFACES}

    def __getattr__(self, name: str) -> Any:  # app.state etc. of the wrapped application
        return getattr(self.app, name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        info = RequestInfo(accept_request_id(_client_request_id(scope)), surface_of(path, kind))
        token = CURRENT.set(info)
        header = (_HEADER, info.request_id.encode())
        status = 0
        # Work for the heap trimmer's idea of quiet: not probes and scrapes, not an open websocket (the demo
        # page) waiting for its user.
        metrics = self.metrics
        busy = kind == "http" and info.surface != "ops"
        metrics.requests_started += busy
        metrics.requests_in_flight += busy

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if not status:  # once the answer has started, a chunk costs this test and nothing else
                kind_ = message["type"]
                if kind_ in _START:
                    status = message["status"]
                    message = {**message, "headers": [*message.get("headers", ()), header]}
                elif kind_ == "websocket.accept":
                    status = 101
                    message = {**message, "headers": [*message.get("headers", ()), header]}
                elif kind_ == "websocket.close":
                    status = 403  # closed before the handshake completed
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = status or 500
            raise
        finally:
            metrics.requests_in_flight -= busy
            elapsed = time.perf_counter() - started
            status = status or 499  # the client left before an answer started
            self._requests.labels(info.surface, str(status)).inc()
            self._durations[info.surface].observe(elapsed)
            if self.access_log and log.isEnabledFor(logging.INFO):
                method = scope.get("method", "WS")
                log.info("%s %s %s %.1fms", method, path, status, elapsed * 1000,
                         extra={"method": method, "path": path, "status": status,
                                "duration_ms": round(elapsed * 1000, 2)})
            CURRENT.reset(token)
