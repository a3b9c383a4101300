"""Opt-in report of event-loop callbacks that run too long (``MEMCHAT_LOOP_SLOW_CALLBACK_MS``).

The loop-lag probe (``memchat_event_loop_lag_seconds``) says *that* the loop was late, not why: a wake-up
200 ms late may be one callback holding the loop for 200 ms, or a thousand short ones that all became ready
at once (a burst of new connections). asyncio's debug mode -- and uvloop's, which memchat runs on -- times
every callback it runs from the ready queue and logs ``Executing <handle> took 0.123 seconds`` on the
``asyncio`` logger for each one over ``loop.slow_callback_duration``. :func:`watch_slow_callbacks` turns that
on for the running loop and counts those reports into ``memchat_event_loop_slow_callbacks_seconds`` (one
observation per slow callback, its duration); the log lines stay, so an operator sees which callback it was.

This is a diagnostic, off by default: debug mode records a traceback for every handle the loop schedules, so
the server runs slower while it is on (callback durations measured under it are pessimistic).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

ASYNCIO_LOGGER = "asyncio"
_SLOW = re.compile(r"^Executing .* took (?P<seconds>[0-9.]+) seconds$", re.DOTALL)


class SlowCallbackCounter(logging.Filter):
    """A filter on the ``asyncio`` logger: every "Executing ... took N seconds" record is passed to
    ``observe(N)``; every record is let through."""

    def __init__(self, observe: Callable[[float], None]) -> None:
        super().__init__()
        self.observe = observe

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            match = _SLOW.match(record.getMessage())
            if match is not None:
                self.observe(float(match.group("seconds")))
        return True


def watch_slow_callbacks(threshold_ms: float, observe: Callable[[float], None],
                         loop: asyncio.AbstractEventLoop | None = None) -> Callable[[], None]:
    """Report the running loop's callbacks over ``threshold_ms`` to ``observe`` (seconds); returns the undo.

    Does nothing (and returns a no-op) when ``threshold_ms`` <= 0."""
    if threshold_ms <= 0:
        return lambda: None
    loop = loop or asyncio.get_running_loop()
    was_debug, was_threshold = loop.get_debug(), loop.slow_callback_duration
    counter = SlowCallbackCounter(observe)
    logger = logging.getLogger(ASYNCIO_LOGGER)
    logger.addFilter(counter)
    loop.slow_callback_duration = threshold_ms / 1000.0
    loop.set_debug(True)

    def undo() -> None:
        loop.set_debug(was_debug)
        loop.slow_callback_duration = was_threshold
        logger.removeFilter(counter)

    return undo
