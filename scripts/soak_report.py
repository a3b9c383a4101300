"""The "Soak" report of `scripts/soak.py` (markdown), apart from the load so that each file stays short."""

from __future__ import annotations

import argparse
from typing import Any

from bench_common import fmt, md_table, pct


def bucket_quantile(m: dict[str, float], name: str, q: float) -> float | None:
    """Upper bound of the histogram bucket holding quantile ``q`` (``inf`` past the last bucket)."""
    buckets = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in m.items()
                     if k.startswith(f"{name}_bucket{{"))
    total = buckets[-1][1] if buckets else 0
    return next((le for le, count in buckets if count >= q * total), None) if total else None


def heap(p: dict[str, Any]) -> str:
    """The server process's C heap as its allocator sees it (`memchat_heap_bytes`, sampled every 30 s)."""
    if "heap_in_use" not in p:  # samples from before the gauge
        return "—"
    return f"{p['heap_in_use']:.0f} / {p['heap_free']:.0f}"


def rounds_table(out: dict[str, Any]) -> str:
    """``--rounds``: RSS and commits after each round's hold and drain, round 1 from the main samples."""
    if not out["rounds"]:
        return ""
    by = {p["label"]: p for p in out["samples"]}
    first = [("1", out["load"].done, out["load"].errors(), by["end of hold (load end)"], out["samples"][-1])]
    rows = first + [(str(rd["round"]), rd["requests"], rd["errors"], rd["hold"], rd["idle"]) for rd in out["rounds"]]
    base = out["samples"][0]["rss"]
    table = md_table(["round", "requests", "errors", "RSS end of hold MiB", "RSS after the drain MiB",
                      "vs after warm-up", "of it: LanceDB caches MiB", "C heap in use / kept free MiB",
                      "given back by malloc_trim MiB (total)", "commits done (total)", "pending"],
                     [[r, n, e, f"{h['rss']:.0f}", f"{i['rss']:.0f}", f"{(i['rss'] - base) / base * 100:+.1f} %",
                       f"{i['store_cache']:.0f}", heap(i), f"{i.get('trimmed', 0):.0f}", f"{i['commits']:.0f}",
                       f"{i['pending']:.0f}"]
                      for r, n, e, h, i in rows])
    return (f"The same load {len(rows)} times on the same server (new conversations, same namespaces), each "
            f"followed by its drain; RSS after warm-up {base:.0f} MiB:\n\n{table}\n")


def report(args: argparse.Namespace, info: dict[str, Any], out: dict[str, Any]) -> str:
    load = out["load"]
    ms = lambda v: fmt(v * 1e3, 0)
    t1 = md_table(["surface", "clients", "requests ok", "errors", "latency p50 / p99 ms", "inter-chunk gap p50 / p99 ms"],
                  [[f"`{s}`", st.clients, st.ok, ", ".join(f"{k} {v}" for k, v in st.errors.most_common()) or "0",
                    f"{ms(pct(st.ttft, 50))} / {ms(pct(st.ttft, 99))} ({'response' if s == 'openai-json' else 'TTFT'})",
                    f"{ms(pct(st.gaps, 50))} / {ms(pct(st.gaps, 99))}" if st.gaps else "—"] for s, st in load.stats.items()])
    t2 = md_table(["point", "t (s)", "server RSS MiB", "of it: child processes", "LanceDB caches MiB",
                   "C heap in use / kept free MiB", "server cores",
                   "requests done", "errors", "commits done", "memories written", "event-loop tasks", "pending commits"],
                  [[p["label"], f"{p['t']:.0f}", f"{p['rss']:.0f}", f"{p['rss_children']:.0f}", f"{p['store_cache']:.0f}",
                    heap(p),
                    fmt(p["cores"], 2) if p["cores"] is not None else "",
                    p["done"], p["errors"], f"{p['commits']:.0f}", f"{p['memories']:.0f}", f"{p['tasks']:.0f}",
                    f"{p['pending']:.0f}"] for p in out["samples"]])
    cpu, ok = out["cpu"], sum(st.ok for st in load.stats.values())
    examples = "\n".join(f"- `{s}` {k}: {st.examples[k]}" for s, st in load.stats.items() for k in st.errors)
    vline = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if k != "litellm")
    checks = "\n".join(f"- {c}" for c in info["checks"])
    result = "**PASS**" if not info["failures"] else "**FAIL**: " + "; ".join(info["failures"])
    return f"""Measured {info['date']} with

```sh
{info['command']}
```

Versions: {vline}. Machine: {info['machine']}. memchat: 1 uvicorn worker, LanceDB in a temp dir,
`MEMCHAT_EMBEDDER={args.embedder}`, `MEMCHAT_EXTRACTOR=llm`, `MEMCHAT_COMMIT_AFTER={info["commit_after"]}` (idle commits,
extraction and memory writes run during the soak); {args.namespaces} namespaces seeded with {args.seed_memories}
memories each. Fake upstream: first token after 50 ms, then 30 tokens/s; OpenAI requests ask for 60-150 tokens,
personal chat and websocket get 100; extraction calls get valid JSON facts (two new ones every 10 calls).

{args.streams} closed-loop clients, a quarter per surface, started over {args.ramp:.0f} s; load held {args.duration:.0f} s,
then each client finished its current request (drain {out['drain']:.1f} s). Conversations of 1-4 turns in random
namespaces: OpenAI clients send the history back (half with their own `chat_id`, half resolved by transcript),
personal chat sends the `session_id`, websocket the `chat_id`. Latency = request sent → first content token
(`openai-json`: → full response), for requests started during the hold; gaps between content chunks of a stream.
{ok} requests answered ({ok / (args.ramp + args.duration + out['drain']):.1f}/s); {load.committed_events}
`memory_committed` events reached the websocket clients.

{t1}

{examples or 'No errors.'}

Server RSS (process tree; "child processes": the embedding model's worker), LanceDB's metadata and index
caches (`memchat_store_cache_bytes`), the server process's C heap as its allocator counts it (`memchat_heap_bytes`:
in use, and kept free -- resident or already trimmed; sampled every 30 s), and memchat's CPU seconds per wall second since the previous sample. Whole load:
memchat {cpu['procs'][info['mc_pid']] / cpu['wall']:.2f} cores, fake upstream {cpu['procs'][info['fake_pid']] / cpu['wall']:.2f},
client {cpu['client_cores']:.2f}, other processes {cpu['foreign_cores']:.2f}.

{t2}

{rounds_table(out)}
Peak RSS (VmHWM): {info['peak_rss']:.0f} MiB. RSS end of hold vs end of ramp (same load): {info['rss_growth']:+.1f} %
(limit {args.rss_growth:.0f} %). Load average at the end: {info['load_end']}.

Checks after the run:

{checks}

Result: {result}
"""
