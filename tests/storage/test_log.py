from __future__ import annotations

import os
from pathlib import Path

import pytest
from storage_helpers import START_MS, OpenLog, batch

from odradek.clock import ManualClock
from odradek.errors import (
    CorruptRecordError,
    InvalidRecordError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from odradek.protocol.records import (
    SimpleRecord,
    decode_records,
    encode_batch,
    read_batch_header,
    validate_batches,
)
from odradek.storage.log import AppendOrigin, PartitionLog
from odradek.storage.log_config import LogConfig

SMALL = LogConfig(segment_bytes=1000, index_interval_bytes=100)


def offsets_of(data: bytes) -> list[int]:
    return [r.offset for r in decode_all(data)]


def decode_all(data: bytes) -> list:
    out = []
    pos = 0
    while pos < len(data):
        h = read_batch_header(data, pos)
        out.extend(decode_records(data[pos : pos + h.size]))
        pos += h.size
    return out


def fill(plog: PartitionLog, n: int, per_batch: int = 2, ts: int = START_MS) -> None:
    for i in range(n):
        plog.append_as_leader(batch(per_batch, ts=ts + 10 * i, value=b"x%d" % i), leader_epoch=0)


def test_empty_log(open_log: OpenLog) -> None:
    plog = open_log()
    assert (plog.log_start_offset, plog.log_end_offset, plog.high_watermark) == (0, 0, 0)
    assert plog.read(0, max_bytes=100).records == b""
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(1, max_bytes=100)
    assert plog.fetch_offset_by_timestamp(0) is None
    assert plog.max_timestamp_and_offset() is None
    assert plog.leader_epoch == -1


def test_append_assigns_offsets_and_stamps_epoch(open_log: OpenLog) -> None:
    plog = open_log()
    info = plog.append_as_leader(batch(3), leader_epoch=4)
    assert (info.first_offset, info.last_offset, info.record_count) == (0, 2, 3)
    assert info.log_append_time_ms == -1 and not info.duplicate
    info = plog.append_as_leader(batch(2) + batch(1), leader_epoch=4)
    assert (info.first_offset, info.last_offset, info.record_count) == (3, 5, 3)
    assert plog.log_end_offset == 6
    assert plog.high_watermark == 0  # the broker moves it
    plog.update_high_watermark(plog.log_end_offset)
    data = plog.read(0, max_bytes=1 << 20).records
    hs = validate_batches(data, max_batch_bytes=1 << 20)  # CRCs still valid
    assert [h.base_offset for h in hs] == [0, 3, 5]
    assert all(h.partition_leader_epoch == 4 for h in hs)
    assert offsets_of(data) == list(range(6))
    assert plog.leader_epoch == 4
    assert plog.read(6, max_bytes=100).records == b""


def test_append_rejects_invalid_input_without_writing(open_log: OpenLog) -> None:
    plog = open_log(LogConfig(max_message_bytes=300, segment_bytes=400))
    good = batch(1)
    with pytest.raises(CorruptRecordError):
        plog.append_as_leader(good + good[:20], leader_epoch=0)
    with pytest.raises(RecordTooLargeError):
        plog.append_as_leader(batch(1, value=b"z" * 400), leader_epoch=0)
    with pytest.raises(RecordListTooLargeError):
        plog.append_as_leader(b"".join([batch(2, value=b"q" * 60)] * 3), leader_epoch=0)
    with pytest.raises(InvalidRecordError):
        plog.append_as_leader(encode_batch([SimpleRecord(b"m")], is_control=True), leader_epoch=0)
    assert plog.log_end_offset == 0 and plog.size_in_bytes == 0
    info = plog.append_as_leader(b"", leader_epoch=0)
    assert info.first_offset == -1 and info.record_count == 0
    marker = encode_batch([SimpleRecord(b"m")], is_control=True, producer_id=1, producer_epoch=0)
    assert plog.append_as_leader(
        marker, leader_epoch=0, origin=AppendOrigin.COORDINATOR
    ).first_offset == 0


def test_append_does_not_modify_caller_buffer(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(batch(1), leader_epoch=0)
    raw = bytearray(batch(1))
    before = bytes(raw)
    plog.append_as_leader(raw, leader_epoch=0)
    assert bytes(raw) == before


def test_log_append_time(open_log: OpenLog, clock: ManualClock) -> None:
    plog = open_log(LogConfig(message_timestamp_type="LogAppendTime"))
    clock.advance(5000)
    now = clock.milliseconds()
    info = plog.append_as_leader(batch(3, ts=1), leader_epoch=0)
    assert info.log_append_time_ms == now
    data = plog.read(0, max_bytes=1 << 20).records
    (h,) = validate_batches(data, max_batch_bytes=1 << 20)  # CRC recomputed
    assert h.timestamp_type == 1 and h.max_timestamp == now and h.base_timestamp == now
    assert [r.timestamp for r in decode_records(data)] == [now] * 3
    found = plog.fetch_offset_by_timestamp(now)
    assert found is not None and found.offset == 0


def test_roll_by_size_and_read_across_segments(open_log: OpenLog) -> None:
    plog = open_log(SMALL)
    fill(plog, 60)
    segs = plog.segments
    assert len(segs) > 5
    assert all(s.size <= SMALL.segment_bytes for s in segs)
    assert segs[-1].is_active and not segs[0].is_active
    assert [s.base_offset for s in segs] == sorted(s.base_offset for s in segs)
    # every offset can be read, and the first returned batch contains it
    for off in range(plog.log_end_offset):
        data = plog.read(off, max_bytes=1).records
        h = read_batch_header(data)
        assert h.base_offset <= off <= h.last_offset
        assert len(data) == h.size  # min_one_message: exactly one whole batch
    # a fetch returns only whole batches from one segment
    got: list[int] = []
    off = 0
    while off < plog.log_end_offset:
        data = plog.read(off, max_bytes=250).records
        assert 0 < len(data) <= 250
        offs = offsets_of(data)
        got.extend(o for o in offs if o >= off)
        off = offs[-1] + 1
    assert got == list(range(plog.log_end_offset))


def test_read_limits(open_log: OpenLog) -> None:
    plog = open_log()
    for i in range(10):
        plog.append_as_leader(batch(1, value=b"v" * (50 + i)), leader_epoch=0)
    sizes = [read_batch_header(plog.read(i, max_bytes=1).records).size for i in range(10)]
    data = plog.read(0, max_bytes=sizes[0] + sizes[1] + sizes[2] - 1).records
    assert len(data) == sizes[0] + sizes[1]
    assert plog.read(0, max_bytes=5, min_one_message=False).records == b""
    assert len(plog.read(0, max_bytes=5, min_one_message=True).records) == sizes[0]
    assert plog.read(0, max_bytes=0, min_one_message=False).records == b""
    # max_offset: never return a batch at or beyond it
    data = plog.read(0, max_bytes=1 << 20, max_offset=4).records
    assert offsets_of(data) == [0, 1, 2, 3]
    assert plog.read(4, max_bytes=1 << 20, max_offset=4).records == b""
    assert plog.read(7, max_bytes=1 << 20, max_offset=4).records == b""
    info = plog.read(2, max_bytes=1 << 20, max_offset=3)
    assert offsets_of(info.records) == [2]
    assert info.log_end_offset == 10
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(11, max_bytes=10)
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(-1, max_bytes=10)


def test_read_fetch_offset_inside_batch(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(batch(5), leader_epoch=0)
    plog.append_as_leader(batch(5), leader_epoch=0)
    data = plog.read(7, max_bytes=1 << 20).records
    assert read_batch_header(data).base_offset == 5
    # a batch that straddles max_offset is excluded
    assert plog.read(0, max_bytes=1 << 20, max_offset=7).records == plog.read(
        0, max_bytes=1 << 20, max_offset=5
    ).records


def test_read_uses_index_and_few_syscalls(open_log: OpenLog, monkeypatch) -> None:
    plog = open_log(LogConfig(index_interval_bytes=512))
    for i in range(2000):
        plog.append_as_leader(batch(1, value=b"%05d" % i), leader_epoch=0)
    calls: list[int] = []
    real = os.pread

    def counting(fd: int, n: int, pos: int) -> bytes:
        calls.append(n)
        return real(fd, n, pos)

    monkeypatch.setattr(os, "pread", counting)
    data = plog.read(1500, max_bytes=4096).records
    assert offsets_of(data)[0] == 1500
    assert len(calls) <= 3, calls
    assert sum(calls) < 64 * 1024


def test_roll_by_time(open_log: OpenLog, clock: ManualClock) -> None:
    plog = open_log(LogConfig(segment_ms=1000))
    plog.append_as_leader(batch(1), leader_epoch=0)
    clock.advance(999)
    plog.append_as_leader(batch(1), leader_epoch=0)
    assert len(plog.segments) == 1
    clock.advance(2)
    plog.append_as_leader(batch(1), leader_epoch=0)
    assert [s.base_offset for s in plog.segments] == [0, 2]
    # an idle active segment is rolled by retention housekeeping
    clock.advance(1001)
    plog.apply_retention(clock.milliseconds())
    assert [s.base_offset for s in plog.segments] == [0, 2, 3]
    assert plog.segments[-1].size == 0


def test_roll_when_index_full(open_log: OpenLog) -> None:
    plog = open_log(LogConfig(index_interval_bytes=0, segment_index_bytes=24))
    for _ in range(10):
        plog.append_as_leader(batch(1), leader_epoch=0)
    assert len(plog.segments) > 1
    assert offsets_of(plog.read(0, max_bytes=1 << 20).records)[0] == 0


def test_timestamp_lookup(open_log: OpenLog) -> None:
    plog = open_log(SMALL)
    # batch i holds records with timestamps START+10i, START+10i+1
    fill(plog, 40)
    for target in (START_MS - 5, START_MS, START_MS + 1, START_MS + 2, START_MS + 155,
                   START_MS + 391):
        found = plog.fetch_offset_by_timestamp(target)
        assert found is not None
        expected = next(
            o for o in range(80) if START_MS + 10 * (o // 2) + (o % 2) >= target
        )
        assert found.offset == expected
        assert found.timestamp >= target and found.leader_epoch == 0
    assert plog.fetch_offset_by_timestamp(START_MS + 392) is None
    mx = plog.max_timestamp_and_offset()
    assert mx is not None and (mx.timestamp, mx.offset) == (START_MS + 391, 79)
    assert plog.fetch_offset_by_timestamp(-2).offset == 0  # type: ignore[union-attr]
    assert plog.fetch_offset_by_timestamp(-1).offset == 80  # type: ignore[union-attr]


def test_timestamp_lookup_out_of_order_timestamps(open_log: OpenLog) -> None:
    plog = open_log(LogConfig(index_interval_bytes=1))
    for ts in (100, 300, 200, 400, 250):
        plog.append_as_leader(batch(1, ts=ts), leader_epoch=0)
    assert plog.fetch_offset_by_timestamp(150).offset == 1  # type: ignore[union-attr]
    assert plog.fetch_offset_by_timestamp(350).offset == 3  # type: ignore[union-attr]
    assert plog.fetch_offset_by_timestamp(250).offset == 1  # type: ignore[union-attr]
    mx = plog.max_timestamp_and_offset()
    assert mx is not None and (mx.timestamp, mx.offset) == (400, 3)


def test_max_timestamp_within_batch(open_log: OpenLog) -> None:
    plog = open_log()
    recs = [SimpleRecord(b"a", timestamp=5), SimpleRecord(b"b", timestamp=9),
            SimpleRecord(b"c", timestamp=7)]
    plog.append_as_leader(encode_batch(recs), leader_epoch=2)
    mx = plog.max_timestamp_and_offset()
    assert mx is not None and (mx.timestamp, mx.offset, mx.leader_epoch) == (9, 1, 2)


def test_retention_by_time(open_log: OpenLog, clock: ManualClock) -> None:
    plog = open_log(LogConfig(segment_bytes=1000, retention_ms=10_000, file_delete_delay_ms=0))
    fill(plog, 30, ts=START_MS)
    plog.update_high_watermark(plog.log_end_offset)
    n_before = len(plog.segments)
    assert plog.apply_retention(clock.milliseconds()) == 0
    clock.advance(20_000)
    plog.roll()
    for i in range(3):
        plog.append_as_leader(batch(1, ts=clock.milliseconds() + i), leader_epoch=0)
    plog.update_high_watermark(plog.log_end_offset)
    deleted = plog.apply_retention(clock.milliseconds())
    assert deleted == n_before  # every old segment; the new active one stays
    assert plog.log_start_offset == plog.segments[0].base_offset == 60
    assert len(plog.segments) == 1
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(0, max_bytes=100)
    assert offsets_of(plog.read(60, max_bytes=1 << 20).records)[0] == 60
    names = os.listdir(plog.directory)
    assert not any(n.startswith("00000000000000000000") for n in names)


def test_retention_respects_high_watermark_and_active_segment(
    open_log: OpenLog, clock: ManualClock
) -> None:
    plog = open_log(LogConfig(segment_bytes=1000, retention_ms=1, file_delete_delay_ms=0))
    fill(plog, 30)
    clock.advance(10_000)
    assert plog.apply_retention(clock.milliseconds()) == 0  # hw is 0
    plog.update_high_watermark(plog.log_end_offset)
    assert plog.apply_retention(clock.milliseconds()) > 0
    assert len(plog.segments) == 1  # active never deleted
    assert plog.log_end_offset == 60


def test_retention_by_size_with_delayed_delete(open_log: OpenLog, clock: ManualClock) -> None:
    plog = open_log(LogConfig(segment_bytes=1000, retention_bytes=2500, retention_ms=-1,
                              file_delete_delay_ms=5000))
    fill(plog, 60)
    plog.update_high_watermark(plog.log_end_offset)
    sizes = [s.size for s in plog.segments]
    deleted = plog.apply_retention(clock.milliseconds())
    assert deleted > 0
    assert plog.size_in_bytes <= 2500 + sizes[deleted]
    assert sum(sizes[deleted:]) == plog.size_in_bytes
    assert sum(sizes[deleted - 1 :]) > 2500  # removing one more would undershoot
    pending = [n for n in os.listdir(plog.directory) if n.endswith(".deleted")]
    assert len(pending) == 3 * deleted
    clock.advance(5000)
    plog.maybe_flush(clock.milliseconds())
    assert not [n for n in os.listdir(plog.directory) if n.endswith(".deleted")]


def test_delete_records(open_log: OpenLog, clock: ManualClock) -> None:
    plog = open_log(LogConfig(segment_bytes=1000, file_delete_delay_ms=0))
    fill(plog, 30)
    with pytest.raises(OffsetOutOfRangeError):
        plog.delete_records_before(1)
    plog.update_high_watermark(plog.log_end_offset)
    bases = [s.base_offset for s in plog.segments]
    target = bases[2] + 1
    assert plog.delete_records_before(target) == target
    assert plog.log_start_offset == target
    assert [s.base_offset for s in plog.segments] == bases[2:]
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(target - 1, max_bytes=100)
    assert target in offsets_of(plog.read(target, max_bytes=1 << 20).records)
    assert plog.delete_records_before(3) == target  # never moves back
    found = plog.fetch_offset_by_timestamp(0)
    assert found is not None and found.offset == target
    assert plog.delete_records_before(-1) == plog.high_watermark
    plog.close()
    again = PartitionLog.open(plog.directory, "t", 0, plog.config, clock, recover=False)
    assert again.log_start_offset == 60
    again.close()


def test_flush_policies(open_log: OpenLog, clock: ManualClock, monkeypatch) -> None:
    fsyncs: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real(fd)))
    plog = open_log(LogConfig(flush_messages=3))
    plog.append_as_leader(batch(2), leader_epoch=-1)
    assert plog.recovery_point == 0
    plog.append_as_leader(batch(1), leader_epoch=-1)
    assert plog.recovery_point == 3 and fsyncs
    timed = open_log(LogConfig(flush_ms=1000), name="t-1")
    timed.append_as_leader(batch(1), leader_epoch=-1)
    assert not timed.maybe_flush(clock.milliseconds() + 999)
    assert timed.maybe_flush(clock.milliseconds() + 1000)
    assert timed.recovery_point == 1
    assert not timed.maybe_flush(clock.milliseconds() + 5000)  # nothing new


def test_leader_epochs(open_log: OpenLog, clock: ManualClock) -> None:
    plog = open_log()
    plog.append_as_leader(batch(2), leader_epoch=0)
    plog.append_as_leader(batch(2), leader_epoch=3)
    plog.append_as_leader(batch(1), leader_epoch=3)
    plog.append_as_leader(batch(1), leader_epoch=5)
    assert plog.leader_epoch == 5
    assert plog.epoch_for_offset(1) == 0 and plog.epoch_for_offset(4) == 3
    assert plog.end_offset_for_epoch(0) == (0, 2)
    assert plog.end_offset_for_epoch(4) == (3, 5)
    assert plog.end_offset_for_epoch(5) == (5, 6)
    assert plog.end_offset_for_epoch(6) == (-1, -1)
    plog.close()
    text = (plog.directory / "leader-epoch-checkpoint").read_text()
    assert text == "0\n3\n0 0\n3 2\n5 5\n"
    again = PartitionLog.open(plog.directory, "t", 0, LogConfig(), clock, recover=False)
    assert again.end_offset_for_epoch(3) == (3, 5)
    again.close()


def test_clean_reopen_restores_everything(open_log: OpenLog, clock: ManualClock) -> None:
    plog = open_log(SMALL)
    fill(plog, 50)
    before = plog.read(0, max_bytes=1 << 20).records
    segs = plog.segments
    plog.close()
    again = open_log(SMALL)
    assert again.log_end_offset == 100 and again.high_watermark == 100
    assert again.segments == segs
    assert again.read(0, max_bytes=1 << 20).records == before
    assert again.max_timestamp_and_offset().offset == 99  # type: ignore[union-attr]
    info = again.append_as_leader(batch(1), leader_epoch=0)
    assert info.first_offset == 100


def test_clean_reopen_does_not_rescan(open_log: OpenLog, monkeypatch) -> None:
    from odradek.storage import segment as segment_mod

    cfg = LogConfig(segment_bytes=200_000)
    plog = open_log(cfg)
    for i in range(3000):
        plog.append_as_leader(batch(2, value=b"%06d" % i), leader_epoch=0)
    plog.close()
    assert plog.size_in_bytes > 250_000

    def boom(*_a: object, **_k: object) -> int:
        raise AssertionError("recover() during a clean open")

    monkeypatch.setattr(segment_mod.LogSegment, "recover", boom)
    read_bytes: list[int] = []
    real = os.pread

    def counting(fd: int, n: int, pos: int) -> bytes:
        data = real(fd, n, pos)
        read_bytes.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", counting)
    again = open_log(cfg)
    assert again.log_end_offset == 6000
    assert sum(read_bytes) < 40_000, sum(read_bytes)


def test_clean_reopen_rebuilds_missing_or_bad_index(open_log: OpenLog) -> None:
    plog = open_log(SMALL)
    fill(plog, 30)
    plog.close()
    first = plog.directory / "00000000000000000000.index"
    first.unlink()
    active_base = plog.segments[-1].base_offset
    (plog.directory / f"{active_base:020d}.timeindex").write_bytes(b"\x00" * 5)
    again = open_log(SMALL)
    assert again.log_end_offset == 60
    assert first.exists() and first.stat().st_size > 0
    for off in range(60):
        h = read_batch_header(again.read(off, max_bytes=1).records)
        assert h.base_offset <= off <= h.last_offset
    assert again.fetch_offset_by_timestamp(START_MS + 100).offset == 20  # type: ignore[union-attr]


def test_delete_removes_directory(open_log: OpenLog, tmp_path: Path) -> None:
    plog = open_log()
    plog.append_as_leader(batch(1), leader_epoch=0)
    plog.delete()
    assert os.listdir(tmp_path) == []


def test_segment_truncate_to(open_log: OpenLog) -> None:
    plog = open_log(LogConfig(index_interval_bytes=50))
    for i in range(20):
        plog.append_as_leader(batch(2, ts=START_MS + i), leader_epoch=0)
    seg = plog.active_segment
    before = seg.size
    removed = seg.truncate_to(21)  # batch [20, 21] goes entirely
    assert removed > 0 and seg.size == before - removed
    assert seg.next_offset == 20
    assert seg.offset_index.last_entry()[0] < 20
    assert seg.time_index.last_entry()[1] < 20
    assert seg.max_timestamp == START_MS + 10  # batch 9 holds START+9 and START+10
