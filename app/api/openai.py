"""The OpenAI-compatible surface: ``/v1/memory/chat/completions`` (and ``/v1/chat/completions``),
``/v1/memory/responses`` (and ``/v1/responses``), models."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.di import Provide

from app.api.deps import PrincipalDep, ServicesDep, provide_principal, provide_services
from app.api.framing import chat_headers, memory_field, openai_frames, responses_frames
from app.api.streaming import sse_response
from app.chat.request import parse_chat_params, parse_openai_body
from app.chat.responses import parse_responses_body
from app.chat.service import PreparedChat
from app.services import Services


async def _answer(services: Services, chat: PreparedChat, stream: bool) -> Response[Any]:
    """The streamed (SSE in the chat's API framing) or JSON answer, with ``memory`` and the memchat headers."""
    if stream:
        opened = await services.chat.open_stream(chat, first_chunk_fields={"memory": memory_field(chat)})
        frames = responses_frames(opened) if chat.api == "responses" else openai_frames(opened)
        return sse_response(frames, owner=opened, headers=chat_headers(chat),
                            ping_interval=services.settings.server.sse_ping_interval)
    completion = await services.chat.complete(chat)
    return Response({**completion.response, "memory": memory_field(chat)}, media_type="application/json",
                    headers=chat_headers(chat))


@post(["/memory/chat/completions", "/chat/completions"], status_code=200)
async def chat_completions(request: Request[Any, Any, Any], principal: PrincipalDep, services: ServicesDep) -> Response[Any]:
    params = parse_chat_params(request.query_params.get)
    body = parse_openai_body(await request.body())
    return await _answer(services, await services.chat.prepare(principal, params, body), bool(body.get("stream")))


@post(["/memory/responses", "/responses"], status_code=200)
async def responses(request: Request[Any, Any, Any], principal: PrincipalDep, services: ServicesDep) -> Response[Any]:
    """The Responses API: ``memory`` rides on the ``response`` of ``response.created`` (streamed) or on the
    response object (not streamed)."""
    params = parse_chat_params(request.query_params.get)
    body = parse_responses_body(await request.body())
    chat = await services.chat.prepare(principal, params, body, surface="responses", api="responses")
    return await _answer(services, chat, bool(body.get("stream")))


@get(["/memory/models", "/models"])
async def list_models(principal: PrincipalDep, services: ServicesDep) -> Response[bytes]:
    return Response(await services.backend.models(), media_type="application/json")


openai_router = Router(
    path="/v1",
    route_handlers=[chat_completions, responses, list_models],
    dependencies={"principal": Provide(provide_principal), "services": Provide(provide_services)},
    tags=["openai"],
)
