"""Stage timers for a memchat server under a benchmark (not part of the product; measurement only).

Put this directory on the *server's* ``PYTHONPATH`` and name an output file::

    .venv/bin/python scripts/soak.py --no-docs --duration 40 \
        --env PYTHONPATH=$PWD/scripts/stage_probe --env MEMCHAT_STAGE_PROBE=/tmp/stages.txt

Once the app's modules are imported, a daemon thread wraps a few request-path steps with wall-clock timers
(the full-text leg, the query embedding, rescoring, the dense completion, the turn log's read of a
conversation) and a commit's steps (its writes, the extraction call, the whole commit), and rewrites ``MEMCHAT_STAGE_PROBE`` every 5 s with calls, total and mean seconds per step.
Copy the file at the moment you want (e.g. during the hold: later it also counts the commits' searches).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

_OUT = os.environ.get("MEMCHAT_STAGE_PROBE")
_MODULES = ("app.memory.search", "app.memory.store", "app.turns.turnlog", "app.commits.log", "app.commits.batching",
            "app.commits.committer", "app.memory.extract_llm", "app.services")


def _install(out: str) -> None:
    totals: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return await fn(*args, **kwargs)
            finally:
                entry = totals.setdefault(name, [0, 0.0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - started
                entry[2] += time.process_time() - cpu
        return wrapper

    def run() -> None:
        while not all(name in sys.modules for name in _MODULES):
            time.sleep(0.2)
        time.sleep(1.0)  # let the modules finish importing
        search, store, turnlog, commit_log, _, committer, extract_llm, services = (sys.modules[name] for name in _MODULES)
        services.Services.maintain_once = timed("maintenance: all tables", services.Services.maintain_once)
        for table_name, cls in (("memories", store.MemoryStore), ("turns", turnlog.TurnLog), ("commits", commit_log.CommitLog)):
            cls.maintain = timed(f"maintenance: {table_name}", cls.maintain)
        turnlog.TurnLog.flush = timed("turn log: journal flush", turnlog.TurnLog.flush)
        store.MemoryStore.search = timed("memory search (whole)", store.MemoryStore.search)
        search.fts_leg = timed("full-text leg (LanceDB)", search.fts_leg)
        search.rescore = timed("rescore", search.rescore)
        search.complete_dense = timed("dense completion", search.complete_dense)
        store.MemoryStore._embed_query = timed("query embedding", store.MemoryStore._embed_query)
        turnlog.TurnLog.chat_turns = timed("turn log: a conversation's turns", turnlog.TurnLog.chat_turns)
        turnlog.TurnLog.mark_committed = timed("commit: write the turn log's mark", turnlog.TurnLog.mark_committed)
        turnlog.TurnLog.mark_many = timed("commit: write the turn log's marks", turnlog.TurnLog.mark_many)
        turnlog.TurnLog.find_turn = timed("turn log: find a turn", turnlog.TurnLog.find_turn)
        # the committer's batchers hold their write functions bound at start-up: time the batched write itself
        batching = sys.modules["app.commits.batching"]
        batching.WriteBatcher._run = timed("commit: one batched write (claims, row updates or marks; lane wait "
                                           "included)", batching.WriteBatcher._run)
        for method in ("claim", "save_facts", "finish", "for_chat"):
            if not hasattr(commit_log.CommitLog, method):
                continue
            setattr(commit_log.CommitLog, method,
                    timed(f"commit: commit log {method}", getattr(commit_log.CommitLog, method)))
        store.MemoryStore.add = timed("commit: memories add (embed + write)", store.MemoryStore.add)
        store.MemoryStore.supersede = timed("commit: supersede", store.MemoryStore.supersede)
        committer.Committer.commit = timed("commit: whole commit", committer.Committer.commit)
        committer.Committer._existing = timed("commit: search existing memories", committer.Committer._existing)
        extract_llm.LLMExtractor.extract = timed("commit: extraction call (LLM)", extract_llm.LLMExtractor.extract)
        while True:
            time.sleep(5.0)
            lines = [f"{name}: {int(n)} calls, {total:.1f} s, mean {total / max(n, 1) * 1000:.1f} ms, "
                     f"process CPU {cpu / max(n, 1) * 1000:.1f} ms (all threads: one commit at a time to attribute)"
                     for name, (n, total, cpu) in sorted(totals.items())]
            with open(out, "w") as f:
                f.write("\n".join(lines) + "\n")

    threading.Thread(target=run, name="stage-probe", daemon=True).start()


if _OUT:  # only where the variable is set: pass it to the server alone (soak.py --env)
    _install(_OUT)
