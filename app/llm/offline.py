"""Offline responder: answers without an upstream model, deterministically, from memory.

Used when no upstream is configured so that ``memchat serve`` is useful on a fresh machine. Every reply,
model listing and log line says that this is offline mode.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec

from app.llm.backend import ChatContext
from app.llm.offline_responses import response_frames, response_object
from app.llm.sse import DONE_FRAME, data_frame
from app.messages import last_user_text, responses_input_messages

OFFLINE_MODEL = "memchat-offline"
_encode = msgspec.json.Encoder().encode


def offline_reply(body: dict[str, Any], context: ChatContext | None) -> str:
    memories = list(context.memories) if context else []
    if memories:
        return "[offline mode] Here is what I remember: " + " ".join(
            m if m.endswith((".", "!", "?")) else m + "." for m in memories
        )
    said = " ".join(last_user_text(body.get("messages") or []).split())
    if len(said) > 200:
        said = said[:197] + "..."
    return (
        "[offline mode] No upstream model is configured, so I can only repeat what I know. "
        f'I don\'t remember anything relevant yet. You said: "{said}"'
    )


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for word in text.split(" "):
        out.append(word if not out else " " + word)
    return out


class _OfflineStream:
    def __init__(self, chunks: list[bytes], token_delay: float) -> None:
        self._chunks = chunks
        self._delay = token_delay

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for index, chunk in enumerate(self._chunks):
            if index and self._delay:
                await anyio.sleep(self._delay)
            yield chunk

    async def aclose(self) -> None:
        return None


class OfflineResponder:
    """A ``ChatBackend`` that needs no network."""

    offline = True

    def __init__(self, token_delay: float = 0.02) -> None:
        self._token_delay = token_delay

    async def open_stream(self, body: dict[str, Any], context: ChatContext | None = None) -> _OfflineStream:
        reply = offline_reply(body, context)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return data_frame({
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": OFFLINE_MODEL,
                "system_fingerprint": "memchat-offline",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            })

        frames = [chunk({"role": "assistant", "content": ""})]
        frames += [chunk({"content": token}) for token in _tokens(reply)]
        frames.append(chunk({}, "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            frames.append(data_frame({
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": OFFLINE_MODEL,
                "choices": [], "usage": self._usage(body, reply),
            }))
        frames.append(DONE_FRAME)
        return _OfflineStream(frames, self._token_delay)

    @staticmethod
    def _usage(body: dict[str, Any], reply: str) -> dict[str, int]:
        prompt = sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or [] if isinstance(m, dict))
        completion = len(reply.split())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def complete_json(self, body: dict[str, Any], context: ChatContext | None = None) -> dict[str, Any]:
        reply = offline_reply(body, context)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": OFFLINE_MODEL,
            "system_fingerprint": "memchat-offline",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "usage": self._usage(body, reply),
        }

    async def open_responses_stream(self, body: dict[str, Any], context: ChatContext | None = None) -> _OfflineStream:
        reply = offline_reply({"messages": responses_input_messages(body.get("input"))}, context)
        return _OfflineStream(response_frames(body, _tokens(reply), OFFLINE_MODEL), self._token_delay)

    async def responses_json(self, body: dict[str, Any], context: ChatContext | None = None) -> dict[str, Any]:
        reply = offline_reply({"messages": responses_input_messages(body.get("input"))}, context)
        return response_object(body, reply, OFFLINE_MODEL)

    async def models(self) -> bytes:
        return _encode({
            "object": "list",
            "data": [{
                "id": OFFLINE_MODEL, "object": "model", "created": 0, "owned_by": "memchat",
                "description": "offline mode: no upstream model configured; replies come from memory only",
            }],
        })

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
