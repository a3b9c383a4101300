"""What this process's C allocator holds: bytes in use by the program and bytes it keeps free
(``memchat_heap_bytes{state}``).

RSS alone cannot tell memory that LanceDB, Arrow or Python still use from memory the allocator freed but keeps
(fragmented, or not yet given back). The allocator can:

* glibc (``mallinfo2``, summed over every arena; also what is reported under another preloaded allocator
  that is not jemalloc, where it is near empty): in use = ``uordblks`` (allocated from the arenas) +
  ``hblkhd`` (served by a mapping of its own); free = ``fordblks``, free chunks inside the arenas -- resident or
  not: pages ``malloc_trim`` handed back stay counted here, so after a trim "free" is what fragmentation would
  hold at most.
* jemalloc (``mallctl``, after an ``epoch`` refresh): in use = ``stats.allocated``; free = ``stats.resident`` -
  ``stats.allocated``: pages it maps and keeps resident without a live allocation (its metadata included).

Python's objects live in pymalloc's arenas, which are mapped directly, not through ``malloc``: they count in
neither; nor does pyarrow's own memory pool (its bundled allocator). LanceDB's caches do count: its Rust code
allocates with the process's ``malloc``. Reading walks the allocator's arenas under their locks (a few microseconds to a few milliseconds):
call it off the event loop.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

_MALLINFO2_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS]


@dataclass(frozen=True)
class HeapUsage:
    allocator: str  # "glibc" or "jemalloc"
    in_use: int     # bytes the program holds
    free: int       # bytes the allocator keeps without a live allocation (see the module's docstring)


def _process_symbols() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _jemalloc_usage(mallctl: ctypes._CFuncPtr) -> HeapUsage | None:
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                        ctypes.c_size_t]
    mallctl.restype = ctypes.c_int
    epoch = ctypes.c_uint64(1)
    size = ctypes.c_size_t(ctypes.sizeof(epoch))
    if mallctl(b"epoch", ctypes.byref(epoch), ctypes.byref(size), ctypes.byref(epoch), ctypes.sizeof(epoch)) != 0:
        return None
    values = {}
    for name in (b"stats.allocated", b"stats.resident"):
        value = ctypes.c_size_t(0)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if mallctl(name, ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
            return None  # a jemalloc built without statistics
        values[name] = value.value
    allocated, resident = values[b"stats.allocated"], values[b"stats.resident"]
    return HeapUsage("jemalloc", allocated, max(0, resident - allocated))


def _glibc_usage(mallinfo2: ctypes._CFuncPtr) -> HeapUsage:
    mallinfo2.argtypes = []
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return HeapUsage("glibc", info.uordblks + info.hblkhd, info.fordblks)


def heap_usage() -> HeapUsage | None:
    """The allocator's view of this process's C heap; None where neither jemalloc's statistics nor glibc's
    ``mallinfo2`` (glibc 2.33+) can be read."""
    symbols = _process_symbols()
    if symbols is None:
        return None
    mallctl = getattr(symbols, "mallctl", None)
    if mallctl is not None:
        return _jemalloc_usage(mallctl)
    mallinfo2 = getattr(symbols, "mallinfo2", None)
    return None if mallinfo2 is None else _glibc_usage(mallinfo2)
