"""What ``wsum`` does after fusion, in this order: the thread score (`app.memory.threads`), then each hit's
form prior (`app.memory.priors`: questions and very short memories lower) together with neighbour smoothing
(`app.memory.neighbours`: a hit's neighbours get their share of its score before the prior scales it).

Rows here are decoded hits (``{"id", "state", "memory"}``); the neighbours that no leg returned arrive as
raw rows and are decoded only if they make the first ``limit``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from app.memory import threads
from app.memory.context import thread_key
from app.memory.neighbours import smooth
from app.memory.priors import own_weight

Row = dict[str, Any]
Hit = tuple[Row, float]


class SearchConfig(Protocol):
    """The fields of `app.memory.search.SearchConfig` used here (that module imports this one)."""

    neighbour_weight: float
    thread_weight: float
    thread_top: int
    question_penalty: float
    short_penalty: float
    short_words: int


def thread_of(row: Row) -> str:
    return thread_key(row["memory"])


def own_weights(fused: Sequence[Hit], cfg: SearchConfig) -> dict[str, float] | None:
    if cfg.question_penalty <= 0 and cfg.short_penalty <= 0:
        return None
    return {r["id"]: own_weight(r["memory"].content, cfg.question_penalty, cfg.short_penalty, cfg.short_words)
            for r, _ in fused}


async def rescore(fused: list[Hit], cfg: SearchConfig, limit: int,
                  neighbourhood: Callable[[Sequence[str]], Awaitable[Any]] | None,
                  decode: Callable[[Row], Row], keep: Callable[[Row], bool] | None,
                  dense_only: Callable[[float], float]) -> list[Hit]:
    """The fused hits (best first) after the thread score, priors and neighbour smoothing; up to ``limit``.
    ``dense_only(cos)``: the fused score of a memory only the dense leg would have found (for neighbours)."""
    fused = threads.boost(fused, thread_of, cfg.thread_weight, cfg.thread_top)
    own = own_weights(fused, cfg)
    if cfg.neighbour_weight > 0 and neighbourhood is not None:
        return await smooth_neighbours(fused, cfg, limit, neighbourhood, decode, keep, own, dense_only)
    return scaled(fused, own)[:limit]


def scaled(fused: Sequence[Hit], own: dict[str, float] | None) -> list[Hit]:
    if not own:
        return list(fused)
    out = [(r, s * own.get(r["id"], 1.0)) for r, s in fused]
    out.sort(key=lambda h: (-h[1], h[0]["id"]))
    return out


async def smooth_neighbours(fused: list[Hit], cfg: SearchConfig, limit: int,
                            neighbourhood: Callable[[Sequence[str]], Awaitable[Any]],
                            decode: Callable[[Row], Row], keep: Callable[[Row], bool] | None,
                            own: dict[str, float] | None, dense_only: Callable[[float], float]) -> list[Hit]:
    """`app.memory.neighbours.smooth` over the fused hits. Only the best ``max(3 * limit, 20)`` hits look
    for neighbours (further down a hit cannot climb into the results); neighbours no leg returned are
    scored by their cosine as `fuse_wsum` would score them, and decoded only if they make the first
    ``limit`` (superseded ones are skipped when ``keep`` says so); ``own``: the priors (see `rescore`).
    Returns up to ``limit`` hits."""
    head = fused[:max(3 * limit, 20)]
    got = await neighbourhood([r["id"] for r, _ in head])
    if not got:
        return scaled(fused, own)[:limit]
    links, extra = got
    raw = {i: ({"id": i, "_raw": r}, dense_only(cos)) for i, (r, cos) in extra.items()}
    out: list[Hit] = []
    for row, score in smooth(fused, links, raw, cfg.neighbour_weight, own):
        if "_raw" in row:
            row = decode(row["_raw"])
            if keep is not None and not keep(row):
                continue
        out.append((row, score))
        if len(out) >= limit:
            break
    return out
