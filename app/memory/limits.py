"""Bounds on what a memory may hold, defined once: the store enforces them where a memory is built
(`check_content`, `check_entities`), and the API types derive their published bounds from them."""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_CONTENT_CHARS = 32_000
MAX_ENTITIES = 30          # per memory
MAX_ENTITY_CHARS = 200     # per entity

# "Not blank": at least one character outside JSON Schema's (ECMA-262) \s class -- spelled out, so the
# published pattern and the server's check (`is_blank`) agree exactly (Python's \s differs).
NONBLANK = "[^\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
_NONBLANK = re.compile(NONBLANK)


class MemoryLimitError(ValueError):
    """A memory's content or entities are outside the bounds above; ``field`` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def is_blank(text: str) -> bool:
    return _NONBLANK.search(text) is None


def check_content(content: str) -> str:
    if is_blank(content):
        raise MemoryLimitError("content", "content must not be empty")
    if len(content) > MAX_CONTENT_CHARS:
        raise MemoryLimitError("content", f"content must be at most {MAX_CONTENT_CHARS} characters")
    return content


def check_entities(entities: Sequence[str]) -> list[str]:
    if len(entities) > MAX_ENTITIES:
        raise MemoryLimitError("entities", f"a memory has at most {MAX_ENTITIES} entities")
    for entity in entities:
        if not entity or len(entity) > MAX_ENTITY_CHARS:
            raise MemoryLimitError("entities", f"an entity has 1-{MAX_ENTITY_CHARS} characters")
    return list(entities)
