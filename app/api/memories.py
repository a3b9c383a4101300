"""Memory REST API (``/api/v1/memory``), shaped as in the seed: camelCase memories, 422 ``detail`` errors."""

from __future__ import annotations

import re
import uuid
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.di import Provide

from app.api.deps import provide_principal, provide_services
from app.auth import Principal
from app.chat.request import validate_namespace
from app.errors import InvalidRequest, NotFound, PermissionDenied
from app.memory.models import NewMemory
from app.memory.serialize import memory_json
from app.services import Services

MAX_CONTENT_CHARS = 32_000
T = TypeVar("T")
_LOC = re.compile(r"at `\$\.?([^`]*)`")


class CreateMemoryBody(msgspec.Struct, forbid_unknown_fields=False):
    content: str
    organizationId: str | None = None  # noqa: N815 (the seed's field name)


class SearchBody(msgspec.Struct, forbid_unknown_fields=False):
    query: str
    limit: int = 10
    namespace: str | None = None


def decode_body(raw: bytes, type_: type[T]) -> T:
    if not raw.strip():
        raise InvalidRequest("request body is required", loc=("body",), code="missing")
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        match = _LOC.search(str(exc))
        field = match.group(1) if match else ""
        loc = ("body", *[p for p in re.split(r"[.\[\]]+", field) if p]) if field else ("body",)
        message = str(exc).split(" - at ")[0]
        raise InvalidRequest(message, loc=loc, code="value_error") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"invalid JSON: {exc}", loc=("body",), code="json_invalid") from None


def check_content(content: str) -> str:
    if not content.strip():
        raise InvalidRequest("content must not be empty", loc=("body", "content"), code="string_too_short")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidRequest(f"content must be at most {MAX_CONTENT_CHARS} characters", loc=("body", "content"),
                             code="string_too_long")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("content is not valid Unicode", loc=("body", "content"), code="value_error") from None
    return content


def query_int(request: Request[Any, Any, Any], name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", loc=("query", name), code="int_parsing") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise InvalidRequest(f"{name} must be {bound}", loc=("query", name), code="value_error")
    return value


def query_namespace(request: Request[Any, Any, Any]) -> str:
    try:
        return validate_namespace(request.query_params.get("namespace"))
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, loc=("query", "namespace"), code="value_error") from None


def check_uuid(memory_id: str) -> str:
    try:
        return str(uuid.UUID(memory_id))
    except ValueError:
        raise InvalidRequest("memory_id must be a UUID", loc=("path", "memory_id"), code="uuid_parsing") from None


@post("/", status_code=200)
async def create_memory(request: Request[Any, Any, Any], principal: Principal, services: Services) -> dict[str, Any]:
    body = decode_body(await request.body(), CreateMemoryBody)
    if body.organizationId is not None and body.organizationId != principal.org_id:
        raise PermissionDenied("organizationId does not match the organisation of this API key")
    namespace = query_namespace(request)
    [memory] = await services.store.add(principal.org_id, namespace,
                                        [NewMemory(content=check_content(body.content), source="explicit")])
    return memory_json(memory)


@post("/search", status_code=200)
async def search_memories(request: Request[Any, Any, Any], principal: Principal,
                          services: Services) -> dict[str, Any]:
    body = decode_body(await request.body(), SearchBody)
    if not 1 <= body.limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100", loc=("body", "limit"), code="value_error")
    if body.namespace is not None:
        try:
            namespace = validate_namespace(body.namespace)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, loc=("body", "namespace"), code="value_error") from None
    else:
        namespace = query_namespace(request)
    hits = await services.store.search(principal.org_id, namespace, body.query, limit=body.limit)
    return {"results": [{**memory_json(h.memory), "score": round(float(h.score), 6)} for h in hits]}


@get("/")
async def list_memories(request: Request[Any, Any, Any], principal: Principal, services: Services) -> dict[str, Any]:
    limit = query_int(request, "limit", 50, 1, 100)
    offset = query_int(request, "offset", 0, 0, None)
    namespace = query_namespace(request)
    memories, total = await services.store.list(principal.org_id, namespace, limit=limit, offset=offset)
    return {"memories": [memory_json(m) for m in memories], "total": total}


@get("/{memory_id:str}")
async def get_memory(request: Request[Any, Any, Any], memory_id: str, principal: Principal,
                     services: Services) -> dict[str, Any]:
    memory = await services.store.get(principal.org_id, query_namespace(request), check_uuid(memory_id))
    if memory is None:
        raise NotFound("memory not found")
    return memory_json(memory)


@delete("/{memory_id:str}", status_code=204)
async def delete_memory(request: Request[Any, Any, Any], memory_id: str, principal: Principal,
                        services: Services) -> Response[None]:
    if not await services.store.delete(principal.org_id, query_namespace(request), check_uuid(memory_id)):
        raise NotFound("memory not found")
    return Response(None, status_code=204)


memory_router = Router(
    path="/api/v1/memory",
    route_handlers=[create_memory, search_memories, list_memories, get_memory, delete_memory],
    dependencies={"principal": Provide(provide_principal), "services": Provide(provide_services)},
    tags=["memory"],
)
