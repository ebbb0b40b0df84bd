"""Fetches that return FileRecords slices: the same batches as the bytes path, found from headers
alone, readable after their segment is deleted, and never leaking a file descriptor."""

from __future__ import annotations

import gc
import os
import random

import pytest
from storage_helpers import OpenLog, batch

from odradek.protocol.records import next_offset_after
from odradek.storage.file_records import FileRecords
from odradek.storage.log import FetchIsolation, PartitionLog
from odradek.storage.log_config import LogConfig


def _fill(plog: PartitionLog, rng: random.Random, batches: int) -> None:
    for _ in range(batches):
        n = rng.choice((1, 1, 2, 5, 40))
        plog.append_as_leader(batch(n, value=os.urandom(rng.choice((10, 200, 3000)))),
                              leader_epoch=0)
    plog.update_high_watermark(plog.log_end_offset)


def _as_bytes(records: bytes | FileRecords) -> bytes:
    if isinstance(records, FileRecords):
        try:
            return records.read_all()
        finally:
            records.close()
    return records


@pytest.mark.parametrize("index_interval", [1, 4096, 1 << 20])
def test_slices_hold_what_the_bytes_path_reads(open_log: OpenLog, index_interval: int) -> None:
    rng = random.Random(index_interval)
    plog = open_log(LogConfig(index_interval_bytes=index_interval, segment_bytes=200_000))
    _fill(plog, rng, 60)
    assert len(plog.segments) > 2
    checked = 0
    sizes = (0, 1, 61, 500, 4096, 9000, 20_000, 100_000, 1 << 20)
    for offset in range(0, plog.log_end_offset, 7):
        for max_bytes in sizes:
            for min_one in (True, False):
                expected = plog.fetch(offset, max_bytes=max_bytes, min_one_message=min_one).records
                got = plog.fetch(offset, max_bytes=max_bytes, min_one_message=min_one,
                                 max_inline_bytes=0)
                assert isinstance(expected, bytes)
                if expected:
                    assert isinstance(got.records, FileRecords)
                    assert got.records.next_offset == next_offset_after(expected)
                assert _as_bytes(got.records) == expected, (offset, max_bytes, min_one)
                checked += bool(expected)
    assert checked > 500


def test_only_reads_beyond_the_inline_limit_become_slices(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(batch(1, value=b"s" * 100), leader_epoch=0)  # offset 0, small
    plog.append_as_leader(batch(1, value=b"L" * 50_000), leader_epoch=0)  # offset 1, large
    plog.update_high_watermark(plog.log_end_offset)
    small = plog.read(0, max_bytes=1 << 20, max_inline_bytes=10_000, max_offset=1)
    assert isinstance(small.records, bytes) and next_offset_after(small.records) == 1
    assert isinstance(plog.fetch(0, max_bytes=1 << 20, max_inline_bytes=10_000).records,
                      FileRecords)
    # A first batch larger than max_bytes still comes whole (min_one), and from the file.
    big = plog.fetch(1, max_bytes=10, max_inline_bytes=10_000).records
    assert isinstance(big, FileRecords) and big.size > 50_000 and big.next_offset == 2
    big.close()
    assert plog.fetch(1, max_bytes=10, max_inline_bytes=10_000,
                      min_one_message=False).records == b""


def test_read_committed_slices_list_the_same_aborted_transactions(open_log: OpenLog) -> None:
    from test_log_transactions import P1, P2, end, produce, txn

    plog = open_log(LogConfig(index_interval_bytes=1))
    produce(plog, batch(1))  # 0
    produce(plog, txn(P1, 0, 2))  # 1..2
    end(plog, P1, commit=False)  # 3
    produce(plog, txn(P2, 0, 3))  # 4..6
    end(plog, P2, commit=False)  # 7
    produce(plog, batch(2))  # 8..9
    for start in range(10):
        for max_bytes in (1, 100, 300, 1 << 20):
            args = dict(max_bytes=max_bytes, isolation=FetchIsolation.TXN_COMMITTED)
            as_bytes = plog.fetch(start, **args)  # type: ignore[arg-type]
            sliced = plog.fetch(start, max_inline_bytes=0, **args)  # type: ignore[arg-type]
            assert sliced.aborted_transactions == as_bytes.aborted_transactions, (start, max_bytes)
            assert _as_bytes(sliced.records) == as_bytes.records


def test_a_slice_outlives_the_deletion_of_its_segment(open_log: OpenLog) -> None:
    plog = open_log(LogConfig(segment_bytes=150_000, file_delete_delay_ms=0))
    _fill(plog, random.Random(1), 30)
    first_segment = plog.log_segments[0]
    path = first_segment.log_path
    expected = plog.fetch(0, max_bytes=1 << 20).records
    sliced = plog.fetch(0, max_bytes=1 << 20, max_inline_bytes=0).records
    assert isinstance(sliced, FileRecords)
    plog.delete_records_before(plog.log_segments[1].base_offset)
    assert not path.exists() and not path.with_name(path.name + ".deleted").exists()
    assert sliced.read_all() == expected
    sliced.close()
    assert sliced.closed


def test_a_dropped_slice_closes_its_descriptor(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(batch(3), leader_epoch=0)
    plog.update_high_watermark(plog.log_end_offset)
    sliced = plog.fetch(0, max_bytes=1 << 20, max_inline_bytes=0).records
    assert isinstance(sliced, FileRecords)
    fd = sliced.fd
    before = os.fstat(fd)
    del sliced
    gc.collect()
    # Closed: the number is free, or (other threads of the test process open files too) reused
    # for some other file, never still the segment.
    try:
        after = os.fstat(fd)
    except OSError:
        return
    assert (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino)


def test_a_shrunken_file_is_reported_not_padded(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(batch(3, value=b"x" * 1000), leader_epoch=0)
    plog.update_high_watermark(plog.log_end_offset)
    sliced = plog.fetch(0, max_bytes=1 << 20, max_inline_bytes=0).records
    assert isinstance(sliced, FileRecords)
    os.truncate(plog.log_segments[0].log_path, sliced.size - 10)
    from odradek.errors import KafkaStorageError

    with pytest.raises(KafkaStorageError):
        sliced.read_all()
    sliced.close()
