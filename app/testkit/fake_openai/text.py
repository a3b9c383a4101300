"""How the fake turns text into tokens: one regex for replies, usage counts and tool-call argument
fragments, so that ``"".join(tokens) == reply`` and tests can predict every streamed chunk."""

from __future__ import annotations

import re
from typing import Any

TOKEN_RE = re.compile(r"\S+\s*|\s+")
WORD_RE = re.compile(r"\w+")


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "".join(parts)
    return ""


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def split_fragments(s: str) -> list[str]:
    """Split a tool-call arguments string into >= 2 fragments when possible."""
    frags = tokenize(s)
    if len(frags) < 2 and len(s) >= 2:
        mid = len(s) // 2
        frags = [s[:mid], s[mid:]]
    if not frags:
        frags = [s]
    return frags


def cycle_tokens(base: list[str], n: int) -> list[str]:
    """``base`` repeated/trimmed to exactly ``n`` tokens (a space is inserted where the cycle wraps)."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        t = base[i % len(base)]
        i += 1
        if i % len(base) == 0 and len(out) + 1 < n and not t[-1:].isspace():
            t += " "
        out.append(t)
    return out


def numbered_tokens(n: int) -> list[str]:
    """``"tok0 tok1 ... tok{n-1}"`` as tokens: the reply when only a token count is configured."""
    pieces = [f"tok{i} " for i in range(n)]
    if pieces:
        pieces[-1] = pieces[-1].rstrip()
    return pieces
