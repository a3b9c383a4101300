"""Relative dates in a user's sentence ("yesterday", "last Friday", "in two weeks"), resolved against the
day of the turn and annotated with the ISO date, so a memory stays true when read later. Used by the
heuristic extractor (`app.memory.extract_heuristic`) and the LLM extraction's clean-up (`app.memory.extract`).
Pure functions: text in, text out.
"""

from __future__ import annotations

import re
from datetime import date, timedelta


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "couple of": 2}
_WD = "|".join(WEEKDAYS)
_NUM = r"\d{1,3}|a couple of|couple of|an|a|one|two|three|four|five|six|seven|eight|nine|ten"
_PART = r"(?:\s+(?:morning|afternoon|evening|night))?"
_DATES = re.compile(
    r"\b(?:(?P<dby>the day before yesterday)|(?P<dat>the day after tomorrow)|(?P<yest>yesterday" + _PART
    + r"|last night)|(?P<today>today|tonight|this (?:morning|afternoon|evening))|(?P<tom>tomorrow" + _PART
    + r")|(?P<rel>last|next|this) (?:(?P<wd>" + _WD + r")|(?P<unit>week|month|year))|(?P<n>" + _NUM
    + r") (?P<agounit>days?|weeks?|months?|years?) ago)\b(?!\s*\((?:on|in|week of|around) )",
    re.I,
)


def _shift_month(d: date, months: int) -> str:
    index = d.year * 12 + d.month - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _date_note(m: re.Match[str], day: date) -> tuple[str, str] | None:
    g = m.groupdict()
    if g["dby"]:
        return "on", (day - timedelta(days=2)).isoformat()
    if g["dat"]:
        return "on", (day + timedelta(days=2)).isoformat()
    if g["yest"]:
        return "on", (day - timedelta(days=1)).isoformat()
    if g["today"]:
        return "on", day.isoformat()
    if g["tom"]:
        return "on", (day + timedelta(days=1)).isoformat()
    rel = (g["rel"] or "").lower()
    if g["wd"]:
        target = WEEKDAYS.index(g["wd"].lower())
        if rel == "last":
            delta = -((day.weekday() - target - 1) % 7 + 1)
        elif rel == "next":
            delta = (target - day.weekday() - 1) % 7 + 1
        else:
            delta = target - day.weekday()
        return "on", (day + timedelta(days=delta)).isoformat()
    step = {"last": -1, "next": 1, "this": 0}.get(rel, 0)
    unit = (g["unit"] or "").lower()
    if unit == "week":
        monday = day - timedelta(days=day.weekday()) + timedelta(weeks=step)
        return "week of", monday.isoformat()
    if unit == "month":
        return "in", _shift_month(day, step)
    if unit == "year":
        return "in", f"{day.year + step:04d}"
    if g["n"]:
        raw = g["n"].lower()
        n = int(raw) if raw.isdigit() else _NUMBERS[raw]
        agounit = g["agounit"].lower().rstrip("s")
        if agounit == "day":
            return "on", (day - timedelta(days=n)).isoformat()
        if agounit == "week":
            return "around", (day - timedelta(weeks=n)).isoformat()
        if agounit == "month":
            return "in", _shift_month(day, -n)
        return "in", f"{day.year - n:04d}"
    return None


def resolve_relative_dates(sentence: str, day: date) -> tuple[str, list[str]]:
    """Annotate relative date phrases with the absolute date; returns (text, resolved ISO strings)."""
    found: list[str] = []

    def repl(m: re.Match[str]) -> str:
        note = _date_note(m, day)
        if note is None:
            return m.group(0)
        found.append(note[1])
        return f"{m.group(0)} ({note[0]} {note[1]})"

    return _DATES.sub(repl, sentence), found


ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
