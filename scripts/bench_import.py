#!/usr/bin/env python3
"""Memory import/export throughput through the REST API (``POST /api/v1/memory/import``, ``GET .../export``).

Starts a real memchat (``python -m app serve``, offline mode, data in a temp dir) with the chosen
embedder, generates N synthetic memories (JSON Lines as ``GET /export`` writes them: ids, createdAt,
entities on a fifth of them, with ``--superseded-every n`` every n-th superseded by the next one),
and measures, over loopback:

* import into an empty namespace, in requests of ``--batch`` records (as ``memchat import`` sends them),
* the same import again (idempotent: nothing new is written),
* export of the namespace.

Usage::

    .venv/bin/python scripts/bench_import.py --embedder none  --count 20000
    .venv/bin/python scripts/bench_import.py --embedder local --count 2000
    .venv/bin/python scripts/bench_import.py --embedder none  --count 2000 --superseded-every 10

Prints a markdown table row per measurement (see docs/benchmarks.md, "Memory import").
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.testkit import MemchatServer

KEY = "bench-import-key"
WORDS = ("the user likes hiking cooking reading jazz coffee tea cycling museums gardening running chess "
         "photography travel sushi football yoga painting guitar baking swimming movies podcasts").split()
NAMES = ["Alice", "Bruno", "Lisbon", "Acme Corp", "Kyoto", "Maud", "Biscuit", "Oslo", "Globex", "Rex"]


def generate(count: int, seed: int = 7, superseded_every: int = 10) -> list[bytes]:
    rnd = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    records = []
    for i in range(count):
        words = rnd.choices(WORDS, k=rnd.randint(8, 22))
        entities = rnd.sample(NAMES, 2) if i % 5 == 0 else []
        content = " ".join(words).capitalize() + (" with " + " and ".join(entities) if entities else "") + "."
        created = start + timedelta(minutes=17 * i, microseconds=rnd.randint(0, 999_999))
        records.append({"content": content, "createdAt": created.isoformat().replace("+00:00", "Z"),
                        "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "source": "conversation",
                        "sourceThreadId": f"chat-{i // 10}", "sourceTurnId": f"turn-{i}", "entities": entities,
                        "state": "current", "supersededBy": None})
    for i in range(0, count - 1, superseded_every or count):  # every n-th memory superseded by the next one
        if superseded_every:
            records[i]["state"] = "superseded"
            records[i]["supersededBy"] = records[i + 1]["id"]
    return [json.dumps(r).encode() for r in records]


def call(server: MemchatServer, method: str, path: str, body: bytes | None = None,
         namespace: str = "bench") -> bytes:
    url = f"{server.url}/api/v1/memory{path}?namespace={namespace}"
    req = urllib.request.Request(url, data=body, method=method, headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/x-ndjson"})
    with urllib.request.urlopen(req, timeout=3600) as resp:
        return resp.read()


def import_all(server: MemchatServer, lines: list[bytes], batch: int, namespace: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result: dict = {}
    for start in range(0, len(lines), batch):
        result = json.loads(call(server, "POST", "/import", b"\n".join(lines[start:start + batch]), namespace))
    return time.perf_counter() - t0, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embedder", choices=["none", "local"], default="none")
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5000, help="records per import request")
    ap.add_argument("--superseded-every", type=int, default=0,
                    help="every n-th memory is superseded by the next one (0: none)")
    args = ap.parse_args()

    lines = generate(args.count, superseded_every=args.superseded_every)
    size_mb = sum(len(line) + 1 for line in lines) / 1e6
    env = {"MEMCHAT_API_KEYS": f"{KEY}=bench", "MEMCHAT_EMBEDDER": args.embedder,
           "MEMCHAT_MAINTENANCE_INTERVAL": "3600"}
    with tempfile.TemporaryDirectory(prefix="memchat-bench-import-") as tmp, \
            MemchatServer(Path(tmp), env=env) as server:
        # warm-up (loads the local model, opens the tables) in another namespace
        call(server, "POST", "/import", generate(20, seed=1)[0], namespace="warmup")
        took, result = import_all(server, lines, args.batch, "bench")
        assert result["total"] == args.count and result["unresolvedLinks"] == 0, result
        assert result["supersededLinks"] == (args.count // args.superseded_every if args.superseded_every else 0)
        again, result2 = import_all(server, lines, args.batch, "bench")
        assert result2["total"] == args.count, result2
        t0 = time.perf_counter()
        exported = call(server, "GET", "/export")
        export_took = time.perf_counter() - t0
        assert exported.count(b"\n") == args.count
    rows = [("import (empty namespace)", took), ("re-import (idempotent)", again), ("export", export_took)]
    links = args.count // args.superseded_every if args.superseded_every else 0
    print(f"embedder={args.embedder} memories={args.count} superseded={links} batch={args.batch} "
          f"body={size_mb:.1f} MB")
    print("| embedder | operation | memories | superseded | seconds | memories/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {args.embedder} | {name} | {args.count} | {links} | {seconds:.2f} | {args.count / seconds:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
