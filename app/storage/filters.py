"""The only place LanceDB filter strings are built (memories, turns, commits, versions, marks).

LanceDB hands filter strings to DataFusion's SQL parser (generic dialect). String literals
there are standard SQL: delimited by single quotes, a quote inside is written as two quotes,
and *nothing else is special* -- a backslash is a literal backslash (only ``E'...'`` strings
interpret escapes, and we never emit those), and NUL, CR/LF, U+2028, bidi marks, emoji and
2 000-character strings pass through verbatim (tests/test_filters.py checks all of these
against a real table, with and without a BTree index).

``%`` and ``_`` are only wildcards inside ``LIKE``; nothing here uses ``LIKE``.

Python strings may hold lone surrogates (``"\\ud800"``, e.g. from JSON ``\\ud800``), which are
not valid UTF-8 and cannot be stored by Arrow: `check_text` rejects them with `ValueError`
instead of letting two different such names collapse into one replacement character.

LanceDB's type-safe ``lancedb.expr`` builder (``col("x") == lit(v)``) would avoid quoting, but
``count_rows`` only accepts strings, so one quoting rule is used everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from app.times import as_utc


# The values the memories table's ``source`` and ``state`` columns hold.
SOURCES: tuple[str, ...] = ("explicit", "conversation")
STATES: tuple[str, ...] = ("current", "superseded")


def check_text(value: str, what: str = "value") -> str:
    """Return ``value`` if it is a `str` that encodes to UTF-8, else raise ``ValueError``."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (lone surrogate)") from None
    return value


def sql_str(value: str) -> str:
    """A DataFusion SQL string literal for ``value`` (single quotes doubled, nothing else)."""
    return "'" + check_text(value).replace("'", "''") + "'"


def sql_timestamp(value: datetime) -> str:
    """A timestamp literal comparable with a ``timestamp[us, tz=UTC]`` column."""
    if not isinstance(value, datetime):
        raise TypeError("expected a datetime")
    return "TIMESTAMP '" + as_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"


def tenant_key(org_id: str, namespace: str) -> str:
    """The value of the ``tenant`` column: ``"<len(org)>:<len(ns)>:<org>/<ns>"``.

    Length-prefixing makes the encoding injective for *any* two strings (no separator can
    be forged: org ``"a/b"`` + ns ``"c"`` -> ``"3:1:a/b/c"``, org ``"a"`` + ns ``"b/c"`` ->
    ``"1:3:a/b/c"``), so one equality test on one BTree-indexed column scopes both.
    """
    check_text(org_id, "org_id")
    check_text(namespace, "namespace")
    return f"{len(org_id)}:{len(namespace)}:{org_id}/{namespace}"


def split_tenant_key(key: str) -> tuple[str, str]:
    a, b, rest = key.split(":", 2)
    n_org, n_ns = int(a), int(b)
    return rest[:n_org], rest[n_org + 1 : n_org + 1 + n_ns]


def pk_value(org_id: str, namespace: str, memory_id: str) -> str:
    """The ``pk`` column (LanceDB unenforced primary key, the merge-insert key): the tenant
    key, ``/``, the memory id. Injective because the tenant key carries both lengths, so
    the same caller-chosen id in two tenants is two rows."""
    return tenant_key(org_id, namespace) + "/" + check_text(memory_id, "id")


def tenant_filter(org_id: str, namespace: str) -> str:
    return f"tenant = {sql_str(tenant_key(org_id, namespace))}"


def and_(*clauses: str | None) -> str:
    parts = [c for c in clauses if c]
    if not parts:
        raise ValueError("empty filter")
    return " AND ".join(f"({c})" for c in parts)


def id_filter(org_id: str, namespace: str, memory_id: str) -> str:
    # pk alone is tenant-scoped already; the tenant clause is defence in depth.
    return and_(tenant_filter(org_id, namespace), f"pk = {sql_str(pk_value(org_id, namespace, memory_id))}")


def ids_filter(org_id: str, namespace: str, ids: Iterable[str]) -> str:
    ids = list(ids)
    if not ids:
        raise ValueError("ids_filter needs at least one id")
    keys = ", ".join(sql_str(pk_value(org_id, namespace, i)) for i in ids)
    return and_(tenant_filter(org_id, namespace), f"pk IN ({keys})")


def copies_filter(org_id: str, namespace: str, copies: Iterable[tuple[str, str]]) -> str:
    """Specific stored copies, by (memory id, write_id)."""
    parts = [
        f"(pk = {sql_str(pk_value(org_id, namespace, mid))} AND write_id = {sql_str(wid)})" for mid, wid in copies
    ]
    if not parts:
        raise ValueError("copies_filter needs at least one copy")
    return and_(tenant_filter(org_id, namespace), " OR ".join(parts))


def target_write_id(write_id: str) -> str:
    """merge_insert ``when_matched_update_all(where=...)`` condition: the stored row is still
    the version we read (compare-and-swap)."""
    return f"target.write_id = {sql_str(write_id)}"


def superseded_by_filter(org_id: str, namespace: str, memory_id: str) -> str:
    """The memories that ``memory_id`` replaced (their ``superseded_by`` points at it)."""
    return and_(tenant_filter(org_id, namespace), f"superseded_by = {sql_str(memory_id)}")


def in_(column: str, values: Iterable[str]) -> str:
    """``column IN (...)`` for string values (``column`` is memchat's own column name, never user input)."""
    items = list(values)
    if not items:
        raise ValueError("in_ needs at least one value")
    return f"{column} IN (" + ", ".join(sql_str(v) for v in items) + ")"


def memory_id_filter(org_id: str, namespace: str, memory_ids: Iterable[str]) -> str:
    """Rows about these memories in a side table keyed by ``memory_id`` (versions, entity marks)."""
    ids = list(memory_ids)
    if not ids:
        raise ValueError("memory_id_filter needs at least one id")
    return and_(tenant_filter(org_id, namespace), in_("memory_id", ids))


def chat_filter(org_id: str, namespace: str, chat_id: str) -> str:
    """One conversation's rows (turns, commit records)."""
    return and_(tenant_filter(org_id, namespace), f"chat_id = {sql_str(chat_id)}")


def current_filter() -> str:
    return "state = 'current'"


def source_filter(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    return f"source = {sql_str(source)}"


def entity_filter(entity: str) -> str:
    """Rows whose ``entities`` list contains ``entity`` exactly (case-sensitive)."""
    return f"array_has(entities, {sql_str(entity)})"


def cursor_filter(created_at: datetime, memory_id: str, *, descending: bool = True) -> str:
    """Keyset pagination for ``ORDER BY created_at DESC, id DESC`` (or both ASC): rows
    strictly after the cursor row. Unlike offsets, stable while rows are being inserted."""
    ts = sql_timestamp(created_at)
    op = "<" if descending else ">"
    return f"created_at {op} {ts} OR (created_at = {ts} AND id {op} {sql_str(memory_id)})"


def build(
    org_id: str,
    namespace: str,
    *,
    include_superseded: bool = False,
    source: str | None = None,
    entity: str | None = None,
    extra: Sequence[str] = (),
) -> str:
    """Tenant filter AND the optional list/search restrictions."""
    return and_(
        tenant_filter(org_id, namespace),
        None if include_superseded else current_filter(),
        source_filter(source) if source is not None else None,
        entity_filter(entity) if entity is not None else None,
        *extra,
    )
