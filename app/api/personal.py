"""memories.ai-compatible personal chat: ``/serve/api/v1/chat_personal_stream`` and ``/chat_personal``.

The client sends only the new ``prompt``; ``session_id`` names a server-side conversation whose history
memchat keeps in its turn log. ``unique_id`` is the end user and is used as the namespace, so
``unique_id: "u1"`` here and ``?namespace=u1`` on the OpenAI surface reach the same memories.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec
from litestar import Request, Response, Router, post
from litestar.di import Provide

from app.api.deps import provide_principal, provide_services
from app.api.streaming import TOKEN_PING, sse_response
from app.auth import Principal
from app.chat.pipeline import PreparedChat
from app.chat.relay import Relay
from app.chat.request import ChatParams, validate_chat_id, validate_namespace
from app.chat.sse import DONE_FRAME, data_frame
from app.errors import InvalidRequest, NotFound
from app.services import Services

MAX_PROMPT_CHARS = 100_000
_decode = msgspec.json.Decoder().decode


class PersonalRequest(msgspec.Struct, frozen=True):
    prompt: str
    session_id: str
    unique_id: str


def parse_personal(raw: bytes) -> PersonalRequest:
    try:
        body = _decode(raw) if raw.strip() else None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", param="body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", param="body")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("'prompt' is required and must be a non-empty string", param="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"'prompt' must be at most {MAX_PROMPT_CHARS} characters", param="prompt")
    session_id = body.get("session_id", "")
    if session_id is None:
        session_id = ""
    if not isinstance(session_id, str):
        raise InvalidRequest("'session_id' must be a string", param="session_id")
    unique_id = body.get("unique_id", "default")
    if unique_id is None:
        unique_id = "default"
    if not isinstance(unique_id, str):
        raise InvalidRequest("'unique_id' must be a string", param="unique_id")
    validate_chat_id(session_id, param="session_id")
    return PersonalRequest(prompt=prompt, session_id=session_id,
                           unique_id=validate_namespace(unique_id, param="unique_id"))


def group_refs(refs: list[dict[str, Any]], titles: dict[str, str]) -> list[dict[str, Any]]:
    """The seed's ``[{"video", "refItems"}]`` with conversations in place of videos: memories grouped by the
    conversation they came from as ``[{"thread": {"id", "createdAt", "title"} | None, "refItems": [...]}]``."""
    groups: dict[str | None, dict[str, Any]] = {}
    for ref in refs:
        thread_id = ref.get("sourceThreadId")
        group = groups.get(thread_id)
        if group is None:
            thread = None
            if thread_id:
                thread = {"id": thread_id, "createdAt": ref["createdAt"], "title": titles.get(thread_id, "")}
            group = groups[thread_id] = {"thread": thread, "refItems": []}
        group["refItems"].append(ref)
        if group["thread"] is not None and ref["createdAt"] < group["thread"]["createdAt"]:
            group["thread"]["createdAt"] = ref["createdAt"]
    return list(groups.values())


async def _prepare(request: Request[Any, Any, Any], principal: Principal, services: Services,
                   *, stream: bool) -> tuple[PreparedChat, PersonalRequest]:
    body = parse_personal(await request.body())
    namespace = body.unique_id
    chat_id = body.session_id or str(uuid.uuid4())
    request.scope["memchat_session_id"] = body.session_id or None  # type: ignore[typeddict-unknown-key]
    messages: list[dict[str, Any]] = []
    if body.session_id:
        history = await services.conversations.history(principal.org_id, namespace, body.session_id)
        if not history:
            raise NotFound("session not found")
        for turn in history:
            messages.append({"role": "user", "content": turn.user})
            if turn.assistant:
                messages.append({"role": "assistant", "content": turn.assistant})
    messages.append({"role": "user", "content": body.prompt})
    upstream_body: dict[str, Any] = {"model": services.settings.server.default_model, "messages": messages,
                                     "stream": stream}
    params = ChatParams(namespace=namespace, commit_after=None, chat_id=chat_id)
    chat = await services.pipeline.prepare(principal, params, upstream_body, surface="personal")
    return chat, body


async def _titles(services: Services, principal: Principal, namespace: str, refs: list[dict[str, Any]]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for thread_id in {r["sourceThreadId"] for r in refs if r.get("sourceThreadId")}:
        turns = await services.conversations.history(principal.org_id, namespace, thread_id)
        if turns:
            first = " ".join(turns[0].user.split())
            titles[thread_id] = first[:77] + "..." if len(first) > 80 else first
    return titles


def thinkings(chat: PreparedChat) -> list[str]:
    used = len(chat.retrieved.refs)
    return [f"searched the memories of '{chat.params.namespace or '(global)'}': {chat.retrieved.searched} "
            f"candidate(s) found, {used} used"]


async def personal_frames(chat: PreparedChat, relay: Relay, services: Services, refs: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    yield data_frame({"token": "", "session_id": chat.chat_id})
    yield data_frame({"token": "", "refs": refs, "thinkings": thinkings(chat)})
    async with aclosing(services.pipeline.stream(chat, relay)) as items:
        async for _frame, delta in items:
            if delta:
                yield data_frame({"token": delta})
    if relay.outcome.error is not None:
        yield data_frame({"token": "", "error": relay.outcome.error})
    yield DONE_FRAME


@post("/chat_personal_stream", status_code=200)
async def chat_personal_stream(request: Request[Any, Any, Any], principal: Principal,
                               services: Services) -> Response[Any]:
    chat, body = await _prepare(request, principal, services, stream=True)
    refs = group_refs(chat.retrieved.refs, await _titles(services, principal, body.unique_id, chat.retrieved.refs))
    relay = await services.pipeline.open_relay(chat, first_chunk_fields=None)
    return sse_response(personal_frames(chat, relay, services, refs), headers={"x-memchat-session-id": chat.chat_id},
                        ping_interval=services.settings.server.sse_ping_interval, ping=TOKEN_PING)


@post("/chat_personal", status_code=200)
async def chat_personal(request: Request[Any, Any, Any], principal: Principal, services: Services) -> dict[str, Any]:
    chat, body = await _prepare(request, principal, services, stream=False)
    refs = group_refs(chat.retrieved.refs, await _titles(services, principal, body.unique_id, chat.retrieved.refs))
    result = await services.pipeline.complete(chat)
    content = ""
    choices = result.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            content = message["content"]
    return {"code": "0000", "msg": "success",
            "data": {"role": "ASSISTANT", "content": content, "refs": refs, "thinkings": thinkings(chat)},
            "session_id": chat.chat_id, "failed": False, "success": True}


personal_router = Router(
    path="/serve/api/v1",
    route_handlers=[chat_personal_stream, chat_personal],
    dependencies={"principal": Provide(provide_principal), "services": Provide(provide_services)},
    tags=["personal chat"],
)
