"""The turn log's local write-ahead journal: the durability point of an answered turn.

A single-row LanceDB append costs ~6 ms of CPU and makes a new table version (docs/benchmarks.md), which
would be most of a streamed reply's cost at one turn per request. So a turn is made durable by appending
one JSON line to a local journal segment (one ``write``; ``fsync`` per group when enabled) and reaches the
LanceDB ``turns`` table in batches, moved there by the turn log's flusher.

Segments are files ``<dir>/turns-<pid>-<random>-<n>.wal``; the process writing one holds an exclusive
``flock`` on it, which the kernel drops when the process dies (``kill -9`` included). At start-up every
segment nobody holds is replayed into the table (idempotently, keyed on ``turn_id``) and removed. A torn
last line -- the process died inside a ``write`` -- is the only thing skipped: that turn's answer had not
been acknowledged.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec

Record = TypeVar("Record", bound=msgspec.Struct)  # the turn log's rows; the journal stores any Struct

log = logging.getLogger("memchat.turnlog")

SUFFIX = ".wal"


class Segment:
    """One open, locked journal file."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        # A new segment is created and locked under a name recovery does not look at, then renamed: a
        # starting process can never take (and remove) a segment that is being born.
        opened = path.with_suffix(".new") if create else path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(opened, flags, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if create:
                os.rename(opened, path)
        except BaseException:
            os.close(self.fd)
            raise
        self.rows = 0

    def write(self, data: bytes) -> None:
        """Append ``data`` whole, or not at all: a write cut short (disk full) is truncated away, so the
        next line never starts in the middle of a torn one."""
        start = os.lseek(self.fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError:
            try:
                os.ftruncate(self.fd, start)
            except OSError as exc:
                log.error("turn journal %s: could not cut a torn write back (%s)", self.path.name, exc)
            raise

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)  # while still locked: nobody can take it in between
        self.close()


class Journal:
    """Appends encoded turns to the current segment; ``rotate()`` starts a new one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.prefix = f"turns-{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        self._counter = 0
        self._encoder = msgspec.json.Encoder()
        self.current = self._open_next()

    def _open_next(self) -> Segment:
        self._counter += 1
        return Segment(self.directory / f"{self.prefix}{self._counter:06d}{SUFFIX}")

    def encode(self, records: Iterable[msgspec.Struct]) -> bytes:
        return b"".join(self._encoder.encode(r) + b"\n" for r in records)

    def write(self, records: Sequence[msgspec.Struct]) -> Segment:
        """Append the records (one ``write``); returns the segment they went to."""
        segment = self.current
        segment.write(self.encode(records))
        segment.rows += len(records)
        return segment

    def rotate(self) -> Segment:
        """Start a new segment; returns the previous one (to remove once its rows are in the table)."""
        old = self.current
        self.current = self._open_next()
        return old

    def close(self) -> None:
        """Close the current segment; an empty one is removed (rows left in one are replayed at start)."""
        if self.current.rows == 0:
            self.current.remove()
        else:
            self.current.close()


def orphan_segments(directory: Path) -> Iterator[Segment]:
    """Segments no live process holds, each opened and locked by us (oldest first)."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"turns-*{SUFFIX}")):
        try:
            segment = Segment(path, create=False)
        except BlockingIOError:
            continue  # a running process is writing it
        except FileNotFoundError:
            continue  # another process recovered and removed it meanwhile
        if not segment.path.exists():  # removed between our open and our lock
            segment.close()
            continue
        yield segment


def live_segments(directory: Path, own_prefix: str) -> Iterator[Path]:
    """Segments of other processes (alive or not yet recovered), for readers that must see every
    answered turn on this host, not only this process's."""
    for path in directory.glob(f"turns-*{SUFFIX}"):
        if not path.name.startswith(own_prefix):
            yield path


class SegmentTail:
    """Other processes' segments, read incrementally: each read parses only the bytes appended since the
    previous one (segments are append-only; a new inode means a new file). So a lookup on the request
    path costs a directory listing and the new lines, not a parse of every segment every time."""

    def __init__(self, record_type: type[Record]) -> None:
        self._decoder = msgspec.json.Decoder(record_type)
        self._files: dict[Path, tuple[int, int, list[Record]]] = {}  # path -> (inode, offset, records)

    def read(self, directory: Path, own_prefix: str) -> list[Record]:
        present = set(live_segments(directory, own_prefix)) if directory.is_dir() else set()
        for gone in self._files.keys() - present:
            del self._files[gone]
        out: list[Record] = []
        for path in present:
            out.extend(self._read_file(path))
        return out

    def _read_file(self, path: Path) -> list[Record]:
        try:
            with path.open("rb") as fh:
                inode = os.fstat(fh.fileno()).st_ino
                have = self._files.get(path)
                if have is None or have[0] != inode:
                    have = (inode, 0, [])
                offset, records = have[1], have[2]
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:  # flushed and removed meanwhile: its rows are in the table
            self._files.pop(path, None)
            return []
        end = data.rfind(b"\n") + 1  # complete lines only; a line being written is read next time
        for line in data[:end].split(b"\n"):
            if line.strip():
                try:
                    records.append(self._decoder.decode(line))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # a torn write: never acknowledged
        self._files[path] = (inode, offset + end, records)
        return records


def read_segment(path: Path, record_type: type[Record], *, quiet: bool = False) -> list[Record]:
    """Every complete record of a segment; a torn or corrupt line is logged and skipped."""
    decoder = msgspec.json.Decoder(record_type)
    records: list[Record] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # flushed and removed meanwhile: its rows are in the table
        return records
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(decoder.decode(line))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if quiet:
                continue
            log.warning("turn journal %s line %d skipped (%s): an unacknowledged, torn write", path.name, number, exc)
    return records
