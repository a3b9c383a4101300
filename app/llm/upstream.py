"""The upstream LLM client: one pooled ``AsyncOpenAI`` whose raw bytes are relayed, never re-modelled.

The SDK owns the upstream's configuration: base URL, credentials and the headers it sends
(``default_headers`` + ``auth_headers``, resolved once), its pooled ``httpx2`` client, and the cold calls
(``models``). Chat completions -- the hot path -- post the client's body (plus memchat's memory section)
as bytes encoded once with msgspec, through that same pooled client, and relay the upstream's SSE bytes as
they arrive. Building the request through ``chat.completions.with_streaming_response.create`` cost about
1.1-1.9 ms of CPU per request (option models, header merging, JSON re-encoding of the messages), a third
of memchat's whole per-request budget; see docs/benchmarks.md, "Proxy overhead". Error statuses are mapped
exactly as the SDK's ``APIStatusError`` would carry them.
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
from app.obs.context import HEADER as REQUEST_ID_HEADER
from app.obs.context import current_request_id
from app.obs.metrics import Metrics

_encode = msgspec.json.Encoder().encode


def _mapped_status(status: int, message: str, body: Any) -> UpstreamError:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    if status >= 500 or status < 400:
        # The upstream broke (or redirected, which an API client does not follow): 502 to our client,
        # with the upstream's words for context.
        return UpstreamError(f"upstream error ({status}): {message}", status_code=502, body=body)
    return UpstreamError(message, status_code=status, body=body)


def _refused(exc: BaseException) -> bool:
    """The SDK's aiohttp transport reports a refused or failed connection as ``ConnectTimeout`` (its error map
    prefers the base class); the aiohttp error it wraps carries the real ``os_error``."""
    os_error = getattr(exc.__cause__, "os_error", None)
    return isinstance(os_error, OSError) and not isinstance(os_error, TimeoutError)


def translate_error(exc: BaseException) -> UpstreamError:
    """Map SDK / transport exceptions to memchat's ``UpstreamError`` family."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return _mapped_status(exc.status_code, exc.message, exc.body)
    if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException, TimeoutError)) and not _refused(exc):
        return UpstreamTimeout()
    if isinstance(exc, openai.APIConnectionError | httpx2.HTTPError | httpx2.StreamError | OSError):
        return UpstreamError(f"could not reach the upstream model: {type(exc).__name__}", status_code=502)
    return UpstreamError(f"upstream failure: {type(exc).__name__}", status_code=502)


def status_error(status: int, raw: bytes) -> UpstreamError:
    """The error for an upstream error response, with the message and body the SDK's ``APIStatusError``
    would carry (``body`` = the JSON's ``error`` object when there is one)."""
    try:
        decoded: Any = msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        decoded = raw.decode("utf-8", "replace")[:2000] or None
    body = decoded.get("error", decoded) if isinstance(decoded, dict) else decoded
    message = f"Error code: {status} - {decoded}" if decoded is not None else f"Error code: {status}"
    return _mapped_status(status, message, body)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise UpstreamError("upstream returned invalid JSON") from exc
    if not isinstance(decoded, dict):
        raise UpstreamError("upstream returned an unexpected JSON value")
    return decoded


def responses_unsupported(exc: UpstreamError) -> UpstreamError:
    """An upstream that does not serve ``POST /responses`` answers 404 (or 405) without an error code --
    unlike a 404 about the request itself (``model_not_found``), which is passed through. That is
    memchat's upstream failing: a 502 carrying the upstream's status and message."""
    body = exc.body if isinstance(exc.body, dict) else {}
    if exc.status_code not in (404, 405) or body.get("code"):
        return exc
    message = body.get("message") if isinstance(body.get("message"), str) else exc.message
    return UpstreamError(f"the upstream does not serve the Responses API (POST /responses answered "
                         f"{exc.status_code}): {message}", status_code=502, code="responses_unsupported")


class UpstreamStream:
    """An open upstream SSE response. Iterate raw bytes; always ``aclose()`` (idempotent, shielded)."""

    def __init__(self, response: httpx2.Response) -> None:
        self._response = response
        self._closed = False

    @property
    def headers(self) -> httpx2.Headers:
        return self._response.headers

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        # Streams are requested with ``Accept-Encoding: identity``; raw bytes skip httpx2's decoder layers
        # unless the upstream compressed anyway.
        encoding = self._response.headers.get("content-encoding", "identity").strip().lower()
        chunks = self._response.aiter_raw() if encoding in ("", "identity") else self._response.aiter_bytes()
        try:
            async for chunk in chunks:
                yield chunk
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            raise translate_error(exc) from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._response.aclose()


class UpstreamClient:
    """Owns the pooled SDK client; created in the app lifespan, closed on shutdown."""

    offline = False
    metrics: Metrics | None = None  # upstream errors by status (set by the services)

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        timeout = httpx2.Timeout(settings.timeout, connect=settings.connect_timeout)
        limits = httpx2.Limits(max_connections=settings.max_connections,
                               max_keepalive_connections=min(settings.max_connections, 200))
        # The SDK's own aiohttp transport (``openai[aiohttp]``) is an option: same client API, aiohttp's
        # connection pool underneath (docs/benchmarks.md, "Burst of new users", compares the two).
        client_class = openai.DefaultAioHttpClient if settings.http_client == "aiohttp" else httpx2.AsyncClient
        self._http = client_class(timeout=timeout, limits=limits)
        # The proxy never retries on its own: the caller's SDK has its own retry policy, and a silent
        # retry would double-bill and stall a stream.
        self.sdk = openai.AsyncOpenAI(
            api_key=settings.api_key or "memchat-no-key",
            base_url=settings.effective_base_url,
            http_client=self._http,
            max_retries=0,
            timeout=timeout,
        )

        self._chat_url = str(self.sdk.base_url).rstrip("/") + "/chat/completions"
        self._responses_url = str(self.sdk.base_url).rstrip("/") + "/responses"
        self._headers = self._sdk_headers(timeout)
        self._stream_headers = {**self._headers, "Accept-Encoding": "identity"}  # SSE must not be compressed

    def _sdk_headers(self, timeout: httpx2.Timeout) -> dict[str, str]:
        """The headers the SDK sends with every request (identification, credentials), resolved once."""
        merged: dict[str, Any] = {**self.sdk.default_headers, **self.sdk.auth_headers}
        headers = {k: v for k, v in merged.items() if isinstance(v, str)}  # drop the SDK's Omit() markers
        headers["X-Stainless-Retry-Count"] = "0"
        if timeout.read is not None:
            headers["X-Stainless-Read-Timeout"] = str(timeout.read)
        return headers

    async def _send(self, body: dict[str, Any], *, stream: bool, stream_reply: bool = False,
                    url: str | None = None) -> httpx2.Response:
        """POST the body (to chat completions unless ``url``); returns a 2xx response (streamed or read) or
        raises ``UpstreamError``."""
        headers = self._stream_headers if stream_reply else self._headers
        request_id = current_request_id()
        if request_id is not None:  # the request's id travels upstream
            headers = {**headers, REQUEST_ID_HEADER: request_id}
        request = self._http.build_request("POST", url or self._chat_url, content=_encode(body), headers=headers)
        try:
            response = await self._http.send(request, stream=stream)
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            error = translate_error(exc)
            self._count_error("timeout" if error.status_code == 504 else "connect")
            raise error from exc
        if not response.is_success:  # a redirect is an error too: the SDK would not follow it either
            try:
                raw = await response.aread()
            except (httpx2.HTTPError, httpx2.StreamError, OSError):
                raw = b""
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            self._count_error(response.status_code)
            raise status_error(response.status_code, raw)
        return response

    def _count_error(self, status: int | str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_error(status)

    async def open_stream(self, body: dict[str, Any], context: ChatContext | None = None) -> UpstreamStream:
        """Start a streaming completion; raises ``UpstreamError`` before any byte if the upstream refuses."""
        return UpstreamStream(await self._send(body, stream=True, stream_reply=True))

    async def complete(self, body: dict[str, Any], *, url: str | None = None) -> bytes:
        """Non-streaming completion; returns the upstream's JSON bytes."""
        response = await self._send(body, stream=True, url=url)
        try:
            return await response.aread()
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            raise translate_error(exc) from exc
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def complete_json(self, body: dict[str, Any], context: ChatContext | None = None) -> dict[str, Any]:
        return _json_object(await self.complete(body))

    async def open_responses_stream(self, body: dict[str, Any], context: ChatContext | None = None) -> UpstreamStream:
        """``POST /responses`` with ``stream: true``; raises ``UpstreamError`` before any byte if refused."""
        try:
            return UpstreamStream(await self._send(body, stream=True, stream_reply=True, url=self._responses_url))
        except UpstreamError as exc:
            raise responses_unsupported(exc) from exc

    async def responses_json(self, body: dict[str, Any], context: ChatContext | None = None) -> dict[str, Any]:
        """``POST /responses`` without streaming; returns the upstream's response object."""
        try:
            return _json_object(await self.complete(body, url=self._responses_url))
        except UpstreamError as exc:
            raise responses_unsupported(exc) from exc

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
