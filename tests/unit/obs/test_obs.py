"""app.obs: metrics rendering, request ids, the log formats."""

from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import ConfigError, Settings
from app.obs.context import CURRENT, RequestInfo, accept_request_id, set_org
from app.obs.logs import JsonFormatter, RequestContextFilter, TextFormatter, configure_logging
from app.obs.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render()[0].decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_two_metrics_objects_do_not_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.commits.labels("done").inc()
    assert samples(a)[("memchat_commits_total", (("outcome", "done"),))] == 1
    assert samples(b)[("memchat_commits_total", (("outcome", "done"),))] == 0


def test_stream_meter_observes_once_per_stream() -> None:
    metrics = Metrics()
    meter = metrics.stream_meter("openai")
    assert metrics.stream_meter("openai") is meter  # children bound once
    meter.finished(10.0, 10.5, 10.501, chunks=7, usage={"completion_tokens": 12})
    meter.finished(20.0, None, None, chunks=0, usage=None, broken=True)  # refused before its first byte
    got = samples(metrics)
    assert got[("memchat_upstream_ttft_seconds_count", (("surface", "openai"),))] == 1
    assert got[("memchat_upstream_ttft_seconds_sum", (("surface", "openai"),))] == pytest.approx(0.5)
    assert got[("memchat_added_ttft_seconds_sum", (("surface", "openai"),))] == pytest.approx(0.001, abs=1e-6)
    assert got[("memchat_stream_chunks_total", (("surface", "openai"),))] == 7
    assert got[("memchat_stream_completion_tokens_total", (("surface", "openai"),))] == 12
    assert got[("memchat_upstream_errors_total", (("status", "stream"),))] == 1


def test_existing_metric_names_are_kept() -> None:
    names = {name for name, _ in samples(Metrics())}
    for name in ("memchat_conversations_pending", "memchat_commits_in_progress", "memchat_commits_running",
                 "memchat_commits_total", "memchat_memories_written_total", "memchat_commit_seconds_sum",
                 "memchat_commit_seconds_count", "memchat_turnlog_rows_written_total",
                 "memchat_turnlog_batches_written_total", "memchat_turnlog_flushes_total",
                 "memchat_turnlog_recovered_total", "memchat_event_loop_tasks"):
        assert name in names, name


@pytest.mark.parametrize(("raw", "kept"), [(b"abc-123", True), (b"a" * 128, True), (b"a" * 129, False),
                                           (b"has space", False), (b"tab\there", False), (b"\xc3\xa9", False),
                                           (b"", False), (None, False)])
def test_request_id_is_bounded_and_printable(raw: bytes | None, kept: bool) -> None:
    rid = accept_request_id(raw)
    if kept:
        assert rid == raw.decode()  # type: ignore[union-attr]
    else:
        assert len(rid) == 32 and rid != raw


def record(message: str = "hello", **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("memchat.test", logging.INFO, __file__, 1, message, (), None)
    rec.__dict__.update(extra)
    RequestContextFilter().filter(rec)
    return rec


def test_log_lines_carry_the_request_context() -> None:
    token = CURRENT.set(RequestInfo("rid-1", "openai"))
    try:
        set_org("org9")
        line = json.loads(JsonFormatter().format(record(status=200, duration_ms=1.5)))
        text = TextFormatter().format(record())
    finally:
        CURRENT.reset(token)
    assert line["request_id"] == "rid-1" and line["surface"] == "openai" and line["org_id"] == "org9"
    assert line["status"] == 200 and line["duration_ms"] == 1.5 and line["message"] == "hello"
    assert {"time", "level", "logger"} <= line.keys()
    assert "[rid-1]" in text and text.endswith("memchat.test [rid-1]: hello")
    outside = json.loads(JsonFormatter().format(record()))
    assert outside["request_id"] is None


def test_configure_logging_json_and_bad_format(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    try:
        configure_logging("json", "info")
        logging.getLogger("memchat.test").info("one line")
        assert json.loads(stream.getvalue().strip())["message"] == "one line"
        with pytest.raises(ValueError, match="log format"):
            configure_logging("xml")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_log_format_setting() -> None:
    assert Settings.from_env({}).server.log_format == "text"
    assert Settings.from_env({"MEMCHAT_LOG_FORMAT": "JSON"}).server.log_format == "json"
    with pytest.raises(ConfigError, match="MEMCHAT_LOG_FORMAT"):
        Settings.from_env({"MEMCHAT_LOG_FORMAT": "xml"})


async def test_store_calls_are_timed_only_with_metrics() -> None:
    from app.obs.metrics import timed_store_call

    class Store:
        def __init__(self, metrics: Metrics | None) -> None:
            self.metrics = metrics

        @timed_store_call("memory_search")
        async def search(self, x: int) -> int:
            return x * 2

    metrics = Metrics()
    assert await Store(metrics).search(2) == 4 and await Store(None).search(3) == 6
    assert metrics.registry.get_sample_value("memchat_store_call_duration_seconds_count",
                                             {"op": "memory_search"}) == 1


def test_dead_workers_live_gauges_are_dropped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    from app.obs.metrics import _forget_dead_workers

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    for name in (f"gauge_livesum_{dead}.db", f"gauge_livesum_{os.getpid()}.db", f"counter_{dead}.db"):
        (tmp_path / name).write_bytes(b"")
    _forget_dead_workers(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"gauge_livesum_{os.getpid()}.db",
                                                                 f"counter_{dead}.db"])  # counters stay
