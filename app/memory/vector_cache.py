"""Per-namespace vectors in memory, for the dense leg of a search.

LanceDB's flat (prefiltered) nearest-neighbour search costs ~13 ms of CPU for a namespace of 10 000
memories, whatever the filter, while the same cosine top-k over the namespace's vectors held as one
numpy matrix takes ~0.3 ms (docs/benchmarks.md, "Proxy overhead: what is left"). ``VectorCache`` keeps,
per namespace, its ids' vectors (L2-normalised float32) and the rows' ``payload`` values, loaded with one
LanceDB query on first use:

* memories this process adds are appended to a cached namespace at once; any other change this process
  makes (edit, supersede, delete) drops the namespace, which is reloaded on its next search;
* an entry is looked at again after ``ttl`` seconds, so memories written by *another* process (a second
  worker or replica on the same store) reach this process's dense leg within ``ttl``
  (``MEMCHAT_VECTOR_CACHE_TTL``, default 5 s); the full-text leg always reads the table. Given ``version``
  (the table's version, read before each load), an entry whose table has not changed since it was loaded is
  kept for another ``ttl`` instead of being read again: a 10 000-memory namespace costs ~0.1 s of CPU to
  load, which an idle table would otherwise pay every ``ttl`` for every busy namespace;
* the total size is bounded (``MEMCHAT_VECTOR_CACHE_MB``, default 256); least recently used namespaces
  are dropped first, and a namespace larger than the whole budget is never cached (the search then asks
  LanceDB, as without the cache).

A load that races a local write of its namespace is discarded, never stored stale.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from app.memory.neighbours import ThreadOrder

Tenant = tuple[str, str]
Hit = tuple[dict[str, Any], float]

DEFAULT_TTL = 5.0
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_PAYLOAD_BYTES_GUESS = 64  # per-row overhead of a Python str besides its characters


def normalised(vectors: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    return matrix / norms


class _Entry:
    __slots__ = ("matrix", "ids", "payloads", "loaded_at", "nbytes", "_index", "threads", "times", "_order",
                 "version")

    def __init__(self, matrix: np.ndarray, ids: list[str], payloads: list[str], loaded_at: float,
                 threads: pa.Array | None = None, times: np.ndarray | None = None) -> None:
        self.matrix = matrix
        self.ids = ids
        self.payloads = payloads
        self.loaded_at = loaded_at
        # Thread and time (us) of each row, for `app.memory.neighbours` (None when the loader gave none).
        self.threads = threads
        self.times = times
        self._order: ThreadOrder | None = None
        self.nbytes = matrix.nbytes + sum(len(p) + len(i) + 2 * _PAYLOAD_BYTES_GUESS for i, p in zip(ids, payloads))
        self._index: dict[str, int] | None = None
        self.version: int | None = None  # the table's version read before the load (None: unknown)

    def position(self, row_id: str) -> int | None:
        """Row of ``row_id`` in ``matrix`` (the id -> row map is built on first use)."""
        if self._index is None:
            self._index = {i: n for n, i in enumerate(self.ids)}
        return self._index.get(row_id)

    def thread_order(self) -> ThreadOrder | None:
        if self.threads is None or self.times is None:
            return None
        if self._order is None:
            self._order = ThreadOrder(self.threads, self.times)
        return self._order


class _Load:
    """A load in flight; ``written``: this process wrote to the namespace meanwhile. Compared by identity: two
    loads of one namespace must never be taken for each other (a marker removed for another load would no
    longer see the writes, and its own removal would fail)."""

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written = False


class VectorCache:
    """``load(org, namespace)`` returns the namespace's rows as Arrow with columns ``id``, ``vector``,
    ``payload``."""

    def __init__(self, load: Callable[[str, str], Awaitable[pa.Table]], *, ttl: float = DEFAULT_TTL,
                 max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.monotonic,
                 version: Callable[[], Awaitable[int]] | None = None) -> None:
        self._load = load
        self._version = version
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[Tenant, _Entry] = OrderedDict()
        self._loading: dict[Tenant, list[_Load]] = {}   # the loads in flight, per namespace
        self._too_big: OrderedDict[Tenant, float] = OrderedDict()  # over the budget when last loaded
        self._bytes = 0
        self.loads = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    # -- reading ---------------------------------------------------------------------------------------
    async def _entry(self, key: Tenant) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.loaded_at < self.ttl:
            self._entries.move_to_end(key)
            return entry
        if entry is not None and entry.version is not None and self._version is not None:
            checked_at = self._clock()
            if await self._version() == entry.version and self._entries.get(key) is entry:
                entry.loaded_at = checked_at  # nothing was written anywhere since the load: keep it
                self._entries.move_to_end(key)
                return entry
        too_big_at = self._too_big.get(key)
        if too_big_at is not None and self._clock() - too_big_at < self.ttl:
            return None  # do not read a namespace that cannot be kept again on every search
        loaded_at = self._clock()
        version = await self._version() if self._version is not None else None
        self.loads += 1
        load = _Load()
        self._loading.setdefault(key, []).append(load)
        try:
            table = await self._load(*key)
        finally:
            loads = self._loading[key]
            loads.remove(load)  # this load, by identity (`_Load` has no value equality)
            if not loads:
                del self._loading[key]
        if load.written:
            return None  # written meanwhile: answer from LanceDB this time, load again next time
        if table.num_rows == 0:
            matrix = np.zeros((0, 0), dtype=np.float32)
        else:
            flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            matrix = normalised(flat.reshape(table.num_rows, -1))
        rows = table.num_rows
        threads = times = None
        if "source_thread_id" in table.column_names and "created_at" in table.column_names:
            threads = table.column("source_thread_id").combine_chunks().cast(pa.string())
            times = table.column("created_at").cast(pa.int64()).to_numpy()
        fresh = _Entry(matrix, table.column("id").to_pylist() if rows else [],
                       table.column("payload").to_pylist() if rows else [], loaded_at, threads, times)
        fresh.version = version
        self._store(key, fresh)
        return fresh if fresh.nbytes <= self.max_bytes else None

    def _store(self, key: Tenant, entry: _Entry) -> None:
        self._drop(key)
        if entry.nbytes > self.max_bytes:
            self._too_big[key] = entry.loaded_at
            while len(self._too_big) > 10_000:
                self._too_big.popitem(last=False)
            return
        self._too_big.pop(key, None)
        self._entries[key] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.nbytes

    def _drop(self, key: Tenant) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes

    async def search(self, org_id: str, namespace: str, vector: np.ndarray, k: int) -> list[Hit] | None:
        """The ``k`` nearest rows as ``({"payload": ...}, cosine similarity)``, best first; None when the
        namespace cannot be served from memory (the caller asks LanceDB)."""
        if not self.enabled:
            return None
        entry = await self._entry((org_id, namespace))
        if entry is None:
            return None
        n = len(entry.payloads)
        if n == 0 or k <= 0:
            return []
        query = normalised(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        scores = entry.matrix @ query
        if k < n:
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
        else:
            top = np.argsort(-scores, kind="stable")
        return [({"payload": entry.payloads[i]}, float(scores[i])) for i in top]

    async def similarities(self, org_id: str, namespace: str, vector: np.ndarray,
                           ids: Sequence[str]) -> dict[str, float] | None:
        """Cosine similarity of the query to each of ``ids`` that the cached namespace holds (ids it
        does not hold are left out); None when the namespace cannot be served from memory."""
        if not self.enabled:
            return None
        entry = await self._entry((org_id, namespace))
        if entry is None:
            return None
        pos = [(i, entry.position(i)) for i in ids]
        pos = [(i, p) for i, p in pos if p is not None]
        if not pos:
            return {}
        query = normalised(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        scores = entry.matrix[[p for _, p in pos]] @ query
        return {i: float(s) for (i, _), s in zip(pos, scores)}

    async def neighbourhood(self, org_id: str, namespace: str, vector: np.ndarray, ids: Sequence[str]
                            ) -> tuple[dict[str, tuple[str | None, str | None]], dict[str, Hit]] | None:
        """For `app.memory.neighbours.smooth`: (previous id, next id) in the thread of each of ``ids`` and of
        their neighbours, and the neighbours not in ``ids`` as ``({"payload": ...}, cosine)``; None when
        the namespace is not served from memory or its rows carry no thread order."""
        if not self.enabled:
            return None
        entry = await self._entry((org_id, namespace))
        order = entry.thread_order() if entry is not None else None
        if entry is None or order is None:
            return None
        wanted = set(ids)
        links: dict[str, tuple[str | None, str | None]] = {}
        extra: dict[str, int] = {}

        def link(row_id: str, pos: int) -> tuple[int, int]:
            a, b = order.around(pos)
            links[row_id] = (entry.ids[a] if a >= 0 else None, entry.ids[b] if b >= 0 else None)
            return a, b

        for row_id in ids:
            pos = entry.position(row_id)
            if pos is None:
                continue
            for x in link(row_id, pos):
                if x >= 0 and entry.ids[x] not in wanted:
                    extra[entry.ids[x]] = x
        for row_id, pos in extra.items():
            link(row_id, pos)
        if not extra:
            return links, {}
        query = normalised(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        cos = entry.matrix[list(extra.values())] @ query
        return links, {i: ({"payload": entry.payloads[x]}, float(c)) for (i, x), c in zip(extra.items(), cos)}

    # -- this process's writes -------------------------------------------------------------------------
    def _written(self, key: Tenant) -> None:
        for load in self._loading.get(key, ()):
            load.written = True

    def appended(self, org_id: str, namespace: str, ids: Sequence[str], vectors: np.ndarray,
                 payloads: Sequence[str], threads: Sequence[str | None] | None = None,
                 times: Sequence[int] | None = None) -> None:
        """New rows this process wrote: added to the cached namespace (nothing to do if not cached).
        Rows a load already picked up (it read the table after the write landed) are not added twice.
        ``threads``/``times``: their thread ids and times (us), kept for neighbour smoothing."""
        key = (org_id, namespace)
        self._written(key)
        entry = self._entries.get(key)
        if entry is None or not len(payloads):
            return
        known = set(entry.ids)
        fresh = [i for i, row_id in enumerate(ids) if row_id not in known]
        if not fresh:
            return
        rows = normalised(np.asarray(vectors, dtype=np.float32).reshape(len(payloads), -1)[fresh])
        matrix = rows if entry.matrix.size == 0 else np.concatenate([entry.matrix, rows])
        all_threads = all_times = None
        if entry.threads is not None and entry.times is not None and threads is not None and times is not None:
            all_threads = pa.concat_arrays([entry.threads, pa.array([threads[i] for i in fresh], type=pa.string())])
            all_times = np.concatenate([entry.times, np.asarray([times[i] for i in fresh], dtype=np.int64)])
        self._store(key, _Entry(matrix, [*entry.ids, *(ids[i] for i in fresh)],
                                [*entry.payloads, *(payloads[i] for i in fresh)], entry.loaded_at,
                                all_threads, all_times))

    def clear(self) -> None:
        for key in list(self._entries):
            self.invalidate(*key)

    def invalidate(self, org_id: str, namespace: str) -> None:
        """Rows this process changed or deleted: the namespace is reloaded on its next search."""
        key = (org_id, namespace)
        self._written(key)
        self._drop(key)
