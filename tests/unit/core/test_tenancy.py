"""`app.tenancy`: namespace and chat-id rules (length limits, control characters, hostile strings)."""

from __future__ import annotations

import re

import pytest

from app.errors import InvalidRequest
from app.tenancy import (MAX_CHAT_ID_LENGTH, MAX_NAMESPACE_LENGTH, NAMESPACE_PATTERN, has_control,
                         validate_chat_id, validate_namespace)

HOSTILE = ["' OR 1=1 --", "a'; DROP TABLE memories; --", "back\\slash", "x/../../etc", "%_*", "名前 🙂",
           "\u202eevil", "\u2028line", "a" * MAX_NAMESPACE_LENGTH, " spaced "]
CONTROLS = ["\x00", "a\nb", "\r", "\t", "\x1b[31m", "\x7f", "\x85", "\x9f"]


@pytest.mark.parametrize("value", HOSTILE)
def test_printable_hostile_namespaces_are_kept_verbatim(value: str) -> None:
    assert validate_namespace(value) == value
    assert re.fullmatch(NAMESPACE_PATTERN, value)


def test_none_and_empty_are_the_global_namespace() -> None:
    assert validate_namespace(None) == "" and validate_namespace("") == ""


def test_namespace_length_limit() -> None:
    with pytest.raises(InvalidRequest, match="longer than 256") as info:
        validate_namespace("a" * (MAX_NAMESPACE_LENGTH + 1), param="user_id")
    assert info.value.param == "user_id" and info.value.status_code == 400
    assert "user_id" in info.value.message


@pytest.mark.parametrize("value", CONTROLS)
def test_control_characters_are_refused(value: str) -> None:
    assert has_control(value)
    with pytest.raises(InvalidRequest, match="control characters") as info:
        validate_namespace(value)
    assert info.value.param == "namespace"
    with pytest.raises(InvalidRequest, match="printable"):
        validate_chat_id(value)
    assert re.fullmatch(NAMESPACE_PATTERN, value) is None   # the OpenAPI pattern says the same


@pytest.mark.parametrize("value", ["\xa0", "\u200b", "é", "~", " "])
def test_the_first_characters_after_the_controls_are_fine(value: str) -> None:
    assert not has_control(value) and validate_namespace(value) == value


def test_chat_ids() -> None:
    assert validate_chat_id(None) is None and validate_chat_id("") is None
    assert validate_chat_id("c" * MAX_CHAT_ID_LENGTH) == "c" * MAX_CHAT_ID_LENGTH
    for value in HOSTILE[:8]:
        assert validate_chat_id(value) == value
    with pytest.raises(InvalidRequest, match="1-128 printable") as info:
        validate_chat_id("c" * (MAX_CHAT_ID_LENGTH + 1), param="session_id")
    assert info.value.param == "session_id"
