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
