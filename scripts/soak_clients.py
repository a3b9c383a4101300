"""The soak test's clients (``scripts/soak.py``): one per chat surface, each sending one turn of a
conversation and recording what came back (status, frames with their arrival times, errors by kind).

* ``SoakClient``: the kit's SSE client (keep-alive raw socket) for the OpenAI surface, streaming or not, and the
  personal-chat SSE surface;
* ``WsClient``: one ``/ws/chat`` websocket, reconnected after a failure;
* ``classify``: the error kind of a finished turn, or None; ``http_get``: one GET's status and body's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from app.testkit.chunks import decode_chunk, decode_message
from app.testkit.sse import DONE, read_frame
from bench_common import API_KEY, MODEL, RawClient, StreamResult

AUTH = {"authorization": f"Bearer {API_KEY}"}


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode(errors="replace")[:200].strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:200].strip()
    except OSError as exc:
        return 0, str(exc)


class LoadState(Protocol):
    """What a client needs from the running load: the request timeout and the commit-event counter."""

    timeout: float
    committed_events: int


_enc = msgspec.json.encode


@dataclass
class Res(StreamResult):
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    parts: list[str] = field(default_factory=list)
    chat_id: str | None = None
    kind: str | None = None            # error kind found in the response itself

    def token(self, text: str | None, now: float) -> None:
        if text:
            self.ttft = self.ttft if self.ttft is not None else now - self.start
            self.content_times.append(now)
            self.parts.append(text)


@dataclass
class Conv:
    surface: str
    ns: str
    left: int                          # turns still to send
    chat_id: str | None = None
    by_id: bool = False                # OpenAI: the client sends ``chat_id`` (else memchat resolves the history)
    history: list[dict[str, str]] = field(default_factory=list)
    turns: int = 0
    tainted: bool = False


class SoakClient(RawClient):
    """``RawClient`` for one HTTP surface; keeps headers and body, reads OpenAI and personal-chat frames."""

    def __init__(self, port: int, surface: str) -> None:
        super().__init__("127.0.0.1", port, AUTH)
        self.surface = surface

    async def turn(self, conv: Conv, user: str, rng: random.Random, load: LoadState) -> Res:
        if self.surface == "personal-sse":
            path = "/serve/api/v1/chat_personal_stream"
            body = _enc({"prompt": user, "session_id": conv.chat_id or "", "unique_id": conv.ns})
        else:
            path = f"/v1/memory/chat/completions?namespace={conv.ns}" + (f"&chat_id={conv.chat_id}" if conv.by_id else "")
            body = _enc({"model": MODEL, "stream": self.surface == "openai-sse", "fake": {"tokens": rng.randint(60, 150)},
                         "messages": [*conv.history, {"role": "user", "content": user}]})
        res = Res(start=time.perf_counter())
        await self.stream(path, body, timeout=load.timeout, res=res)
        if self.surface == "openai-json" and res.status == 200 and res.error is None:
            try:
                res.token(decode_chunk(res.body).message_text(), res.done)
            except msgspec.DecodeError:
                res.kind, res.error = "bad_body", f"undecodable body {res.body[:120]!r}"
        return res

    # The SSEClient hooks: keep head and body, read OpenAI or personal-chat frames.

    def on_head(self, res: Res, headers: dict[str, str]) -> None:  # type: ignore[override]
        res.headers = headers

    def on_body(self, res: Res, payload: bytes, now: float) -> None:  # type: ignore[override]
        res.body, res.done = payload, now

    def on_stream_end(self, res: Res) -> None:  # type: ignore[override]
        pass

    def on_data(self, res: Res, payload: bytes, now: float) -> None:  # type: ignore[override]
        if payload == DONE:
            res.done = now
            return
        try:
            text, err, session = read_frame(payload, memories_style=self.surface == "personal-sse")
        except msgspec.DecodeError:
            res.kind, res.error = "bad_frame", f"undecodable frame {payload[:120]!r}"
            return
        if err is not None:
            res.kind, res.error = "error_frame", f"error frame: {str(err)[:160]}"
        res.chat_id = session or res.chat_id
        res.token(text, now)


class WsClient:
    """One ``/ws/chat`` socket (reconnected after a failure), one message at a time."""

    def __init__(self, port: int) -> None:
        self.url, self.ws = f"ws://127.0.0.1:{port}/ws/chat", None

    async def turn(self, conv: Conv, user: str, rng: random.Random, load: LoadState) -> Res:
        from websockets.asyncio.client import connect

        res = Res(start=time.perf_counter())
        try:
            async with asyncio.timeout(load.timeout):
                if self.ws is None:
                    self.ws = await connect(self.url, additional_headers=AUTH, proxy=None, compression=None,
                                            max_size=None, ping_interval=None)
                    if (ready := decode_message(await self.ws.recv())).type != "ready":
                        raise ConnectionError(f"first message is not 'ready': {ready}")
                res.start = time.perf_counter()
                msg = {"type": "message", "content": user, "namespace": conv.ns}
                await self.ws.send(_enc({**msg, "chat_id": conv.chat_id} if conv.chat_id else msg).decode())
                while True:
                    m = decode_message(await self.ws.recv())
                    now = time.perf_counter()
                    if m.type == "token":
                        res.token(m.token, now)
                    elif m.type == "start":
                        res.status, res.chat_id = 200, m.chat_id
                    elif m.type == "done":
                        res.done = now
                        break
                    elif m.type == "error":
                        res.kind, res.error = "ws_error", f"{m.code}: {m.message}"[:200]
                        if m.chat_id is None:      # the request is over; with chat_id 'done' follows
                            break
                    elif m.type == "memory_committed":
                        load.committed_events += 1
        except Exception as exc:  # noqa: BLE001 -- ConnectionClosed, OSError, timeout ...: counted
            res.kind = "timeout" if isinstance(exc, TimeoutError) else "truncated" if res.status else "ws_closed"
            res.error = f"{type(exc).__name__}: {exc}"[:200]
            await self.close()
        res.end = time.perf_counter()
        return res

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        self.ws = None


def classify(res: Res) -> str | None:
    if res.kind is not None:
        return res.kind
    if res.error is not None:
        return "timeout" if res.error == "timeout" else "connect" if res.status == 0 else "truncated"
    if res.status != 200:
        res.error = f"HTTP {res.status}: {res.body[:200]!r}"
        return f"http_{res.status}"
    if res.done is None:
        return "no_done"
    return None if "".join(res.parts).strip() else "empty_reply"
