"""The LLM extractor: one JSON-mode chat completion per commit, falling back to the heuristic extractor on
any failure (see `app.memory.extract` for the shared interface and post-processing)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import anyio
import msgspec

from app.errors import UpstreamError
from app.memory.extract import (
    MARKER,
    MAX_ASSISTANT_CHARS,
    MAX_USER_CHARS,
    CompletionClient,
    ConversationTurn,
    ExtractedFact,
    HeuristicExtractor,
    current_memories,
    finalize_facts,
)
from app.memory.llm_json import ExtractionParseError, decode_payload, response_text
from app.memory.models import Memory
from app.times import as_utc, utcnow

log = logging.getLogger("memchat.extract")


SYSTEM_PROMPT = f"""You are {MARKER}, the memory-extraction step of an assistant with long-term memory.
Read the conversation between a user and an assistant and extract durable facts about the user that will
still be useful in future conversations.

Extract: preferences, likes and dislikes, habits; biography (name, age, where they live, work, studies,
health, languages); relationships (family, partner, friends, pets, with their names); plans, goals and
events, with dates.

Rules:
- Each fact is one self-contained sentence in the third person starting with "The user", e.g.
  "The user's dog is named Bruno." Resolve pronouns; never write "I", "you" or an unnamed "he/she".
- Only what the user stated or confirmed. Ignore questions, greetings, chit-chat, requests to the
  assistant, the assistant's own suggestions or statements (unless the user confirmed them), and
  transient or hypothetical things.
- Resolve relative dates against the date of the turn they occur in (each turn shows its date):
  "yesterday" in a turn dated 2026-11-24 becomes "on 2026-11-23". Use ISO dates (YYYY-MM-DD, or YYYY-MM).
- Existing memories are listed with short ids (m1, m2, ...). When a fact contradicts, updates or refines
  an existing memory, put that id in "supersedes". Do not repeat an existing memory that did not change.
- "entities": the names, places, organisations and ISO dates the fact mentions.
- "turn": the number of the turn the fact comes from.
- Nothing worth remembering: {{"facts": []}}.

Answer with a single JSON object and nothing else, in exactly this shape:
{{"facts": [{{"content": "The user ...", "entities": ["..."], "turn": 1, "supersedes": ["m1"]}}]}}"""


class _RawFact(msgspec.Struct):
    content: str
    entities: list[Any] | str | None = None
    turn: int | str | None = None
    supersedes: list[Any] | str | None = None


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def build_messages(
    turns: Sequence[ConversationTurn], existing: Sequence[Memory], now: datetime
) -> list[dict[str, str]]:
    """System + user messages of the extraction request (current existing memories numbered m1, m2, ...)."""
    lines = [f"Current date: {as_utc(now).date().isoformat()} (UTC).", "", "Existing memories about the user:"]
    existing = current_memories(existing)
    for i, memory in enumerate(existing, 1):
        lines.append(f"m{i} (recorded {as_utc(memory.created_at).date().isoformat()}): {' '.join(memory.content.split())}")
    if not existing:
        lines.append("(none)")
    lines += ["", "Conversation:"]
    for turn in sorted(turns, key=lambda t: t.seq):
        lines.append(f"--- turn {turn.seq} ({as_utc(turn.created_at).date().isoformat()}) ---")
        lines.append(f"User: {_clip(turn.user, MAX_USER_CHARS)}")
        if turn.assistant.strip():
            lines.append(f"Assistant: {_clip(turn.assistant, MAX_ASSISTANT_CHARS)}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def parse_facts(
    response: Any, turns: Sequence[ConversationTurn], existing: Sequence[Memory]
) -> list[ExtractedFact]:
    """Facts from a ChatCompletion JSON; raises `ExtractionParseError` when there is no facts list at all."""
    payload = decode_payload(response_text(response))
    if isinstance(payload, dict):
        if "facts" in payload:
            items = payload["facts"]
        elif "content" in payload:
            items = [payload]
        else:
            items = next((v for v in payload.values() if isinstance(v, list)), None)
    else:
        items = payload
    if not isinstance(items, list):
        raise ExtractionParseError(f"'facts' is not a list (got {type(items).__name__})")
    by_seq = {t.seq: t.turn_id for t in turns}
    turn_ids = {t.turn_id for t in turns}
    existing = current_memories(existing)  # numbered exactly as in `build_messages`
    short_ids = {f"m{i}": m.id for i, m in enumerate(existing, 1)}
    real_ids = {m.id for m in existing}
    facts: list[ExtractedFact] = []
    bad = 0
    for item in items:
        try:
            raw = _RawFact(content=item) if isinstance(item, str) else msgspec.convert(item, _RawFact, strict=False)
        except msgspec.ValidationError:
            bad += 1
            continue
        entities = [raw.entities] if isinstance(raw.entities, str) else raw.entities or []
        sup = [raw.supersedes] if isinstance(raw.supersedes, str) else raw.supersedes or []
        supersedes: list[str] = []
        for ref in sup:
            if isinstance(ref, int) and not isinstance(ref, bool):
                ref = f"m{ref}"
            if not isinstance(ref, str):
                continue
            ref = ref.strip().strip("[]()#")
            if ref.lower() in short_ids:
                supersedes.append(short_ids[ref.lower()])
            elif ref in real_ids:
                supersedes.append(ref)
        turn_id = None
        turn = raw.turn
        if isinstance(turn, str):
            turn = int(turn.strip()) if turn.strip().lstrip("-").isdigit() else turn.strip()
        if isinstance(turn, int):
            turn_id = by_seq.get(turn)
        elif isinstance(turn, str) and turn in turn_ids:
            turn_id = turn
        if turn_id is None and len(turns) == 1:
            turn_id = turns[0].turn_id
        facts.append(
            ExtractedFact(
                content=raw.content,
                entities=[e.strip() for e in entities if isinstance(e, str) and e.strip()],
                source_turn_id=turn_id,
                supersedes=supersedes,
            )
        )
    if items and bad == len(items):
        raise ExtractionParseError("no fact in the output has a string 'content'")
    return [f for f in facts if f.content.strip()]


class LLMExtractor:
    """JSON-mode extraction through the upstream; the heuristic is the safety net for every failure.

    ``model``: the override (MEMCHAT_MEMORY_MODEL); when None, the ``model`` passed to `extract` (the
    conversation's model) is used; when both are None the heuristic answers.
    """

    name = "llm"

    def __init__(
        self,
        client: CompletionClient,
        *,
        model: str | None,
        fallback: HeuristicExtractor,
        timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.model = model
        self.fallback = fallback
        self.timeout = timeout

    def request_body(
        self, turns: Sequence[ConversationTurn], existing: Sequence[Memory], *, model: str, now: datetime
    ) -> dict[str, Any]:
        return {
            "model": model,
            "messages": build_messages(turns, existing, now),
            "response_format": {"type": "json_object"},
            "temperature": 0,
        }

    async def extract(
        self,
        turns: Sequence[ConversationTurn],
        existing: Sequence[Memory],
        *,
        model: str | None = None,
        now: datetime | None = None,
    ) -> list[ExtractedFact]:
        if not turns:
            return []
        now = now or utcnow()
        use_model = self.model or model
        if not use_model or getattr(self.client, "offline", False):
            log.info("memory extraction: no model for the LLM extractor; using the heuristic")
            return self.fallback.extract_sync(turns, existing)
        heuristic = self.fallback.extract_sync(turns, existing)

        def fall_back(reason: str) -> list[ExtractedFact]:
            log.warning(
                "memory extraction: %s (model %s, %d turns); using the heuristic extractor's %d facts",
                reason, use_model, len(turns), len(heuristic),
            )
            return heuristic

        body = self.request_body(turns, existing, model=use_model, now=now)
        try:
            with anyio.fail_after(self.timeout):
                response = await self.client.complete_json(body)
        except TimeoutError:
            return fall_back(f"the LLM call timed out after {self.timeout:g}s")
        except UpstreamError as exc:
            return fall_back(f"the LLM call failed: {exc.message}")
        except Exception as exc:  # never lose a conversation's facts to an unexpected client error
            log.debug("memory extraction: unexpected client error", exc_info=True)
            return fall_back(f"the LLM call failed unexpectedly: {type(exc).__name__}: {exc}")
        try:
            facts = parse_facts(response, turns, existing)
        except ExtractionParseError as exc:
            return fall_back(f"malformed LLM output ({exc})")
        if not facts and heuristic:
            return fall_back("the LLM returned no facts although the user stated some")
        return finalize_facts(facts, existing)
