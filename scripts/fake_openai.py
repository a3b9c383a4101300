#!/usr/bin/env python3
"""Fake OpenAI-compatible upstream server for memchat tests and benchmarks.

A raw ASGI application (no framework) served by uvicorn.  It is deliberately
cheap per streamed chunk (chunk bytes are pre-encoded with ``msgspec.json``) so
that it can also serve as the "direct" baseline in benchmarks.

Usage::

    python scripts/fake_openai.py [--host 127.0.0.1] [--port 0] [--port-file PATH]
        [--reply TEXT] [--first-token-delay S] [--token-delay S] [--tokens N]
        [--embedding-dim 256] [--max-records 10000] [--no-record] [--log-level warning]

Once listening it prints exactly one line ``FAKE_OPENAI_LISTENING <port>`` to
stdout (and writes the port to ``--port-file``).  ``--port 0`` picks a free port.

Importable: ``create_app(FakeConfig(...) | dict | None)`` returns the ASGI app
(a ``FakeOpenAI`` instance); all mutable state (config, rules, records) lives on
that object -- there is no module-level mutable state.

API endpoints (also reachable without the ``/v1`` prefix):

* ``POST /v1/chat/completions`` -- stream true/false, tools, stream_options.
* ``POST /v1/embeddings``       -- deterministic hashed bag-of-words vectors.
* ``GET  /v1/models``, ``GET /v1/models/{id}``.

Reply selection, per request (key-wise merge, later wins):
server defaults (CLI / ``POST /_fake/config``) < first matching rule
(``POST /_fake/rules``) < the request's own ``"fake": {...}`` body field
(the OpenAI SDK sends it with ``extra_body={"fake": {...}}``).
Keys: ``reply``, ``tokens``, ``first_token_delay``, ``token_delay``,
``tool_call``, ``fault``.  A key given as ``null`` explicitly unsets it.

* No reply configured: ``"Echo: " + <text of the last user message>``.
* Tokenisation: regex ``\\S+\\s*|\\s+`` -- each token is a word *with its
  trailing whitespace* (a leading-whitespace run is its own token), so
  ``"".join(tokens) == reply`` and ``"Echo: hi there"`` ->
  ``["Echo: ", "hi ", "there"]``.  One streamed chunk per token.
* ``tokens=N``: with an explicit reply, the reply's tokens are cycled/trimmed
  to exactly N tokens (a space is inserted where the cycle wraps); without an
  explicit reply the text is ``"tok0 tok1 ... tok{N-1}"``.
* ``max_completion_tokens`` / ``max_tokens`` in the request truncate the token
  list; finish_reason is then ``"length"``.
* Usage counts use the same tokeniser (prompt = tokens of all message texts).

Tool calls: when the request has ``tools`` (and ``tool_choice`` is not
``"none"``) and the effective config has ``tool_call: {"name", "arguments"}``
(arguments: JSON string, or an object that is serialised; optional ``id``), or
-- with no tool_call configured -- ``tool_choice`` names a function (or is
``"required"``: first tool), the model "calls" it (arguments ``"{}"`` when not
configured).  Streams: first chunk delta = role + tool_calls[0] header
(index, id, type, function.name, arguments ""), then the arguments in 2+
fragments, finish_reason ``"tool_calls"``.

Faults (``fault`` key): ``status`` (+ ``message``, ``type``, ``code``,
``retry_after``) -> OpenAI-shaped error; ``stall: S`` -> wait S seconds before
the response headers; ``stall_after: N`` + ``stall: S`` -> send N chunks, stall,
continue; ``drop_after: N`` -> send N chunks (the role chunk counts) and abort
the connection (no final chunk, no [DONE], chunked body unterminated);
``end_after: N`` -> send N chunks then end the HTTP response *cleanly* without
the finish chunk and without ``[DONE]`` (the OpenAI SDK just stops iterating).
For non-streaming responses ``drop_after`` sends the headers and half of the
JSON body, then aborts.  Faults apply to embeddings as well.

Control / introspection endpoints (not recorded in ``/_fake/requests``):

* ``GET|DELETE /_fake/requests`` (``?path=SUBSTR`` filters)
* ``GET /_fake/streams`` -- counters + per-stream records; stream states:
  ``open``, ``completed``, ``client_closed`` (client went away; counted in
  ``closed_early``), ``dropped`` (drop_after fault), ``ended_early`` (end_after).
* ``GET|POST|DELETE /_fake/rules`` -- POST a rule object or a list of them:
  ``{"match": "substr"|null, "times": int|null, "endpoint":
  "chat"|"embeddings"|"any" (default chat), ...override keys}``
* ``GET|POST /_fake/config``
* ``POST /_fake/reset``
* ``GET /_fake/health``
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import collections
import hashlib
import logging
import math
import os
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

import anyio
import msgspec

log = logging.getLogger("fake_openai")

TOKEN_RE = re.compile(r"\S+\s*|\s+")
WORD_RE = re.compile(r"\w+")

OVERRIDE_KEYS = ("reply", "tokens", "first_token_delay", "token_delay", "tool_call", "fault")
RULE_KEYS = OVERRIDE_KEYS + ("match", "times", "endpoint")
CONFIG_KEYS = OVERRIDE_KEYS + ("embedding_dim",)
FAULT_KEYS = (
    "status", "message", "type", "code", "param", "retry_after", "drop_after", "end_after", "stall", "stall_after",
)

MODELS = ("fake-gpt", "fake-gpt-mini", "fake-embedding")

_encode = msgspec.json.encode
_decode = msgspec.json.decode

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]
_DONE = b"data: [DONE]\n\n"


# --------------------------------------------------------------------------- config


@dataclass
class FakeConfig:
    """Server defaults.  Also the values ``POST /_fake/reset`` restores."""

    reply: str | None = None
    tokens: int | None = None
    first_token_delay: float | None = None
    token_delay: float | None = None
    tool_call: dict[str, Any] | None = None
    fault: dict[str, Any] | None = None
    embedding_dim: int = 256
    record_requests: bool = True
    max_records: int = 10000

    def overrides(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in OVERRIDE_KEYS}


class ApiError(Exception):
    """Turned into an OpenAI-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or []


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def error_body(status: int, message: str, type_: str | None = None, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    if type_ is None:
        if status == 429:
            type_ = "requests"
        elif status >= 500:
            type_ = "server_error"
        else:
            type_ = "invalid_request_error"
    if code is None:
        if status == 429:
            code = "rate_limit_exceeded"
        elif status == 401:
            code = "invalid_api_key"
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_DEFAULT_FAULT_MESSAGES = {
    400: "Bad request (fake fault).",
    401: "Incorrect API key provided (fake fault).",
    403: "Permission denied (fake fault).",
    404: "Not found (fake fault).",
    429: "Rate limit reached (fake fault).",
    500: "The server had an error while processing your request. Sorry about that! (fake fault)",
    502: "Bad gateway (fake fault).",
    503: "The engine is currently overloaded, please try again later. (fake fault)",
}


# --------------------------------------------------------------------------- validation


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate_fault(f: Any, where: str) -> dict[str, Any] | None:
    if f is None:
        return None
    if not isinstance(f, dict):
        raise _bad(f"{where}.fault must be an object or null")
    unknown = set(f) - set(FAULT_KEYS)
    if unknown:
        raise _bad(f"{where}.fault: unknown keys {sorted(unknown)}; allowed: {list(FAULT_KEYS)}")
    if "status" in f and f["status"] is not None and not (_is_int(f["status"]) and 400 <= f["status"] <= 599):
        raise _bad(f"{where}.fault.status must be an int in 400..599")
    for k in ("drop_after", "end_after", "stall_after"):
        if f.get(k) is not None and not (_is_int(f[k]) and f[k] >= 0):
            raise _bad(f"{where}.fault.{k} must be a non-negative int")
    for k in ("stall", "retry_after"):
        if f.get(k) is not None and not (_is_num(f[k]) and f[k] >= 0):
            raise _bad(f"{where}.fault.{k} must be a non-negative number")
    for k in ("message", "type", "code", "param"):
        if f.get(k) is not None and not isinstance(f[k], str):
            raise _bad(f"{where}.fault.{k} must be a string")
    return dict(f)


def _validate_tool_call(tc: Any, where: str) -> dict[str, Any] | None:
    if tc is None:
        return None
    if not isinstance(tc, dict) or not isinstance(tc.get("name"), str) or not tc["name"]:
        raise _bad(f"{where}.tool_call must be an object with a non-empty 'name'")
    args = tc.get("arguments", "{}")
    if not isinstance(args, str):
        args = _encode(args).decode()
    out = {"name": tc["name"], "arguments": args}
    if tc.get("id") is not None:
        if not isinstance(tc["id"], str):
            raise _bad(f"{where}.tool_call.id must be a string")
        out["id"] = tc["id"]
    return out


def validate_overrides(d: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """Validate and normalise a dict of override keys; returns a new dict."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise _bad(f"'{where}' must be an object")
    unknown = set(d) - set(allowed)
    if unknown:
        raise _bad(f"'{where}': unknown keys {sorted(unknown)}; allowed: {list(allowed)}")
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k == "reply":
            if v is not None and not isinstance(v, str):
                raise _bad(f"{where}.reply must be a string or null")
        elif k == "tokens":
            if v is not None and not (_is_int(v) and v >= 0):
                raise _bad(f"{where}.tokens must be a non-negative int or null")
        elif k in ("first_token_delay", "token_delay"):
            if v is not None and not (_is_num(v) and v >= 0):
                raise _bad(f"{where}.{k} must be a non-negative number or null")
        elif k == "tool_call":
            v = _validate_tool_call(v, where)
        elif k == "fault":
            v = _validate_fault(v, where)
        elif k == "match":
            if v is not None and not isinstance(v, str):
                raise _bad(f"{where}.match must be a string or null")
        elif k == "times":
            if v is not None and not (_is_int(v) and v >= 1):
                raise _bad(f"{where}.times must be a positive int or null")
        elif k == "endpoint":
            if v not in ("chat", "embeddings", "any"):
                raise _bad(f"{where}.endpoint must be 'chat', 'embeddings' or 'any'")
        elif k == "embedding_dim":
            if not (_is_int(v) and 1 <= v <= 65536):
                raise _bad(f"{where}.embedding_dim must be an int in 1..65536")
        out[k] = v
    return out


# --------------------------------------------------------------------------- helpers


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "".join(parts)
    return ""


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def split_fragments(s: str) -> list[str]:
    """Split a tool-call arguments string into >= 2 fragments when possible."""
    frags = tokenize(s)
    if len(frags) < 2 and len(s) >= 2:
        mid = len(s) // 2
        frags = [s[:mid], s[mid:]]
    if not frags:
        frags = [s]
    return frags


def _cycle_tokens(base: list[str], n: int) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        t = base[i % len(base)]
        i += 1
        if i % len(base) == 0 and len(out) + 1 < n and not t[-1:].isspace():
            t += " "
        out.append(t)
    return out


class _Dropped(Exception):
    pass


class _ClientGone(Exception):
    pass


class StreamRecord:
    __slots__ = ("id", "chunks_sent", "state", "gen", "path", "model", "started")

    def __init__(self, id_: str, gen: int, path: str, model: str) -> None:
        self.id = id_
        self.chunks_sent = 0
        self.state = "open"
        self.gen = gen
        self.path = path
        self.model = model
        self.started = time.time()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "chunks_sent": self.chunks_sent,
            "state": self.state,
            "path": self.path,
            "model": self.model,
            "started": self.started,
        }


async def _read_body(receive: Any) -> bytes | None:
    """Read the whole request body; None if the client went away."""
    chunks = []
    while True:
        msg = await receive()
        t = msg["type"]
        if t == "http.request":
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                return b"".join(chunks)
        elif t == "http.disconnect":
            return None


# --------------------------------------------------------------------------- the app


class FakeOpenAI:
    """ASGI application.  All mutable state lives here."""

    def __init__(self, config: FakeConfig) -> None:
        self.initial = FakeConfig(**asdict(config))
        self.config = FakeConfig(**asdict(config))
        self.rules: list[dict[str, Any]] = []
        self._rule_ids = 0
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(1, config.max_records))
        self.stream_records: collections.deque[StreamRecord] = collections.deque(maxlen=max(1, config.max_records))
        self.gen = 0
        self._reset_counters()
        self._hash_cache: dict[str, int] = {}

    # -- state -------------------------------------------------------------------

    def _reset_counters(self) -> None:
        self.n_open = 0
        self.n_opened = 0
        self.n_completed = 0
        self.n_client_closed = 0
        self.n_dropped = 0
        self.n_ended_early = 0

    def reset(self) -> None:
        self.config = FakeConfig(**asdict(self.initial))
        self.rules.clear()
        self.requests.clear()
        self.stream_records.clear()
        self.gen += 1
        self._reset_counters()

    def _stream_opened(self, rec: StreamRecord) -> None:
        self.stream_records.append(rec)
        self.n_open += 1
        self.n_opened += 1

    def _stream_finished(self, rec: StreamRecord, state: str) -> None:
        if rec.state != "open":
            return
        rec.state = state
        if rec.gen != self.gen:
            return
        self.n_open -= 1
        if state == "completed":
            self.n_completed += 1
        elif state == "client_closed":
            self.n_client_closed += 1
        elif state == "ended_early":
            self.n_ended_early += 1
        else:
            self.n_dropped += 1

    def streams_snapshot(self) -> dict[str, Any]:
        return {
            "open": self.n_open,
            "opened": self.n_opened,
            "completed": self.n_completed,
            "closed_early": self.n_client_closed,
            "dropped": self.n_dropped,
            "ended_early": self.n_ended_early,
            "streams": [r.as_dict() for r in self.stream_records],
        }

    def _match_rule(self, endpoint: str, texts: list[str], blob: str) -> dict[str, Any] | None:
        for rule in self.rules:
            ep = rule.get("endpoint", "chat")
            if ep != "any" and ep != endpoint:
                continue
            m = rule.get("match")
            if m and not (any(m in t for t in texts) or m in blob):
                continue
            rule["hits"] += 1
            if rule.get("times") is not None:
                rule["times"] -= 1
                if rule["times"] <= 0:
                    self.rules.remove(rule)
            return rule
        return None

    def _effective(self, rule: dict[str, Any] | None, fake: dict[str, Any]) -> dict[str, Any]:
        eff = self.config.overrides()
        if rule is not None:
            for k in OVERRIDE_KEYS:
                if k in rule:
                    eff[k] = rule[k]
        for k, v in fake.items():
            eff[k] = v
        return eff

    # -- ASGI entry ----------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        stype = scope["type"]
        if stype == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
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
            raw = await _read_body(receive)
            if raw is None:
                return
            await self._dispatch(scope, raw, receive, tracked_send)
        except ApiError as e:
            if not started:
                await self._send_error(tracked_send, e)
        except Exception as e:  # never leak a traceback to the client
            log.exception("internal error in fake server")
            if not started:
                await self._send_error(tracked_send, ApiError(500, f"fake server internal error: {type(e).__name__}: {e}"))

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
                body = _decode(raw)
            except msgspec.DecodeError as e:
                parse_error = str(e)
        if self.config.record_requests:
            hdrs: dict[str, str] = {}
            for k, v in scope.get("headers", ()):
                name = k.decode("latin-1").lower()
                val = v.decode("latin-1")
                hdrs[name] = f"{hdrs[name]}, {val}" if name in hdrs else val
            self.requests.append({"path": path, "method": method, "body": body, "headers": hdrs, "time": time.time()})

        api_path = path[3:] if path.startswith("/v1/") else path
        if api_path == "/chat/completions":
            if method != "POST":
                raise ApiError(405, f"Method {method} not allowed for {path}")
            if parse_error is not None or not raw:
                raise _bad(f"We could not parse the JSON body of your request. ({parse_error or 'empty body'})")
            await self._chat(body, path, receive, send)
        elif api_path == "/embeddings":
            if method != "POST":
                raise ApiError(405, f"Method {method} not allowed for {path}")
            if parse_error is not None or not raw:
                raise _bad(f"We could not parse the JSON body of your request. ({parse_error or 'empty body'})")
            await self._embeddings(body, receive, send)
        elif api_path == "/models" and method == "GET":
            await self._send_json(send, 200, {"object": "list", "data": [self._model(m) for m in MODELS]})
        elif api_path.startswith("/models/") and method == "GET":
            mid = api_path[len("/models/"):]
            if mid not in MODELS:
                raise ApiError(404, f"The model '{mid}' does not exist", code="model_not_found", param="model")
            await self._send_json(send, 200, self._model(mid))
        else:
            raise ApiError(404, f"Invalid URL ({method} {path})")

    @staticmethod
    def _model(mid: str) -> dict[str, Any]:
        return {"id": mid, "object": "model", "created": 0, "owned_by": "fake"}

    # -- control endpoints -----------------------------------------------------------

    async def _control(self, method: str, path: str, scope: dict[str, Any], raw: bytes, send: Any) -> None:
        body: Any = None
        if raw:
            try:
                body = _decode(raw)
            except msgspec.DecodeError as e:
                raise _bad(f"invalid JSON body: {e}") from None
        key = (method, path.rstrip("/"))
        if key == ("GET", "/_fake/health"):
            await self._send_json(send, 200, {"ok": True})
        elif key == ("GET", "/_fake/requests"):
            q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            items = list(self.requests)
            if "path" in q:
                sub = q["path"][0]
                items = [r for r in items if sub in r["path"]]
            await self._send_json(send, 200, items)
        elif key == ("DELETE", "/_fake/requests"):
            self.requests.clear()
            await self._send_json(send, 200, {"ok": True})
        elif key == ("GET", "/_fake/streams"):
            await self._send_json(send, 200, self.streams_snapshot())
        elif key == ("GET", "/_fake/rules"):
            await self._send_json(send, 200, self.rules)
        elif key == ("POST", "/_fake/rules"):
            items = body if isinstance(body, list) else [body]
            new = []
            for item in items:
                if not isinstance(item, dict):
                    raise _bad("rule must be an object")
                rule = validate_overrides(item, RULE_KEYS, "rule")
                rule.setdefault("match", None)
                rule.setdefault("endpoint", "chat")
                rule.setdefault("times", None)
                self._rule_ids += 1
                rule["id"] = self._rule_ids
                rule["hits"] = 0
                new.append(rule)
            self.rules.extend(new)
            await self._send_json(send, 200, new if isinstance(body, list) else new[0])
        elif key == ("DELETE", "/_fake/rules"):
            self.rules.clear()
            await self._send_json(send, 200, {"ok": True})
        elif key == ("GET", "/_fake/config"):
            await self._send_json(send, 200, asdict(self.config))
        elif key == ("POST", "/_fake/config"):
            upd = validate_overrides(body, CONFIG_KEYS, "config")
            for k, v in upd.items():
                setattr(self.config, k, v)
            await self._send_json(send, 200, asdict(self.config))
        elif key == ("POST", "/_fake/reset"):
            self.reset()
            await self._send_json(send, 200, {"ok": True})
        else:
            raise ApiError(404, f"Invalid URL ({method} {path})")

    # -- response helpers ------------------------------------------------------------

    @staticmethod
    async def _send_json(send: Any, status: int, obj: Any, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        data = _encode(obj)
        headers = _JSON_HEADERS + [(b"content-length", str(len(data)).encode())]
        if extra_headers:
            headers = headers + extra_headers
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data, "more_body": False})

    async def _send_error(self, send: Any, e: ApiError) -> None:
        await self._send_json(send, e.status, error_body(e.status, e.message, e.type, e.code, e.param), e.headers)

    @staticmethod
    def _fault_error(fault: dict[str, Any]) -> ApiError:
        status = fault["status"]
        msg = fault.get("message") or _DEFAULT_FAULT_MESSAGES.get(status, f"Fake fault with status {status}.")
        headers = []
        if fault.get("retry_after") is not None:
            headers.append((b"retry-after", repr(float(fault["retry_after"])).encode()))
        return ApiError(status, msg, fault.get("type"), fault.get("code"), fault.get("param"), headers)

    @staticmethod
    async def _guard(receive: Any, fn: Any) -> bool:
        """Run ``fn()`` while watching for client disconnect.

        Returns True if fn completed, False if the client disconnected first.
        """
        done = False
        error: BaseException | None = None
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        break
                if not done:
                    tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                await fn()
                done = True
            except Exception as e:  # re-raised below, unwrapped (no ExceptionGroup)
                error = e
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            raise error
        return done

    async def _pre_response_faults(self, fault: dict[str, Any] | None, receive: Any) -> bool:
        """Apply stall-before-headers and status faults. False if client left."""
        if not fault:
            return True
        stall = fault.get("stall")
        if stall and fault.get("stall_after") is None:
            if not await self._guard(receive, lambda: anyio.sleep(stall)):
                return False
        if fault.get("status") is not None:
            raise self._fault_error(fault)
        return True

    @staticmethod
    async def _send_partial_and_drop(send: Any, status: int, data: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": list(_JSON_HEADERS)})
        await send({"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True})
        # Returning without completing the response makes uvicorn close the
        # connection: the chunked body is never terminated.

    # -- chat completions --------------------------------------------------------------

    async def _chat(self, body: Any, path: str, receive: Any, send: Any) -> None:
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("'messages' must be a non-empty array", param="messages")
        fake = validate_overrides(body.get("fake"), OVERRIDE_KEYS, "fake")

        texts: list[str] = []
        last_user = ""
        for m in messages:
            if not isinstance(m, dict):
                raise _bad("each message must be an object", param="messages")
            t = message_text(m.get("content"))
            texts.append(t)
            if m.get("role") == "user":
                last_user = t
        rule = None
        if self.rules:
            rule = self._match_rule("chat", texts, _encode(messages).decode())
        eff = self._effective(rule, fake)
        fault = eff.get("fault")
        if not await self._pre_response_faults(fault, receive):
            return

        # ---- plan the completion
        tool = None
        tools = body.get("tools")
        tool_choice = body.get("tool_choice")
        if tools and tool_choice != "none":
            tc = eff.get("tool_call")
            if tc is None:
                name = None
                if isinstance(tool_choice, dict):
                    fn = tool_choice.get("function")
                    if isinstance(fn, dict):
                        name = fn.get("name")
                elif tool_choice == "required" and isinstance(tools, list):
                    first = tools[0] if tools else None
                    if isinstance(first, dict) and isinstance(first.get("function"), dict):
                        name = first["function"].get("name")
                if isinstance(name, str) and name:
                    tc = {"name": name, "arguments": "{}"}
            if tc is not None:
                tool = dict(tc)
                tool.setdefault("id", "call_" + uuid.uuid4().hex[:24])

        finish = "stop"
        if tool is not None:
            pieces = split_fragments(tool["arguments"])
            finish = "tool_calls"
        else:
            reply = eff.get("reply")
            n = eff.get("tokens")
            if reply is None:
                if n is not None:
                    pieces = [f"tok{i} " for i in range(n)]
                    if pieces:
                        pieces[-1] = pieces[-1].rstrip()
                else:
                    pieces = tokenize("Echo: " + last_user)
            else:
                pieces = tokenize(reply)
                if n is not None:
                    if not pieces:
                        pieces = [f"tok{i} " for i in range(n)]
                        if pieces:
                            pieces[-1] = pieces[-1].rstrip()
                    else:
                        pieces = _cycle_tokens(pieces, n)
            limit = body.get("max_completion_tokens")
            if limit is None:
                limit = body.get("max_tokens")
            if _is_int(limit) and limit >= 0 and len(pieces) > limit:
                pieces = pieces[:limit]
                finish = "length"

        prompt_tokens = sum(len(tokenize(t)) for t in texts)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        first_delay = float(eff.get("first_token_delay") or 0.0)
        token_delay = float(eff.get("token_delay") or 0.0)

        if body.get("stream"):
            so = body.get("stream_options")
            include_usage = isinstance(so, dict) and bool(so.get("include_usage"))
            await self._stream(
                send, receive, path, cid, created, model, pieces, tool, finish, usage,
                include_usage, first_delay, token_delay, fault or {},
            )
            return

        # ---- non-streaming
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if tool is not None:
            message["tool_calls"] = [
                {"id": tool["id"], "type": "function", "function": {"name": tool["name"], "arguments": tool["arguments"]}}
            ]
        else:
            message["content"] = "".join(pieces)
        obj = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
        }
        total_delay = (first_delay + token_delay * max(0, len(pieces) - 1)) if pieces else 0.0
        if fault and fault.get("stall_after") is not None and fault.get("stall"):
            total_delay += fault["stall"]
        if total_delay > 0:
            if not await self._guard(receive, lambda: anyio.sleep(total_delay)):
                return
        if fault and fault.get("drop_after") is not None:
            await self._send_partial_and_drop(send, 200, _encode(obj))
            return
        await self._send_json(send, 200, obj, [(b"x-request-id", ("req_" + cid[9:]).encode())])

    async def _stream(
        self,
        send: Any,
        receive: Any,
        path: str,
        cid: str,
        created: int,
        model: str,
        pieces: list[str],
        tool: dict[str, Any] | None,
        finish: str,
        usage: dict[str, Any],
        include_usage: bool,
        first_delay: float,
        token_delay: float,
        fault: dict[str, Any],
    ) -> None:
        # Pre-encode: every frame is prefix + <encoded delta> + suffix.
        head = (
            b'data: {"id":' + _encode(cid) + b',"object":"chat.completion.chunk","created":' + str(created).encode()
            + b',"model":' + _encode(model) + b',"system_fingerprint":"fp_fake","choices":[{"index":0,"delta":'
        )
        tail_open = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if include_usage else b"") + b"}\n\n"

        if tool is None:
            first = head + b'{"role":"assistant","content":"","refusal":null}' + tail_open
            c_head = head + b'{"content":'
            c_tail = b"}" + tail_open
            content = [c_head + _encode(p) + c_tail for p in pieces]
        else:
            header = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {"index": 0, "id": tool["id"], "type": "function", "function": {"name": tool["name"], "arguments": ""}}
                ],
            }
            first = head + _encode(header) + tail_open
            a_head = head + b'{"tool_calls":[{"index":0,"function":{"arguments":'
            a_tail = b"}}]}" + tail_open
            content = [a_head + _encode(p) + a_tail for p in pieces]
        final = (
            head + b'{},"logprobs":null,"finish_reason":' + _encode(finish) + b"}]"
            + (b',"usage":null' if include_usage else b"") + b"}\n\n"
        )
        frames = [first, *content, final]
        if include_usage:
            frames.append(
                b'data: {"id":' + _encode(cid) + b',"object":"chat.completion.chunk","created":' + str(created).encode()
                + b',"model":' + _encode(model) + b',"system_fingerprint":"fp_fake","choices":[],"usage":'
                + _encode(usage) + b"}\n\n"
            )
        n_content = len(content)

        drop_after = fault.get("drop_after")
        end_after = fault.get("end_after")
        stall_after = fault.get("stall_after")
        stall = float(fault.get("stall") or 0.0) if stall_after is not None else 0.0

        rec = StreamRecord(cid, self.gen, path, model)
        self._stream_opened(rec)
        state = "client_closed"
        clock = time.monotonic
        sleep = asyncio.sleep  # the server always runs on asyncio (uvicorn)

        async def safe_send(msg: dict[str, Any]) -> None:
            try:
                await send(msg)
            except (OSError, RuntimeError, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
                raise _ClientGone() from e

        async def pump() -> None:
            nonlocal state
            await safe_send({
                "type": "http.response.start",
                "status": 200,
                "headers": _SSE_HEADERS + [(b"x-request-id", ("req_" + cid[9:]).encode())],
            })
            due = clock() + first_delay
            stalled = False
            sent = 0
            for i, frame in enumerate(frames):
                if drop_after is not None and sent >= drop_after:
                    raise _Dropped()
                if end_after is not None and sent >= end_after:
                    break
                if stall_after is not None and not stalled and sent >= stall_after:
                    stalled = True
                    if stall > 0:
                        await sleep(stall)
                    due = max(due, clock())
                if 1 <= i <= n_content:
                    now = clock()
                    if due > now:
                        await sleep(due - now)
                    else:
                        if not i & 31:  # yield now and then so other connections progress
                            await asyncio.sleep(0)
                        due = now
                    due += token_delay
                await safe_send({"type": "http.response.body", "body": frame, "more_body": True})
                sent += 1
                rec.chunks_sent = sent
            if drop_after is not None and sent >= drop_after:
                raise _Dropped()
            if end_after is not None and sent >= end_after:
                await safe_send({"type": "http.response.body", "body": b"", "more_body": False})
                state = "ended_early"
                return
            await safe_send({"type": "http.response.body", "body": _DONE, "more_body": False})
            state = "completed"

        try:
            await self._guard(receive, pump)
        except _Dropped:
            state = "dropped"
        except _ClientGone:
            state = "client_closed"
        finally:
            self._stream_finished(rec, state)
        # When dropped we return without completing the response: uvicorn then
        # closes the transport, leaving the chunked body unterminated.

    # -- embeddings ------------------------------------------------------------------------

    def _word_hash(self, w: str) -> int:
        h = self._hash_cache.get(w)
        if h is None:
            h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            if len(self._hash_cache) > 200_000:
                self._hash_cache.clear()
            self._hash_cache[w] = h
        return h

    def embed(self, text: str, dim: int) -> list[float]:
        """Signed hashed bag-of-words, L2-normalised (deterministic)."""
        words = WORD_RE.findall(text.lower())
        if not words:
            stripped = text.strip().lower()
            words = [stripped or text]
        vec = [0.0] * dim
        for w in words:
            h = self._word_hash(w)
            vec[h % dim] += 1.0 if (h >> 63) & 1 else -1.0
        norm = math.sqrt(sum(x * x for x in vec))
        if norm > 0:
            inv = 1.0 / norm
            vec = [x * inv for x in vec]
        return vec

    async def _embeddings(self, body: Any, receive: Any, send: Any) -> None:
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("you must provide a model parameter", param="model")
        inp = body.get("input")
        if isinstance(inp, str):
            inputs = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp):
            inputs = inp
        elif isinstance(inp, list) and inp:
            raise _bad("token-array inputs are not supported by the fake server; send strings", param="input")
        else:
            raise _bad("'input' must be a non-empty string or a non-empty array of strings", param="input")
        if any(x == "" for x in inputs):
            raise _bad("'$.input' is invalid: empty strings are not allowed", param="input")
        dim = body.get("dimensions")
        if dim is None:
            dim = self.config.embedding_dim
        elif not (_is_int(dim) and 1 <= dim <= 65536):
            raise _bad("'dimensions' must be a positive integer", param="dimensions")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _bad("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        fake = validate_overrides(body.get("fake"), OVERRIDE_KEYS, "fake")
        rule = None
        if self.rules:
            rule = self._match_rule("embeddings", inputs, "")
        eff = self._effective(rule, fake)
        fault = eff.get("fault")
        if not await self._pre_response_faults(fault, receive):
            return

        data = []
        n_words = 0
        for i, text in enumerate(inputs):
            vec = self.embed(text, dim)
            n_words += max(1, len(WORD_RE.findall(text)))
            if fmt == "base64":
                arr = array.array("f", vec)
                if sys.byteorder != "little":
                    arr.byteswap()
                emb: Any = base64.b64encode(arr.tobytes()).decode("ascii")
            else:
                emb = vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        obj = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": n_words, "total_tokens": n_words},
        }
        if fault and fault.get("drop_after") is not None:
            await self._send_partial_and_drop(send, 200, _encode(obj))
            return
        await self._send_json(send, 200, obj)


def create_app(config: FakeConfig | dict[str, Any] | None = None) -> FakeOpenAI:
    """Create the ASGI app.  ``config`` may be a FakeConfig, a dict, or None."""
    if config is None:
        config = FakeConfig()
    elif isinstance(config, dict):
        config = FakeConfig(**config)
    return FakeOpenAI(config)


# --------------------------------------------------------------------------- CLI


class _DropNoiseFilter(logging.Filter):
    """Hide uvicorn's complaint about our *intentional* aborted responses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("ASGI callable returned without completing response")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream server (tests/benchmarks).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--port-file", default=None, help="write the bound port to this file")
    p.add_argument("--reply", default=None, help="default reply text (default: 'Echo: <last user message>')")
    p.add_argument("--first-token-delay", type=float, default=None, metavar="S")
    p.add_argument("--token-delay", type=float, default=None, metavar="S")
    p.add_argument("--tokens", type=int, default=None, metavar="N", help="repeat/trim replies to exactly N tokens")
    p.add_argument("--embedding-dim", type=int, default=256)
    p.add_argument("--max-records", type=int, default=10000, help="keep at most N request/stream records")
    p.add_argument("--no-record", action="store_true", help="do not record requests (benchmarks)")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = _parse_args(argv)
    cfg = FakeConfig(
        reply=args.reply,
        tokens=args.tokens,
        first_token_delay=args.first_token_delay,
        token_delay=args.token_delay,
        embedding_dim=args.embedding_dim,
        record_requests=not args.no_record,
        max_records=args.max_records,
    )
    app = create_app(cfg)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    uconfig = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=30,
    )
    logging.getLogger("uvicorn.error").addFilter(_DropNoiseFilter())

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if not self.started:
                return
            port = self.servers[0].sockets[0].getsockname()[1]
            if args.port_file:
                tmp = args.port_file + ".tmp"
                with open(tmp, "w") as f:
                    f.write(f"{port}\n")
                os.replace(tmp, args.port_file)
            sys.stdout.write(f"FAKE_OPENAI_LISTENING {port}\n")
            sys.stdout.flush()

    server = _Server(uconfig)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
