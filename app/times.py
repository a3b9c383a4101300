"""Time helpers every layer shares: aware UTC datetimes and their RFC 3339 form."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive -> UTC; aware -> converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def rfc3339(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC, the year always four digits (``strftime('%Y')`` drops the zero
    padding of years before 1000 on glibc)."""
    v = as_utc(value)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"
