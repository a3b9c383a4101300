"""Memory extraction: the deterministic heuristic, and the LLM extractor against the real fake upstream."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app.config import UpstreamSettings
from app.errors import UpstreamError
from app.llm.upstream import UpstreamClient
from app.memory.extract import MARKER, ConversationTurn, ExtractedFact, HeuristicExtractor
from app.memory.extract_llm import LLMExtractor
from app.memory.extractors import build_extractor
from app.memory.models import Memory
from app.testkit import FakeUpstream

DAY = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)  # a Tuesday
NOW = DAY + timedelta(hours=2)
CHAT = "/chat/completions"


def turn(user: str, seq: int = 1, *, assistant: str = "Sure.", at: datetime = DAY) -> ConversationTurn:
    return ConversationTurn(seq=seq, turn_id=f"turn-{seq}", user=user, assistant=assistant, created_at=at)


def memory(content: str, mid: str | None = None, *, state: str = "current") -> Memory:
    return Memory(
        id=mid or f"id-{abs(hash(content)) % 10**8}",
        org_id="org1",
        namespace="ns",
        content=content,
        created_at=DAY - timedelta(days=30),
        updated_at=DAY - timedelta(days=30),
        state=state,  # type: ignore[arg-type]
    )


async def heuristic(turns: list[ConversationTurn], existing: list[Memory] | None = None) -> list[ExtractedFact]:
    return await HeuristicExtractor().extract(turns, existing or [], model=None, now=NOW)


async def one_fact(text: str, existing: list[Memory] | None = None, *, at: datetime = DAY) -> ExtractedFact:
    facts = await heuristic([turn(text, at=at)], existing)
    assert len(facts) == 1, facts
    return facts[0]


# =========================================================================== heuristic: what is a fact


@pytest.mark.parametrize(
    "text",
    [
        "My dog's name is Bruno.",
        "I moved from Paris to Lyon.",
        "I work at Acme as a nurse.",
        "We're going to Japan in March.",
        "I prefer tea over coffee",
        "My sister Anna lives in Berlin",
        "I'm allergic to peanuts!",
        "I'm vegan.",
        "I'm 34.",
        "Call me Al.",
        "Please call me Al.",
        # the subject dropped, as chat is written
        "Took a trip to Oslo.",
        "Been learning the cello since March.",
        "Joined a birding group and already spotted a kingfisher.",
        "Finally bought a Toyota Prius!",
        # "I got it" / "I see" are acknowledgements only when nothing follows
        "I got it from my grandmother.",
        "I see a physiotherapist every week.",
    ],
)
async def test_heuristic_keeps_first_person_facts_verbatim(text: str) -> None:
    fact = await one_fact(text)
    assert fact.content == text.rstrip(".!") + "."
    assert fact.source_turn_id == "turn-1"
    assert fact.supersedes == []


@pytest.mark.parametrize(
    "text",
    [
        "What's your name?",
        "where do I live",
        "Do you remember my dog",
        "How old is the Eiffel Tower",
        "hi",
        "Hello there!",
        "thanks!",
        "ok",
        "lol",
        "how are you",
        "I'm fine, thanks",
        "write me a poem about my cat",
        "Tell me a joke.",
        "Can you summarize this article for me",
        "could you help me plan my trip to Japan",
        "I'd like you to write an email to my boss.",
        "Let's play a game.",
        "Please translate my essay into French.",
        "I have a question.",
        "I think so.",
        "Your answer was really helpful.",
        "If I were a cat I would sleep all day.",
        "The weather is nice.",
        "Yes.",
        "I hope you can help me with this.",
        "That's not what I asked.",
        "Sorry, I meant Portugal.",
        "Here's my code, it fails with an error.",
        "I'm not sure about that.",
        "Summarize this: I live in Paris.",
        "I got it.",
        "I see, thanks.",
        "I understand now!",
        "Based on that, it works.",
        "Called it.",
        "Nope, all good for now.",
    ],
)
async def test_heuristic_drops_questions_chitchat_and_requests(text: str) -> None:
    assert await heuristic([turn(text)]) == []


async def test_heuristic_keeps_a_messages_facts_together_but_attributes_apart() -> None:
    facts = await heuristic([turn("I took up pottery. It relaxes me a lot. I live in Lyon. We have a kiln at the studio.")])
    assert [f.content for f in facts] == ["I took up pottery. It relaxes me a lot.", "I live in Lyon.",
                                          "We have a kiln at the studio."]
    two = await heuristic([turn("I took up pottery.", 1), turn("It relaxes me a lot.", 2)])
    assert [f.source_turn_id for f in two] == ["turn-1", "turn-2"]  # never across messages


async def test_heuristic_mixed_message_keeps_only_the_facts() -> None:
    text = (
        "Hi! My dog's name is Bruno. Can you suggest a toy for him? Thanks!\n"
        "Oh, by the way, i live in Lyon with my wife!! lol\n"
        "```python\nmy_name = 'I live in Rome'\n```"
    )
    facts = await heuristic([turn(text, assistant="I live in the cloud. Your dog is cute.")])
    assert [f.content for f in facts] == ["My dog's name is Bruno.", "I live in Lyon with my wife."]


async def test_heuristic_ignores_pasted_material_after_a_request() -> None:
    text = "I'm a lawyer.\nProofread the following: My name is Anne. I live in Oslo. I love skiing."
    facts = await heuristic([turn(text)])
    assert [f.content for f in facts] == ["I'm a lawyer."]


async def test_heuristic_ignores_assistant_text() -> None:
    facts = await heuristic([turn("ok", assistant="My name is Claude and I live in a data center.")])
    assert facts == []


async def test_heuristic_is_deterministic_and_dedupes() -> None:
    turns = [turn("I live in Lyon. I love hiking.", 1), turn("i live in lyon!", 2), turn("I love hiking", 3)]
    first = await heuristic(turns)
    assert first == await heuristic(turns)
    assert [f.content for f in first] == ["I live in Lyon.", "I love hiking."]
    assert [f.source_turn_id for f in first] == ["turn-1", "turn-1"]


async def test_heuristic_drops_facts_already_stored() -> None:
    existing = [memory("My dog's name is Bruno.")]
    facts = await heuristic([turn("my dog's name is Bruno! I'm a teacher.")], existing)
    assert [f.content for f in facts] == ["I'm a teacher."]


# =========================================================================== heuristic: dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I went to the beach yesterday.", "I went to the beach yesterday (on 2026-11-23)."),
        ("I have a dentist appointment tomorrow.", "I have a dentist appointment tomorrow (on 2026-11-25)."),
        ("I started my new diet today.", "I started my new diet today (on 2026-11-24)."),
        ("My son was born the day before yesterday.", "My son was born the day before yesterday (on 2026-11-22)."),
        ("I ran a marathon last Sunday.", "I ran a marathon last Sunday (on 2026-11-22)."),
        ("I ran a marathon last Tuesday.", "I ran a marathon last Tuesday (on 2026-11-17)."),
        ("We fly to Rome next Monday.", "We fly to Rome next Monday (on 2026-11-30)."),
        ("I got a promotion last week.", "I got a promotion last week (week of 2026-11-16)."),
        ("I moved to Lyon last month.", "I moved to Lyon last month (in 2026-10)."),
        ("We got married last year.", "We got married last year (in 2025)."),
        ("I adopted my cat three days ago.", "I adopted my cat three days ago (on 2026-11-21)."),
    ],
)
async def test_heuristic_resolves_relative_dates_against_the_turn(text: str, expected: str) -> None:
    fact = await one_fact(text)
    assert fact.content == expected
    iso = expected.rsplit(" ", 1)[-1].rstrip(").")
    assert iso in fact.entities


async def test_heuristic_dates_use_each_turns_utc_date_not_now() -> None:
    late_evening_new_york = datetime(2026, 11, 24, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 04:30Z on the 25th
    turns = [
        turn("I went to the beach yesterday.", 1, at=datetime(2026, 1, 10, 9, tzinfo=UTC)),
        turn("I baked a cake yesterday.", 2, at=late_evening_new_york),
    ]
    facts = await HeuristicExtractor().extract(turns, [], model=None, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert [f.content for f in facts] == [
        "I went to the beach yesterday (on 2026-01-09).",
        "I baked a cake yesterday (on 2026-11-24).",
    ]


# =========================================================================== heuristic: entities


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("My sister Anna lives in New York and works at Acme Corp.", ["Anna", "New York", "Acme Corp"]),
        ("Bruno is my dog.", ["Bruno"]),
        ('My cat is called "Mr Whiskers".', ["Mr Whiskers"]),
        ("Yesterday I had lunch with Tom in Paris.", ["Tom", "Paris", "2026-11-23"]),
        ("I studied at the University of Lyon.", ["University of Lyon"]),
        ("My birthday is on 1990-05-03.", ["1990-05-03"]),
        ("We are going to Japan in March on Monday.", ["Japan"]),
        ("I'm meeting Dr. Smith's assistant.", ["Dr. Smith"]),
    ],
)
async def test_heuristic_entities(text: str, expected: list[str]) -> None:
    assert (await one_fact(text)).entities == expected


# =========================================================================== heuristic: supersession


@pytest.mark.parametrize(
    ("new", "old"),
    [
        ("I moved from Paris to Lyon.", "I live in Paris."),
        ("My dog is called Rex.", "My dog's name is Bruno."),
        ("I have a dog named Rex.", "My dog's name is Bruno."),
        ("My dog is called Rex.", "The user's dog is named Bruno."),
        ("I live in Lyon now.", "The user lives in Paris."),
        ("I'm based in Berlin.", "I moved to Lyon in 2026-10."),
        ("My sister moved to Munich.", "My sister Anna lives in Berlin."),
        ("My wife's name is Sara.", "My husband is named Tom."),
        ("I work at Globex.", "I work at Acme as a nurse."),
        ("I'm a teacher.", "The user works as a nurse."),
        ("My favorite color is green.", "My favourite colour is blue."),
        ("I just turned 35.", "I'm 34 years old."),
        ("I got married last month.", "I'm engaged to Tom."),
        ("We broke up.", "The user is in a relationship."),
        ("I prefer coffee over tea.", "I prefer tea to coffee."),
        ("I don't like sushi anymore.", "I love sushi."),
        ("My name is Alexandra.", "The user's name is Alex."),
    ],
)
async def test_heuristic_supersedes_same_attribute_with_new_value(new: str, old: str) -> None:
    unrelated = memory("I love hiking in the Alps.", "m-unrelated")
    target = memory(old, "m-target")
    fact = await one_fact(new, [unrelated, target])
    assert fact.supersedes == ["m-target"]


@pytest.mark.parametrize(
    ("new", "old"),
    [
        ("I live in Paris.", "My sister lives in Berlin."),
        ("I live in Paris, France.", "The user lives in Paris."),
        ("My cat is called Luna.", "My dog's name is Bruno."),
        ("I have a second dog named Max.", "My dog's name is Bruno."),
        ("My older son's name is Jack.", "My younger son's name is Tom."),
        ("I love hiking.", "I love sushi."),
        ("I went to the beach yesterday.", "I live in Paris."),
        ("I'm 5 minutes away from home.", "I'm 34 years old."),
        ("I used to live in Rome.", "I live in Paris."),
        ("I work at the moment on a thesis.", "I work at Acme."),
        ("I'm engaged in a big project at work.", "I'm married."),
        ("My favorite movie is Alien.", "My favorite book is Dune."),
    ],
)
async def test_heuristic_does_not_supersede_other_attributes(new: str, old: str) -> None:
    fact = await one_fact(new, [memory(old, "m-old")])
    assert fact.supersedes == []


async def test_heuristic_skips_memories_that_are_already_superseded() -> None:
    existing = [memory("I live in Paris.", "m-old", state="superseded"), memory("I live in Rome.", "m-cur")]
    fact = await one_fact("I moved to Lyon.", existing)
    assert fact.supersedes == ["m-cur"]


async def test_heuristic_later_statement_in_the_same_conversation_wins() -> None:
    turns = [turn("I live in Paris and I love jazz.", 1), turn("Actually I just moved to Lyon.", 2),
             turn("My dog's name is Rex.", 3)]
    facts = await heuristic(turns, [memory("I live in Berlin.", "m-berlin")])
    assert [(f.content, f.supersedes) for f in facts] == [
        ("I live in Paris and I love jazz.", []),  # kept: it also states "likes jazz", which nothing contradicts
        ("I just moved to Lyon.", ["m-berlin"]),
        ("My dog's name is Rex.", []),
    ]
    facts = await heuristic([turn("I live in Paris.", 1), turn("I moved to Lyon.", 2)])
    assert [f.content for f in facts] == ["I moved to Lyon."]


# =========================================================================== build_extractor


def test_build_extractor_choices() -> None:
    client = object()
    assert isinstance(build_extractor("heuristic", client=client, offline=False), HeuristicExtractor)
    assert isinstance(build_extractor("llm", client=client, offline=True), HeuristicExtractor)
    assert isinstance(build_extractor("llm", client=None, offline=False), HeuristicExtractor)
    llm = build_extractor("llm", client=client, model="mem-model", offline=False)
    assert isinstance(llm, LLMExtractor)
    assert (llm.name, llm.model, llm.client) == ("llm", "mem-model", client)
    assert isinstance(llm.fallback, HeuristicExtractor)
    with pytest.raises(ValueError):
        build_extractor("magic", offline=False)


# =========================================================================== LLM extractor (fake upstream)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    # Own process: rules added here never leak into other modules' use of the session fake.
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(upstream: FakeUpstream) -> FakeUpstream:
    upstream.reset()
    return upstream


@pytest.fixture
async def client(upstream: FakeUpstream) -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(UpstreamSettings(base_url=upstream.base_url, api_key="x"))
    try:
        yield c
    finally:
        await c.aclose()


EXISTING = [
    memory("The user lives in Paris.", "0b8c-paris"),
    memory("The user's dog is named Bruno.", "77aa-bruno"),
    memory("The user likes jazz.", "5e5e-jazz"),
]
TURNS = [
    turn("Hi! I moved to Lyon last month. What's good to eat there?", 7, assistant="Try a bouchon!"),
    turn("Also my dog is called Rex now. I went to the beach yesterday.", 8, assistant="Nice."),
]


def extractor(client: Any, *, model: str | None = None, timeout: float = 5.0) -> LLMExtractor:
    return LLMExtractor(client, model=model, fallback=HeuristicExtractor(), timeout=timeout)


def chat_requests(fake: FakeUpstream) -> list[dict[str, Any]]:
    return fake.requests(CHAT)


async def expected_heuristic() -> list[ExtractedFact]:
    facts = await heuristic(TURNS, EXISTING)
    assert len(facts) == 3  # the fallback has something to lose
    return facts


async def test_llm_valid_reply_maps_turns_and_short_ids(fake: FakeUpstream, client: UpstreamClient) -> None:
    reply = {
        "facts": [
            {"content": "The user moved to Lyon in 2026-10.", "entities": ["Lyon", "2026-10"], "turn": 7,
             "supersedes": ["m1"]},
            {"content": "The user's dog is named Rex.", "entities": ["Rex"], "turn": 8, "supersedes": ["m2", "m9"]},
            {"content": "The user went to the beach on 2026-11-23.", "entities": [], "turn": 8, "supersedes": []},
        ]
    }
    fake.add_rule(match=MARKER, reply=json.dumps(reply), times=1)
    facts = await extractor(client).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert facts == [
        ExtractedFact("The user moved to Lyon in 2026-10.", ["Lyon", "2026-10"], "turn-7", ["0b8c-paris"]),
        ExtractedFact("The user's dog is named Rex.", ["Rex"], "turn-8", ["77aa-bruno"]),
        ExtractedFact("The user went to the beach on 2026-11-23.", ["2026-11-23"], "turn-8", []),
    ]
    [request] = chat_requests(fake)
    body = request["body"]
    assert body["model"] == "gpt-conv"
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system" and MARKER in system["content"]
    assert "supersedes" in system["content"] and "yesterday" in system["content"]
    for text in ("I moved to Lyon last month.", "my dog is called Rex now", "Try a bouchon!",
                 "m1 (recorded 2026-10-25): The user lives in Paris.", "m2 (", "m3 (",
                 "--- turn 7 (2026-11-24) ---", "Current date: 2026-11-24"):
        assert text in user["content"]


async def test_llm_memory_model_override_and_no_model(fake: FakeUpstream, client: UpstreamClient) -> None:
    fake.add_rule(match=MARKER, reply='{"facts": [{"content": "The user lives in Lyon.", "turn": 7}]}')
    facts = await extractor(client, model="memory-model").extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert [f.content for f in facts] == ["The user lives in Lyon."]
    assert [r["body"]["model"] for r in chat_requests(fake)] == ["memory-model"]
    # No model at all -> heuristic, and no upstream call.
    facts = await extractor(client).extract(TURNS, EXISTING, model=None, now=NOW)
    assert facts == await expected_heuristic()
    assert len(chat_requests(fake)) == 1


@pytest.mark.parametrize(
    "reply",
    [
        "not json",
        '{"facts": [{"content": "The user moved to Ly',
        '{"facts": "oops"}',
        '{"result": "ok"}',
        '[{"nope": 1}, {"content": 5}]',
        "```json\n{\"facts\": [\n```",
    ],
)
async def test_llm_malformed_output_falls_back_to_heuristic(
    fake: FakeUpstream, client: UpstreamClient, reply: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_rule(match=MARKER, reply=reply, times=1)
    with caplog.at_level(logging.WARNING, logger="app.memory.extract"):
        facts = await extractor(client).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert facts == await expected_heuristic()
    assert len(chat_requests(fake)) == 1
    assert any("malformed" in r.getMessage() and "heuristic" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 429}, {"drop_after": 1}])
async def test_llm_upstream_failure_falls_back_to_heuristic(
    fake: FakeUpstream, client: UpstreamClient, fault: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_rule(match=MARKER, fault=fault, times=1)
    with caplog.at_level(logging.WARNING, logger="app.memory.extract"):
        facts = await extractor(client).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert facts == await expected_heuristic()
    assert len(chat_requests(fake)) == 1
    assert any("failed" in r.getMessage() for r in caplog.records)


async def test_llm_timeout_falls_back_to_heuristic(
    fake: FakeUpstream, client: UpstreamClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_rule(match=MARKER, fault={"stall": 3}, reply='{"facts": []}', times=1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="app.memory.extract"):
        facts = await extractor(client, timeout=0.3).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert time.monotonic() - started < 2.0
    assert facts == await expected_heuristic()
    assert any("timed out" in r.getMessage() for r in caplog.records)


async def test_llm_fenced_json_is_accepted(fake: FakeUpstream, client: UpstreamClient) -> None:
    reply = 'Here you go:\n```json\n{"facts": [{"content": "The user lives in Lyon.", "entities": ["Lyon"], ' \
            '"turn": 7, "supersedes": ["m1"]}]}\n```\nAnything else?'
    fake.add_rule(match=MARKER, reply=reply, times=1)
    facts = await extractor(client).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert facts == [ExtractedFact("The user lives in Lyon.", ["Lyon"], "turn-7", ["0b8c-paris"])]


async def test_llm_tolerates_lists_extra_keys_and_loose_types(fake: FakeUpstream, client: UpstreamClient) -> None:
    reply = [
        {"content": "  The user lives in   Lyon. ", "entities": "Lyon", "turn": "7", "supersedes": [1, "M1", "bogus"],
         "confidence": 0.9},
        {"content": "The user lives in Lyon.", "entities": ["France"], "turn": 7},  # duplicate: merged
        {"content": "   "},  # blank: dropped
        {"content": "The user's dog is named Bruno.", "turn": 8},  # already stored verbatim: dropped
        {"content": ["not", "a", "string"]},  # invalid item: skipped
        "The user has a dog named Rex.",  # bare string item
        {"content": "The user went to the beach.", "turn": 99, "supersedes": ["0b8c-paris"]},  # unknown turn
    ]
    fake.add_rule(match=MARKER, reply=json.dumps(reply), times=1)
    facts = await extractor(client).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert facts == [
        ExtractedFact("The user lives in Lyon.", ["Lyon", "France"], "turn-7", ["0b8c-paris"]),
        ExtractedFact("The user has a dog named Rex.", [], None, []),
        ExtractedFact("The user went to the beach.", [], None, ["0b8c-paris"]),
    ]


async def test_llm_zero_facts_falls_back_when_the_user_stated_facts(
    fake: FakeUpstream, client: UpstreamClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_rule(match=MARKER, reply='{"facts": []}', times=1)
    with caplog.at_level(logging.WARNING, logger="app.memory.extract"):
        facts = await extractor(client).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert facts == await expected_heuristic()
    assert any("no facts" in r.getMessage() for r in caplog.records)


async def test_llm_zero_facts_for_chitchat_is_accepted(fake: FakeUpstream, client: UpstreamClient) -> None:
    fake.add_rule(match=MARKER, reply='{"facts": []}', times=1)
    turns = [turn("hi! how are you?", 1), turn("thanks, tell me a joke", 2)]
    assert await extractor(client).extract(turns, EXISTING, model="gpt-conv", now=NOW) == []
    assert len(chat_requests(fake)) == 1


async def test_llm_single_turn_is_the_default_source(fake: FakeUpstream, client: UpstreamClient) -> None:
    fake.add_rule(match=MARKER, reply='{"facts": [{"content": "The user is a nurse."}]}', times=1)
    facts = await extractor(client).extract([turn("I'm a nurse.", 3)], [], model="gpt-conv", now=NOW)
    assert facts == [ExtractedFact("The user is a nurse.", [], "turn-3", [])]


async def test_llm_no_turns_makes_no_call(fake: FakeUpstream, client: UpstreamClient) -> None:
    assert await extractor(client).extract([], EXISTING, model="gpt-conv", now=NOW) == []
    assert chat_requests(fake) == []


class _BrokenClient:
    offline = False

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    async def complete_json(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        raise self.exc


class _OddClient:
    offline = False

    def __init__(self, response: Any) -> None:
        self.response = response

    async def complete_json(self, body: dict[str, Any]) -> Any:
        return self.response


@pytest.mark.parametrize("exc", [UpstreamError("boom"), RuntimeError("bug in a client"), OSError("reset")])
async def test_llm_never_raises_for_client_errors(exc: BaseException) -> None:
    broken = _BrokenClient(exc)
    facts = await extractor(broken).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert broken.calls == 1
    assert facts == await expected_heuristic()


@pytest.mark.parametrize(
    "response",
    [{}, {"choices": []}, {"choices": [{"message": {"content": None}}]}, {"choices": [{"message": {}}]}, []],
)
async def test_llm_odd_completion_shapes_fall_back(response: Any) -> None:
    facts = await extractor(_OddClient(response)).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert facts == await expected_heuristic()


async def test_llm_offline_client_uses_heuristic() -> None:
    broken = _BrokenClient(RuntimeError("must not be called"))
    broken.offline = True
    facts = await extractor(broken).extract(TURNS, EXISTING, model="gpt-conv", now=NOW)
    assert broken.calls == 0
    assert facts == await expected_heuristic()


class _CapturingClient:
    offline = False

    def __init__(self, content: str) -> None:
        self.content = content
        self.bodies: list[dict[str, Any]] = []

    async def complete_json(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": self.content}}]}


async def test_llm_numbers_only_current_memories() -> None:
    existing = [memory("The user lived in Rome.", "old-rome", state="superseded"), *EXISTING]
    capturing = _CapturingClient('{"facts": [{"content": "The user lives in Lyon.", "turn": 7, "supersedes": ["m1"]}]}')
    facts = await extractor(capturing).extract(TURNS, existing, model="gpt-conv", now=NOW)
    assert facts == [ExtractedFact("The user lives in Lyon.", [], "turn-7", ["0b8c-paris"])]
    prompt = capturing.bodies[0]["messages"][1]["content"]
    assert "Rome" not in prompt and "m1 (recorded 2026-10-25): The user lives in Paris." in prompt
