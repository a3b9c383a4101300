"""memories.ai-compatible personal chat: ``/serve/api/v1/chat_personal_stream`` and ``/chat_personal``.

The client sends only the new ``prompt``; ``session_id`` names a server-side conversation whose history
memchat keeps in its turn log. ``unique_id`` is the end user and is used as the namespace, so
``unique_id: "u1"`` here and ``?namespace=u1`` on the OpenAI surface reach the same memories.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, Router, post
from litestar.di import Provide

from app.api.deps import provide_principal, provide_services
from app.api.framing import personal_frames, thinkings
from app.api.streaming import TOKEN_PING, sse_response
from app.api.wire import memory_refs
from app.auth import Principal
from app.chat.service import PreparedChat
from app.errors import InvalidRequest, NotFound
from app.services import Services
from app.tenancy import validate_chat_id, validate_namespace

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
    """memories.ai's ``[{"video", "refItems"}]`` with conversations in place of videos: memories grouped by the
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
                   *, stream: bool) -> tuple[PreparedChat, list[dict[str, Any]]]:
    body = parse_personal(await request.body())
    request.scope["memchat_session_id"] = body.session_id or None  # type: ignore[typeddict-unknown-key]
    try:
        chat = await services.chat.prepare_followup(principal, body.unique_id, body.session_id or None, body.prompt,
                                                    surface="personal", stream=stream)
    except NotFound:
        raise NotFound("session not found") from None
    used = chat.retrieved.used
    titles = await services.chat.titles(principal, body.unique_id,
                                        [s.memory.source_thread_id for s in used if s.memory.source_thread_id])
    return chat, group_refs(memory_refs(used), titles)


@post("/chat_personal_stream", status_code=200)
async def chat_personal_stream(request: Request[Any, Any, Any], principal: Principal,
                               services: Services) -> Response[Any]:
    chat, refs = await _prepare(request, principal, services, stream=True)
    stream = await services.chat.open_stream(chat)
    return sse_response(personal_frames(stream, chat, refs), owner=stream,
                        headers={"x-memchat-session-id": chat.chat_id},
                        ping_interval=services.settings.server.sse_ping_interval, ping=TOKEN_PING)


@post("/chat_personal", status_code=200)
async def chat_personal(request: Request[Any, Any, Any], principal: Principal, services: Services) -> dict[str, Any]:
    chat, refs = await _prepare(request, principal, services, stream=False)
    completion = await services.chat.complete(chat)
    return {"code": "0000", "msg": "success",
            "data": {"role": "ASSISTANT", "content": completion.text, "refs": refs, "thinkings": thinkings(chat)},
            "session_id": chat.chat_id, "failed": False, "success": True}


personal_router = Router(
    path="/serve/api/v1",
    route_handlers=[chat_personal_stream, chat_personal],
    dependencies={"principal": Provide(provide_principal), "services": Provide(provide_services)},
    tags=["personal chat"],
)
