"""Compaction driven by writes: a table is compacted once it has taken ``after_writes`` writes.

Every LanceDB write (a turn-log flush, a commit's claim, a memory) adds a table version with a small data
fragment, and every read then visits each fragment and checks the latest version: measured on this
machine, a one-row filtered read costs ~1.4 ms of CPU on a compacted table and ~0.17 ms more per small
fragment (257 ms after 1,500 one-row writes). A fixed maintenance interval lets a busy table collect
hundreds of fragments between runs; this task looks at each table's version every ``check_interval``
seconds (a cheap call) and compacts the tables that took ``after_writes`` writes since their last
compaction (`tables.optimize`: compaction, new rows folded into the indexes, versions older than
``keep_versions`` removed). Index creation and the rest of `Services.maintain_once` stay on the maintenance
interval.

``keep_versions`` (30 s by default, `MEMCHAT_STORE_KEEP_VERSIONS`) is short on purpose: every version kept is
a manifest that each read's latest-version check pays for. Measured (`scripts/bench_versions.py`): a filtered
read costs 2.6 ms with ~100 version files and 10.4 ms with ~6,400; with 10 minutes kept, the third of three
300-stream soak rounds on one server answered 0.34-0.64x the requests of the first, with 30 s 0.78x
(docs/benchmarks.md, "Soak, repeated"). Nothing in memchat reads an old version on purpose; a read or write
still running on a version when it is removed would fail, so it must not be shorter than the slowest one.

Any number of processes may run this on one store (workers, replicas): each counts every process's writes
(versions are shared), and two compactions of one table at once conflict and one is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

import anyio
from anyio.abc import TaskStatus
from lancedb.table import AsyncTable

from app.storage import tables

log = logging.getLogger("memchat.storage")


class Compactor:
    def __init__(self, targets: Mapping[str, AsyncTable], *, after_writes: int = 32, check_interval: float = 1.0,
                 keep_versions: timedelta = timedelta(seconds=30),
                 optimize: Callable[[AsyncTable, str], Awaitable[str]] | None = None) -> None:
        """``targets``: table name -> table; ``optimize(table, name)``: how one table is compacted
        (default `tables.optimize`, removing versions older than ``keep_versions``)."""
        self.targets = dict(targets)
        self.after_writes = after_writes
        self.check_interval = check_interval
        self.keep_versions = keep_versions
        self._optimize = optimize or (lambda table, name: tables.optimize(
            table, what=name, attempts=3, cleanup_older_than=self.keep_versions))
        self._compacted_at: dict[str, int] = {}
        self.compactions = 0

    async def check_once(self) -> list[str]:
        """Compact the tables due; returns their names."""
        done = []
        for name, table in self.targets.items():
            version = await table.version()
            last = self._compacted_at.setdefault(name, version)
            if version - last < self.after_writes:
                continue
            outcome = await self._optimize(table, name)
            self._compacted_at[name] = await table.version()
            self.compactions += 1
            done.append(name)
            log.debug("compacted %s after %d writes: %s", name, version - last, outcome)
        return done

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.after_writes <= 0:
            return
        while True:
            await anyio.sleep(self.check_interval)
            try:
                await self.check_once()
            except Exception:
                log.exception("compaction failed; will retry")
