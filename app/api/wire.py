"""How memories look on the wire: the memory REST API's camelCase shape and the refs every chat surface
returns (the same fields as the memory, minus tenant details, plus the relevance score and the scope the
memory came from: ``"user"``, the end user's namespace, or ``"shared"``, the organisation's shared scope)."""

from __future__ import annotations

from typing import Any

from app.memory.models import Memory, ScoredMemory
from app.tenancy import scope_of
from app.times import rfc3339


def memory_json(memory: Memory) -> dict[str, Any]:
    return {
        "content": memory.content,
        "createdAt": rfc3339(memory.created_at),
        "id": memory.id,
        "organizationId": memory.org_id,
        "source": memory.source,
        "sourceThreadId": memory.source_thread_id,
        "sourceTurnId": memory.source_turn_id,
        "namespace": memory.namespace,
        "entities": list(memory.entities),
        "state": memory.state,
        "supersededBy": memory.superseded_by,
        "updatedAt": rfc3339(memory.updated_at),
    }


def memory_ref(scored: ScoredMemory) -> dict[str, Any]:
    memory = scored.memory
    return {
        "id": memory.id,
        "content": memory.content,
        "score": round(float(scored.score), 6),
        "createdAt": rfc3339(memory.created_at),
        "source": memory.source,
        "sourceThreadId": memory.source_thread_id,
        "sourceTurnId": memory.source_turn_id,
        "scope": scope_of(memory.namespace),
    }


def memory_refs(used: list[ScoredMemory]) -> list[dict[str, Any]]:
    return [memory_ref(s) for s in used]
