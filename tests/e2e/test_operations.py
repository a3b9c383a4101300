"""Operating memchat: one scrape of /metrics covers every worker, request ids end to end, JSON logs."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app.testkit import REPO_ROOT, FakeUpstream, MemchatServer
from tests.conftest import API_KEYS, KEY_ORG1

H1 = {"Authorization": f"Bearer {KEY_ORG1}"}
CHAT = {"model": "fake-gpt", "messages": [{"role": "user", "content": "hello there"}], "stream": True}


def env_for(fake: FakeUpstream, **extra: str) -> dict[str, str]:
    return {"MEMCHAT_UPSTREAM_BASE_URL": fake.base_url, "MEMCHAT_UPSTREAM_API_KEY": "x",
            "MEMCHAT_API_KEYS": API_KEYS, "MEMCHAT_EMBEDDER": "none", **extra}


def openai_requests(families: list) -> float:
    return sum(s.value for f in families if f.name == "memchat_http_requests" for s in f.samples
               if s.name == "memchat_http_requests_total" and s.labels["surface"] == "openai")


def served_by(multiproc_dir: Path) -> dict[str, float]:
    """OpenAI-surface requests per worker file, read from the multiprocess directory (not through /metrics)."""
    out: dict[str, float] = {}
    for path in glob.glob(str(multiproc_dir / "counter_*.db")):
        out[os.path.basename(path)] = openai_requests(list(MultiProcessCollector.merge([path])))
    return out


def test_one_scrape_covers_both_workers(tmp_path: Path, clean_fake: FakeUpstream) -> None:
    clean_fake.add_rule(match="hello there", tokens=5, token_delay=0.05)
    data = tmp_path / "data"
    with MemchatServer(data, env=env_for(clean_fake), workers=2) as srv:
        multiproc = data / "prometheus-multiproc"
        assert multiproc.is_dir()
        sent = 0

        def one(_: int) -> int:
            resp = httpx2.post(f"{srv.url}/v1/chat/completions", json=CHAT, headers=H1, timeout=30)
            return resp.status_code

        # Which worker accepts a connection is the kernel's choice (an idle worker's accept loop may take a
        # whole burst): keep sending, in bursts and one by one with pauses, until both have served some.
        deadline = time.monotonic() + 90
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline:
                statuses = list(pool.map(one, range(8)))
                assert statuses == [200] * 8
                sent += 8
                if sum(1 for n in served_by(multiproc).values() if n > 0) >= 2:
                    break
                for _ in range(4):
                    assert one(0) == 200
                    sent += 1
                    time.sleep(0.05)
                if sum(1 for n in served_by(multiproc).values() if n > 0) >= 2:
                    break
        per_worker = served_by(multiproc)
        assert sum(1 for n in per_worker.values() if n > 0) >= 2, per_worker
        families = list(text_string_to_metric_families(httpx2.get(f"{srv.url}/metrics", timeout=10).text))
        assert openai_requests(families) == sent
        names = {f.name for f in families}
        for name in ("memchat_http_request_duration_seconds", "memchat_upstream_ttft_seconds",
                     "memchat_added_ttft_seconds", "memchat_stream_chunks", "memchat_commits",
                     "memchat_conversations_pending", "memchat_turnlog_rows_written"):
            assert name in names, name
        ttft = next(f for f in families if f.name == "memchat_upstream_ttft_seconds")
        count = sum(s.value for s in ttft.samples if s.name.endswith("_count") and s.labels["surface"] == "openai")
        assert count == sent
        rows = next(f for f in families if f.name == "memchat_turnlog_rows_written")
        assert sum(s.value for s in rows.samples if s.name.endswith("_total")) == sent
        # a gauge reports one figure for the server, not one per worker
        pending = next(f for f in families if f.name == "memchat_conversations_pending")
        assert len(pending.samples) == 1 and "pid" not in pending.samples[0].labels
        cache = next(f for f in families if f.name == "memchat_store_cache_bytes")  # LanceDB's caches, both workers
        assert len(cache.samples) == 1 and 0 < cache.samples[0].value <= 2 * (64 + 1024) << 20


def test_request_id_travels_and_is_logged(tmp_path: Path, clean_fake: FakeUpstream) -> None:
    env = env_for(clean_fake, MEMCHAT_LOG_FORMAT="json")
    with MemchatServer(tmp_path / "data", env=env, log_level="info") as srv:
        resp = httpx2.post(f"{srv.url}/v1/chat/completions", json=CHAT, headers={**H1, "x-request-id": "rid-abc.123"},
                           timeout=30)
        assert resp.status_code == 200 and resp.headers["x-request-id"] == "rid-abc.123"
        upstream = clean_fake.requests("/chat/completions")[-1]
        assert upstream["headers"].get("x-request-id") == "rid-abc.123"
        # an unusable id (spaces, too long) is replaced; every response carries one, errors too
        for bad in ("has spaces", "x" * 200):
            resp = httpx2.get(f"{srv.url}/v1/models", headers={"x-request-id": bad})
            assert resp.status_code == 401 and resp.headers["x-request-id"] not in (bad, "")
        missing = httpx2.get(f"{srv.url}/no/such/route")
        assert missing.status_code == 404 and len(missing.headers["x-request-id"]) == 32
        srv.stop()
        lines = [json.loads(line) for line in srv.log_text().splitlines() if line.startswith("{")]
    access = [x for x in lines if x["logger"] == "memchat.access" and x["request_id"] == "rid-abc.123"]
    assert len(access) == 1, lines[-10:]
    line = access[0]
    assert line["status"] == 200 and line["surface"] == "openai" and line["org_id"] == "org1"
    assert line["path"] == "/v1/chat/completions" and line["duration_ms"] > 0
    assert {"time", "level", "message"} <= line.keys()
    assert not any(KEY_ORG1 in json.dumps(x) for x in lines)  # never a key
    assert any(x["logger"] == "memchat.access" and x["status"] == 404 for x in lines)


def test_websocket_handshake_returns_the_request_id(server: MemchatServer) -> None:
    from websockets.sync.client import connect

    url = server.url.replace("http://", "ws://") + "/ws/chat"
    with connect(url, additional_headers={**H1, "x-request-id": "ws-rid-1"}) as socket:
        assert socket.response.headers["x-request-id"] == "ws-rid-1"
        assert json.loads(socket.recv(timeout=10))["type"] == "ready"


def test_bad_log_format_is_a_clear_startup_error(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MEMCHAT_LOG_FORMAT": "xml"}
    done = subprocess.run([sys.executable, "-m", "app", "serve", "--data-dir", str(tmp_path / "d"), "--port", "1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "MEMCHAT_LOG_FORMAT must be one of ['json', 'text'], got 'xml'" in done.stderr


def test_the_event_loop_lag_probe_reports(server: MemchatServer) -> None:
    """The probe observes about four times a second from start-up on; nothing here blocks the loop."""
    import time

    deadline = time.monotonic() + 10
    count = 0.0
    while time.monotonic() < deadline and count < 4:
        families = text_string_to_metric_families(httpx2.get(f"{server.url}/metrics", timeout=10).text)
        lag = next(f for f in families if f.name == "memchat_event_loop_lag_seconds")
        count = next(s.value for s in lag.samples if s.name.endswith("_count"))
        time.sleep(0.5)
    assert count >= 4
    assert any(s.name.endswith("_bucket") and s.labels["le"] == "+Inf" for s in lag.samples)


def test_garbage_collections_are_timed_by_generation(server: MemchatServer) -> None:
    """The start-up's own full collection (before the freeze) is timed as generation 2; serving requests
    allocates, so young collections follow, each counted under its generation."""
    import time

    def counts() -> dict[str, float]:
        families = text_string_to_metric_families(httpx2.get(f"{server.url}/metrics", timeout=10).text)
        hist = next(f for f in families if f.name == "memchat_gc_pause_seconds")
        return {s.labels["generation"]: s.value for s in hist.samples if s.name.endswith("_count")}

    deadline = time.monotonic() + 10
    while counts()["2"] < 1 and time.monotonic() < deadline:  # drained within a probe period (0.25 s)
        time.sleep(0.2)
    before = counts()
    assert set(before) == {"0", "1", "2"}
    assert before["2"] >= 1
    sent = 0
    while counts()["0"] <= before["0"] and sent < 200:    # net allocations decide when one runs
        assert httpx2.post(f"{server.url}/v1/chat/completions", json=CHAT, headers=H1, timeout=30).status_code == 200
        sent += 1
        time.sleep(0.05)
    after = counts()
    assert after["0"] > before["0"], f"no young collection after {sent} requests"
    assert all(after[g] >= before[g] for g in after)


def test_the_c_heap_is_reported_in_use_and_free(server: MemchatServer) -> None:
    """The server samples its allocator from start-up on: the program's C heap in use (LanceDB, Arrow, the
    interpreter's own allocations) is tens of MiB at least; what glibc keeps free is a number, maybe small."""
    import time

    deadline = time.monotonic() + 10
    states: dict[str, float] = {}
    while len(states) < 2 and time.monotonic() < deadline:  # the first sample is taken in a thread at start-up
        families = text_string_to_metric_families(httpx2.get(f"{server.url}/metrics", timeout=10).text)
        heap = next(f for f in families if f.name == "memchat_heap_bytes")
        states = {s.labels["state"]: s.value for s in heap.samples}
        time.sleep(0.1)
    assert set(states) == {"in_use", "free"}
    assert states["in_use"] > 10 * (1 << 20)
    assert states["free"] >= 0


def test_slow_callback_report_counts_callbacks_over_the_threshold(tmp_path: Path, clean_fake: FakeUpstream) -> None:
    """``MEMCHAT_LOOP_SLOW_CALLBACK_MS`` turns on the report in the real server (uvloop): with a threshold of
    1 µs every callback that does real work is over it, so serving requests must be counted and logged; without
    the setting nothing is counted."""
    def slow_count(url: str) -> float:
        families = text_string_to_metric_families(httpx2.get(f"{url}/metrics", timeout=10).text)
        hist = next(f for f in families if f.name == "memchat_event_loop_slow_callbacks_seconds")
        return next(s.value for s in hist.samples if s.name.endswith("_count"))

    for setting, expect_some in (("0.001", True), (None, False)):
        extra = {"MEMCHAT_LOOP_SLOW_CALLBACK_MS": setting} if setting else {}
        with MemchatServer(tmp_path / f"data-{setting}", env=env_for(clean_fake, **extra)) as srv:
            for _ in range(3):
                assert httpx2.post(f"{srv.url}/v1/chat/completions", json=CHAT, headers=H1, timeout=30).status_code == 200
            count = slow_count(srv.url)
            srv.stop()
            logged = "took" in srv.log_text() and "Executing" in srv.log_text()
        assert (count > 0, logged) == (expect_some, expect_some), (setting, count)


@pytest.mark.parametrize("allocator", [None, "jemalloc"])
def test_jemalloc_allocator_reaches_every_worker(tmp_path: Path, clean_fake: FakeUpstream,
                                                 allocator: str | None) -> None:
    """With the library installed, the default (``MEMCHAT_ALLOCATOR`` unset: ``auto``) and ``jemalloc``:
    ``memchat serve`` starts itself again with jemalloc preloaded, same pid; the supervisor and both uvicorn
    workers run on it, the server answers, and glibc's idle trim stands down. The control,
    ``MEMCHAT_ALLOCATOR=system``, runs on the system's malloc and trims once quiet."""
    from app.heap import JEMALLOC_CONF, find_jemalloc

    assert find_jemalloc(), "libjemalloc.so.2 is missing: `make test` installs Debian's libjemalloc2"

    def children(pid: int) -> list[int]:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def trims(url: str) -> float:
        families = text_string_to_metric_families(httpx2.get(f"{url}/metrics", timeout=10).text)
        hist = next(f for f in families if f.name == "memchat_heap_trim_seconds")
        return sum(s.value for s in hist.samples if s.name.endswith("_count"))

    quick_trim = {"MEMCHAT_MALLOC_TRIM_IDLE": "0.2"}
    with MemchatServer(tmp_path / "data2", env=env_for(clean_fake, MEMCHAT_ALLOCATOR="system", **quick_trim)) as srv:
        assert "libjemalloc" not in Path(f"/proc/{srv.pid}/maps").read_text()
        assert httpx2.post(f"{srv.url}/v1/chat/completions", json=CHAT, headers=H1, timeout=30).status_code == 200
        started = time.monotonic()
        while not trims(srv.url) and time.monotonic() - started < 20:
            time.sleep(0.1)
        took = time.monotonic() - started
        assert trims(srv.url) >= 1
    env = env_for(clean_fake, **({"MEMCHAT_ALLOCATOR": allocator} if allocator else {}), **quick_trim)
    with MemchatServer(tmp_path / "data", env=env, workers=2) as srv:
        for _ in range(4):
            resp = httpx2.post(f"{srv.url}/v1/chat/completions", json=CHAT, headers=H1, timeout=30)
            assert resp.status_code == 200
        deadline = time.monotonic() + 30
        while len(workers := children(srv.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) >= 2, workers
        for pid in [srv.pid, *workers]:
            assert "libjemalloc.so.2" in Path(f"/proc/{pid}/maps").read_text(), pid
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"MALLOC_CONF={JEMALLOC_CONF}".encode() in environ, pid
        time.sleep(max(1.0, 3 * took))  # three times what the control needed to trim
        assert trims(srv.url) == 0
