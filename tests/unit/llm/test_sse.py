"""`app.llm.sse`: splitting SSE byte streams into events (any line ending, any read boundary) and reading data."""

from __future__ import annotations

import json

import pytest

from app.llm.sse import DONE_FRAME, EventSplitter, data_frame, event_data

# Events as the splitter returns them: lines joined by LF, without the blank line that ends them.
EVENTS = [
    b'data: {"a":1}',
    b": keep-alive",
    b"event: delta\ndata: first line\ndata: second line\nid: 7",
    b"data:no-space",
    b"data: [DONE]",
]


def stream(ending: bytes) -> bytes:
    """The events above on the wire, every line ended by ``ending``."""
    return b"".join(event.replace(b"\n", ending) + ending + ending for event in EVENTS)


def feed_all(parts: list[bytes]) -> list[bytes]:
    splitter = EventSplitter()
    out: list[bytes] = []
    for part in parts:
        out.extend(splitter.feed(part))
    return out


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_gives_the_same_events(ending: bytes) -> None:
    assert feed_all([stream(ending)]) == EVENTS


def test_a_read_ending_in_cr_counts_it_as_a_line_end_at_once() -> None:
    assert feed_all([stream(b"\r"), b"\n"]) == EVENTS          # the LF completing a CRLF is dropped
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\r") == []
    assert splitter.feed(b"\r") == [b"data: a"]                 # CR CR: complete without waiting
    assert splitter.feed(b"\n") == []                           # the rest of that CRLF, not a line end
    assert splitter.feed(b"data: b\n\n") == [b"data: b"]
    assert splitter.feed(b"data: c\r") == [] and splitter.feed(b"") == []
    assert splitter.feed(b"\n\r\n") == [b"data: c"]


def test_mixed_line_endings_in_one_stream() -> None:
    wire = b"data: a\r\ndata: b\n\r\ndata: c\r\rdata: d\n\n"
    assert feed_all([wire]) == [b"data: a\ndata: b", b"data: c", b"data: d"]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_a_split_at_any_byte_gives_the_unsplit_result(ending: bytes) -> None:
    wire = stream(ending) + b"data: tail\n\n"
    whole = feed_all([wire])
    assert whole[: len(EVENTS)] == EVENTS and whole[-1] == b"data: tail"
    for cut in range(len(wire) + 1):
        assert feed_all([wire[:cut], wire[cut:]]) == whole, f"split at byte {cut}: {wire[:cut]!r}"


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"], ids=["CRLF", "CR"])
def test_two_splits_anywhere_and_one_byte_at_a_time(ending: bytes) -> None:
    wire = b"data: x\r\n\r\n".replace(b"\r\n", ending) + b": c" + ending * 2 + b"data: y" + ending + b"id: 1" + \
        ending * 2 + b"data: end\n\n"
    whole = feed_all([wire])
    assert whole == [b"data: x", b": c", b"data: y\nid: 1", b"data: end"]
    for i in range(len(wire) + 1):
        for j in range(i, len(wire) + 1):
            assert feed_all([wire[:i], wire[i:j], wire[j:]]) == whole, (i, j)
    assert feed_all([wire[k:k + 1] for k in range(len(wire))]) == whole


def test_crlf_split_between_cr_and_lf_is_one_event() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b'data: {"a":1}\r') == []
    events = splitter.feed(b"\nid: 7\r\n\r\n")
    assert events == [b'data: {"a":1}\nid: 7']
    assert event_data(events[0]) == b'{"a":1}'
    assert splitter.feed(b"") == []   # nothing left over


def test_incomplete_event_waits_for_its_blank_line() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: part") == []
    assert splitter.feed(b"ial\n") == []
    assert splitter.feed(b"\n") == [b"data: partial"]


def test_empty_events_are_dropped() -> None:
    assert feed_all([b"\n\n\n\ndata: a\n\n\n\n"]) == [b"data: a"]


def test_a_cr_terminated_event_is_complete_without_waiting_for_the_next_read() -> None:
    # regression: a trailing CR used to be held back until the next read, so a CR-only upstream's last
    # event (its [DONE]) was never seen
    assert EventSplitter().feed(b"data: [DONE]\r\r") == [b"data: [DONE]"]


# -- event_data -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("event", "data"), [
    (b'data: {"a":1}', b'{"a":1}'),
    (b"data:x", b"x"),                             # the space after the colon is optional
    (b"data:  x", b" x"),                          # ... and only one is removed
    (b"data: ", b""),
    (b"data: a\ndata: b", b"a\nb"),                # multi-line data joined by LF
    (b"event: e\ndata: a\nid: 3\ndata:b", b"a\nb"),
    (b"id: 3\ndata: x", b"x"),
    (b": comment", None),
    (b": comment\n: another", None),
    (b"event: ping", None),
    (b": c\ndata: x", b"x"),
    (b"data: [DONE]", b"[DONE]"),
])
def test_event_data(event: bytes, data: bytes | None) -> None:
    assert event_data(event) == data


def test_data_frame_and_done_frame() -> None:
    frame = data_frame({"token": "é", "n": [1, 2]})
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n") and frame.count(b"\n") == 2
    assert json.loads(frame[6:]) == {"token": "é", "n": [1, 2]}
    assert feed_all([frame, DONE_FRAME]) == [frame[:-2], b"data: [DONE]"]
    assert event_data(feed_all([DONE_FRAME])[0]) == b"[DONE]"
