"""`app.turns.conversations`: which conversation a request continues, and the turns it records (real LanceDB)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.storage.connection import connect
from app.turns.conversations import (MEMORY_SECTION_MARK, ChatSlot, Conversations, TurnOutcome, dialog_of,
                                     split_request, transcript_hash)
from app.turns.turnlog import TurnLog, TurnRecord


def u(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def a(text: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


@pytest.fixture
async def turnlog(tmp_path: Path) -> AsyncIterator[TurnLog]:
    yield await TurnLog.open(await connect(str(tmp_path)))


@pytest.fixture
def conv(turnlog: TurnLog) -> Conversations:
    return Conversations(turnlog, default_commit_after=60)


async def say(conv: Conversations, messages: list[dict[str, Any]], reply: str, *, chat_id: str | None = None,
              org: str = "org1", ns: str = "ns", completed: bool = True,
              commit_after: int | None = None) -> tuple[ChatSlot, TurnRecord | None]:
    slot = await conv.resolve_chat(org, ns, chat_id, messages)
    record = await conv.record(org, ns, slot, messages,
                               TurnOutcome(reply=reply, completed=completed, model="m", commit_after=commit_after))
    return slot, record


# -- pure helpers -----------------------------------------------------------------------------------------

def test_dialog_keeps_user_and_assistant_text_only_normalised() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "developer", "content": "x"},
                u("  Hello\n\tthere  "), {"role": "tool", "content": "42"}, a(None),
                {"role": "system", "content": f"{MEMORY_SECTION_MARK} facts"}, u(f"quoted {MEMORY_SECTION_MARK}"),
                a([{"type": "text", "text": "Hi"}, {"type": "text", "text": " you "}]), u("   ")]
    assert dialog_of(messages) == [("user", "Hello there"), ("assistant", "Hi you")]


def test_split_request_and_transcript_hash() -> None:
    assert split_request([u("a"), a("b"), u("c")]) == ([("user", "a"), ("assistant", "b")], "c")
    assert split_request([u("a"), a("b")]) == ([("user", "a"), ("assistant", "b")], "")
    assert split_request([]) == ([], "")
    h = transcript_hash([("user", "a"), ("assistant", "b")])
    assert len(h) == 32 and h == transcript_hash([("user", "a"), ("assistant", "b")])
    assert h != transcript_hash([("assistant", "a"), ("user", "b")])
    assert transcript_hash([("user", "ab")]) != transcript_hash([("user", "a"), ("user", "b")])


# -- no chat_id: continuing by the earlier messages --------------------------------------------------------

async def test_a_conversation_is_continued_by_its_earlier_messages(conv: Conversations) -> None:
    first, r1 = await say(conv, [u("I live in Lyon.")], "Nice city.")
    assert first.is_new and first.seq == 1 and r1 is not None
    second, r2 = await say(conv, [u("I live in Lyon."), a("Nice city."), u("And I cook.")], "Great.")
    assert (second.chat_id, second.seq, second.is_new) == (first.chat_id, 2, False)
    third, _ = await say(conv, [u("I live in Lyon."), a("Nice city."), u("And I cook."), a("Great."), u("Bye")], "o/")
    assert (third.chat_id, third.seq) == (first.chat_id, 3)
    history = await conv.history("org1", "ns", first.chat_id)
    assert [(t.seq, t.user, t.assistant) for t in history] == [
        (1, "I live in Lyon.", "Nice city."), (2, "And I cook.", "Great."), (3, "Bye", "o/")]
    assert r2 is not None and r2.prefix_hash == r1.transcript_hash


async def test_unknown_earlier_messages_start_a_new_conversation(conv: Conversations) -> None:
    first, _ = await say(conv, [u("hello")], "hi")
    other, _ = await say(conv, [u("hello"), a("a different reply"), u("next")], "ok")
    assert other.is_new and other.chat_id != first.chat_id and other.seq == 1


async def test_editing_or_regenerating_the_last_turn_replaces_it(conv: Conversations) -> None:
    base = [u("My dog is Rex."), a("Cute!")]
    slot, _ = await say(conv, [u("My dog is Rex.")], "Aww.")
    chat = slot.chat_id
    two, _ = await say(conv, [u("My dog is Rex.")], "Cute!")    # regenerate of the first turn
    assert (two.chat_id, two.seq, two.is_new) == (chat, 1, False)
    asked, _ = await say(conv, [*base, u("He is 3.")], "Noted.")
    edited, _ = await say(conv, [*base, u("He is 4.")], "Noted again.")
    regen, _ = await say(conv, [*base, u("He is 4.")], "Third answer.")
    assert {asked.chat_id, edited.chat_id, regen.chat_id} == {chat}
    assert asked.seq == edited.seq == regen.seq == 2
    history = await conv.history("org1", "ns", chat)
    assert [(t.seq, t.user, t.assistant) for t in history] == [(1, "My dog is Rex.", "Cute!"),
                                                               (2, "He is 4.", "Third answer.")]
    nxt, _ = await say(conv, [*base, u("He is 4."), a("Third answer."), u("Thanks")], "np")
    assert (nxt.chat_id, nxt.seq) == (chat, 3)


async def test_a_lone_first_message_repeated_is_a_regenerate_until_the_chat_grows(conv: Conversations) -> None:
    first, _ = await say(conv, [u("What's up?")], "Not much.")
    again, _ = await say(conv, [u("  what's up?")], "x")   # not the same text: case differs
    assert again.chat_id != first.chat_id
    same, _ = await say(conv, [u("What's   up?\n")], "Still not much.")
    assert (same.chat_id, same.seq, same.is_new) == (first.chat_id, 1, False)
    await say(conv, [u("What's up?"), a("Still not much."), u("Tell me more")], "...")
    later, _ = await say(conv, [u("What's up?")], "new")
    assert later.is_new and later.chat_id not in (first.chat_id, again.chat_id)


async def test_another_process_finds_the_conversation_in_the_turn_log(turnlog: TurnLog) -> None:
    slot, _ = await say(Conversations(turnlog, default_commit_after=60), [u("hi there")], "hello")
    fresh = Conversations(turnlog, default_commit_after=60)   # empty caches
    cont = await fresh.resolve_chat("org1", "ns", None, [u("hi there"), a("hello"), u("more")])
    assert (cont.chat_id, cont.seq, cont.is_new) == (slot.chat_id, 2, False)


async def test_system_and_memory_messages_do_not_take_part(conv: Conversations) -> None:
    slot, _ = await say(conv, [{"role": "system", "content": "You are terse."}, u("Plan my trip.")], "Where to?")
    messages = [{"role": "system", "content": "Different system prompt"},
                {"role": "system", "content": f"{MEMORY_SECTION_MARK}\n- lives in Lyon"},
                {"role": "developer", "content": "dev note"}, u("Plan my trip."),
                {"role": "tool", "tool_call_id": "t", "content": "{}"}, a("Where to?"), u("Rome.")]
    cont, _ = await say(conv, messages, "Ok.")
    assert (cont.chat_id, cont.seq) == (slot.chat_id, 2)


async def test_whitespace_is_normalised_and_text_parts_count(conv: Conversations) -> None:
    slot, _ = await say(conv, [u("I  like\ntea.")], "  Tea\tis  good. ")
    messages = [u([{"type": "text", "text": "I like"}, {"type": "text", "text": " tea. "}]),
                a("Tea is good."), u("And coffee.")]
    cont, _ = await say(conv, messages, "Also good.")
    assert (cont.chat_id, cont.seq) == (slot.chat_id, 2)


@pytest.mark.parametrize(("org", "ns"), [("org2", "ns"), ("org1", "other"), ("org1", "")])
async def test_conversations_are_scoped_by_org_and_namespace(conv: Conversations, org: str, ns: str) -> None:
    slot, _ = await say(conv, [u("secret plan")], "ok")
    lone = await conv.resolve_chat(org, ns, None, [u("secret plan")])
    cont = await conv.resolve_chat(org, ns, None, [u("secret plan"), a("ok"), u("go on")])
    by_id = await conv.resolve_chat(org, ns, slot.chat_id, [u("go on")])
    assert lone.is_new and cont.is_new and lone.chat_id != slot.chat_id and cont.chat_id != slot.chat_id
    assert by_id.is_new and by_id.seq == 1          # that chat id has no turns in this tenant
    assert await conv.history(org, ns, slot.chat_id) == []


# -- chat_id given ----------------------------------------------------------------------------------------

async def test_a_given_chat_id_is_used_and_appended_to(conv: Conversations) -> None:
    s1, _ = await say(conv, [u("one")], "1", chat_id="chat-A")
    assert (s1.chat_id, s1.seq, s1.is_new) == ("chat-A", 1, True)
    s2, _ = await say(conv, [u("two")], "2", chat_id="chat-A")         # only the new message: appended
    assert (s2.chat_id, s2.seq, s2.is_new) == ("chat-A", 2, False)
    s3, _ = await say(conv, [u("unrelated"), a("history"), u("three")], "3", chat_id="chat-A")
    assert s3.seq == 3                                                # unknown history: appended at the end
    assert [t.user for t in await conv.history("org1", "ns", "chat-A")] == ["one", "two", "three"]


async def test_a_given_chat_id_with_earlier_messages_replaces_the_turn_after_them(conv: Conversations) -> None:
    await say(conv, [u("one")], "1", chat_id="c")
    await say(conv, [u("one"), a("1"), u("two")], "2", chat_id="c")
    await say(conv, [u("one"), a("1"), u("two"), a("2"), u("three")], "3", chat_id="c")
    redo, _ = await say(conv, [u("one"), a("1"), u("TWO, edited")], "2b", chat_id="c")
    assert (redo.seq, redo.is_new) == (2, False)
    assert [(t.seq, t.user) for t in await conv.history("org1", "ns", "c")] == [
        (1, "one"), (2, "TWO, edited"), (3, "three")]


# -- recording --------------------------------------------------------------------------------------------

async def test_what_a_recorded_turn_holds(turnlog: TurnLog) -> None:
    seen: list[TurnRecord] = []
    conv = Conversations(turnlog, default_commit_after=45, on_recorded=seen.append)
    _, done = await say(conv, [u([{"type": "text", "text": "Hi"}])], "Hello", commit_after=5)
    _, partial = await say(conv, [u("Hi"), a("Hello"), u("long story")], "Once upon", completed=False)
    _, failed = await say(conv, [u("x")], "", completed=False)
    assert done is not None and partial is not None and failed is not None
    assert (done.status, done.commit_after, done.user, done.model, done.surface) == ("complete", 5, "Hi", "m", "openai")
    assert (partial.status, partial.commit_after, partial.seq) == ("partial", 45, 2)
    assert failed.status == "error" and failed.assistant == ""
    assert seen == [done, partial, failed]
    assert done.created_at.tzinfo is not None and len({done.turn_id, partial.turn_id, failed.turn_id}) == 3


async def test_nothing_is_recorded_without_a_message_or_a_reply(conv: Conversations) -> None:
    slot = await conv.resolve_chat("org1", "ns", None, [{"role": "system", "content": "s"}])
    assert await conv.record("org1", "ns", slot, [{"role": "system", "content": "s"}],
                             TurnOutcome(reply="", completed=False)) is None
    assert await conv.history("org1", "ns", slot.chat_id) == []


async def test_a_partial_reply_is_part_of_the_transcript(conv: Conversations) -> None:
    slot, _ = await say(conv, [u("Tell a story")], "Once upon a", completed=False)
    cont, _ = await say(conv, [u("Tell a story"), a("Once upon a"), u("continue")], "time.")
    assert (cont.chat_id, cont.seq) == (slot.chat_id, 2)
    blank, _ = await say(conv, [u("ping")], "   ", completed=False)    # a blank reply is left out
    cont2 = await conv.resolve_chat("org1", "ns", None, [u("ping"), u("again")])
    assert (cont2.chat_id, cont2.seq) == (blank.chat_id, 2)


async def test_a_forgotten_conversation_is_not_continued(conv: Conversations, turnlog: TurnLog) -> None:
    slot, _ = await say(conv, [u("I live in Lyon.")], "Nice.")
    assert await conv.delete_tenant("org1", "ns") == 1
    assert await conv.history("org1", "ns", slot.chat_id) == []
    cont = await conv.resolve_chat("org1", "ns", None, [u("I live in Lyon."), a("Nice."), u("And you?")])
    lone = await conv.resolve_chat("org1", "ns", None, [u("I live in Lyon.")])
    assert cont.chat_id != slot.chat_id and lone.chat_id != slot.chat_id


async def test_a_response_id_names_its_turn_and_the_next_one_follows_it(conv: Conversations) -> None:
    """The Responses API: the turn id is the response id; ``previous_response_id`` continues after it."""
    slot = await conv.resolve_chat("org1", "ns", None, [u("I like tea")])
    first = await conv.record("org1", "ns", slot, [u("I like tea")],
                              TurnOutcome(reply="ok", completed=True, turn_id="resp_1"))
    assert first is not None and first.turn_id == "resp_1"
    follow = await conv.resolve_followup("org1", "ns", "resp_1")
    assert follow is not None and (follow.chat_id, follow.seq, follow.is_new) == (slot.chat_id, 2, False)
    assert await conv.resolve_followup("org2", "ns", "resp_1") is None
    assert await conv.resolve_followup("org1", "other", "resp_1") is None
    assert await conv.resolve_followup("org1", "ns", "resp_unknown") is None
    # the chained turn records the whole conversation: a client resending it as messages continues it
    second = await conv.record("org1", "ns", follow, [u("and coffee")],
                               TurnOutcome(reply="noted", completed=True, turn_id="resp_2"))
    assert second is not None and second.seq == 2 and second.prefix_hash == first.transcript_hash
    resent = await conv.resolve_chat("org1", "ns", None, [u("I like tea"), a("ok"), u("and coffee"), a("noted"),
                                                          u("what else?")])
    assert (resent.chat_id, resent.seq) == (slot.chat_id, 3)
    assert (await conv.resolve_followup("org1", "ns", "resp_2")).seq == 3  # type: ignore[union-attr]
