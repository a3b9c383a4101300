"""The server process's C heap: jemalloc in place of glibc's malloc (by default when it is installed), freed memory
handed back to the OS on glibc (`HeapTrimmer`), an opt-in fixed glibc mmap threshold, and the garbage collector's
start-up freeze.

**Trimming.** LanceDB and Arrow allocate and free with glibc's ``malloc`` from many threads (the tokio runtime,
anyio's worker threads), so the freed memory is spread over up to 8 arenas per core, and glibc gives back only
what lies at the top of an arena. Under the 300-stream soak the server's arenas held ~220 MiB free after a
round's commit drain (``mallinfo2``: in use ~200 MiB, free ~216), and ``malloc_trim(0)`` -- which returns the
free pages inside every arena with ``MADV_DONTNEED`` -- gave back ~120 MiB of RSS at once (docs/benchmarks.md,
"Memory under the soak"). Trimming every 60 s *under load* did not stop RSS from growing round after round and
the third round answered fewer requests, so `HeapTrimmer` trims only once the process has gone quiet: no request
in flight, no commit running, nothing new for ``MEMCHAT_MALLOC_TRIM_IDLE`` seconds (10; 0: never), once per
quiet spell, in a worker thread, off the event loop; what each call released and how long it took are in
``/metrics``.

**jemalloc (the default where installed).** Trimming gives back what is free; it does not stop glibc's heap from
growing. In isolation (one table, caches bounded) LanceDB's compaction -- not the appends, reads, indexes or
version cleanup -- leaves glibc's heap ~25-45 MiB larger per 1 500 one-row writes compacted every 32, and closing
the table and its connection does not give it back: memory fragmented by the allocator, not held by LanceDB. The
same work preloaded with jemalloc stays flat after its first round (``scripts/bench_heap_growth.py``), and in the
soak every jemalloc run answered more and grew less than every glibc run (docs/benchmarks.md, "Soak, repeated").
So ``memchat serve`` starts itself again with ``libjemalloc.so.2`` in ``LD_PRELOAD`` (Debian/Ubuntu:
``apt install libjemalloc2``) and ``MALLOC_CONF`` set to return freed pages after a second (`JEMALLOC_CONF`,
unless the operator set ``MALLOC_CONF``); the uvicorn workers and the embedding worker inherit it.
``MEMCHAT_ALLOCATOR``: ``auto`` (the default) does so when the library is found and the operator preloads no
allocator of their own, else runs on the system's malloc and says so in the log; ``jemalloc`` requires it (a
start-up error without it); ``system`` never. With jemalloc the glibc-only settings (trimming, the mmap
threshold) do nothing and are skipped.

**The mmap threshold (opt-in).**

glibc's malloc serves a request of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB to start with) with a
mapping of its own, unmapped again on ``free``; smaller ones come from its heaps, whose freed space mostly
stays with the process. The threshold is *dynamic*: each time a mapped block is freed, glibc raises the
threshold to that block's size (up to 32 MiB). LanceDB and Arrow allocate and free buffers of a few MiB all the
time (query results, index and manifest reads, compaction), so after the first ones those buffers land in the
heaps, interleaved with long-lived small allocations, and the heaps keep their high-water mark.

Measured under the 300-stream soak (docs/benchmarks.md, "Memory under the soak", three pairs of runs): with
the threshold fixed at 128 KiB the server process stayed flat under load (+3.7 to +7.3 % from the end of the
ramp to the end of the hold, against +15.9 to +17.5 %) and held 80-130 MiB less after the commit drain -- but
the soak answered ~20 % fewer requests (17.5-21.2 against 22.9-23.9 per second; the kernel's work for the
extra mappings shows as other processes' CPU). So it stays off by default: ``MEMCHAT_MALLOC_MMAP_THRESHOLD_KB``
(0) is for a host where memory is scarcer than CPU.

Set with ``mallopt`` at start-up. The operator's own choice wins: nothing changes when
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or a ``glibc.malloc`` tunable is in the environment.
Only the server process (the embedding model's worker allocates its activations per call). Not glibc (musl,
macOS): a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping

import anyio
from anyio.abc import TaskStatus

log = logging.getLogger("memchat.heap")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
OPERATOR_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

JEMALLOC_LIBRARY = "libjemalloc.so.2"
JEMALLOC_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                 "/usr/local/lib")
# Freed pages go back to the OS after ~1 s, by jemalloc's own thread (its default waits 10 s and, in the scratch
# runs of the docstring, held ~20 MiB more).
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
# Set in the environment of the process `preload_jemalloc` starts, so that a preload that did not take is an
# error instead of a loop of restarts.
PRELOADED_MARK = "MEMCHAT_JEMALLOC_PRELOADED"


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def jemalloc_active() -> bool:
    """True when this process's ``malloc`` is jemalloc's (preloaded or linked in): its ``mallctl`` is visible."""
    try:
        return getattr(ctypes.CDLL(None), "mallctl", None) is not None
    except OSError:
        return False


def find_jemalloc(dirs: tuple[str, ...] = JEMALLOC_DIRS) -> str | None:
    """The path of ``libjemalloc.so.2`` in the usual library folders, None when it is in none of them."""
    for folder in dirs:
        path = os.path.join(folder, JEMALLOC_LIBRARY)
        if os.path.isfile(path):
            return path
    return None


def preload_jemalloc(env: Mapping[str, str], library: str) -> dict[str, str]:
    """The environment for a process whose ``malloc`` is jemalloc: ``library`` first in ``LD_PRELOAD``,
    ``MALLOC_CONF`` = `JEMALLOC_CONF` unless the operator chose one, and `PRELOADED_MARK`."""
    new = dict(env)
    others = [p for p in new.get("LD_PRELOAD", "").replace(":", " ").split() if p != library]
    new["LD_PRELOAD"] = " ".join([library, *others])
    new.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    new[PRELOADED_MARK] = "1"
    return new


def operator_preloads_allocator(env: Mapping[str, str]) -> bool:
    """True when ``LD_PRELOAD`` already names a malloc of the operator's (tcmalloc, mimalloc, a jemalloc build
    of their own): ``MEMCHAT_ALLOCATOR=auto`` leaves it alone."""
    return any("malloc" in os.path.basename(p) for p in env.get("LD_PRELOAD", "").replace(":", " ").split())


def operator_chose(env: Mapping[str, str]) -> bool:
    return any(env.get(v) for v in OPERATOR_VARIABLES) or "glibc.malloc." in env.get("GLIBC_TUNABLES", "")


def fix_mmap_threshold(threshold_kb: int, env: Mapping[str, str] | None = None) -> bool:
    """Fix glibc's mmap threshold (and its trim threshold) at ``threshold_kb`` KiB; True when it was set."""
    if threshold_kb <= 0 or operator_chose(os.environ if env is None else env) or jemalloc_active():
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    size = threshold_kb * 1024
    ok = bool(mallopt(M_MMAP_THRESHOLD, size)) and bool(mallopt(M_TRIM_THRESHOLD, size))
    if ok:
        log.info("heap: glibc's mmap threshold fixed at %d KiB", threshold_kb)
    else:
        log.warning("mallopt refused an mmap threshold of %d KiB; glibc's dynamic threshold stays", threshold_kb)
    return ok


def resident_bytes() -> int:
    """This process's resident set size (0 where ``/proc`` is not there)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_free_memory() -> bool:
    """``malloc_trim(0)``: glibc returns the free pages of all its arenas to the OS; False where there is no
    glibc (musl, macOS) and nothing was done. Blocks its thread for the walk (a few ms): call it off the loop."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


class HeapTrimmer:
    """`release_free_memory` in a worker thread once the process has gone quiet: ``activity()`` is None while
    work is under way (a request in flight, a commit running) and otherwise a value that changes whenever work
    happened (requests started, commits left). Every ``idle`` seconds the trimmer looks; when the value is the
    same as at the previous look -- nothing happened for a whole period -- and differs from the value at the
    last trim, it trims. So a busy process is never trimmed (a trim takes the arenas' locks while the other
    threads allocate), an idle one once per quiet spell. ``observe(seconds, released_bytes)`` gets what each
    call took and the RSS it gave back."""

    def __init__(self, idle: float, activity: Callable[[], Hashable | None],
                 observe: Callable[[float, int], None] | None = None) -> None:
        self.idle = idle
        self.activity = activity
        self.observe = observe
        self.trims = 0

    def trim_once(self) -> int:
        """One trim, in the calling thread; returns the RSS released in bytes (0 when nothing was done)."""
        before, started = resident_bytes(), time.perf_counter()
        if not release_free_memory():
            return 0
        took, released = time.perf_counter() - started, max(0, before - resident_bytes())
        self.trims += 1
        if self.observe is not None:
            self.observe(took, released)
        return released

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.idle <= 0 or jemalloc_active():  # jemalloc returns its free pages itself (`JEMALLOC_CONF`)
            return
        previous: Hashable | None = None
        trimmed_at: Hashable | None = None
        while True:
            await anyio.sleep(self.idle)
            now = self.activity()
            if now is not None and now == previous and now != trimmed_at:
                await anyio.to_thread.run_sync(self.trim_once)
                trimmed_at = now
            previous = now


# A full collection after every 100 middle-generation ones instead of CPython's 10: what a full pass walks after
# the freeze is mostly the requests in flight (their objects outlive the young collections), so under a burst it
# ran every few seconds for 25-65 ms each; with 100 none ran during three bursts of 100-500 new users.
FULL_COLLECTION_EVERY = 100


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive now (modules, classes, the app and its services) out of the
    garbage collector's reach (`gc.freeze`); returns how many were frozen.

    A full (generation 2) collection walks every tracked object: ~190 000 right after memchat's imports, ~100 ms
    on the 2-core project machine, taken on the event loop whenever CPython decides to run one -- under a burst
    of 500 new users those collections were the loop's only callbacks over 50 ms (50-260 ms each, nothing
    freed; docs/benchmarks.md, "Burst of new users"). Frozen objects are never collected, so this is done once,
    after start-up, when what is alive is what lives as long as the process. Full collections are also made
    rarer (`FULL_COLLECTION_EVERY`)."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
    return gc.get_freeze_count()
