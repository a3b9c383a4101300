"""`app.messages`: where an OpenAI-style message's text lives (strings, text parts) and the last user text."""

from __future__ import annotations

import pytest

from app.messages import completion_text, last_user_text, message_text


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
