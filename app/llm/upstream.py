"""The upstream LLM client: one pooled ``AsyncOpenAI`` whose raw bytes are relayed, never re-modelled.

Streaming uses the SDK's ``with_streaming_response`` so memchat forwards the upstream's SSE bytes as they
arrive; request bodies are forwarded as the client sent them (plus memchat's memory section).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import msgspec
import openai

from app.config import UpstreamSettings
from app.errors import UpstreamError, UpstreamTimeout
from app.llm.backend import ChatContext

# Fields memchat passes to the SDK as named arguments; everything else travels in ``extra_body`` untouched.
_NAMED = ("model", "messages")


def _upstream_status_error(exc: openai.APIStatusError) -> UpstreamError:
    body = exc.body
    status = exc.status_code
    message = exc.message
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    if status >= 500:
        # The upstream broke: 502 to our client, with the upstream's words for context.
        return UpstreamError(f"upstream error ({status}): {message}", status_code=502, body=body)
    return UpstreamError(message, status_code=status, body=body)


def translate_error(exc: BaseException) -> UpstreamError:
    """Map SDK / transport exceptions to memchat's ``UpstreamError`` family."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return _upstream_status_error(exc)
    if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException, TimeoutError)):
        return UpstreamTimeout()
    if isinstance(exc, openai.APIConnectionError | httpx2.HTTPError | httpx2.StreamError | OSError):
        return UpstreamError(f"could not reach the upstream model: {type(exc).__name__}", status_code=502)
    return UpstreamError(f"upstream failure: {type(exc).__name__}", status_code=502)


class UpstreamStream:
    """An open upstream SSE response. Iterate raw bytes; always ``aclose()`` (idempotent, shielded)."""

    def __init__(self, manager: Any, response: Any) -> None:
        self._manager = manager
        self._response = response
        self._closed = False

    @property
    def headers(self) -> httpx2.Headers:
        return self._response.http_response.headers

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.http_response.aiter_bytes():
                yield chunk
        except (httpx2.HTTPError, httpx2.StreamError, openai.APIError, OSError) as exc:
            raise translate_error(exc) from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._manager.__aexit__(None, None, None)


class UpstreamClient:
    """Owns the pooled SDK client; created in the app lifespan, closed on shutdown."""

    offline = False

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        timeout = httpx2.Timeout(settings.timeout, connect=settings.connect_timeout)
        self._http = httpx2.AsyncClient(
            timeout=timeout,
            limits=httpx2.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=min(settings.max_connections, 200),
            ),
        )
        # The proxy never retries on its own: the caller's SDK has its own retry policy, and a silent
        # retry would double-bill and stall a stream.
        self.sdk = openai.AsyncOpenAI(
            api_key=settings.api_key or "memchat-no-key",
            base_url=settings.effective_base_url,
            http_client=self._http,
            max_retries=0,
            timeout=timeout,
        )

    @staticmethod
    def _split(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        named = {k: body[k] for k in _NAMED if k in body}
        extra = {k: v for k, v in body.items() if k not in _NAMED}
        return named, extra

    async def open_stream(self, body: dict[str, Any], context: ChatContext | None = None) -> UpstreamStream:
        """Start a streaming completion; raises ``UpstreamError`` before any byte if the upstream refuses."""
        named, extra = self._split(body)
        manager = self.sdk.chat.completions.with_streaming_response.create(**named, extra_body=extra)
        try:
            response = await manager.__aenter__()
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
            raise translate_error(exc) from exc
        return UpstreamStream(manager, response)

    async def complete(self, body: dict[str, Any]) -> bytes:
        """Non-streaming completion; returns the upstream's JSON bytes."""
        named, extra = self._split(body)
        try:
            async with self.sdk.chat.completions.with_streaming_response.create(**named, extra_body=extra) as resp:
                return await resp.read()
        except (openai.APIError, httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            raise translate_error(exc) from exc

    async def complete_json(self, body: dict[str, Any], context: ChatContext | None = None) -> dict[str, Any]:
        raw = await self.complete(body)
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise UpstreamError("upstream returned invalid JSON") from exc
        if not isinstance(decoded, dict):
            raise UpstreamError("upstream returned an unexpected JSON value")
        return decoded

    async def models(self) -> bytes:
        try:
            async with self.sdk.models.with_streaming_response.list() as resp:
                return await resp.read()
        except (openai.APIError, httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            raise translate_error(exc) from exc

    async def ping(self) -> bool:
        try:
            with anyio.fail_after(5):
                await self.models()
        except (UpstreamError, TimeoutError):
            return False
        return True

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.sdk.close()
            await self._http.aclose()
