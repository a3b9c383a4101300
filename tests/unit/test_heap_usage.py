"""The allocator's own view of the C heap: real allocations through ctypes, glibc here and jemalloc in a child
process started with it preloaded."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.heap import find_jemalloc, jemalloc_active
from app.heap_usage import heap_usage

REPO_ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20

# Run in a child process: allocate 64 MiB with malloc in 4 KiB blocks, free it, report usage at each step.
_PROBE = """
import ctypes, json
from app.heap_usage import heap_usage
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = heap_usage()
blocks = [libc.malloc(4096) for _ in range(16384)]
sentinel = libc.malloc(64)   # above the blocks: the freed space cannot be handed back as the heap's top
held = heap_usage()
for block in blocks:
    libc.free(block)
after = heap_usage()
libc.free(sentinel)
print(json.dumps([before.allocator, before.in_use, held.in_use, after.in_use, after.free]))
"""


def _probe(env: dict[str, str]) -> list:
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_glibc_counts_what_is_allocated_and_what_is_freed_but_kept() -> None:
    if jemalloc_active():
        pytest.fail("this test process must run on glibc's malloc")
    allocator, before, held, after, free = _probe({"PATH": "/usr/bin:/bin"})
    assert allocator == "glibc"
    assert held - before >= 60 * MIB            # 16 384 blocks of 4 KiB (64 MiB) in use
    assert after - before < 8 * MIB             # freed again
    assert free >= 32 * MIB                     # below the mmap threshold: kept in the arena as free chunks


def test_jemalloc_reports_through_its_own_statistics() -> None:
    library = find_jemalloc()
    assert library, "libjemalloc.so.2 is missing: `make test` installs Debian's libjemalloc2"
    allocator, before, held, after, _ = _probe({"PATH": "/usr/bin:/bin", "LD_PRELOAD": library})
    assert allocator == "jemalloc"
    assert held - before >= 60 * MIB
    assert after - before < 8 * MIB


def test_usage_in_this_process_moves_with_a_live_allocation() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = heap_usage()
    block = libc.malloc(48 * MIB)   # above any mmap threshold: mapped, counted in use
    try:
        during = heap_usage()
    finally:
        libc.free(block)
    assert before is not None and during is not None
    assert during.in_use - before.in_use >= 48 * MIB
