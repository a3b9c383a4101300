"""Retrieval for the chat pipeline: which memories to show the model, and how.

The query is the latest user message plus a little recent context; the result is injected as one clearly
delimited system section (never by rewriting the user's message), each memory with its date, capped by a
token budget. Nothing is injected when nothing relevant is found.

With ``include_shared`` the organisation's shared scope (`app.tenancy.SHARED_NAMESPACE`) is searched
beside the user's namespace, and the hits of both are ranked as one list. Each scope is searched on its
own (the same memory id may exist in both, and fusion keys hits by id); with the default ``wsum`` fusion
a hit's score depends only on the hit itself (BM25 statistics are table-wide, cosine is absolute), so
merging the two lists by score ranks them as one search over both would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import anyio
import msgspec

from app.memory.entities import entity_rerank
from app.memory.models import ScoredMemory
from app.memory.presence import TenantPresence
from app.messages import message_text
from app.tenancy import SHARED_NAMESPACE

SECTION_OPEN = "<memchat-memory>"
SECTION_CLOSE = "</memchat-memory>"
SECTION_INTRO = (
    "Long-term memory: facts this user shared in earlier conversations, each with the date it was recorded. "
    "Use them when they are relevant; the user's latest message takes precedence over them."
)
_CONTEXT_CHARS = 300


class Retrieved(msgspec.Struct, frozen=True):
    """Memories chosen for a request: those used (in the order shown to the model), the system section
    that carries them, and how many candidates the search found."""

    used: list[ScoredMemory] = msgspec.field(default_factory=list)
    section: str | None = None
    searched: int = 0

    @property
    def memories(self) -> list[str]:
        return [s.memory.content for s in self.used]


class SearchableStore(Protocol):
    async def search(self, org_id: str, namespace: str, query: str, *, limit: int = 8,
                     min_score: float | None = None) -> list[ScoredMemory]: ...

    async def may_have_memories(self, org_id: str, namespace: str) -> bool: ...

    @property
    def presence(self) -> TenantPresence: ...


def build_query(messages: Sequence[dict[str, Any]]) -> str:
    """The latest user message, plus the tail of the previous user message when the latest is short
    ("and where does she live?" needs the turn before it)."""
    users = [message_text(m) for m in messages if m.get("role") == "user"]
    users = [u for u in users if u.strip() and SECTION_OPEN not in u]
    if not users:
        return ""
    query = users[-1].strip()
    if len(query.split()) < 8 and len(users) > 1:
        query = users[-2].strip()[-_CONTEXT_CHARS:] + "\n" + query
    return query[-4000:]


def approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def format_section(memories: Sequence[ScoredMemory], token_budget: int) -> tuple[str | None, list[ScoredMemory]]:
    lines: list[str] = []
    used: list[ScoredMemory] = []
    budget = token_budget - approx_tokens(SECTION_INTRO) - 10
    for scored in memories:
        line = f"- ({scored.memory.created_at.date().isoformat()}) {' '.join(scored.memory.content.split())}"
        cost = approx_tokens(line)
        if cost > budget:
            break
        budget -= cost
        lines.append(line)
        used.append(scored)
    if not lines:
        return None, []
    return "\n".join([SECTION_OPEN, SECTION_INTRO, *lines, SECTION_CLOSE]), used


class MemoryRetriever:
    def __init__(self, store: SearchableStore, *, top_k: int = 8, min_score: float | None = None,
                 token_budget: int = 1200) -> None:
        self.store = store
        self.top_k = top_k
        self.min_score = min_score
        self.token_budget = token_budget

    def known_empty(self, org_id: str, namespace: str, *, include_shared: bool = False) -> bool:
        return all(self.store.presence.known_empty(org_id, ns) for ns in scopes(namespace, include_shared))

    async def retrieve(self, org_id: str, namespace: str, messages: Sequence[dict[str, Any]], *,
                       include_shared: bool = False) -> Retrieved:
        query = build_query(messages)
        if not query:
            return Retrieved()
        found = await self._search(org_id, [ns for ns in scopes(namespace, include_shared)
                                            if await self.store.may_have_memories(org_id, ns)], query)
        # Without a configured floor, a hit must have *some* relevance: a zero fused score means no
        # retrieval leg matched at all.
        found = [s for s in found if s.score > (self.min_score if self.min_score is not None else 0.0)]
        # Entity boost: a hit whose entities the query names (case-insensitive, whole words) gets
        # `entities.ENTITY_BONUS` added to its score, then the hits are re-sorted (refs show that score).
        found = entity_rerank(query, found)
        section, used = format_section(found, self.token_budget)
        return Retrieved(used=used, section=section, searched=len(found))

    async def _search(self, org_id: str, namespaces: Sequence[str], query: str) -> list[ScoredMemory]:
        """The best ``top_k`` hits over ``namespaces``, as one list ranked by score."""
        if len(namespaces) <= 1:
            return [] if not namespaces else await self.store.search(
                org_id, namespaces[0], query, limit=self.top_k, min_score=self.min_score)
        results: list[list[ScoredMemory]] = [[] for _ in namespaces]

        async def one(index: int, namespace: str) -> None:
            results[index] = await self.store.search(org_id, namespace, query, limit=self.top_k,
                                                     min_score=self.min_score)

        try:
            async with anyio.create_task_group() as group:
                for index, namespace in enumerate(namespaces):
                    group.start_soon(one, index, namespace)
        except BaseExceptionGroup as group_error:  # the search's own error, not the group
            raise group_error.exceptions[0] from None
        merged = [(hit, index) for index, hits in enumerate(results) for hit in hits]
        merged.sort(key=lambda pair: (-pair[0].score, pair[1], pair[0].memory.id))  # ties: the user's first
        return [hit for hit, _ in merged[:self.top_k]]


def scopes(namespace: str, include_shared: bool) -> list[str]:
    """The namespaces a chat in ``namespace`` searches: its own, then the organisation's shared scope."""
    return [namespace, SHARED_NAMESPACE] if include_shared and namespace != SHARED_NAMESPACE else [namespace]
