"""How a memory looks on the wire (the seed's camelCase shape plus memchat's extra fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.memory.models import Memory


def rfc3339(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


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
