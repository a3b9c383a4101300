"""The few fields of streamed frames that test clients read, as msgspec structs (decoding only these is
what keeps a benchmark client cheap). One set for every client: OpenAI chunks and completions, and the
memories.ai-style frames of personal chat, which the websocket also speaks."""

from __future__ import annotations

from typing import Any

import msgspec


class Delta(msgspec.Struct):
    content: str | None = None


class Choice(msgspec.Struct):
    delta: Delta | None = None         # a stream chunk
    message: Delta | None = None       # a non-stream completion
    finish_reason: str | None = None


class Chunk(msgspec.Struct):
    """An OpenAI stream chunk, a non-stream completion, or an error frame."""

    choices: list[Choice] | None = None
    error: Any = None

    def delta_text(self) -> str | None:
        """Content of the first choice's delta (None for role, finish and usage chunks)."""
        choices = self.choices
        if choices and choices[0].delta is not None:
            return choices[0].delta.content
        return None

    def message_text(self) -> str | None:
        """Content of the first choice's message (a non-stream completion)."""
        choices = self.choices
        if choices and choices[0].message is not None:
            return choices[0].message.content
        return None


class Message(msgspec.Struct):
    """A personal-chat (memories.ai-style) SSE frame or a websocket message."""

    type: str | None = None
    token: str | None = None
    error: Any = None
    session_id: str | None = None
    chat_id: str | None = None
    code: str | None = None
    message: str | None = None
    turns: list[Any] | None = None


decode_chunk = msgspec.json.Decoder(Chunk).decode
decode_message = msgspec.json.Decoder(Message).decode
