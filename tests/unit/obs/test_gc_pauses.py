"""The garbage collector's pauses: a real ``gc.callbacks`` hook around real collections."""

from __future__ import annotations

import gc
import itertools

from prometheus_client.parser import text_string_to_metric_families

from app.obs.gc_pauses import GcPauses
from app.obs.metrics import Metrics


def test_a_full_collection_is_timed_with_its_generation() -> None:
    pauses = GcPauses()
    remove = pauses.install()
    try:
        gc.collect(2)
    finally:
        remove()
    seen: list[tuple[int, float]] = []
    assert pauses.drain(lambda generation, seconds: seen.append((generation, seconds))) >= 1
    assert (2, ) in {(generation, ) for generation, _ in seen}
    assert all(seconds >= 0 for _, seconds in seen)
    assert pauses.drain(lambda *_: seen.append((-1, 0.0))) == 0  # drained once


def test_removed_hook_records_nothing() -> None:
    pauses = GcPauses()
    pauses.install()()
    gc.collect(1)
    assert pauses.recorded == 0
    assert pauses not in gc.callbacks


def test_duration_is_stop_minus_start_on_the_clock() -> None:
    ticks = itertools.count(start=10.0, step=0.125)
    pauses = GcPauses(clock=lambda: next(ticks))
    pauses("start", {"generation": 1})
    pauses("stop", {"generation": 1, "collected": 0, "uncollectable": 0})
    seen: list[tuple[int, float]] = []
    pauses.drain(lambda generation, seconds: seen.append((generation, seconds)))
    assert seen == [(1, 0.125)]


def test_a_stop_without_its_start_is_not_timed() -> None:
    """Added while another thread's pass ran: that pass's end has no start to measure from."""
    pauses = GcPauses(clock=lambda: 1000.0)
    pauses("stop", {"generation": 2})
    assert pauses.recorded == 0
    pauses("start", {"generation": 0})
    pauses("stop", {"generation": 0})
    pauses("stop", {"generation": 1})   # a second stop does not reuse the first start
    seen: list[tuple[int, float]] = []
    pauses.drain(lambda generation, seconds: seen.append((generation, seconds)))
    assert seen == [(0, 0.0)]


def test_pauses_past_the_limit_between_drains_are_dropped_and_counted() -> None:
    pauses = GcPauses(limit=2)
    for generation in (0, 1, 2):
        pauses("start", {"generation": generation})
        pauses("stop", {"generation": generation})
    seen: list[int] = []
    assert pauses.drain(lambda generation, _: seen.append(generation)) == 2
    assert seen == [1, 2]          # the oldest went
    assert pauses.dropped == 1


def test_pauses_reach_the_histogram_by_generation() -> None:
    metrics = Metrics()
    pauses = GcPauses()
    pauses("start", {"generation": 2})
    pauses("stop", {"generation": 2})
    pauses.drain(metrics.observe_gc_pause)
    text = metrics.render()[0].decode()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "memchat_gc_pause_seconds")
    counts = {s.labels["generation"]: s.value for s in family.samples if s.name.endswith("_count")}
    assert counts == {"0": 0.0, "1": 0.0, "2": 1.0}


def test_a_long_pause_is_logged_and_a_short_one_only_counted(caplog) -> None:
    from types import SimpleNamespace

    from app.services import LONG_GC_PAUSE, Services

    holder = SimpleNamespace(metrics=Metrics())
    with caplog.at_level("WARNING", logger="memchat.services"):
        Services._observe_gc_pause(holder, 0, LONG_GC_PAUSE / 10)
        Services._observe_gc_pause(holder, 2, LONG_GC_PAUSE * 3)
    assert [r.getMessage() for r in caplog.records] == [
        f"garbage collection of generation 2 took {LONG_GC_PAUSE * 3:.3f} s (the thread that allocated waited)"]
    text = holder.metrics.render()[0].decode()
    assert 'memchat_gc_pause_seconds_count{generation="0"} 1.0' in text
    assert 'memchat_gc_pause_seconds_count{generation="2"} 1.0' in text
