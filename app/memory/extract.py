"""Memory extraction: turn a conversation's not-yet-committed turns into durable facts about the user.

Two extractors share one interface (`Extractor`):

* `LLMExtractor` (`app.memory.extract_llm`) -- one JSON-mode chat completion (system prompt carries the marker ``memchat-extract``)
  returning ``{"facts": [{"content", "entities", "turn", "supersedes"}]}``. Existing memories are shown to
  the model with short ids (``m1``, ``m2``, ...) that are mapped back to real ids. Any failure (upstream
  error, timeout, malformed output, zero facts while the heuristic finds some) falls back to the heuristic
  with a logged warning; `extract` never raises for upstream or parse failures.
* `HeuristicExtractor` -- deterministic and offline; the user's own factual sentences, verbatim, those
  of one message together in one fact unless a sentence states an attribute (see
  `app.memory.extract_heuristic` for the documented rules and supersession patterns).

Both post-process the same way: blank contents dropped, duplicates (case/space/final-punctuation
insensitive) merged, facts identical to an existing current memory dropped, ``supersedes`` limited to ids
of ``existing`` memories that are still current. `app.memory.extractors.build_extractor` picks one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec

from app.memory import extract_heuristic as H
from app.memory.attributes import attributes, conflicts
from app.memory.models import Memory
from app.memory.relative_dates import ISO_DATE, resolve_relative_dates
from app.times import as_utc

log = logging.getLogger("memchat.extract")

MARKER = "memchat-extract"
MAX_FACTS = 100
MAX_FACT_CHARS = 1000
MAX_USER_CHARS = 8000  # per turn, in the LLM prompt
MAX_ASSISTANT_CHARS = 1500  # per turn, in the LLM prompt (context only)


class ConversationTurn(msgspec.Struct, frozen=True):
    """One user/assistant exchange. ``created_at``: aware UTC (naive is taken as UTC)."""

    seq: int
    turn_id: str
    user: str
    assistant: str
    created_at: datetime


class ExtractedFact(msgspec.Struct, frozen=True):
    """A fact to store. ``supersedes``: ids of ``existing`` memories it contradicts or refines."""

    content: str
    entities: list[str] = []
    source_turn_id: str | None = None
    supersedes: list[str] = []


class Extractor(Protocol):
    name: str

    async def extract(
        self, turns: Sequence[ConversationTurn], existing: Sequence[Memory], *, model: str | None, now: datetime
    ) -> list[ExtractedFact]: ...


class CompletionClient(Protocol):
    """A chat backend that answers JSON-mode requests (the upstream client; `app.llm.backend`)."""

    async def complete_json(self, body: dict[str, Any]) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- shared post-processing


def _key(content: str) -> str:
    return " ".join(content.split()).rstrip(" .!?;:").casefold()


def current_memories(existing: Sequence[Memory]) -> list[Memory]:
    return [m for m in existing if m.state == "current"]


def finalize_facts(facts: Sequence[ExtractedFact], existing: Sequence[Memory]) -> list[ExtractedFact]:
    """Drop blanks and facts already stored verbatim, merge duplicates, keep ``supersedes`` to current ids."""
    current = current_memories(existing)
    known = {_key(m.content) for m in current}
    valid_ids = {m.id for m in current}
    merged: dict[str, ExtractedFact] = {}
    for fact in facts:
        content = " ".join(fact.content.split())[:MAX_FACT_CHARS]
        key = _key(content)
        if not key or key in known:
            continue
        entities = H.dedupe([e for e in fact.entities if isinstance(e, str)] + ISO_DATE.findall(content))
        supersedes = [s for s in dict.fromkeys(fact.supersedes) if s in valid_ids]
        if key in merged:
            prev = merged[key]
            merged[key] = ExtractedFact(
                content=prev.content,
                entities=H.dedupe(prev.entities + entities),
                source_turn_id=prev.source_turn_id or fact.source_turn_id,
                supersedes=list(dict.fromkeys(prev.supersedes + supersedes)),
            )
        else:
            merged[key] = ExtractedFact(content, entities, fact.source_turn_id, supersedes)
    return list(merged.values())[:MAX_FACTS]


# --------------------------------------------------------------------------- heuristic


class _Candidate(msgspec.Struct):
    content: str
    entities: list[str]
    turn_id: str
    attrs: dict[str, str]


def _one_per_message(candidates: list[_Candidate]) -> list[_Candidate]:
    """Consecutive kept sentences of one message become one fact (each sentence is context for the
    others: on LoCoMo end to end this retrieves better than a memory per sentence, docs/benchmarks.md);
    a sentence stating an attribute stays a fact of its own, so supersession stays per attribute."""
    out: list[_Candidate] = []
    for cand in candidates:
        prev = out[-1] if out else None
        if prev is not None and prev.turn_id == cand.turn_id and not prev.attrs and not cand.attrs:
            out[-1] = _Candidate(f"{prev.content} {cand.content}", H.dedupe(prev.entities + cand.entities),
                                 cand.turn_id, {})
        else:
            out.append(cand)
    return out


class HeuristicExtractor:
    """Deterministic, offline extraction from the user's messages (rules: `app.memory.extract_heuristic`)."""

    name = "heuristic"

    async def extract(
        self,
        turns: Sequence[ConversationTurn],
        existing: Sequence[Memory],
        *,
        model: str | None = None,
        now: datetime | None = None,
    ) -> list[ExtractedFact]:
        return self.extract_sync(turns, existing)

    def extract_sync(self, turns: Sequence[ConversationTurn], existing: Sequence[Memory]) -> list[ExtractedFact]:
        candidates: list[_Candidate] = []
        for turn in sorted(turns, key=lambda t: t.seq):
            day = as_utc(turn.created_at).date()
            for sentence in H.user_sentences(turn.user):
                cleaned = H.clean_sentence(sentence)
                attrs = attributes(cleaned)
                if H.drop_reason(cleaned, has_attributes=bool(attrs)) is not None:
                    continue
                text, dates = resolve_relative_dates(cleaned, day)
                entities = H.dedupe(H.extract_entities(cleaned) + dates)
                candidates.append(_Candidate(H.finalize(text), entities, turn.turn_id, attrs))
        # Within one conversation a later statement of the same attribute wins ("I live in Paris. ...
        # Actually I just moved to Lyon."): drop an earlier fact whose every attribute is restated differently.
        kept: list[_Candidate] = []
        for i, cand in enumerate(candidates):
            later = [c for c in candidates[i + 1:] if c.attrs]
            overridden = {k for c in later for k in conflicts(c.attrs, cand.attrs)}
            if cand.attrs and overridden >= set(cand.attrs):
                continue
            # Attributes restated later no longer count for supersession from this (older) fact.
            cand.attrs = {k: v for k, v in cand.attrs.items() if k not in overridden}
            kept.append(cand)
        kept = _one_per_message(kept)
        current = [(m, attributes(m.content)) for m in current_memories(existing)]
        facts = [
            ExtractedFact(
                content=c.content,
                entities=c.entities,
                source_turn_id=c.turn_id,
                supersedes=[m.id for m, attrs in current if c.attrs and conflicts(c.attrs, attrs)],
            )
            for c in kept
        ]
        return finalize_facts(facts, existing)
