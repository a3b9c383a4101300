"""The fake's ASGI entry: routing of the OpenAI API paths (with or without ``/v1``) and of the control API
(``/_fake/...``), and the last line of defence that turns any error into an OpenAI-shaped response rather
than a traceback on the wire."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

import msgspec

from . import io
from .chat import handle_chat
from .config import CONFIG_KEYS, ApiError, FakeConfig, bad, validate_overrides
from .embeddings import handle_embeddings, handle_models
from .responses import handle_responses
from .state import FakeState

log = logging.getLogger("memchat.testkit.fake_openai")


class FakeOpenAI(FakeState):
    """ASGI application.  All mutable state lives here (``FakeState``)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        stype = scope["type"]
        if stype == "lifespan":
            await self._lifespan(receive, send)
            return
        if stype != "http":
            return

        started = False

        async def tracked_send(msg: dict[str, Any]) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            raw = await io.read_body(receive)
            if raw is None:
                return
            await self._dispatch(scope, raw, receive, tracked_send)
        except ApiError as e:
            if not started:
                await io.send_error(tracked_send, e)
        except Exception as e:  # never leak a traceback to the client
            log.exception("internal error in fake server")
            if not started:
                await io.send_error(tracked_send,
                                    ApiError(500, f"fake server internal error: {type(e).__name__}: {e}"))

    @staticmethod
    async def _lifespan(receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, scope: dict[str, Any], raw: bytes, receive: Any, send: Any) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if path.startswith("/_fake/") or path == "/_fake":
            await self._control(method, path, scope, raw, send)
            return

        body: Any = None
        parse_error = None
        if raw:
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError as e:
                parse_error = str(e)
        self.record_request(scope, path, method, body)

        api_path = path[3:] if path.startswith("/v1/") else path
        if api_path in ("/chat/completions", "/embeddings", "/responses"):
            if method != "POST":
                raise ApiError(405, f"Method {method} not allowed for {path}")
            if parse_error is not None or not raw:
                raise bad(f"We could not parse the JSON body of your request. ({parse_error or 'empty body'})")
            if api_path == "/chat/completions":
                await handle_chat(self, body, path, receive, send)
            elif api_path == "/responses":
                await handle_responses(self, body, path, receive, send)
            else:
                await handle_embeddings(self, body, receive, send)
        elif (api_path == "/models" or api_path.startswith("/models/")) and method == "GET":
            await handle_models(api_path, send)
        else:
            raise ApiError(404, f"Invalid URL ({method} {path})")

    async def _control(self, method: str, path: str, scope: dict[str, Any], raw: bytes, send: Any) -> None:
        body: Any = None
        if raw:
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError as e:
                raise bad(f"invalid JSON body: {e}") from None
        await io.send_json(send, 200, self._control_result((method, path.rstrip("/")), scope, body))

    def _control_result(self, key: tuple[str, str], scope: dict[str, Any], body: Any) -> Any:
        """The JSON answer of one control endpoint (after applying it)."""
        if key == ("GET", "/_fake/health"):
            return {"ok": True}
        if key == ("GET", "/_fake/requests"):
            q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            items = list(self.requests)
            if "path" in q:
                sub = q["path"][0]
                items = [r for r in items if sub in r["path"]]
            return items
        if key == ("DELETE", "/_fake/requests"):
            self.requests.clear()
            return {"ok": True}
        if key == ("GET", "/_fake/streams"):
            return self.streams_snapshot()
        if key == ("GET", "/_fake/rules"):
            return self.rules
        if key == ("POST", "/_fake/rules"):
            return self.add_rules(body)
        if key == ("DELETE", "/_fake/rules"):
            self.rules.clear()
            return {"ok": True}
        if key == ("POST", "/_fake/config"):
            for k, v in validate_overrides(body, CONFIG_KEYS, "config").items():
                setattr(self.config, k, v)
            return asdict(self.config)
        if key == ("GET", "/_fake/config"):
            return asdict(self.config)
        if key == ("POST", "/_fake/reset"):
            self.reset()
            return {"ok": True}
        raise ApiError(404, f"Invalid URL ({key[0]} {scope['path']})")


def create_app(config: FakeConfig | dict[str, Any] | None = None) -> FakeOpenAI:
    """Create the ASGI app.  ``config`` may be a FakeConfig, a dict, or None."""
    if config is None:
        config = FakeConfig()
    elif isinstance(config, dict):
        config = FakeConfig(**config)
    return FakeOpenAI(config)
