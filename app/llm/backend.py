"""The interface the chat pipeline talks to: a real upstream or the offline responder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import msgspec


class ChatContext(msgspec.Struct, frozen=True):
    """What memchat knows for this request, for backends that answer without a model."""

    memories: Sequence[str] = ()


class ByteStream(Protocol):
    def iter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class ChatBackend(Protocol):
    offline: bool

    async def open_stream(self, body: dict[str, Any], context: ChatContext | None = None) -> ByteStream: ...
    async def complete_json(self, body: dict[str, Any], context: ChatContext | None = None) -> dict[str, Any]: ...
    async def open_responses_stream(self, body: dict[str, Any], context: ChatContext | None = None) -> ByteStream: ...
    async def responses_json(self, body: dict[str, Any], context: ChatContext | None = None) -> dict[str, Any]: ...
    async def models(self) -> bytes: ...
    async def ping(self) -> bool: ...
    async def aclose(self) -> None: ...
