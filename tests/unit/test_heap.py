"""The server process's glibc mmap threshold can be fixed (`app.heap`): large buffers freed go back to the OS.

Whether glibc served a block with a mapping of its own is read from the block's header (the IS_MMAPPED bit
of the size word before the pointer), in a fresh interpreter each time: in a used heap a free chunk may serve
a large block whatever the threshold. Before: a 16 MiB block freed raises glibc's dynamic threshold, and a 1 MiB block then comes from
the heap. After `fix_mmap_threshold(128)`: the same 1 MiB block is mapped."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from app.config import Settings
from app.heap import fix_mmap_threshold, operator_chose
from app.testkit import REPO_ROOT
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

PROBE = r"""
import ctypes, ctypes.util, json, sys
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mapped(size):
    p = libc.malloc(size)
    flag = bool(ctypes.c_size_t.from_address(p - 8).value & 2)
    libc.free(p)
    return flag

big = libc.malloc(16 << 20); libc.free(big)      # glibc now serves blocks up to 16 MiB from its heaps
before = mapped(1 << 20)
sys.path.insert(0, sys.argv[1])
from app.heap import fix_mmap_threshold
changed = fix_mmap_threshold(int(sys.argv[2]))
big = libc.malloc(16 << 20); libc.free(big)      # no longer raises the threshold
print(json.dumps({"before": before, "changed": changed, "after": mapped(1 << 20)}))
"""


def probe(threshold_kb: int, **env: str) -> dict[str, bool]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(REPO_ROOT), str(threshold_kb)], capture_output=True,
                          text=True, timeout=60, env={**clean, **env}, check=True)
    return json.loads(done.stdout)


def test_a_fixed_threshold_maps_large_blocks_again() -> None:
    assert probe(128) == {"before": False, "changed": True, "after": True}


def test_zero_leaves_glibc_dynamic_threshold() -> None:
    assert probe(0) == {"before": False, "changed": False, "after": False}


def test_the_operators_choice_wins() -> None:
    # the operator fixed the threshold at 32 MiB: a 1 MiB block stays in the heap, memchat does not override it
    assert probe(128, MALLOC_MMAP_THRESHOLD_=str(32 << 20)) == {"before": False, "changed": False, "after": False}
    assert operator_chose({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
    assert not operator_chose({"GLIBC_TUNABLES": "glibc.rtld.nns=2"})
    assert not fix_mmap_threshold(128, env={"MALLOC_MMAP_THRESHOLD_": "4096"})


def test_setting_from_the_environment() -> None:
    assert Settings.from_env({}).server.malloc_mmap_threshold_kb == 0
    assert Settings.from_env({"MEMCHAT_MALLOC_MMAP_THRESHOLD_KB": "128"}).server.malloc_mmap_threshold_kb == 128
    from app.config import ConfigError
    with pytest.raises(ConfigError, match="MEMCHAT_MALLOC_MMAP_THRESHOLD_KB"):
        Settings.from_env({"MEMCHAT_MALLOC_MMAP_THRESHOLD_KB": "-1"})


async def test_the_server_process_fixes_its_threshold_at_start(tmp_path: Path, monkeypatch, caplog) -> None:
    """`Services.start` calls it (its effect is the probe's above: in this process's used heap a free chunk may
    serve a large block whatever the threshold, so the log line is what is checked here)."""
    import logging

    from app.services import Services

    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    for value, expected in (("256", ["heap: glibc's mmap threshold fixed at 256 KiB"]), ("0", [])):
        caplog.clear()
        settings = Settings.from_env({"MEMCHAT_DATA_DIR": str(tmp_path / value), "MEMCHAT_EMBEDDER": "none",
                                      "MEMCHAT_MALLOC_MMAP_THRESHOLD_KB": value})
        with caplog.at_level(logging.INFO, logger="memchat.heap"):
            async with AsyncExitStack() as stack:
                await Services.start(settings, stack)
        assert [r.getMessage() for r in caplog.records if r.name == "memchat.heap"] == expected


def test_freeze_startup_objects_moves_the_live_objects_out_of_the_collectors_passes() -> None:
    import gc

    from app.heap import freeze_startup_objects

    from app.heap import FULL_COLLECTION_EVERY

    gc.unfreeze()
    thresholds = gc.get_threshold()
    try:
        alive = [{"a": 1} for _ in range(1000)]
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() and frozen > len(alive)
        assert not any(o is alive for o in gc.get_objects())  # no generation holds it any more
        assert gc.get_threshold() == (*thresholds[:2], FULL_COLLECTION_EVERY) != thresholds
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_the_app_freezes_its_start_up_objects_in_its_lifespan(tmp_path: Path) -> None:
    import gc

    from litestar.testing import AsyncTestClient

    from app.main import create_app

    gc.unfreeze()
    thresholds = gc.get_threshold()
    settings = Settings.from_env({"MEMCHAT_DATA_DIR": str(tmp_path), "MEMCHAT_EMBEDDER": "none"})
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


TRIM_PROBE = r"""
import ctypes, ctypes.util, json, sys, threading
sys.path.insert(0, sys.argv[1])
from app.heap import release_free_memory, resident_bytes
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def churn():  # what LanceDB's threads do: many small blocks in a thread's own arena, most freed, a few kept
    blocks = [libc.malloc(512) for _ in range(200_000)]
    for p in blocks:
        libc.memset(p, 1, 512)
    for k, p in enumerate(blocks):
        if k % 64:
            libc.free(p)

worker = threading.Thread(target=churn); worker.start(); worker.join()
before = resident_bytes()
done = release_free_memory()
print(json.dumps({"done": done, "before": before, "after": resident_bytes()}))
"""


def test_release_free_memory_gives_a_threads_freed_blocks_back() -> None:
    """~100 MiB written in 512-byte blocks by a thread, 63 of 64 freed: glibc keeps the pages (a kept block
    sits in every few pages, nothing at an arena's top is free), until `release_free_memory` returns them."""
    done = subprocess.run([sys.executable, "-c", TRIM_PROBE, str(REPO_ROOT)], capture_output=True, text=True,
                          timeout=60, check=True)
    seen = json.loads(done.stdout)
    assert seen["done"] is True
    assert seen["before"] - seen["after"] > 40 << 20, seen


async def test_a_quiet_process_is_trimmed_once_per_quiet_spell_in_a_worker_thread() -> None:
    import threading

    import anyio

    from app.heap import HeapTrimmer

    work = {"done": 0}
    names: list[str] = []
    trimmed = anyio.Event()

    def observe(seconds: float, released: int) -> None:
        assert seconds >= 0 and released >= 0
        names.append(threading.current_thread().name)
        trimmed.set()

    trimmer = HeapTrimmer(0.02, lambda: work["done"], observe=observe)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(trimmer.run)
            await trimmed.wait()
            await anyio.sleep(0.3)  # still quiet: ~15 looks, no second trim
            assert trimmer.trims == 1
            trimmed = anyio.Event()
            work["done"] += 1  # work happened, then quiet again: one more trim
            await trimmed.wait()
            tg.cancel_scope.cancel()
    assert trimmer.trims == 2
    assert threading.main_thread().name not in names


@pytest.mark.parametrize("busy", ["in flight", "work at every look"])
async def test_a_busy_process_is_not_trimmed(busy: str) -> None:
    import itertools

    import anyio

    from app.heap import HeapTrimmer

    looks = itertools.count()
    activity = (lambda: None) if busy == "in flight" else (lambda: next(looks))
    trimmer = HeapTrimmer(0.02, activity, observe=lambda *_: pytest.fail("trimmed while busy"))
    async with anyio.create_task_group() as tg:
        await tg.start(trimmer.run)
        await anyio.sleep(0.4)
        tg.cancel_scope.cancel()
    assert trimmer.trims == 0
    if busy != "in flight":
        assert next(looks) >= 5  # it did look


async def test_a_zero_idle_time_never_trims() -> None:
    import anyio

    from app.heap import HeapTrimmer

    trimmer = HeapTrimmer(0, lambda: 0, observe=lambda *_: pytest.fail("trimmed"))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(trimmer.run)
    assert trimmer.trims == 0


def test_trim_idle_time_from_the_environment() -> None:
    from app.config import ConfigError

    assert Settings.from_env({}).server.malloc_trim_idle == 10.0
    assert Settings.from_env({"MEMCHAT_MALLOC_TRIM_IDLE": "0"}).server.malloc_trim_idle == 0.0
    with pytest.raises(ConfigError, match="MEMCHAT_MALLOC_TRIM_IDLE"):
        Settings.from_env({"MEMCHAT_MALLOC_TRIM_IDLE": "-5"})


async def test_requests_in_flight_count_as_work_and_probes_do_not() -> None:
    from app.api.observe import Observe
    from app.obs.metrics import Metrics

    metrics = Metrics(registry=CollectorRegistry())
    seen: list[int] = []

    async def app(scope, receive, send) -> None:
        seen.append(metrics.requests_in_flight)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message) -> None:
        pass

    observe = Observe(app, metrics, access_log=False)
    for path in ("/v1/chat/completions", "/metrics", "/healthz", "/api/memories"):
        await observe({"type": "http", "path": path, "method": "GET", "headers": []}, None, send)
    assert seen == [1, 0, 0, 1]
    assert (metrics.requests_started, metrics.requests_in_flight) == (2, 0)


async def test_the_server_trims_its_heap_when_quiet_and_reports_it(tmp_path: Path) -> None:
    """Scraping /metrics is not work: the idle server trims once, then again after a request."""
    import anyio
    from litestar.testing import AsyncTestClient

    from app.api.observe import Observe
    from app.main import create_app

    settings = Settings.from_env({"MEMCHAT_DATA_DIR": str(tmp_path), "MEMCHAT_EMBEDDER": "none",
                                  "MEMCHAT_MALLOC_TRIM_IDLE": "0.05"})

    async def trims_reach(client: AsyncTestClient, wanted: int) -> str:
        with anyio.fail_after(10):
            while True:
                text = (await client.get("/metrics")).text
                count = next(float(line.split()[-1]) for line in text.splitlines()
                             if line.startswith("memchat_heap_trim_seconds_count"))
                if count >= wanted:
                    return text
                await anyio.sleep(0.05)

    app = create_app(settings)
    async with AsyncTestClient(Observe(app, app.state.metrics, access_log=False)) as client:  # as uvicorn runs it
        await trims_reach(client, 1)
        assert (await client.get("/v1/models")).status_code in (200, 401)
        text = await trims_reach(client, 2)
        assert "memchat_heap_released_bytes_total" in text
