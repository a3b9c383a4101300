"""Start-up recovery against history size: how long finding the pending conversations takes with N turns in
the turn log, the old way (read every turn and every commit record) against the current one (read the turns
not marked committed, through a bitmap index, and the commit records of those conversations only).

    .venv/bin/python scripts/bench_startup.py --turns 1000000      # ~2 min to build, cached per size
    .venv/bin/python scripts/bench_startup.py --quick               # 100 000 turns

The store: N turns in N/4 four-turn conversations over 1 000 namespaces, all committed and marked except
0.1 % of the conversations (their last turn pending); one done commit record per conversation. Both arms
run on the same table in the same process, alternating, `--repeat` times each; the median is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from app.commits.committer import ChatKey
from app.commits.log import COMMIT_SCHEMA, COMMITS, CommitLog, commit_key
from app.commits.sweeper import CommitSweeper, latest_per_chat
from app.storage import filters as F
from app.storage.connection import connect
from app.turns.turnlog import TURN_SCHEMA, TURNS, TurnLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Scheduler:
    def __init__(self) -> None:
        self.due: dict[ChatKey, float] = {}

    def touch(self, key: ChatKey, due: float) -> None:
        self.due[key] = due

    def touch_turn(self, turn) -> None:  # noqa: ANN001
        self.touch(ChatKey(turn.org_id, turn.namespace, turn.chat_id), 0.0)


def turn_batch(start: int, count: int, pending_every: int) -> pa.Table:
    chats = [(i // 4) for i in range(start, start + count)]
    cols = {
        "turn_id": [str(uuid.UUID(int=i)) for i in range(start, start + count)],
        "chat_id": [f"c{c}" for c in chats],
        "tenant": [F.tenant_key("org", f"ns{c % 1000}") for c in chats],
        "org_id": ["org"] * count, "namespace": [f"ns{c % 1000}" for c in chats],
        "seq": [i % 4 + 1 for i in range(start, start + count)],
        "user": ["I like tea."] * count, "assistant": ["Noted."] * count, "status": ["complete"] * count,
        "model": ["m"] * count, "surface": ["openai"] * count, "commit_after": [60] * count,
        "prefix_hash": ["p"] * count, "transcript_hash": [f"h{i}" for i in range(start, start + count)],
        "created_at": [T0 + timedelta(seconds=i) for i in range(start, start + count)],
        "committed": [not (c % pending_every == 0 and i % 4 == 3) for c, i in zip(chats, range(start, start + count))],
    }
    return pa.Table.from_pydict(cols, schema=TURN_SCHEMA)


async def build(path: Path, turns: int) -> None:
    db = await connect(str(path))
    table = await db.create_table(TURNS, schema=TURN_SCHEMA)
    for start in range(0, turns, 200_000):
        await table.add(turn_batch(start, min(200_000, turns - start), pending_every=1000))
    commits = await db.create_table(COMMITS, schema=COMMIT_SCHEMA)
    n_chats = turns // 4
    now = datetime.now(UTC)
    for start in range(0, n_chats, 200_000):
        cs = range(start, min(n_chats, start + 200_000))
        rows = [{"commit_key": commit_key("org", f"ns{c % 1000}", f"c{c}", 1, 3 if c % 1000 == 0 else 4),
                 "tenant": F.tenant_key("org", f"ns{c % 1000}"), "chat_id": f"c{c}", "from_seq": 1,
                 "to_seq": 3 if c % 1000 == 0 else 4, "state": "done", "owner": "w", "lease_until": now,
                 "facts": None, "memory_ids": [], "updated_at": now} for c in cs]
        await commits.add(pa.Table.from_pylist(rows, schema=COMMIT_SCHEMA))
    turnlog = await TurnLog.open(db)
    await turnlog.maintain()  # the indexes a running server builds in the background
    log = await CommitLog.open(db, lease=timedelta(minutes=1))
    await log.maintain()
    (path / "built").write_text(str(turns))


async def old_way(turnlog: TurnLog, commits: CommitLog) -> int:
    turns = await turnlog.activity_since(None)
    rows = await commits._query("state = 'done'")  # what recovery read before the committed marks
    done: dict[tuple[str, str], int] = {}
    for row in rows:
        done[(row.tenant, row.chat_id)] = max(done.get((row.tenant, row.chat_id), 0), row.to_seq)
    return sum(1 for t in latest_per_chat(turns).values()
               if t.seq > done.get((F.tenant_key(t.org_id, t.namespace), t.chat_id), 0))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100 000 turns, 2 repeats")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "memchat-bench-startup")
    args = parser.parse_args()
    if args.quick:
        args.turns, args.repeat = 100_000, 2
    path = args.cache_dir / f"turns-{args.turns}"
    if not (path / "built").exists():
        print(f"building {args.turns} turns at {path} ...", flush=True)
        started = time.perf_counter()
        await build(path, args.turns)
        print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    db = await connect(str(path))
    turnlog = await TurnLog.open(db)
    commits = await CommitLog.open(db, lease=timedelta(minutes=1))
    times: dict[str, list[float]] = {"old": [], "now": []}
    found: dict[str, int] = {}
    for _ in range(args.repeat):
        started = time.perf_counter()
        found["old"] = await old_way(turnlog, commits)
        times["old"].append(time.perf_counter() - started)
        started = time.perf_counter()
        found["now"] = await CommitSweeper(Scheduler(), turnlog, commits).recover()  # type: ignore[arg-type]
        times["now"].append(time.perf_counter() - started)
    old, now = statistics.median(times["old"]), statistics.median(times["now"])
    print(f"\n| turns | pending conversations | old: read everything | now: committed marks | ratio |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {args.turns:,} | {found['now']} (old way: {found['old']}) | {old:.2f} s | {now:.3f} s | {old / now:.0f}x |")


if __name__ == "__main__":
    asyncio.run(main())
