"""The OpenAI-compatible surface: ``/v1/memory/chat/completions`` (and ``/v1/chat/completions``), models."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.di import Provide

from app.api.deps import provide_principal, provide_services
from app.api.streaming import sse_response
from app.auth import Principal
from app.chat.request import parse_chat_params, parse_openai_body
from app.services import Services

@post(["/memory/chat/completions", "/chat/completions"], status_code=200)
async def chat_completions(request: Request[Any, Any, Any], principal: Principal, services: Services) -> Response[Any]:
    params = parse_chat_params(request.query_params.get)
    body = parse_openai_body(await request.body())
    pipeline = services.pipeline
    chat = await pipeline.prepare(principal, params, body)
    if body.get("stream"):
        relay = await pipeline.open_relay(chat, first_chunk_fields={"memory": chat.memory_field})
        return sse_response(pipeline.stream_openai(chat, relay), headers=chat.headers,
                            ping_interval=services.settings.server.sse_ping_interval)
    result = await pipeline.complete(chat)
    return Response(result, media_type="application/json", headers=chat.headers)


@get(["/memory/models", "/models"])
async def list_models(principal: Principal, services: Services) -> Response[bytes]:
    return Response(await services.backend.models(), media_type="application/json")


openai_router = Router(
    path="/v1",
    route_handlers=[chat_completions, list_models],
    dependencies={"principal": Provide(provide_principal), "services": Provide(provide_services)},
    tags=["openai"],
)
