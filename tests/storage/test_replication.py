"""Storage for replication: a follower's append, truncation, and their crash safety."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from storage_helpers import START_MS, OpenLog, batch, crash

from odradek.clock import ManualClock
from odradek.errors import CorruptRecordError, InvalidRecordError
from odradek.protocol.records import decode_records, encode_control_batch, read_batch_header
from odradek.storage.epoch import EpochEntry
from odradek.storage.log import (
    CLEANER_OFFSET_CHECKPOINT,
    AppendOrigin,
    FetchIsolation,
    PartitionLog,
    UnexpectedAppendOffsetError,
)
from odradek.storage.log_config import LogConfig

SMALL = LogConfig(segment_bytes=400, index_interval_bytes=100)
P1, P2 = 7001, 7002


def idem(pid: int, seq: int, n: int = 1) -> bytes:
    return batch(n, producer_id=pid, producer_epoch=0, base_sequence=seq, value=b"i%d" % pid)


def txn(pid: int, seq: int, n: int = 1) -> bytes:
    return batch(n, producer_id=pid, producer_epoch=0, base_sequence=seq,
                 is_transactional=True, value=b"t%d" % pid)


def marker(pid: int, *, commit: bool) -> bytes:
    return encode_control_batch(pid, 0, commit=commit, coordinator_epoch=0, timestamp=START_MS)


def all_batches(plog: PartitionLog, start: int | None = None) -> bytes:
    """Every batch from ``start`` (default: the log start) to the log end, as stored."""
    out = bytearray()
    offset = plog.log_start_offset if start is None else start
    while offset < plog.log_end_offset:
        data = plog.read(offset, max_bytes=1 << 20).records
        assert isinstance(data, bytes)
        if not data:
            break
        out += data
        offset = last_next_offset(data)
    return bytes(out)


def last_next_offset(data: bytes) -> int:
    pos = 0
    nxt = -1
    while pos < len(data):
        h = read_batch_header(data, pos)
        nxt = h.next_offset
        pos += h.size
    return nxt


def split_batches(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        h = read_batch_header(data, pos)
        out.append(data[pos : pos + h.size])
        pos += h.size
    return out


def replicate(leader: PartitionLog, follower: PartitionLog) -> None:
    data = all_batches(leader, follower.log_end_offset)
    if data:
        follower.append_as_follower(data)


def producer_view(plog: PartitionLog) -> tuple[object, ...]:
    ps = plog.producer_state
    return (
        sorted((pid, e.producer_epoch, tuple(e.batches), e.coordinator_epoch,
                e.current_txn_first_offset, e.last_timestamp) for pid, e in ps.producers.items()),
        dict(ps.ongoing_txns),
    )


def leader_with_history(open_log: OpenLog, config: LogConfig = SMALL) -> PartitionLog:
    """Plain, idempotent and transactional batches over three leader epochs and segments."""
    leader = open_log(config, name="leader")
    leader.append_as_leader(batch(3), leader_epoch=0)
    leader.append_as_leader(idem(P1, 0, 2), leader_epoch=0)
    leader.append_as_leader(txn(P2, 0, 2), leader_epoch=1)
    leader.append_as_leader(idem(P1, 2, 1), leader_epoch=1)
    leader.append_as_leader(marker(P2, commit=False), leader_epoch=1,
                            origin=AppendOrigin.COORDINATOR)
    leader.append_as_leader(txn(P2, 2, 3), leader_epoch=3)
    for i in range(6):
        leader.append_as_leader(batch(2, value=b"x%d" % i), leader_epoch=3)
    assert len(leader.segments) > 2
    return leader


# -- append_as_follower ---------------------------------------------------------------------------


def test_follower_keeps_the_leaders_batches_byte_for_byte(open_log: OpenLog) -> None:
    leader = leader_with_history(open_log)
    follower = open_log(SMALL, name="follower")
    replicate(leader, follower)
    assert follower.log_end_offset == leader.log_end_offset
    assert all_batches(follower) == all_batches(leader)
    assert follower.epoch_cache.entries == leader.epoch_cache.entries == [
        EpochEntry(0, 0), EpochEntry(1, 5), EpochEntry(3, 9)]
    assert producer_view(follower) == producer_view(leader)
    assert follower.collect_aborted_transactions(0, 100) == \
        leader.collect_aborted_transactions(0, 100)
    assert len(follower.collect_aborted_transactions(0, 100)) == 1
    assert follower.high_watermark == 0  # the fetcher moves it, not the append
    follower.update_high_watermark(leader.log_end_offset)
    leader.update_high_watermark(leader.log_end_offset)
    assert follower.last_stable_offset == leader.last_stable_offset == 9  # P2's open txn


def test_follower_append_in_pieces_and_its_info(open_log: OpenLog) -> None:
    leader = leader_with_history(open_log)
    follower = open_log(SMALL, name="follower")
    batches = split_batches(all_batches(leader))
    for b in batches:
        h = read_batch_header(b)
        info = follower.append_as_follower(b)
        assert (info.first_offset, info.last_offset, info.record_count) == (
            h.base_offset, h.last_offset, h.records_count)
        assert info.log_append_time_ms == -1 and not info.duplicate
    assert all_batches(follower) == all_batches(leader)
    assert follower.append_as_follower(b"").first_offset == -1


def test_a_follower_that_becomes_leader_recognises_retried_batches(open_log: OpenLog) -> None:
    leader = leader_with_history(open_log)
    follower = open_log(SMALL, name="follower")
    replicate(leader, follower)
    end = follower.log_end_offset
    retried = follower.append_as_leader(idem(P1, 2, 1), leader_epoch=4)
    assert retried.duplicate and (retried.first_offset, retried.last_offset) == (7, 7)
    assert follower.log_end_offset == end
    fresh = follower.append_as_leader(idem(P1, 3, 1), leader_epoch=4)
    assert fresh.first_offset == end and not fresh.duplicate


def test_follower_append_below_the_log_end_is_refused(open_log: OpenLog) -> None:
    leader = leader_with_history(open_log)
    follower = open_log(SMALL, name="follower")
    data = all_batches(leader)
    follower.append_as_follower(split_batches(data)[0])
    size = follower.size_in_bytes
    with pytest.raises(UnexpectedAppendOffsetError) as e:
        follower.append_as_follower(data)
    assert (e.value.first_offset, e.value.log_end_offset) == (0, 3)
    assert follower.size_in_bytes == size and follower.log_end_offset == 3


def test_follower_append_refuses_damage_and_writes_nothing(open_log: OpenLog) -> None:
    leader = leader_with_history(open_log)
    follower = open_log(SMALL, name="follower")
    first, second, *_ = split_batches(all_batches(leader))
    bad = bytearray(first + second)
    bad[len(first) + 70] ^= 0xFF  # inside the second batch's records: CRC fails
    with pytest.raises(CorruptRecordError):
        follower.append_as_follower(bytes(bad))
    with pytest.raises(CorruptRecordError):
        follower.append_as_follower((first + second)[:-3])
    with pytest.raises(CorruptRecordError):  # offsets going backwards
        follower.append_as_follower(second + first)
    with pytest.raises(InvalidRecordError):
        follower.append_as_follower(b"\0" * 12 + b"\0" * 4 + b"\x01" + b"\0" * 60)
    assert follower.log_end_offset == 0 and follower.size_in_bytes == 0
    assert follower.epoch_cache.entries == []


def test_follower_ignores_max_message_bytes_and_rolls_big_appends(open_log: OpenLog) -> None:
    leader = open_log(LogConfig(segment_bytes=10_000), name="leader")
    for i in range(12):
        leader.append_as_leader(batch(4, value=b"y" * 40 + b"%d" % i), leader_epoch=2)
    data = all_batches(leader)
    tiny = LogConfig(segment_bytes=700, index_interval_bytes=100, max_message_bytes=100)
    follower = open_log(tiny, name="follower")
    follower.append_as_follower(data)  # one append, many segments' worth
    assert len(follower.segments) > 3
    assert all(s.size <= 700 for s in follower.segments)
    assert all_batches(follower) == data
    # Each segment starts at its first batch (what recovery checks).
    crash(follower)
    again = open_log(tiny, name="follower", recover=True)
    assert all_batches(again) == data


def test_follower_rolls_at_a_gap_unless_compacted(open_log: OpenLog) -> None:
    leader = open_log(SMALL, name="leader")
    for _ in range(4):
        leader.append_as_leader(batch(2), leader_epoch=0)
    a, b, c, d = split_batches(all_batches(leader))
    follower = open_log(SMALL, name="follower")
    follower.append_as_follower(a + c)  # offsets 0-1 then 4-5: a hole at 2-3
    assert follower.log_end_offset == 6
    assert [s.base_offset for s in follower.segments] == [0, 4]
    crash(follower)
    again = open_log(SMALL, name="follower", recover=True)
    assert again.log_end_offset == 6 and all_batches(again) == a + c
    compacted = LogConfig(segment_bytes=600, cleanup_policy="compact")
    cf = open_log(compacted, name="compacted")
    cf.append_as_follower(a + c + d)
    assert [s.base_offset for s in cf.segments] == [0]
    assert cf.log_end_offset == 8


def test_append_as_leader_refuses_the_replication_origin(open_log: OpenLog) -> None:
    plog = open_log()
    with pytest.raises(ValueError):
        plog.append_as_leader(batch(1), leader_epoch=0, origin=AppendOrigin.REPLICATION)


# -- truncate_to ----------------------------------------------------------------------------------


def test_truncate_to_cuts_segments_indexes_epochs_and_producers(
    open_log: OpenLog, caplog: pytest.LogCaptureFixture
) -> None:
    leader = leader_with_history(open_log)
    data = all_batches(leader)
    follower = open_log(SMALL, name="follower")
    follower.append_as_follower(data)
    follower.update_high_watermark(follower.log_end_offset)
    reference = open_log(SMALL, name="reference")  # what the follower must equal after the cut
    kept = [b for b in split_batches(data) if read_batch_header(b).base_offset < 9]
    reference.append_as_follower(b"".join(kept))
    caplog.set_level(logging.INFO, "odradek.storage")
    assert follower.truncate_to(9)  # P2's second transaction goes
    assert follower.log_end_offset == reference.log_end_offset
    assert follower.high_watermark == follower.log_end_offset
    assert follower.recovery_point <= follower.log_end_offset
    assert all_batches(follower) == all_batches(reference)
    assert follower.epoch_cache.entries == reference.epoch_cache.entries
    assert producer_view(follower) == producer_view(reference)
    assert follower.collect_aborted_transactions(0, 100) == \
        reference.collect_aborted_transactions(0, 100)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        f"t-0: truncated to offset 9: log end offset {leader.log_end_offset} -> "
        f"{follower.log_end_offset}, high watermark {follower.log_end_offset}"]
    assert not follower.truncate_to(follower.log_end_offset)
    # The log goes on as a follower: the leader's batches from the new end are accepted.
    follower.append_as_follower(all_batches(leader, follower.log_end_offset))
    assert all_batches(follower) == data
    assert follower.epoch_cache.entries == leader.epoch_cache.entries
    assert producer_view(follower) == producer_view(leader)


def test_truncate_inside_a_batch_drops_the_whole_batch(open_log: OpenLog) -> None:
    plog = open_log(SMALL)
    for _ in range(5):
        plog.append_as_leader(batch(4), leader_epoch=0)
    assert plog.truncate_to(10)  # batch [8..11] goes
    assert plog.log_end_offset == 8
    assert plog.read(0, max_bytes=1 << 20).records != b""
    assert last_next_offset(all_batches(plog)) == 8


def test_truncation_invalidates_the_tail_read_cache(open_log: OpenLog) -> None:
    plog = open_log(LogConfig(index_interval_bytes=1 << 20), name="t-0")
    for i in range(5):
        plog.append_as_leader(batch(1, value=b"old-and-long%d" % i), leader_epoch=0)
    assert plog.read(3, max_bytes=1 << 20).records  # served from remembered positions
    other = open_log(LogConfig(), name="other")
    for i in range(5):
        other.append_as_leader(batch(1, value=b"n%d" % i), leader_epoch=1)
    plog.truncate_to(2)
    plog.append_as_follower(all_batches(other, 2))
    got = plog.read(3, max_bytes=1 << 20).records
    assert isinstance(got, bytes)
    assert got == all_batches(other, 3)


def test_truncate_below_the_first_segment_starts_the_log_there(open_log: OpenLog) -> None:
    plog = open_log(SMALL, name="t-0")
    plog.truncate_fully_and_start_at(50)
    for _ in range(3):
        plog.append_as_leader(batch(2), leader_epoch=1)
    assert plog.truncate_to(20)
    assert (plog.log_start_offset, plog.log_end_offset, plog.high_watermark) == (20, 20, 20)
    assert plog.epoch_cache.entries == []


def test_truncate_to_lowers_the_log_start_offset(open_log: OpenLog) -> None:
    plog = open_log(SMALL)
    for _ in range(10):
        plog.append_as_leader(batch(2), leader_epoch=0)
    plog.update_high_watermark(20)
    plog.delete_records_before(15)
    assert plog.truncate_to(12)
    assert plog.log_start_offset == plog.log_end_offset == 12
    plog.close()
    again = PartitionLog.open(plog.directory, "t", 0, SMALL, plog.clock, recover=False)
    assert (again.log_start_offset, again.log_end_offset) == (12, 12)
    again.close()


def test_truncation_deletes_later_producer_snapshots(open_log: OpenLog) -> None:
    plog = open_log(SMALL)
    for seq in range(0, 30, 2):
        plog.append_as_leader(idem(P1, seq, 2), leader_epoch=0)
    snaps = plog.producer_state.snapshot_offsets()
    assert len(snaps) == 2 and snaps[0] > 0
    assert plog.truncate_to(snaps[0] - 2)
    assert plog.producer_state.snapshot_offsets() == []
    assert plog.producer_entry(P1) is not None
    assert plog.producer_entry(P1).last_seq == snaps[0] - 3  # type: ignore[union-attr]
    # Reopened, it rebuilds the same state.
    view = producer_view(plog)
    plog.close()
    again = PartitionLog.open(plog.directory, "t", 0, SMALL, plog.clock, recover=False)
    assert producer_view(again) == view
    again.close()


def test_truncation_cuts_the_transaction_index(open_log: OpenLog) -> None:
    plog = open_log(LogConfig())
    plog.append_as_leader(txn(P1, 0, 2), leader_epoch=0)
    plog.append_as_leader(marker(P1, commit=False), leader_epoch=0,
                          origin=AppendOrigin.COORDINATOR)  # abort at offset 2
    plog.append_as_leader(txn(P1, 2, 2), leader_epoch=0)  # 3-4
    plog.append_as_leader(marker(P1, commit=False), leader_epoch=0,
                          origin=AppendOrigin.COORDINATOR)  # abort at offset 5
    plog.update_high_watermark(plog.log_end_offset)
    assert [a.last_offset for a in plog.collect_aborted_transactions(0, 10)] == [2, 5]
    plog.truncate_to(5)
    assert [a.last_offset for a in plog.collect_aborted_transactions(0, 10)] == [2]
    assert plog.producer_entry(P1).current_txn_first_offset == 3  # type: ignore[union-attr]
    assert plog.last_stable_offset == 3
    info = plog.fetch(0, max_bytes=1 << 20, isolation=FetchIsolation.TXN_COMMITTED)
    assert info.last_stable_offset == 3


def test_truncated_log_reopens_consistently(open_log: OpenLog, tmp_path: Path) -> None:
    leader = leader_with_history(open_log)
    follower = open_log(SMALL, name="follower")
    replicate(leader, follower)
    follower.truncate_to(6)
    before = (all_batches(follower), follower.epoch_cache.entries, producer_view(follower))
    for recover in (False, True):
        if recover:
            crash(follower)
        else:
            follower.close()
        follower = open_log(SMALL, name="follower", recover=recover)
        assert (all_batches(follower), follower.epoch_cache.entries,
                producer_view(follower)) == before
        for seg in follower.log_segments:
            seg.sanity_check()


# -- truncate_fully_and_start_at ------------------------------------------------------------------


def test_truncate_fully_and_start_at(open_log: OpenLog, tmp_path: Path) -> None:
    leader = leader_with_history(open_log)
    follower = open_log(SMALL, name="follower")
    replicate(leader, follower)
    follower.update_high_watermark(5)
    follower.truncate_fully_and_start_at(100)
    assert (follower.log_start_offset, follower.log_end_offset, follower.high_watermark,
            follower.recovery_point) == (100, 100, 100, 100)
    assert follower.epoch_cache.entries == []
    assert follower.producer_state.producers == {}
    assert follower.producer_state.snapshot_offsets() == []
    assert [s.base_offset for s in follower.segments] == [100]
    other = open_log(SMALL, name="other")
    other.truncate_fully_and_start_at(100)
    other.append_as_leader(batch(2), leader_epoch=7)
    follower.append_as_follower(all_batches(other))
    assert follower.epoch_cache.entries == [EpochEntry(7, 100)]
    follower.close()
    again = open_log(SMALL, name="follower")
    assert (again.log_start_offset, again.log_end_offset) == (100, 102)
    assert all_batches(again) == all_batches(other)


def test_truncate_fully_below_the_log_end(open_log: OpenLog) -> None:
    plog = open_log(SMALL)
    for _ in range(10):
        plog.append_as_leader(batch(2), leader_epoch=0)
    plog.truncate_fully_and_start_at(7)
    assert (plog.log_start_offset, plog.log_end_offset) == (7, 7)
    assert plog.read(7, max_bytes=100).records == b""
    crash(plog)
    again = open_log(SMALL, recover=True)
    assert (again.log_start_offset, again.log_end_offset) == (7, 7)


def test_truncation_caps_the_cleaner_checkpoint(open_log: OpenLog) -> None:
    from odradek.storage.checkpoint import read_offset_checkpoint, write_offset_checkpoint

    plog = open_log(SMALL)
    for _ in range(10):
        plog.append_as_leader(batch(2), leader_epoch=0)
    path = plog.directory / CLEANER_OFFSET_CHECKPOINT
    write_offset_checkpoint(path, "t", 0, 18)
    plog.truncate_to(10)
    assert read_offset_checkpoint(path) == 10
    plog.truncate_fully_and_start_at(4)
    assert read_offset_checkpoint(path) == 4


def test_loaded_high_watermark_is_clamped(tmp_path: Path, clock: ManualClock) -> None:
    d = tmp_path / "t-0"
    plog = PartitionLog.open(d, "t", 0, SMALL, clock, recover=False)
    for _ in range(5):
        plog.append_as_leader(batch(2), leader_epoch=0)
    plog.close()
    for given, expected in ((None, 10), (4, 4), (99, 10), (-5, 0)):
        again = PartitionLog.open(d, "t", 0, SMALL, clock, recover=False,
                                  high_watermark=given)
        assert again.high_watermark == expected
        again.close()


def test_a_cleaning_pass_planned_before_a_truncation_is_void(
    open_log: OpenLog, clock: ManualClock
) -> None:
    from odradek.protocol.records import SimpleRecord, encode_batch
    from odradek.storage.cleaner import CleanerConfig, LogCleaner

    compact = LogConfig(cleanup_policy="compact", segment_bytes=300, index_interval_bytes=64,
                        min_cleanable_dirty_ratio=0.0)
    plog = open_log(compact)
    for i in range(30):
        rec = SimpleRecord(b"v%d" % i, key=b"k%d" % (i % 3), timestamp=START_MS + i)
        plog.append_as_leader(encode_batch([rec]), leader_epoch=0)
    plog.update_high_watermark(plog.log_end_offset)
    cleaner = LogCleaner(lambda: [plog], CleanerConfig(), clock)
    task = cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None
    # The last copies of every key go: the pass's map would have dropped the older ones.
    assert plog.truncate_to(task.first_uncleanable_offset - 2)
    before = all_batches(plog)
    task.run()
    result = cleaner.complete(task)
    assert not result.swapped and result.error == "log truncated during cleaning"
    assert cleaner.uncleanable_logs() == {}
    assert all_batches(plog) == before
    # The next pass plans afresh and keeps every key's latest surviving record.
    plog.update_high_watermark(plog.log_end_offset)
    cleaner.clean_once(clock.milliseconds())
    keys = {r.key for b in split_batches(all_batches(plog)) for r in decode_records(b)}
    assert keys == {b"k0", b"k1", b"k2"}
