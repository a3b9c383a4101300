"""`app.storage.tables`: open_or_create, conflict retries, and delete_tenant with hostile tenants (real LanceDB)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from app.storage import filters as F
from app.storage import tables
from app.storage.connection import connect, is_local_uri

SCHEMA = pa.schema([pa.field("tenant", pa.string(), nullable=False), pa.field("n", pa.int64(), nullable=False)])
NEWER = pa.schema([*SCHEMA, pa.field("extra", pa.string())])

HOSTILE = [("org", "ns"), ("org'", "ns"), ("org", "ns'"), ("o'rg", "n''s"), ("org\\", "ns"), ("org", "\\ns"),
           ("org\x00", "ns"), ("org", "ns\x00"), ("' OR 1=1 --", ""), ("org", "' OR 1=1 --"), ("", ""),
           ("org/ns", ""), ("org", "/ns"), ("%", "_"), ("org", "ns\n"), ("名", "🙂")]


def rows(pairs: list[tuple[str, str]], start: int = 0) -> pa.Table:
    return pa.Table.from_pydict({"tenant": [F.tenant_key(o, n) for o, n in pairs],
                                 "n": list(range(start, start + len(pairs)))}, schema=SCHEMA)


async def test_open_or_create_creates_then_reopens(tmp_path: Path) -> None:
    db = await connect(str(tmp_path))
    assert not await tables.table_exists(db, "things")
    table = await tables.open_or_create(db, "things", SCHEMA)
    assert await tables.table_exists(db, "things") and await table.count_rows() == 0
    assert await table.schema() == SCHEMA
    await table.add(rows([("a", "b"), ("c", "d")]))
    again = await tables.open_or_create(await connect(str(tmp_path)), "things", SCHEMA)
    assert await again.count_rows() == 2
    assert not await tables.table_exists(db, "thing")


def test_open_or_create_when_several_processes_open_a_fresh_store_at_once(tmp_path: Path) -> None:
    """The workers of one server open a fresh data dir at the same moment: a table being created elsewhere
    can be listed before it opens, and two creations conflict. Every opener must end with the table."""
    errors: list[str] = []
    opened: list[int] = []

    def opener(path: str, start: threading.Barrier) -> None:
        async def go() -> None:
            db = await connect(path)  # one connection per opener, as in separate processes
            start.wait()
            table = await tables.open_or_create(db, "things", SCHEMA)
            opened.append(await table.count_rows())
        try:
            asyncio.run(go())
        except Exception as exc:  # collected: the assertion below names them
            errors.append(repr(exc)[:200])

    rounds, openers = 40, 6
    for n in range(rounds):
        start = threading.Barrier(openers)
        threads = [threading.Thread(target=opener, args=(str(tmp_path / f"store{n}"), start)) for _ in range(openers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert opened == [0] * (rounds * openers)


async def test_open_or_create_keeps_an_existing_schema(tmp_path: Path) -> None:
    db = await connect(str(tmp_path))
    await (await tables.open_or_create(db, "old", SCHEMA)).add(rows([("a", "b")]))
    reopened = await tables.open_or_create(db, "old", NEWER)
    assert (await reopened.schema()).names == ["tenant", "n"]   # migrations are the caller's
    assert await reopened.count_rows() == 1


def test_is_conflict_and_is_already_exists() -> None:
    for message in ("Commit conflict for version 7", "Retryable commit conflict", "Too many concurrent writers",
                    "the table was concurrently modified"):
        assert tables.is_conflict(RuntimeError(message)) and tables.is_conflict(ValueError(message.upper()))
    assert not tables.is_conflict(ValueError("no such column: x"))
    assert tables.is_already_exists(RuntimeError("Index 'x' Already Exists"))
    assert not tables.is_already_exists(RuntimeError("not found"))


class Flaky:
    """An operation that fails with ``errors`` in turn, then returns ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_retry_runs_a_conflicting_operation_again() -> None:
    op = Flaky(RuntimeError("commit conflict"), ValueError("Retryable commit conflict"))
    assert await tables.retry(op, what="test", base=0) == "ok"
    assert op.calls == 3


async def test_retry_does_not_retry_other_errors() -> None:
    op = Flaky(ValueError("schema mismatch"))
    with pytest.raises(ValueError, match="schema mismatch"):
        await tables.retry(op, what="test", base=0)
    assert op.calls == 1


async def test_retry_gives_up_after_its_attempts() -> None:
    op = Flaky(*[RuntimeError(f"commit conflict #{i}") for i in range(10)])
    with pytest.raises(RuntimeError, match="commit conflict #2"):
        await tables.retry(op, what="test", attempts=3, base=0)
    assert op.calls == 3
    single = Flaky(RuntimeError("commit conflict"))
    with pytest.raises(RuntimeError):
        await tables.retry(single, what="test", attempts=1, base=0)
    assert single.calls == 1


async def test_delete_tenant_removes_only_that_tenant_whatever_its_name(tmp_path: Path) -> None:
    table = await tables.open_or_create(await connect(str(tmp_path)), "t", SCHEMA)
    await table.add(rows(HOSTILE * 2))
    remaining = list(HOSTILE)
    for org, ns in [("' OR 1=1 --", ""), ("org'", "ns"), ("org\x00", "ns"), ("org\\", "ns"), ("", ""),
                    ("org", "' OR 1=1 --")]:
        assert await tables.delete_tenant(table, org, ns, what="t") == 2
        remaining.remove((org, ns))
        left = (await table.query().to_arrow()).column("tenant").to_pylist()
        assert sorted(left) == sorted(F.tenant_key(o, n) for o, n in remaining * 2)
    assert await tables.delete_tenant(table, "nobody", "ns", what="t") == 0
    assert await table.count_rows() == 2 * len(remaining)


async def test_delete_where_counts_and_index_helpers(tmp_path: Path) -> None:
    table = await tables.open_or_create(await connect(str(tmp_path)), "t", SCHEMA)
    assert await tables.ensure_btree(table, ["tenant"], what="t") == {"created": [], "skipped": []}  # empty table
    await table.add(rows([("a", "b"), ("a", "b"), ("c", "d")]))
    assert await tables.ensure_btree(table, ["tenant"], what="t") == {"created": ["tenant"], "skipped": []}
    assert await tables.ensure_btree(table, ["tenant"], what="t") == {"created": [], "skipped": []}
    assert await tables.delete_where(table, "n >= 1", what="t") == 2
    assert isinstance(await tables.optimize(table, what="t"), str)
    assert await table.count_rows() == 1
    assert await table.count_rows(F.tenant_filter("a", "b")) == 1


def test_local_uris() -> None:
    assert is_local_uri("/data/lancedb") and is_local_uri("file:///data") and is_local_uri("relative/dir")
    assert not is_local_uri("s3://bucket/prefix") and not is_local_uri("gs://b/p")
