"""Fakes for what lies outside `app.chat.stream`: the upstream HTTP response body and the turn recorder."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio

from app.chat.stream import StreamOutcome
from app.errors import UpstreamError


def chunk(content: str | None = None, *, finish: str | None = None, index: int = 0, **extra: Any) -> bytes:
    """One OpenAI chat.completion.chunk data frame."""
    delta = {} if content is None else {"content": content}
    body = {"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


class FakeUpstream:
    """Stands in for the upstream response: ``iter_bytes`` yields ``parts``, then raises ``error`` or hangs
    (``hang=True``) if asked; ``aclose`` is logged in ``log``."""

    def __init__(self, parts: list[bytes], *, error: UpstreamError | None = None, hang: bool = False,
                 log: list[str] | None = None) -> None:
        self.parts = parts
        self.error = error
        self.hang = hang
        self.log = log if log is not None else []
        self.closed = 0

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            await anyio.sleep(0)
            yield part
        if self.error is not None:
            raise self.error
        if self.hang:
            await anyio.sleep_forever()

    async def aclose(self) -> None:
        self.closed += 1
        self.log.append("aclose")


class Recorder:
    """The ``on_finish`` callback: records each outcome it is given (and when, in the shared log)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.outcomes: list[StreamOutcome] = []

    async def __call__(self, outcome: StreamOutcome) -> None:
        await anyio.sleep(0)
        self.outcomes.append(outcome)
        self.log.append("finish")
