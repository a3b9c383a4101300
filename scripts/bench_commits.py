#!/usr/bin/env python3
"""How fast a backlog of idle conversations is committed: one memchat worker, nothing else running.

Each arm is a fresh memchat (1 uvicorn worker, LanceDB in a temp dir, the LLM extractor against the fake
upstream, which answers each extraction call with two new facts after 0.2 s). The bench answers
``--conversations`` one-turn conversations (``--users`` namespaces, so later commits find earlier memories)
with ``commit_after`` long enough that none is due before the last answer; then they all fall due within a
few seconds and the bench polls ``/metrics`` until every one is committed. Reported per arm: the drain rate
(commits/s between 10 % and 90 % done), the time from the first deadline to the last commit, a commit's mean
duration (``memchat_commit_seconds``), the server's CPU per commit, and the memories written (each arm must
write the same number).

Arms (``--arms``): ``MEMCHAT_COMPACT_AFTER_WRITES`` (0: tables compacted on the maintenance interval only,
as before; 32: a table is compacted once it took 32 writes), ``MEMCHAT_COMMIT_WRITE_BATCH`` (1: each commit's
claim, saved facts, done row and turn-log mark written on its own, as before; 64: the rows of commits running
at once written together) and ``MEMCHAT_COMMIT_CONCURRENCY``. Arms run interleaved, ``--rounds`` times, all in
one run: compare rows of one run only.

    .venv/bin/python scripts/bench_commits.py            # ~6 min, writes "Commit drain" in docs/benchmarks.md
    .venv/bin/python scripts/bench_commits.py --no-docs --conversations 100 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    API_KEY,
    CpuMeter,
    FakeUpstream,
    Memchat,
    RawClient,
    chat_body,
    fmt,
    load_now,
    machine_line,
    md_table,
    memchat_env,
    start_run,
    thread_cpu,
    thread_cpu_delta,
    stop_all,
    write_section,
)

SECTION = "Commit drain"
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def extraction_rules(count: int) -> list[dict[str, Any]]:
    """``count`` extraction answers (and a few spare), each two facts no other answer has."""
    rules = []
    for r in range(count + 20):
        facts = [{"content": f"Fact {r}-{k}: the user keeps item {r * 7 + k} in drawer {k}.", "turn": 1} for k in range(2)]
        rules.append({"match": "memchat-extract", "times": 1, "tokens": None, "first_token_delay": 0.2,
                      "token_delay": None, "reply": json.dumps({"facts": facts})})
    return rules


async def answer_all(port: int, conversations: int, users: int, commit_after: int, clients: int = 16) -> float:
    """One answered turn per conversation; returns how long it took."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(conversations):
        queue.put_nowait(i)
    errors: list[str] = []

    async def client() -> None:
        raw = RawClient("127.0.0.1", port, AUTH)
        try:
            while not queue.empty():
                i = queue.get_nowait()
                path = f"/v1/memory/chat/completions?namespace=user-{i % users}&commit_after={commit_after}"
                res = await raw.stream(path, chat_body(f"Conversation {i}: remember that I keep item {i} in a drawer."))
                if res.error is not None or res.status != 200:
                    errors.append(f"{res.status} {res.error}")
        finally:
            await raw.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return time.perf_counter() - t0


def run_arm(fake: FakeUpstream, compact: int, batch: int, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="memchat-bench-commits-"))
    fake.call("DELETE", "/_fake/rules")
    fake.call("POST", "/_fake/rules", extraction_rules(args.conversations))
    env = memchat_env(fake.base_url, "local", MEMCHAT_EXTRACTOR="llm", MEMCHAT_COMMIT_AFTER=str(args.commit_after),
                      MEMCHAT_COMMIT_CONCURRENCY=str(concurrency), MEMCHAT_COMMIT_WRITE_BATCH=str(batch),
                      MEMCHAT_COMPACT_AFTER_WRITES=str(compact),
                      **{"MEMCHAT_MAINTENANCE_INTERVAL": "30", **dict(kv.split("=", 1) for kv in args.env)})
    mc = Memchat(data, env=env).start()
    try:
        t_start = time.perf_counter()
        load_s = asyncio.run(answer_all(mc.port, args.conversations, args.users, args.commit_after))
        if load_s > args.commit_after - 2:
            raise SystemExit(f"answering took {load_s:.1f} s: raise --commit-after above that")
        due = t_start + args.commit_after
        time.sleep(max(0.0, due - time.perf_counter()))
        meter, threads0 = CpuMeter(mc.pid), thread_cpu(mc.pid)
        spy = None
        if args.profile is not None:
            import subprocess

            spy = subprocess.Popen([os.environ.get("PY_SPY", "py-spy"), "record", "-p", str(mc.pid), "-o",
                                    str(args.profile), "-f", "raw", "-r", "50", *(["--native"] if os.environ.get("PY_SPY_NATIVE") else [])], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        marks: dict[int, float] = {}
        t_limit = due + args.timeout
        done = 0.0
        while time.perf_counter() < t_limit:
            m = mc.metrics()
            done = m.get('memchat_commits_total{outcome="done"}', 0)
            for tenth in range(1, 11):
                if done >= args.conversations * tenth / 10 and tenth not in marks:
                    marks[tenth] = time.perf_counter()
            if done >= args.conversations:
                break
            time.sleep(0.5)
        cpu, threads = meter.stop(), thread_cpu_delta(threads0, thread_cpu(mc.pid))
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        m = mc.metrics()
        finished = 10 in marks
        span = marks[9] - marks[1] if 9 in marks and 1 in marks else float("nan")
        return {
            "arm": (compact, batch, concurrency), "load_s": load_s, "finished": finished,
            "rate": 0.8 * args.conversations / span if span == span and span > 0 else float("nan"),
            "drain_s": (marks[10] if finished else time.perf_counter()) - due, "done": done,
            "failed": m.get('memchat_commits_total{outcome="failed"}', 0),
            "commit_s": m.get("memchat_commit_seconds_sum", 0) / max(1, m.get("memchat_commit_seconds_count", 0)),
            "cpu_ms": 1000 * cpu["procs"][mc.pid] / max(1.0, done),
            "memories": m.get("memchat_memories_written_total", 0),
            "threads_ms": {name: round(1000 * sec / max(1.0, done)) for name, sec in list(threads.items())[:6]},
        }
    finally:
        stop_all(mc)
        shutil.rmtree(data, ignore_errors=True)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, started: str, command: str) -> str:
    arms: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row)
    base = next(iter(arms))
    base_rate = statistics.median(r["rate"] for r in arms[base])
    table = []
    for (compact, batch, conc), runs in arms.items():
        rate = statistics.median(r["rate"] for r in runs)
        lance = statistics.mean(r["threads_ms"].get("lancedb-tokio-w", 0) for r in runs)
        table.append([compact or "off", batch, conc, " / ".join(fmt(r["rate"]) for r in runs), f"{rate / base_rate:.2f}×",
                      " / ".join(fmt(r["drain_s"]) for r in runs), fmt(statistics.mean(r["commit_s"] for r in runs), 2),
                      fmt(statistics.mean(r["cpu_ms"] for r in runs), 0), fmt(lance, 0),
                      " / ".join(f"{r['memories']:.0f}" for r in runs),
                      " / ".join(f"{r['done']:.0f}{'' if r['finished'] else ' (timed out)'}" for r in runs)])
    header = ["compact after writes", "write batch", "commit concurrency", "commits/s (10→90 %), per round",
              "vs first row", "first deadline → last commit (s)", "a commit, mean (s)", "server CPU per commit (ms)",
              "of which LanceDB's threads (ms)", "memories written", "commits done"]
    return f"""Measured {started}. {machine_line()}. Load: {load_now()}.

    {command}

One memchat worker per arm, fresh LanceDB dir, `MEMCHAT_EXTRACTOR=llm` against the fake upstream (each
extraction answered after 0.2 s with two new facts), local embedder. {args.conversations} one-turn
conversations over {args.users} users, answered with `commit_after={args.commit_after}`, so the whole backlog
falls due within seconds after the last answer; then nothing but commits runs. Arms
(`MEMCHAT_COMPACT_AFTER_WRITES`, `MEMCHAT_COMMIT_WRITE_BATCH`, `MEMCHAT_COMMIT_CONCURRENCY`) interleaved,
{args.rounds} round(s); the first row is the baseline.

{md_table(header, table)}

Reading: "commits/s" is the drain rate between 10 % and 90 % of the backlog done; "a commit" is
`memchat_commit_seconds` (claim to done, the wait for the write lane included, not the wait for a slot);
CPU per commit counts the server process (the embedder's process not included), LanceDB's Rust threads apart.
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversations", type=int, default=400)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--commit-after", type=int, default=30)
    p.add_argument("--arms", default="0:1:4,32:1:4,0:64:4,32:64:4,32:64:16",
                   help="comma-separated compact-after-writes:write-batch:concurrency; the first is the baseline")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a drain")
    p.add_argument("--env", action="append", default=[], help="extra environment for memchat (repeatable)")
    p.add_argument("--profile", type=Path, help="py-spy the server's drain into this SVG (one arm only)")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    command = start_run("bench_commits.py", argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    fake = FakeUpstream("--tokens", "20", "--no-record").start()
    rows = []
    try:
        arms = [tuple(int(x) for x in arm.split(":")) for arm in args.arms.split(",")]
        for round_ in range(args.rounds):
            for compact, batch, conc in (arms if round_ % 2 == 0 else list(reversed(arms))):
                row = run_arm(fake, compact, batch, conc, args)
                print(f"round {round_ + 1} arm {row['arm']}: {row}", flush=True)
                rows.append(row)
    finally:
        stop_all(fake)
    text = report(rows, args, started, command)
    print(text)
    if not args.no_docs:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
