"""Reads near the log end: the active segment remembers where its last batches start, and a
read from any offset returns the batch holding it first, before and after a truncation. A read
sent from the file (a slice) remembers where the batch after it starts, for the consumer's next
fetch, also after the segment rolls, and forgets it when the segment is truncated."""

from __future__ import annotations

import pytest
from storage_helpers import START_MS, OpenLog, batch

from odradek.protocol.records import read_batch_header
from odradek.storage.file_records import FileRecords
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig


def _batches(data: bytes) -> list[tuple[int, int]]:
    """(base offset, last offset) of each batch in ``data``."""
    out, pos = [], 0
    while pos < len(data):
        h = read_batch_header(data, pos)
        out.append((h.base_offset, h.last_offset))
        pos += h.size
    return out


def _check_every_offset(plog: PartitionLog, expected: list[tuple[int, int]]) -> None:
    for offset in range(plog.log_start_offset, plog.log_end_offset):
        got = _batches(plog.read(offset, max_bytes=1 << 20).records)
        first = next(i for i, (_, last) in enumerate(expected) if last >= offset)
        assert got == expected[first:], offset


def test_reads_from_every_offset_of_recent_and_older_batches(open_log: OpenLog) -> None:
    # A sparse index (one entry per ~3 batches): older batches are found by walking headers.
    plog = open_log(LogConfig(index_interval_bytes=200))
    expected = []
    for i in range(40):
        info = plog.append_as_leader(batch(1 + i % 3, ts=START_MS + i), leader_epoch=0)
        expected.append((info.first_offset, info.last_offset))
    plog.update_high_watermark(plog.log_end_offset)
    _check_every_offset(plog, expected)


def test_truncation_forgets_the_positions_of_removed_batches(open_log: OpenLog) -> None:
    plog = open_log(LogConfig(index_interval_bytes=200))
    expected = []
    for i in range(12):
        info = plog.append_as_leader(batch(2, ts=START_MS + i), leader_epoch=0)
        expected.append((info.first_offset, info.last_offset))
    seg = plog.active_segment
    # Drop the last three batches (18-19, 20-21, 22-23), then append two of three records
    # (18-20, 21-23): remembered positions of the removed batches at 20 and 22 would now point
    # into the middle of the first new one.
    seg.truncate_to(18)
    plog._log_end_offset = seg.next_offset  # as a leader change's truncation leaves it
    expected = expected[:9]
    for i in range(2):
        info = plog.append_as_leader(batch(3, ts=START_MS + 20 + i), leader_epoch=0)
        expected.append((info.first_offset, info.last_offset))
    plog.update_high_watermark(plog.log_end_offset)
    assert expected[9][0] == 18
    _check_every_offset(plog, expected)


def _slice(plog: PartitionLog, offset: int, max_bytes: int) -> tuple[list[tuple[int, int]], int]:
    """The batches of a read sent from the file, and the offset the reader asks for next."""
    records = plog.read(offset, max_bytes=max_bytes, max_inline_bytes=0).records
    assert isinstance(records, FileRecords)
    try:
        return _batches(records.read_all()), records.next_offset
    finally:
        records.close()


def test_the_next_read_starts_where_the_last_one_stopped_without_an_index_lookup(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    plog = open_log(LogConfig(index_interval_bytes=200))
    expected = []
    for i in range(12):
        info = plog.append_as_leader(batch(2, value=b"x" * 100, ts=START_MS + i), leader_epoch=0)
        expected.append((info.first_offset, info.last_offset))
    plog.update_high_watermark(plog.log_end_offset)
    batch_size = len(batch(2, value=b"x" * 100))
    seg = plog.active_segment
    got, next_offset = _slice(plog, 0, 3 * batch_size)
    assert got == expected[:3]
    assert next_offset == 6
    plog.roll()  # the positions of a segment's batches stay valid once it is inactive

    def no_lookup(offset: int) -> tuple[int, int]:
        raise AssertionError(f"index lookup for {offset}")

    monkeypatch.setattr(seg.offset_index, "lookup", no_lookup)
    got, next_offset = _slice(plog, 6, 3 * batch_size)
    assert got == expected[3:6]
    assert next_offset == 12
    with pytest.raises(AssertionError, match="index lookup for 7"):
        _slice(plog, 7, batch_size)  # not where a read stopped: found from the index


def test_truncation_forgets_where_reads_stopped(open_log: OpenLog) -> None:
    plog = open_log(LogConfig(index_interval_bytes=200))
    expected = []
    for i in range(12):
        info = plog.append_as_leader(batch(2, ts=START_MS + i), leader_epoch=0)
        expected.append((info.first_offset, info.last_offset))
    plog.update_high_watermark(plog.log_end_offset)
    batch_size = len(batch(2))
    # Reads of two batches each, from the start: each remembers where the next one starts
    # (4, 8, ..., 20).
    offset = 0
    while offset < 20:
        got, offset = _slice(plog, offset, 2 * batch_size)
    assert offset == 20
    seg = plog.active_segment
    seg.truncate_to(18)
    plog._log_end_offset = seg.next_offset
    expected = expected[:9]
    for i in range(2):  # 18-20, 21-23: the old batch at 20 began inside the first of them
        info = plog.append_as_leader(batch(3, ts=START_MS + 20 + i), leader_epoch=0)
        expected.append((info.first_offset, info.last_offset))
    plog.update_high_watermark(plog.log_end_offset)
    got, _ = _slice(plog, 20, 1 << 20)
    assert got == expected[9:]
    _check_every_offset(plog, expected)


def test_a_consumer_reading_on_leaves_one_remembered_batch(open_log: OpenLog) -> None:
    plog = open_log(LogConfig(index_interval_bytes=200))
    for i in range(40):
        plog.append_as_leader(batch(2, ts=START_MS + i), leader_epoch=0)
    plog.update_high_watermark(plog.log_end_offset)
    seg = plog.active_segment
    offset, reads = 0, 0
    while offset < plog.log_end_offset:
        got, next_offset = _slice(plog, offset, 2 * len(batch(2)))
        assert got[0][0] == offset
        offset = next_offset if next_offset >= 0 else plog.log_end_offset
        reads += 1
        assert len(seg._located) <= 1  # where this consumer reads next, nothing older
    assert reads == 20
