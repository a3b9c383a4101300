"""Entities of memories: extraction (LLM in JSON mode, heuristic fallback), the backfill that adds them
to existing memories, and the retrieval boost for memories whose entities the query names.

**Extraction.** `EntityExtractor.extract` takes up to ``chunk_size`` memories and makes ONE JSON-mode
chat completion (the system prompt carries the marker ``memchat-entities``) asking for the people,
places, organisations, dates and things each numbered memory mentions. Offline (no upstream, or no
model), on an upstream error or timeout, or on malformed output, the deterministic extractor
(`app.memory.extract_heuristic.extract_entities`: capitalised spans, quoted names, ISO dates) answers
for the memories the model did not answer for. Entities are deduplicated case-insensitively, at most
`MAX_ENTITIES` per memory, each at most `MAX_ENTITY_CHARS` characters.

**Backfill** (``POST /api/v1/memory/backfill-entities``): one page of the namespace's memories (newest
first, superseded ones included) is examined. A memory that already has entities, or that an earlier
backfill already processed with the same content, is *skipped*; the others are extracted and written
(``store.update(..., entities=...)``) and count as *processed* -- also when zero entities were found;
*failed* counts memories whose write failed. Every processed memory gets a row in the LanceDB table
``memory_entity_marks`` (tenant, memory id, sha256 of the content), so a second run skips memories for
which nothing was found instead of asking the model again; a memory whose content changed since is
processed again.

**Retrieval boost** (`entity_rerank`): a hit gets `ENTITY_BONUS` added to its score when one of its
entities occurs in the query as a whole word or phrase (case-insensitive), then hits are re-sorted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
import msgspec

from app.errors import UpstreamError
from app.memory import extract_heuristic as H
from app.memory.entity_marks import EntityMarks, content_hash
from app.memory.extract import CompletionClient
from app.memory.llm_json import ExtractionParseError, decode_payload, response_text
from app.memory.limits import MAX_ENTITIES, MAX_ENTITY_CHARS
from app.memory.models import Memory, ScoredMemory

log = logging.getLogger("memchat.entities")

MARKER = "memchat-entities"
MAX_MEMORY_CHARS = 4000  # per memory, in the prompt
# Added to a hit's score when the query names one of its entities. Scores of the default search mode
# (wsum) lie in [0, 1] with relevant memories around 0.3-0.6, so 0.1 lifts a named memory above
# similarly relevant ones without letting a barely relevant one jump far ahead.
ENTITY_BONUS = 0.1
CATEGORIES = ("people", "places", "organisations", "dates", "things")
_ALIASES = {"organizations": "organisations", "orgs": "organisations", "person": "people", "persons": "people",
            "locations": "places", "date": "dates", "objects": "things", "other": "things"}

SYSTEM_PROMPT = f"""You are {MARKER}, the entity-extraction step of a long-term memory store.
For each numbered memory, list the named entities it mentions, by category:
- "people": names of people and pets
- "places": cities, countries, addresses, venues, landmarks
- "organisations": companies, schools, teams, bands, institutions
- "dates": dates and times, as ISO dates (YYYY-MM-DD or YYYY-MM) when the memory gives them
- "things": named products, works (books, films, songs), vehicles, brands, events
Copy names exactly as written in the memory. Do not invent entities; an empty list is fine.
Answer with a single JSON object and nothing else, in exactly this shape:
{{"memories": [{{"n": 1, "people": [], "places": [], "organisations": [], "dates": [], "things": []}}]}}"""


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from JSON; Arrow cannot store it
        return False
    return True


def clean_entities(items: Sequence[Any]) -> list[str]:
    out = [" ".join(e.split())[:MAX_ENTITY_CHARS] for e in items if isinstance(e, str) and e.strip()]
    return H.dedupe([e for e in out if e and _encodable(e)])[:MAX_ENTITIES]


def heuristic_entities(content: str) -> list[str]:
    found: list[str] = []
    for sentence in H.split_sentences(content):
        found.extend(H.extract_entities(sentence))
    return clean_entities(found)


def build_messages(memories: Sequence[Memory]) -> list[dict[str, str]]:
    lines = ["Memories:"]
    for n, memory in enumerate(memories, 1):
        lines.append(f"{n}. {' '.join(memory.content.split())[:MAX_MEMORY_CHARS]}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def parse_entities(response: Any, count: int) -> dict[int, list[str]]:
    """``{memory number (1-based): entities}`` from a chat completion; raises `ExtractionParseError`."""
    payload = decode_payload(response_text(response))
    items = payload.get("memories") if isinstance(payload, dict) else payload
    if isinstance(payload, dict) and items is None and count == 1 and any(k in payload for k in CATEGORIES):
        items = [payload]
    if not isinstance(items, list):
        raise ExtractionParseError("'memories' is not a list")
    out: dict[int, list[str]] = {}
    for index, item in enumerate(items, 1):
        if not isinstance(item, dict):
            continue
        n = item.get("n", item.get("id", index))
        if isinstance(n, str) and n.strip().isdigit():
            n = int(n.strip())
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= count:
            continue
        found: list[Any] = []
        for key, value in item.items():
            category = _ALIASES.get(str(key).lower(), str(key).lower())
            if category in CATEGORIES or category == "entities":
                found.extend([value] if isinstance(value, str) else value if isinstance(value, list) else [])
        out[n] = clean_entities(found)
    if items and not out:
        raise ExtractionParseError("no memory in the output has a valid number")
    return out


class EntityExtractor:
    """``client``: the chat backend (None or offline: heuristic only); ``model``: the model to ask."""

    def __init__(self, client: CompletionClient | None, model: str | None, *, timeout: float = 30.0) -> None:
        self.client = client if client is not None and not getattr(client, "offline", False) else None
        self.model = model
        self.timeout = timeout
        self.llm_calls = 0

    async def extract(self, memories: Sequence[Memory]) -> list[list[str]]:
        """Entities of each memory, in order. Never raises for upstream or parse failures."""
        if not memories:
            return []
        answered: dict[int, list[str]] = {}
        if self.client is not None and self.model:
            body = {"model": self.model, "messages": build_messages(memories),
                    "response_format": {"type": "json_object"}, "temperature": 0}
            self.llm_calls += 1
            try:
                with anyio.fail_after(self.timeout):
                    response = await self.client.complete_json(body)
                answered = parse_entities(response, len(memories))
            except TimeoutError:
                log.warning("entity extraction timed out after %gs; using the heuristic", self.timeout)
            except (UpstreamError, ExtractionParseError) as exc:
                log.warning("entity extraction failed (%s); using the heuristic", exc)
            except Exception as exc:  # noqa: BLE001 - an unexpected client error must not fail the backfill
                log.warning("entity extraction failed unexpectedly (%s: %s); using the heuristic",
                            type(exc).__name__, exc)
        return [answered[n] if n in answered else heuristic_entities(m.content)
                for n, m in enumerate(memories, 1)]


# --------------------------------------------------------------------------- backfill


class BackfillCounts(msgspec.Struct, frozen=True, kw_only=True):
    """What one backfill call did: ``examined`` memories of the page, ``skipped`` (they had entities or
    were processed before with the same content), ``processed`` (newly extracted), ``failed`` writes."""

    examined: int
    failed: int
    has_more: bool
    limit: int
    next_offset: int
    offset: int
    processed: int
    skipped: int


class BackfillStore(Protocol):
    async def list(self, org_id: str, namespace: str, *, limit: int = 50, offset: int = 0,
                   include_superseded: bool = False) -> tuple[list[Memory], int]: ...

    async def update(self, org_id: str, namespace: str, memory_id: str, *,
                     entities: Sequence[str] | None = None) -> Memory | None: ...


async def backfill_page(store: BackfillStore, marks: EntityMarks, extractor: EntityExtractor, org_id: str,
                        namespace: str, *, limit: int, offset: int, chunk_size: int) -> BackfillCounts:
    page, total = await store.list(org_id, namespace, limit=limit, offset=offset, include_superseded=True)
    seen = await marks.processed(org_id, namespace, [m.id for m in page if not m.entities])
    todo = [m for m in page if not m.entities and seen.get(m.id) != content_hash(m.content)]
    processed = failed = 0
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start:start + chunk_size]
        done: list[tuple[Memory, int]] = []
        for memory, entities in zip(chunk, await extractor.extract(chunk), strict=True):
            try:
                if entities and await store.update(org_id, namespace, memory.id, entities=entities) is None:
                    failed += 1  # deleted while we were extracting
                    continue
            except Exception:
                log.exception("backfill: storing the entities of memory %s failed", memory.id)
                failed += 1
                continue
            done.append((memory, len(entities)))
        try:
            await marks.mark(org_id, namespace, done)
        except Exception:  # the entities are stored; only a re-run's skip of empty results is lost
            log.exception("backfill: recording %d processed memories failed", len(done))
        processed += len(done)
    next_offset = offset + len(page)
    return BackfillCounts(examined=len(page), failed=failed, has_more=next_offset < total, limit=limit,
                          next_offset=next_offset, offset=offset, processed=processed,
                          skipped=len(page) - len(todo))


# --------------------------------------------------------------------------- retrieval boost


def names_entity(query_folded: str, entity: str) -> bool:
    """Whether ``entity`` occurs in the (casefolded) query as a whole word or phrase."""
    needle = " ".join(entity.split()).casefold()
    if len(needle) < 2:
        return False
    return re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", query_folded) is not None


def entity_rerank(query: str, hits: Sequence[ScoredMemory], bonus: float = ENTITY_BONUS) -> list[ScoredMemory]:
    """Add ``bonus`` to hits with an entity the query names, then sort by score (stable)."""
    folded = " ".join(query.split()).casefold()
    boosted = [
        ScoredMemory(memory=h.memory, score=h.score + bonus)
        if any(names_entity(folded, e) for e in h.memory.entities) else h
        for h in hits
    ]
    return sorted(boosted, key=lambda h: -h.score)
