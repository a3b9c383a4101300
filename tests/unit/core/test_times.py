"""`app.times`: aware UTC datetimes and RFC 3339 strings (four-digit years, UTC conversion)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.times import as_utc, rfc3339, utcnow


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is UTC and abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_as_utc() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert as_utc(naive) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and as_utc(naive).tzinfo is UTC
    plus2 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    converted = as_utc(plus2)
    assert converted.tzinfo is UTC and (converted.hour, converted.day) == (1, 2)
    minus = datetime(2026, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert as_utc(minus) == datetime(2026, 1, 2, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize(("value", "text"), [
    (datetime(2026, 12, 2, 11, 20, 5, tzinfo=UTC), "2026-12-02T11:20:05Z"),
    (datetime(2026, 12, 2, 11, 20, 5, 999999, tzinfo=UTC), "2026-12-02T11:20:05Z"),   # fractions dropped
    (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05Z"),
    (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
    (datetime(42, 6, 7), "0042-06-07T00:00:00Z"),                                     # naive = UTC
    (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "9999-12-31T23:59:59Z"),
    (datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=3))), "2025-12-31T22:00:00Z"),
])
def test_rfc3339(value: datetime, text: str) -> None:
    assert rfc3339(value) == text
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == as_utc(value).replace(microsecond=0)
