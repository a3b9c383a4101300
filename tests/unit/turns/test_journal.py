"""`SegmentTail`: other processes' journal segments read incrementally (only appended bytes are parsed)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from app.turns.journal import SUFFIX, SegmentTail


class Row(msgspec.Struct):
    n: int


def line(n: int) -> bytes:
    return msgspec.json.encode(Row(n)) + b"\n"


def test_reads_only_what_was_appended_and_waits_for_whole_lines(tmp_path: Path) -> None:
    other = tmp_path / f"turns-other-1{SUFFIX}"
    other.write_bytes(line(1) + line(2))
    (tmp_path / f"turns-mine-1{SUFFIX}").write_bytes(line(99))  # our own segment is never read
    tail = SegmentTail(Row)
    assert [r.n for r in tail.read(tmp_path, "turns-mine")] == [1, 2]
    with other.open("ab") as fh:
        fh.write(line(3) + b'{"n": 4')  # a line still being written
    assert [r.n for r in tail.read(tmp_path, "turns-mine")] == [1, 2, 3]
    with other.open("ab") as fh:
        fh.write(b"}\n")
    assert [r.n for r in tail.read(tmp_path, "turns-mine")] == [1, 2, 3, 4]


def test_a_replaced_or_removed_segment_is_read_afresh_or_forgotten(tmp_path: Path) -> None:
    other = tmp_path / f"turns-other-1{SUFFIX}"
    other.write_bytes(line(1))
    tail = SegmentTail(Row)
    assert [r.n for r in tail.read(tmp_path, "x")] == [1]
    replacement = tmp_path / "new"
    replacement.write_bytes(line(7) + line(8))
    os.replace(replacement, other)  # same name, new inode: not a continuation
    assert sorted(r.n for r in tail.read(tmp_path, "x")) == [7, 8]
    other.unlink()  # flushed into the table and removed
    assert tail.read(tmp_path, "x") == []
    assert tail.read(tmp_path / "missing", "x") == []


def test_a_torn_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / f"turns-a{SUFFIX}").write_bytes(line(1) + b"garbage\n" + line(2))
    assert [r.n for r in SegmentTail(Row).read(tmp_path, "x")] == [1, 2]
