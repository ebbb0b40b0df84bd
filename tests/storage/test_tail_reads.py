"""Reads near the log end: the active segment remembers where its last batches start, and a
read from any offset returns the batch holding it first, before and after a truncation."""

from __future__ import annotations

from storage_helpers import START_MS, OpenLog, batch

from odradek.protocol.records import read_batch_header
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
