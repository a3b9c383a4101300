"""Memory REST API (``/api/v1/memory``, and the same routes on the organisation's shared scope under
``/api/v1/memory/shared``), shaped as memories.ai documents it: camelCase memories, 422 ``detail`` errors.

Bodies are decoded by hand (`decode_body`) so every error keeps the documented ``{"detail": [{"loc", "msg",
"type"}]}`` shape with a precise ``loc``; query parameters are declared in the handler signatures
(Litestar validates them and ``app.api.errors`` renders its errors as 422 ``detail`` items). The
OpenAPI document at ``/schema`` describes both: request bodies come from the same msgspec Structs the
handlers decode with (`_operation`), responses from the Structs in `app.api.memory_models`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar import Request, Response, Router, delete, get, patch, post
from litestar.di import Provide
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody
from litestar.openapi.spec import Parameter as ParameterSpec
from litestar.params import Parameter
from litestar.response import Stream
from msgspec import UNSET

from app.api import memory_models as M
from app.api import memory_transfer as wire_transfer
from app.api.deps import NsScopeDep, PrincipalDep, ServicesDep, provide_principal, provide_services
from app.api.wire import memory_json
from app.errors import InvalidRequest, PermissionDenied
from app.memory.entities import clean_entities
from app.memory.limits import MemoryLimitError
from app.memory.limits import check_content as check_memory_content
from app.tenancy import MAX_NAMESPACE_LENGTH, NAMESPACE_PATTERN, SHARED_NAMESPACE, validate_namespace

IMPORT_MAX_BYTES = 64 * 1024 * 1024
T = TypeVar("T")
_LOC = re.compile(r"at `\$\.?([^`]*)`")


def _int_fields(type_: Any) -> frozenset[str]:
    info = msgspec.inspect.type_info(type_)
    fields = getattr(info, "fields", ())
    return frozenset(f.name for f in fields if isinstance(f.type, msgspec.inspect.IntType))


def decode_body(raw: bytes, type_: type[T]) -> T:
    if not raw.strip():
        raise InvalidRequest("request body is required", loc=("body",), code="missing")
    try:
        data = msgspec.json.decode(raw)
        if isinstance(data, dict):  # JSON has one number type: 10.0 is a valid integer
            for name in _int_fields(type_):
                value = data.get(name)
                if isinstance(value, float) and value.is_integer():
                    data[name] = int(value)
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        match = _LOC.search(str(exc))
        field = match.group(1) if match else ""
        loc = ("body", *[int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", field) if p]) if field else ("body",)
        message = str(exc).split(" - at ")[0]
        raise InvalidRequest(message, loc=loc, code="value_error") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"invalid JSON: {exc}", loc=("body",), code="json_invalid") from None


def check_content(content: str) -> str:
    try:
        check_memory_content(content)
    except MemoryLimitError as exc:
        code = "string_too_short" if not content.strip() or "empty" in exc.message else "string_too_long"
        raise InvalidRequest(exc.message, loc=("body", "content"), code=code) from None
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("content is not valid Unicode", loc=("body", "content"), code="value_error") from None
    return content


def check_namespace(value: str | None, loc: tuple[str, ...] = ("query", "namespace")) -> str:
    try:
        return validate_namespace(value)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, loc=loc, code="value_error") from None


def check_uuid(value: str, loc: tuple[str, ...] = ("path", "memory_id")) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequest(f"{loc[-1]} must be a UUID", loc=loc, code="uuid_parsing") from None


# --------------------------------------------------------------------------- OpenAPI declarations

Namespace = Annotated[str, Parameter(max_length=MAX_NAMESPACE_LENGTH, pattern=NAMESPACE_PATTERN, description=(
    "The end user's namespace (printable, at most 256 characters); `\"\"` is the organisation's global one."))]
MemoryId = Annotated[str, Parameter(schema_extra={"format": "uuid"}, description="The memory's id (a UUID).")]
Limit = Annotated[int, Parameter(ge=1, le=100, description="Page size.")]
Offset = Annotated[int, Parameter(ge=0, description="Memories to skip (newest first).")]
MAX_OFFSET = 2**31  # past any table; LanceDB takes offsets as u32 (larger ones raise OverflowError)


async def provide_namespace(namespace: Namespace = "") -> str:
    """The namespace a route of ``/api/v1/memory`` works on."""
    return check_namespace(namespace)


async def provide_shared_scope() -> str:
    """The namespace every route of ``/api/v1/memory/shared`` works on: the organisation's shared scope
    (`app.tenancy.SHARED_NAMESPACE`, which no ``namespace`` value can name)."""
    return SHARED_NAMESPACE


_AUTH_PARAMS = [
    ParameterSpec(name="authorization", param_in="header", required=False, schema=M.schema_of(str),
                  description="`Bearer <key>` or the raw key."),
    ParameterSpec(name="X-API-Key", param_in="header", required=False, schema=M.schema_of(str)),
    ParameterSpec(name="vai_token", param_in="cookie", required=False, schema=M.schema_of(str),
                  description="The web page's sign-in cookie."),
]


def _operation(body: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> type[Operation]:
    """An `Operation` that documents the body the handler decodes itself (``{media type: JSON schema}``),
    the accepted credentials, query parameters the handler requires itself (``required``: checked by
    hand, so their error keeps its ``loc``), and drops Litestar's generic 400 (parameter errors are 422)."""

    @dataclass
    class MemoryOperation(Operation):
        def __post_init__(self) -> None:
            if self.responses:
                self.responses.pop("400", None)
                if "204" in self.responses:
                    self.responses["204"].content = None  # type: ignore[union-attr]  # no body at all
            self.parameters = [*(self.parameters or []), *_AUTH_PARAMS]  # type: ignore[list-item]
            for p in self.parameters:
                if p.name in required and p.param_in == "query":  # type: ignore[union-attr]
                    p.required = True  # type: ignore[union-attr]
                    if p.schema is not None:  # type: ignore[union-attr]
                        p.schema.default = None  # type: ignore[union-attr]
            if body is not None:
                self.request_body = RequestBody(
                    content={media: OpenAPIMediaType(schema=schema) for media, schema in body.items()},  # type: ignore[misc]
                    required=True)

    return MemoryOperation


def _json_body(type_: Any) -> type[Operation]:
    """Documents a JSON body of ``type_`` (a Struct, possibly Annotated with extra JSON Schema)."""
    return _operation({"application/json": M.schema_of(type_)})


# --------------------------------------------------------------------------- the documented routes


@post("/", status_code=200, operation_class=_json_body(M.CreateMemoryBody),
      responses=M.responses(M.MemoryOut, 401, 403, 413, 422), summary="Create Memory")
async def create_memory(request: Request[Any, Any, Any], principal: PrincipalDep, services: ServicesDep,
                        ns_scope: NsScopeDep) -> dict[str, Any]:
    """Store an explicit memory (``source: "explicit"``) in the namespace."""
    body = decode_body(await request.body(), M.CreateMemoryBody)
    if body.organizationId is not None and body.organizationId != principal.org_id:
        raise PermissionDenied("organizationId does not match the organisation of this API key")
    memory = await services.memories.create(principal.org_id, ns_scope, check_content(body.content))
    return memory_json(memory)


@post("/search", status_code=200, operation_class=_json_body(M.SearchBody),
      responses=M.responses(M.SearchResults, 401, 413, 422), summary="Search Memories")
async def search_memories(request: Request[Any, Any, Any], principal: PrincipalDep, services: ServicesDep,
                          ns_scope: NsScopeDep) -> dict[str, Any]:
    """Hybrid search of the namespace's current memories (``namespace`` in the body wins, except on the
    shared scope's route)."""
    body = decode_body(await request.body(), M.SearchBody)
    ns = ns_scope
    if body.namespace is not None and ns_scope != SHARED_NAMESPACE:  # the shared routes' path says whose
        ns = check_namespace(body.namespace, ("body", "namespace"))
    hits = await services.memories.search(principal.org_id, ns, body.query, limit=body.limit)
    return {"results": [{**memory_json(h.memory), "score": round(float(h.score), 6)} for h in hits]}


@get("/", operation_class=_operation(), responses=M.responses(M.MemoryList, 401, 404, 422), summary="List Memories")
async def list_memories(
    principal: PrincipalDep, services: ServicesDep, ns_scope: NsScopeDep, limit: Limit = 50, offset: Offset = 0,
    source: Annotated[Literal["explicit", "conversation"] | None, Parameter(
        description="Only memories of this source.")] = None,
    entity: Annotated[str | None, Parameter(min_length=1, max_length=500, description=(
        "Only memories with this entity (exact, case-sensitive).")) ] = None,
    include_superseded: Annotated[bool, Parameter(description="Also list superseded memories.")] = False,
    before: Annotated[str | None, Parameter(schema_extra={"format": "uuid"}, description=(
        "Keyset paging: start after this memory (the last one of the previous page); stable while "
        "memories are added. Combines with offset."))] = None,
) -> dict[str, Any]:
    """The namespace's memories, newest first (``createdAt``, then ``id``, descending)."""
    memories, total = await services.memories.list(
        principal.org_id, ns_scope, limit=limit, offset=min(offset, MAX_OFFSET), source=source,
        entity=entity, include_superseded=include_superseded,
        before=check_uuid(before, ("query", "before")) if before is not None else None)
    return {"memories": [memory_json(m) for m in memories], "total": total}


@get("/{memory_id:str}", operation_class=_operation(), responses=M.responses(M.MemoryOut, 401, 404, 422),
     summary="Get Memory")
async def get_memory(memory_id: MemoryId, principal: PrincipalDep, services: ServicesDep,
                     ns_scope: NsScopeDep) -> dict[str, Any]:
    return memory_json(await services.memories.get(principal.org_id, ns_scope, check_uuid(memory_id)))


@delete("/{memory_id:str}", status_code=204, operation_class=_operation(),
        responses=M.responses(None, 401, 404, 422), summary="Delete Memory")
async def delete_memory(memory_id: MemoryId, principal: PrincipalDep, services: ServicesDep,
                        ns_scope: NsScopeDep) -> Response[None]:
    """Delete the memory and its earlier versions."""
    await services.memories.delete(principal.org_id, ns_scope, check_uuid(memory_id))
    return Response(None, status_code=204)


@post("/backfill-entities", status_code=200, operation_class=_operation(),
      responses=M.responses(M.BackfillOut, 401, 422), summary="Backfill Entities")
async def backfill_entities(
    principal: PrincipalDep, services: ServicesDep, ns_scope: NsScopeDep,
    limit: Annotated[int, Parameter(ge=1, le=50, description="Memories examined by this call.")] = 20,
    offset: Offset = 0,
    chunk_size: Annotated[int, Parameter(ge=1, le=10, description="Memories per model call.")] = 5,
) -> dict[str, Any]:
    """Extract the entities of one page of memories that have none; call again with ``nextOffset``
    while ``hasMore``. Memories already processed are skipped, so re-running is cheap."""
    counts = await services.memories.backfill_entities(principal.org_id, ns_scope, limit=limit,
                                                       offset=min(offset, MAX_OFFSET), chunk_size=chunk_size)
    return M.backfill_json(counts, offset=offset)


# --------------------------------------------------------------------------- memchat's additions


@patch("/{memory_id:str}", operation_class=_json_body(M.PATCH_BODY),
       responses=M.responses(M.MemoryOut, 401, 404, 413, 422), summary="Update Memory")
async def update_memory(request: Request[Any, Any, Any], memory_id: MemoryId, principal: PrincipalDep,
                        services: ServicesDep, ns_scope: NsScopeDep) -> dict[str, Any]:
    """Change a memory's content (re-embedded) and/or entities; the replaced version is kept (see
    ``/history``)."""
    body = decode_body(await request.body(), M.PatchMemoryBody)
    org, ns, mid = principal.org_id, ns_scope, check_uuid(memory_id)
    if body.content is UNSET and body.entities is UNSET:
        raise InvalidRequest("give content and/or entities", loc=("body",), code="missing")
    content = check_content(body.content) if body.content is not UNSET else None
    entities = clean_entities(body.entities) if body.entities is not UNSET else None
    return memory_json(await services.memories.update(org, ns, mid, content=content, entities=entities))


@get("/{memory_id:str}/history", operation_class=_operation(),
     responses=M.responses(M.MemoryHistory, 401, 404, 422), summary="Memory History")
async def memory_history(memory_id: MemoryId, principal: PrincipalDep, services: ServicesDep,
                         ns_scope: NsScopeDep) -> dict[str, Any]:
    """Versions oldest to newest (the last is the current one) and the supersession links."""
    history = await services.memories.history(principal.org_id, ns_scope, check_uuid(memory_id))
    return M.history_json(history)


@delete("/", status_code=200, operation_class=_operation(required=("confirm",)), responses=M.responses(M.ForgetOut, 401, 422),
        summary="Forget Namespace")
async def forget_namespace(
    principal: PrincipalDep, services: ServicesDep,
    ns_scope: NsScopeDep,
    confirm: Annotated[bool, Parameter(schema_extra={"enum": [True]}, description="Must be true.")] = False,
) -> dict[str, Any]:
    """Forget a user: delete every memory, earlier version and conversation (turn log and commit
    records) of the namespace. Requires ``confirm=true``."""
    org, ns = principal.org_id, ns_scope
    if not confirm:
        raise InvalidRequest("confirm=true is required: this deletes every memory and conversation of the namespace",
                             loc=("query", "confirm"), code="missing")
    counts = await services.memories.forget(org, ns)
    return {"namespace": ns, **counts}


@get("/export", operation_class=_operation(), responses=M.responses(M.EXPORT_SPEC, 401, 422),
     summary="Export Memories")
async def export_memories(principal: PrincipalDep, services: ServicesDep, ns_scope: NsScopeDep) -> Stream:
    """Every memory of the namespace (superseded ones too), oldest first, as JSON Lines."""
    pages = services.memories.export(principal.org_id, ns_scope)
    return Stream(wire_transfer.export_lines(pages), media_type=M.JSONL,
                  headers={"content-disposition": 'attachment; filename="memories.jsonl"'})


@post("/import", status_code=200, request_max_body_size=IMPORT_MAX_BYTES,
      operation_class=_operation(M.IMPORT_BODY), responses=M.responses(M.ImportOut, 401, 413, 422),
      summary="Import Memories")
async def import_memories(request: Request[Any, Any, Any], principal: PrincipalDep, services: ServicesDep,
                          ns_scope: NsScopeDep) -> dict[str, Any]:
    """Import JSON Lines (or a JSON array) as exported; ids are kept, so re-importing is a no-op.
    Everything is validated before anything is written."""
    records = wire_transfer.parse_import(await request.body())
    counts = await services.memories.import_items(principal.org_id, ns_scope, [wire_transfer.to_item(r) for r in records])
    return M.import_json(counts)


_ROUTES = [create_memory, search_memories, list_memories, get_memory, delete_memory, backfill_entities, update_memory,
           memory_history, forget_namespace, export_memories, import_memories]


def _router(path: str, provide_ns_scope: Any, tag: str) -> Router:
    return Router(path=path, route_handlers=_ROUTES, tags=[tag], dependencies={
        "principal": Provide(provide_principal), "services": Provide(provide_services),
        "ns_scope": Provide(provide_ns_scope)})


memory_router = _router("/api/v1/memory", provide_namespace, "memory")
# The same routes on the organisation's shared scope (public memories: personal chat shows them to every
# user of the organisation). A path of its own rather than a flag beside ``namespace``: the two can never
# be given together, so no request is ambiguous about whose memories it changes.
shared_memory_router = _router("/api/v1/memory/shared", provide_shared_scope, "shared memory")
