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

from app.api.deps import PrincipalDep, ServicesDep, provide_principal, provide_services
from app.api.framing import id_header, personal_frames, thinkings
from app.api.streaming import TOKEN_PING, sse_response
from app.api.wire import memory_refs
from app.chat.service import ConversationInfo, PreparedChat
from app.auth import Principal
from app.errors import InvalidRequest
from app.memory.models import ScoredMemory
from app.services import Services
from app.tenancy import validate_chat_id, validate_namespace
from app.times import rfc3339

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


EXPLICIT_SOURCES = {"user": ("explicit", "Saved memories"), "shared": ("shared", "Shared memories")}


def source_video(ref: dict[str, Any], conversations: dict[str, ConversationInfo]) -> dict[str, Any]:
    """The seed's ``video`` for a ref: the source its memory came from. A conversation is
    ``{"id": chat id, "type": "conversation", "title": its first message, "createdAt": its start}``;
    explicit memories (REST API, import) have one source per scope, ``{"id": "explicit" | "shared",
    "type": "explicit", ...}``. ``scope`` says whose it is; ``createdAt`` falls back to the group's oldest
    memory when the conversation is no longer in the turn log (or is a shared scope's)."""
    thread_id, scope = ref["sourceThreadId"], ref["scope"]
    if not thread_id:
        source_id, title = EXPLICIT_SOURCES[scope]
        return {"id": source_id, "type": "explicit", "title": title, "createdAt": ref["createdAt"], "scope": scope}
    info = conversations.get(thread_id) if scope == "user" else None
    return {"id": thread_id, "type": "conversation", "title": info.title if info else "",
            "createdAt": rfc3339(info.started_at) if info else ref["createdAt"], "scope": scope}


def group_refs(used: list[ScoredMemory], conversations: dict[str, ConversationInfo]) -> list[dict[str, Any]]:
    """memories.ai's ``[{"video", "refItems"}]``: the memories used, grouped by the source they came from
    (`source_video`), groups in the order of their best memory."""
    groups: dict[tuple[str, str | None], dict[str, Any]] = {}
    for ref in memory_refs(used):
        key = (ref["scope"], ref["sourceThreadId"])
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"video": source_video(ref, conversations), "refItems": []}
        group["refItems"].append(ref)
        dated_by_refs = key[0] != "user" or ref["sourceThreadId"] not in conversations
        if dated_by_refs and ref["createdAt"] < group["video"]["createdAt"]:
            group["video"]["createdAt"] = ref["createdAt"]
    return list(groups.values())


async def _prepare(request: Request[Any, Any, Any], principal: Principal, services: Services,
                   *, stream: bool) -> tuple[PreparedChat, list[dict[str, Any]]]:
    body = parse_personal(await request.body())
    request.scope["memchat_session_id"] = body.session_id or None  # type: ignore[typeddict-unknown-key]
    personal = await services.chat.prepare_personal(principal, body.unique_id, body.session_id or None,
                                                    body.prompt, stream=stream)
    return personal.chat, group_refs(personal.chat.retrieved.used, personal.conversations)


@post("/chat_personal_stream", status_code=200)
async def chat_personal_stream(request: Request[Any, Any, Any], principal: PrincipalDep,
                               services: ServicesDep) -> Response[Any]:
    chat, refs = await _prepare(request, principal, services, stream=True)
    stream = await services.chat.open_stream(chat)
    return sse_response(personal_frames(stream, chat, refs), owner=stream,
                        headers={"x-memchat-session-id": id_header(chat.chat_id)},
                        ping_interval=services.settings.server.sse_ping_interval, ping=TOKEN_PING)


@post("/chat_personal", status_code=200)
async def chat_personal(request: Request[Any, Any, Any], principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
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
