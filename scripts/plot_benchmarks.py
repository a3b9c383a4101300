"""Draw the benchmark figures of docs/benchmarks.md from the results JSON files next to them (docs/img/).

    pip install -e '.[bench]'          # matplotlib: a benchmark-only dependency
    .venv/bin/python scripts/plot_benchmarks.py [--img docs/img]

Reads ``bench_proxy.json`` (written by ``scripts/bench_proxy.py``; the committed one is transcribed from
the doc, see its ``source``) and ``bench_retrieval.json`` (transcribed from the doc), and writes:

- ``proxy_ramp.png``: TTFT and inter-chunk gap (p50, p99) against concurrent streams, memchat beside the
  bare passthrough floor, the fake upstream direct and LiteLLM;
- ``proxy_cpu.png``: server CPU per streamed chunk (zero-delay upstream), memchat against the floor and
  LiteLLM;
- ``retrieval_recall.png``: recall@5 per question category per search configuration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STYLE = {"direct": ("#7f7f7f", ":"), "bare": ("#1f77b4", "--"), "memchat": ("#d62728", "-"),
         "LiteLLM": ("#9467bd", "-.")}


def _style(label: str) -> tuple[str, str]:
    for key, style in STYLE.items():
        if label.startswith(key):
            return style
    return ("#2ca02c", "-")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _save(plt: Any, fig: Any, data: dict[str, Any], out: Path, bottom: float = 0.04) -> None:
    """Where the numbers come from, in small print at the bottom; then the PNG."""
    source = data.get("source", "")
    fig.text(0.01, 0.01, source if len(source) < 170 else source[:167] + "...", fontsize=6, color="#555555")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(out)
    plt.close(fig)


def plot_ramp(data: dict[str, Any], out: Path) -> None:
    plt = _plt()
    fig, (ttft, gap) = plt.subplots(1, 2, figsize=(12, 4))
    for label, levels in data["ramp"].items():
        color, dash = _style(label)
        xs = [lv["streams"] for lv in levels]
        for ax, key in ((ttft, "ttft"), (gap, "gap")):
            ax.plot(xs, [lv[f"{key}_p99_ms"] for lv in levels], dash, color=color, marker="o", ms=3,
                    label=f"{label} p99")
            ax.plot(xs, [lv[f"{key}_p50_ms"] for lv in levels], dash, color=color, alpha=0.45, lw=1,
                    label=f"{label} p50")
    ttft.axhline(1000, color="black", lw=0.8, alpha=0.5)
    gap.axhline(100, color="black", lw=0.8, alpha=0.5)
    for ax, title in ((ttft, "time to first token (ms)"), (gap, "gap between chunks (ms)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent streams (30 tokens/s each)")
        ax.set_title(title)
    gap.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Concurrency ramp: latency against concurrency (line: the 'held' limit)")
    _save(plt, fig, data, out, bottom=0.03)


def plot_cpu(data: dict[str, Any], out: Path) -> None:
    plt = _plt()
    rows = [(label, r["us_per_chunk"]) for label, r in data["zero_delay"].items() if r.get("us_per_chunk")]
    fig, ax = plt.subplots(figsize=(8.5, 3.2))
    labels = [label for label, _ in rows]
    bars = ax.barh(labels, [v for _, v in rows], color=[_style(label)[0] for label in labels])
    ax.bar_label(bars, fmt="%.0f µs", fontsize=8, padding=3)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("server CPU per streamed chunk, µs (log scale; 50-token replies, per-request work in)")
    ax.set_title("CPU per chunk: memchat against the bare passthrough floor and LiteLLM")
    _save(plt, fig, data, out)


def plot_recall(data: dict[str, Any], out: Path) -> None:
    plt = _plt()
    cats = data["categories"]
    configs = data["r_at_5_by_category"]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(configs)
    for i, row in enumerate(configs):
        xs = [c + (i - (len(configs) - 1) / 2) * width for c in range(len(cats))]
        ax.bar(xs, [row["r_at_5"][c] or 0 for c in cats], width, label=row["config"])
    ax.set_xticks(range(len(cats)), cats)
    ax.set_ylim(0, 105)
    ax.set_ylabel("recall@5 (%)")
    ax.set_xlabel("question category")
    ax.set_title("Retrieval recall per question category, per configuration (test split)")
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    _save(plt, fig, data, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img", help="where the JSON files are and "
                        "the PNGs go")
    args = parser.parse_args(argv)
    drawn = []
    proxy = args.img / "bench_proxy.json"
    if proxy.exists():
        data = json.loads(proxy.read_text())
        plot_ramp(data, args.img / "proxy_ramp.png")
        plot_cpu(data, args.img / "proxy_cpu.png")
        drawn += ["proxy_ramp.png", "proxy_cpu.png"]
    retrieval = args.img / "bench_retrieval.json"
    if retrieval.exists():
        plot_recall(json.loads(retrieval.read_text()), args.img / "retrieval_recall.png")
        drawn.append("retrieval_recall.png")
    print(f"wrote {', '.join(drawn) or 'nothing (no results JSON)'} in {args.img}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
