"""`app.messages`: where an OpenAI-style message's text lives (strings, text parts) and the last user text."""

from __future__ import annotations

import pytest

from app.messages import (completion_text, last_user_text, message_text, response_output_text,
                          responses_input_messages)


@pytest.mark.parametrize(("message", "text"), [
    ({"role": "user", "content": "hello"}, "hello"),
    ({"role": "user", "content": ""}, ""),
    ({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}},
                                  {"type": "text", "text": "b"}]}, "a b"),
    ({"role": "user", "content": [{"type": "text"}]}, ""),
    ({"role": "user", "content": [{"type": "text", "text": 5}, "loose string", None]}, "5"),
    ({"role": "user", "content": None}, ""),
    ({"role": "user", "content": 42}, ""),
    ({"role": "user"}, ""),
    ({"role": "assistant", "content": {"text": "x"}}, ""),
])
def test_message_text(message: dict, text: str) -> None:
    assert message_text(message) == text


def test_last_user_text() -> None:
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]},
                {"role": "assistant", "content": "again"}, "not a dict", None]
    assert last_user_text(messages) == "second"
    assert last_user_text([{"role": "assistant", "content": "x"}]) == ""
    assert last_user_text([]) == ""


@pytest.mark.parametrize(("response", "text"), [
    ({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}, "hi"),
    ({"choices": [{"message": {"role": "assistant", "content": ""}}]}, ""),
    ({"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": []}}]}, None),
    ({"choices": []}, None),
    ({"choices": ["x"]}, None),
    ({"choices": [{"delta": {"content": "x"}}]}, None),
    ({}, None),
    ([], None),
    ("text", None),
])
def test_completion_text(response, text: str | None) -> None:
    assert completion_text(response) == text


def test_input_string_and_items() -> None:
    assert responses_input_messages("hi") == [{"role": "user", "content": "hi"}]
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                         {"type": "input_image", "image_url": "u"},
                                                         {"type": "input_text", "text": "b"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "{}"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"role": "user", "content": None},
        "junk",
    ]
    assert responses_input_messages(items) == [
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "a b"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": ""}]
    assert responses_input_messages(None) == [] and responses_input_messages(5) == []


def test_output_text() -> None:
    response = {"output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "content": [{"type": "output_text", "text": "Hel"}, {"type": "refusal", "refusal": "x"},
                                         {"type": "output_text", "text": "lo"}]}]}
    assert response_output_text(response) == "Hello"
    assert response_output_text({"output": []}) is None and response_output_text([]) is None
