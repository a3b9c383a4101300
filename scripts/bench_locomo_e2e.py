#!/usr/bin/env python3
"""LoCoMo end to end, the product path: conversations fed to memchat as a client would, committed by the
idle commit with the default offline extractor, then every question searched.

A real memchat server is started with the test kit's launcher (offline: no upstream, so the default
extractor falls back to the heuristic one). Each LoCoMo conversation is fed twice, once with each speaker
as the user (their lines are the user's messages, the other speaker's the assistant's replies), each side
in its own namespace: ``POST /api/v1/memory/conversations`` with one conversation per session
(``chat_id`` = the session, every turn's ``createdAt`` = the session's date plus the line's index in
seconds), committed at once. One memchat turn holds one user line (and the other speaker's next line as
its reply; a line of the other speaker with no user line before it is a turn of its own with an empty
user message), so a memory's ``sourceTurnId`` names exactly one LoCoMo line: the user's.

Once every commit is done, each question is sent to ``POST /api/v1/memory/search`` (``limit`` 10) in both
namespaces at once; the hits are merged by score and an evidence line counts as found when a retrieved
memory's ``sourceTurnId`` is its turn. Reported like `bench_locomo.py` (same table), plus memories
written per turn fed.

    MEMCHAT_LOCOMO_PATH=/work/bench-data/locomo10.json .venv/bin/python scripts/bench_locomo_e2e.py
    .venv/bin/python scripts/bench_locomo_e2e.py --convs 0-4 --leg fts:MEMCHAT_EMBEDDER=none

The data set (CC BY-NC 4.0) is read from ``--data`` or ``MEMCHAT_LOCOMO_PATH`` and never written
anywhere; only aggregate numbers are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import locomo_data as L
import msgspec
from bench_locomo import Server, parse_leg, table
from bench_locomo import score as score_dias


def side_turns(session: L.Session, user: str) -> tuple[list[dict], list[str | None]]:
    """The session as memchat turns with ``user`` as the user; and each turn's user line (dia id)."""
    turns: list[dict] = []
    dias: list[str | None] = []
    open_turn = False  # the last turn has a user line and no reply yet
    for index, (dia, speaker, text) in enumerate(session.lines):
        when = L.rfc3339(session.start + timedelta(seconds=index))
        if speaker == user:
            turns.append({"user": text, "assistant": "", "createdAt": when})
            dias.append(dia)
            open_turn = True
        elif open_turn:
            turns[-1]["assistant"] = text
            open_turn = False
        else:
            turns.append({"user": "", "assistant": text, "createdAt": when})
            dias.append(None)
    return turns, dias


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_commits(srv: Server, expected: int, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        text = srv.client.get("/metrics").text
        done = metric(text, 'memchat_commits_total{outcome="done"}'.replace("{", r"\{").replace("}", r"\}"))
        busy = metric(text, "memchat_conversations_pending") + metric(text, "memchat_commits_in_progress")
        if busy == 0 and done >= expected:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done:.0f}/{expected} commits after {timeout:.0f}s")
        time.sleep(1)


def run_leg(name: str, env: dict[str, str], convs: list[L.Conversation],
            sessions: list[tuple[list[str], list[L.Session]]]) -> list[dict]:
    srv = Server(env)
    try:
        t0 = time.perf_counter()
        dia_of_turn: dict[str, str] = {}
        fed = with_user = commits = 0
        for c in convs:
            speakers, convo = sessions[c.index]
            for side, user in enumerate(speakers):
                body, dias = [], []
                for s in convo:
                    turns, d = side_turns(s, user)
                    if any(t["user"] for t in turns):
                        body.append({"chat_id": f"session_{s.number}", "turns": turns})
                        dias.append(d)
                res, _ = srv.call("/api/v1/memory/conversations", b"\n".join(map(msgspec.json.encode, body)),
                                  f"locomo-{c.index}-{side}")
                for conv, d in zip(res["conversations"], dias, strict=True):
                    for turn_id, dia in zip(conv["turn_ids"], d, strict=True):
                        fed += 1
                        if dia is not None:
                            dia_of_turn[turn_id] = dia
                            with_user += 1
                commits += len(body)
        wait_commits(srv, commits)
        memories = sum(srv.client.get("/api/v1/memory", params={"namespace": f"locomo-{c.index}-{side}",
                                                                "limit": 1}).json()["total"]
                       for c in convs for side in (0, 1))
        print(f"[{name}] fed {fed} turns ({with_user} user lines) in {commits} conversations, committed "
              f"{memories} memories ({100 * memories / with_user:.1f} per 100 user lines) in "
              f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
        time.sleep(12)  # one background maintenance round indexes the new memories

        def both(question: str, c: L.Conversation) -> list[dict]:
            return [h for side in (0, 1) for h in srv.call(
                "/api/v1/memory/search", {"query": question, "limit": 10}, f"locomo-{c.index}-{side}")[0]["results"]]

        pool = ThreadPoolExecutor(2)
        for c in convs[:1]:  # warm-up, not measured
            for q in c.questions[:5]:
                both(q["question"], c)
        rows = []
        for c in convs:
            for q in c.questions:
                t = time.perf_counter()
                sides = list(pool.map(lambda side, q=q, c=c: srv.call(
                    "/api/v1/memory/search", {"query": q["question"], "limit": 10},
                    f"locomo-{c.index}-{side}")[0]["results"], (0, 1)))
                ms = (time.perf_counter() - t) * 1000
                hits = sorted((h for hs in sides for h in hs), key=lambda h: -h["score"])
                ranked = list(dict.fromkeys(dia_of_turn.get(h["sourceTurnId"] or "", "?") for h in hits))
                rows.append({"conv": c.index, "cat": q["category"], "ms": ms, **score_dias(ranked, q["evidence"])})
        pool.shutdown()
        return rows
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("MEMCHAT_LOCOMO_PATH"), help="path of locomo10.json or locomo10.zip")
    ap.add_argument("--leg", action="append", help="NAME[:ENV=VAL,...] server leg (repeatable); default: 'default'")
    ap.add_argument("--convs", default="0-9", help="conversation indexes, e.g. 0-4 or 0,3,7")
    args = ap.parse_args()
    if not args.data:
        ap.error("give --data or set MEMCHAT_LOCOMO_PATH")
    convs = L.load(args.data)
    sessions = L.load_sessions(args.data)
    sel: set[int] = set()
    for part in args.convs.split(","):
        a, _, b = part.partition("-")
        sel.update(range(int(a), int(b or a) + 1))
    convs = [c for c in convs if c.index in sel]
    print(f"LoCoMo end to end: {len(convs)} conversations, {sum(len(c.questions) for c in convs)} questions\n")
    for spec in args.leg or ["default"]:
        name, env = parse_leg(spec)
        rows = run_leg(name, env, convs, sessions)
        print(table(rows, f"end to end, leg {name} {env or ''}") + "\n", flush=True)


if __name__ == "__main__":
    main()
