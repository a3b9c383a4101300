"""SQL filter building (app/memory/filters.py) and tenant isolation with hostile strings,
checked against a real LanceDB table (no mocks): with and without the BTree index."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import lancedb
import pyarrow as pa
import pytest
from lancedb.index import BTree

from app.storage import filters as F
from app.memory.models import NewMemory
from app.memory.search import SearchConfig
from app.memory.store import MemoryStore
from tests.unit.memory.test_store import HashEmbedder

HOSTILE = [
    "plain",
    "a'b",
    "''",
    "'",
    "' OR '1'='1",
    "x' OR tenant IS NOT NULL OR 'a'='a",
    "'); DROP TABLE memories; --",
    "\\",
    "a\\'b",
    "\\'",
    "%",
    "_",
    "a%b_c",
    "x\x00y",
    "\x00",
    "line1\nline2",
    "\r\n",
    "\t",
    "\u202eevil\u202c",  # RTL override
    "\u200f\u200e",  # RTL/LTR marks
    "\u2028",
    "😀👩‍👩‍👧",
    "e\u0301",  # combining accent (differs from "é")
    "é",
    "E'x'",
    '"double"',
    "$$",
    "a/b",
    "1:a",
    ":",
    "/",
    "",
    " ",
    "x" * 2000,
    "'" * 2000,
]


# ---------------------------------------------------------------- pure functions


def test_sql_str_doubles_quotes_only():
    assert F.sql_str("a'b") == "'a''b'"
    assert F.sql_str("\\") == "'\\'"
    assert F.sql_str("") == "''"
    assert F.sql_str("x\x00y") == "'x\x00y'"


def test_tenant_key_is_injective_and_reversible():
    names = ["", "a", "a/b", "b/c", "1:a", ":", "/", "a'b", "\x00", "x" * 50]
    keys = {}
    for org, ns in itertools.product(names, names):
        k = F.tenant_key(org, ns)
        assert F.split_tenant_key(k) == (org, ns)
        assert k not in keys, (org, ns, keys.get(k))
        keys[k] = (org, ns)
    # the classic separator forgery
    assert F.tenant_key("a/b", "c") != F.tenant_key("a", "b/c")
    assert F.pk_value("a", "b/c", "d") != F.pk_value("a", "b", "c/d")


def test_lone_surrogates_are_rejected_not_merged():
    with pytest.raises(ValueError):
        F.tenant_key("org", "\ud800")
    with pytest.raises(ValueError):
        F.sql_str("\udfff")
    with pytest.raises(TypeError):
        F.tenant_key("org", None)  # type: ignore[arg-type]


def test_source_is_whitelisted():
    assert F.source_filter("explicit") == "source = 'explicit'"
    with pytest.raises(ValueError):
        F.source_filter("explicit' OR '1'='1")


def test_build_and_cursor_shapes():
    w = F.build("o", "n", source="explicit", entity="a'b")
    assert w.count("(") >= 4 and "array_has(entities, 'a''b')" in w and "state = 'current'" in w
    assert "state" not in F.build("o", "n", include_superseded=True)
    c = F.cursor_filter(datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "x'y")
    assert c == (
        "created_at < TIMESTAMP '2024-01-02 03:04:05.000006' OR "
        "(created_at = TIMESTAMP '2024-01-02 03:04:05.000006' AND id < 'x''y')"
    )
    with pytest.raises(ValueError):
        F.ids_filter("o", "n", [])
    with pytest.raises(ValueError):
        F.and_(None, "")


# ---------------------------------------------------------------- against a real table


@pytest.mark.parametrize("indexed", [False, True])
async def test_literals_match_exactly_in_lancedb(tmp_path, indexed: bool):
    """Every hostile value, quoted by sql_str, selects exactly its own row -- both through
    a plain scan and through the BTree index -- and the type-safe Expr form agrees."""
    db = await lancedb.connect_async(str(tmp_path / "raw"))
    values = list(dict.fromkeys(HOSTILE))
    t = await db.create_table("t", data=pa.table({"i": list(range(len(values))), "v": values}))
    if indexed:
        await t.create_index("v", config=BTree())
    for i, v in enumerate(values):
        assert await t.count_rows(f"v = {F.sql_str(v)}") == 1, repr(v)
        rows = (await t.query().where(f"v = {F.sql_str(v)}").to_arrow())["i"].to_pylist()
        assert rows == [i], repr(v)
        from lancedb.expr import col, lit

        rows = (await t.query().where(col("v") == lit(v)).to_arrow())["i"].to_pylist()
        assert rows == [i], repr(v)


async def test_hostile_tenants_are_isolated(tmp_path):
    store = await MemoryStore.open(str(tmp_path / "db"), HashEmbedder(dim=32))
    try:
        orgs = ["org", "org2", "' OR '1'='1", "a/b"]
        # every hostile namespace under "org"; a sample of them (same namespaces!) under the others
        tenants = [("org", ns) for ns in HOSTILE] + [(o, ns) for o in orgs[1:] for ns in HOSTILE[:14:2]]
        # also: another org with the same namespace; org/ns splits that concatenate alike
        tenants += [("a", "b/plain"), ("a/b", "plain")]
        tenants = list(dict.fromkeys(tenants))
        ids = {}
        for org, ns in tenants:
            (m,) = await store.add(org, ns, [NewMemory(content=f"secret zebra note for {org!r}/{ns!r}", id="same-id")])
            ids[(org, ns)] = m.id

        async def check_all(stage: str):
            for org, ns in tenants:
                assert await store.count(org, ns) == 1, (stage, org, ns)
                page, total = await store.list(org, ns, limit=50)
                assert total == 1 and [(m.org_id, m.namespace) for m in page] == [(org, ns)], (stage, org, ns)
                got = await store.get(org, ns, "same-id")
                assert got is not None and (got.org_id, got.namespace) == (org, ns)
                # rrf runs both legs (FTS and vector), each with the tenant prefilter
                hits = await store.search(org, ns, "secret zebra note", limit=50, config=SearchConfig(mode="rrf"))
                assert [(h.memory.org_id, h.memory.namespace) for h in hits] == [(org, ns)], (stage, org, ns)
                batches = [b async for b in store.iter_all(org, ns)]
                assert [[(m.org_id, m.namespace) for m in b] for b in batches] == [[(org, ns)]]

        await check_all("unindexed")
        await store.maintain()
        await check_all("indexed")

        # Writes through a hostile tenant touch only that tenant.
        victim = ("org", "' OR '1'='1")
        assert await store.update(*victim, "same-id", content="changed zebra") is not None
        assert await store.delete(*victim, "same-id") is True
        assert await store.count(*victim) == 0
        assert await store.delete_namespace("org", "%") == 1
        assert await store.delete_namespace("org", "_") == 1
        # the same namespaces under another org are untouched
        assert await store.count("org2", "%") == 1 and await store.count("org2", "' OR '1'='1") == 1
        remaining = [t for t in tenants if t not in (victim, ("org", "%"), ("org", "_"))]
        for org, ns in remaining:
            m = await store.get(org, ns, "same-id")
            assert m is not None and m.content.startswith("secret zebra"), (org, ns)
        assert await store.table.count_rows() == len(remaining)
        # Filters on hostile entity strings are literal too.
        await store.add("org", "plain", [NewMemory(content="tagged", entities=["' OR '1'='1", "%"])])
        assert await store.count("org", "plain", entity="' OR '1'='1") == 1
        assert await store.count("org", "plain", entity="%") == 1
        assert await store.count("org", "plain", entity="_") == 0
        assert await store.count("org", "plain", entity="") == 0
        # Lone surrogates: a clean error, no write.
        with pytest.raises(ValueError):
            await store.add("org", "\ud800", [NewMemory(content="x")])
        with pytest.raises(ValueError):
            await store.search("org", "\ud800", "x")
    finally:
        await store.close()
