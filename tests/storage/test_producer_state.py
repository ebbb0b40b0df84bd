from __future__ import annotations

import os
from pathlib import Path

import pytest
from storage_helpers import OpenLog, batch, crash

from odradek.clock import ManualClock
from odradek.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from odradek.protocol.records import read_batch_header
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.producer_state import (
    NUM_BATCHES_TO_RETAIN,
    ProducerStateManager,
    in_sequence,
)

PID = 1000


def idem(seq: int, n: int = 1, epoch: int = 0, pid: int = PID) -> bytes:
    return batch(n, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_in_sequence_wraps() -> None:
    assert in_sequence(-1, 0) and in_sequence(4, 5) and in_sequence(2**31 - 1, 0)
    assert not in_sequence(4, 6) and not in_sequence(2**31 - 1, 1)


def test_duplicate_is_not_appended(open_log: OpenLog) -> None:
    plog = open_log()
    first = plog.append_as_leader(idem(0, 3), leader_epoch=0)
    plog.append_as_leader(idem(3, 2), leader_epoch=0)
    size = plog.size_in_bytes
    dup = plog.append_as_leader(idem(0, 3), leader_epoch=0)
    assert dup.duplicate and (dup.first_offset, dup.last_offset) == (0, 2)
    dup2 = plog.append_as_leader(idem(3, 2), leader_epoch=0)
    assert dup2.duplicate and (dup2.first_offset, dup2.last_offset) == (3, 4)
    assert plog.size_in_bytes == size and plog.log_end_offset == 5
    assert not first.duplicate


def test_only_last_five_batches_are_cached(open_log: OpenLog) -> None:
    plog = open_log()
    for seq in range(NUM_BATCHES_TO_RETAIN + 1):
        plog.append_as_leader(idem(seq), leader_epoch=0)
    assert plog.append_as_leader(idem(1), leader_epoch=0).duplicate
    with pytest.raises(OutOfOrderSequenceError):
        plog.append_as_leader(idem(0), leader_epoch=0)


def test_sequence_gaps_and_epochs(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(idem(0, 2, epoch=1), leader_epoch=0)
    with pytest.raises(OutOfOrderSequenceError):
        plog.append_as_leader(idem(3, epoch=1), leader_epoch=0)
    with pytest.raises(OutOfOrderSequenceError):
        plog.append_as_leader(idem(1, epoch=1), leader_epoch=0)  # overlaps, not a duplicate
    with pytest.raises(InvalidProducerEpochError):
        plog.append_as_leader(idem(2, epoch=0), leader_epoch=0)
    with pytest.raises(OutOfOrderSequenceError):
        plog.append_as_leader(idem(5, epoch=2), leader_epoch=0)  # new epoch must start at 0
    assert plog.log_end_offset == 2
    plog.append_as_leader(idem(2, epoch=1), leader_epoch=0)
    plog.append_as_leader(idem(0, epoch=2), leader_epoch=0)
    # the new epoch forgot the old batches
    assert plog.append_as_leader(idem(0, epoch=2), leader_epoch=0).duplicate
    entry = plog.producer_entry(PID)
    assert entry is not None and entry.producer_epoch == 2 and len(entry.batches) == 1


def test_unknown_producer_accepts_any_sequence(open_log: OpenLog) -> None:
    plog = open_log()
    assert plog.append_as_leader(idem(77, epoch=5), leader_epoch=0).first_offset == 0
    plog.append_as_leader(idem(78, epoch=5), leader_epoch=0)
    with pytest.raises(OutOfOrderSequenceError):
        plog.append_as_leader(idem(80, epoch=5), leader_epoch=0)


def test_sequence_wraps_at_int32_max(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(idem(2**31 - 2, 2), leader_epoch=0)  # last seq = 2**31 - 1
    plog.append_as_leader(idem(0), leader_epoch=0)
    assert plog.append_as_leader(idem(2**31 - 2, 2), leader_epoch=0).duplicate


def test_failed_request_leaves_no_state(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(idem(0), leader_epoch=0)
    with pytest.raises(OutOfOrderSequenceError):
        plog.append_as_leader(idem(1) + idem(5), leader_epoch=0)  # second batch is bad
    assert plog.log_end_offset == 1
    plog.append_as_leader(idem(1), leader_epoch=0)
    assert plog.log_end_offset == 2


def test_non_idempotent_batches_untracked(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(batch(1), leader_epoch=0)
    plog.append_as_leader(batch(1), leader_epoch=0)
    assert plog.log_end_offset == 2 and not plog.producer_state.producers


def test_snapshot_round_trip_and_crc(tmp_path: Path) -> None:
    psm = ProducerStateManager(tmp_path)
    for seq in range(7):
        psm.replay(read_batch_header(_with_offset(idem(seq, 2, epoch=3), seq * 2)))
    psm.replay(read_batch_header(idem(0, pid=5)))
    psm.take_snapshot(14)
    other = ProducerStateManager(tmp_path)
    assert other.load(100) == 14
    assert other.producers == psm.producers
    assert len(other.producers[PID].batches) == NUM_BATCHES_TO_RETAIN
    # a damaged newest snapshot is dropped in favour of an older one
    psm.take_snapshot(20)
    path = psm.snapshot_path(20)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    third = ProducerStateManager(tmp_path)
    assert third.load(100) == 14
    assert not path.exists()
    # snapshots beyond the log end are deleted
    assert ProducerStateManager(tmp_path).load(10) is None
    assert psm.snapshot_offsets() == []


def test_keeps_last_two_snapshots(tmp_path: Path) -> None:
    psm = ProducerStateManager(tmp_path)
    for off in (5, 9, 12, 30):
        psm.take_snapshot(off)
    assert psm.snapshot_offsets() == [12, 30]


def _with_offset(data: bytes, offset: int) -> bytes:
    import struct

    raw = bytearray(data)
    struct.pack_into(">q", raw, 0, offset)
    return bytes(raw)


def test_dedup_survives_clean_reopen(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(idem(0, 2), leader_epoch=0)
    plog.close()
    again = open_log()
    assert again.append_as_leader(idem(0, 2), leader_epoch=0).duplicate
    with pytest.raises(OutOfOrderSequenceError):
        again.append_as_leader(idem(5), leader_epoch=0)


@pytest.mark.parametrize("lose_snapshots", [False, True])
def test_dedup_survives_unclean_reopen(
    tmp_path: Path, clock: ManualClock, lose_snapshots: bool
) -> None:
    cfg = LogConfig(segment_bytes=600)
    d = tmp_path / "t-0"
    plog = PartitionLog.open(d, "t", 0, cfg, clock, recover=False)
    seq = 0
    for i in range(30):
        plog.append_as_leader(idem(seq, 2, pid=PID + i % 3), leader_epoch=0)
        if i % 3 == 2:
            seq += 2
    assert len(plog.segments) > 2
    crash(plog)
    if lose_snapshots:
        for name in os.listdir(d):
            if name.endswith(".snapshot"):
                (d / name).unlink()
    again = PartitionLog.open(d, "t", 0, cfg, clock, recover=True)
    end = again.log_end_offset
    last = again.append_as_leader(idem(seq - 2, 2, pid=PID + 2), leader_epoch=0)
    assert last.duplicate and last.last_offset == end - 1
    assert again.log_end_offset == end
    again.append_as_leader(idem(seq, 2, pid=PID), leader_epoch=0)
    with pytest.raises(OutOfOrderSequenceError):
        again.append_as_leader(idem(seq + 5, pid=PID + 1), leader_epoch=0)
    again.close()
