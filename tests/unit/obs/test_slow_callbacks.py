"""The opt-in slow-callback report: real event loops (asyncio's and uvloop's), real callbacks that block."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import uvloop

from app.config import Settings
from app.obs.slow_callbacks import SlowCallbackCounter, watch_slow_callbacks

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _run(new_loop, coro_fn):
    loop = new_loop()
    try:
        return loop.run_until_complete(coro_fn(loop))
    finally:
        loop.close()


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_a_callback_over_the_threshold_is_observed_and_a_short_one_is_not(kind: str) -> None:
    seen: list[float] = []

    async def main(loop: asyncio.AbstractEventLoop) -> bool:
        undo = watch_slow_callbacks(30, seen.append)
        done = asyncio.Event()
        loop.call_soon(lambda: None)                    # short: not reported
        loop.call_soon(lambda: (time.sleep(0.08), done.set()))  # holds the loop for 80 ms
        await done.wait()
        await asyncio.sleep(0)
        undo()
        return loop.get_debug()

    debug_after = _run(LOOPS[kind], main)
    assert len(seen) == 1 and 0.07 <= seen[0] < 5.0
    assert debug_after is False  # undo restores the loop


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_off_by_default_changes_nothing(kind: str) -> None:
    seen: list[float] = []

    async def main(loop: asyncio.AbstractEventLoop) -> tuple[bool, float]:
        before = loop.slow_callback_duration
        watch_slow_callbacks(0, seen.append)
        loop.call_soon(time.sleep, 0.06)
        await asyncio.sleep(0.01)
        return loop.get_debug(), before - loop.slow_callback_duration

    debug, changed = _run(LOOPS[kind], main)
    assert (debug, changed, seen) == (False, 0.0, [])


def test_the_filter_reads_only_slow_callback_reports_and_lets_every_record_through() -> None:
    seen: list[float] = []
    f = SlowCallbackCounter(seen.append)

    def rec(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("asyncio", level, __file__, 1, msg, args, None)

    assert f.filter(rec("Executing %s took %.3f seconds", "<Handle cb()>", 0.25))
    assert f.filter(rec("Executing %s took %.3f seconds", "<Task\nwith newline>", 1.5))
    assert f.filter(rec("Task was destroyed but it is pending!"))
    assert f.filter(rec("Executing %s took %.3f seconds", "<Handle>", 0.3, level=logging.DEBUG))
    assert seen == [0.25, 1.5]


def test_setting_from_the_environment() -> None:
    assert Settings.from_env({}).server.loop_slow_callback_ms == 0.0
    assert Settings.from_env({"MEMCHAT_LOOP_SLOW_CALLBACK_MS": "50"}).server.loop_slow_callback_ms == 50.0
