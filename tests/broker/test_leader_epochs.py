"""KIP-320 answers of a leader whose epoch the log has not recorded yet (no append in it):
computed as if the epoch started at the log end offset, the way Kafka records it on becoming
leader, and the same once the first append records it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from odradek.broker.replica_manager import (
    check_leader_epoch,
    end_offset_for_epoch,
    epoch_for_offset,
)
from odradek.clock import ManualClock
from odradek.errors import FencedLeaderEpochError, UnknownLeaderEpochError
from odradek.protocol.records import SimpleRecord, encode_batch
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig


@pytest.fixture
def plog(tmp_path: Path) -> Iterator[PartitionLog]:
    log = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(), ManualClock(1_000_000),
                            recover=False)
    yield log
    log.close()


def _append(plog: PartitionLog, n: int, epoch: int) -> None:
    plog.append_as_leader(encode_batch([SimpleRecord(b"v")] * n), leader_epoch=epoch)


QUERIES = range(-1, 8)


def test_unrecorded_epoch_answers_as_if_recorded_at_the_log_end(plog: PartitionLog) -> None:
    _append(plog, 2, 0)
    _append(plog, 3, 2)  # epochs 0 at 0, 2 at 2; log end 5
    current = 5  # the view's epoch; nothing appended in it yet
    virtual = {e: end_offset_for_epoch(plog, e, current) for e in QUERIES}
    assert epoch_for_offset(plog, 5, current) == 5
    assert epoch_for_offset(plog, 3, current) == 2
    _append(plog, 1, current)  # the first append records epoch 5 at offset 5
    recorded = {e: plog.end_offset_for_epoch(e) for e in QUERIES}
    # Every answer but the end of the current epoch (which the append moved) is unchanged.
    assert {e: v for e, v in virtual.items() if e != current} == {
        e: v for e, v in recorded.items() if e != current
    }
    assert virtual[current] == (5, 5) and recorded[current] == (5, 6)
    assert virtual[3] == (2, 5) and virtual[1] == (0, 2) and virtual[6] == (-1, -1)


def test_empty_log_in_a_new_epoch(plog: PartitionLog) -> None:
    assert end_offset_for_epoch(plog, 3, 3) == (3, 0)
    assert end_offset_for_epoch(plog, 1, 3) == (1, 0)
    assert end_offset_for_epoch(plog, 4, 3) == (-1, -1)
    assert epoch_for_offset(plog, 0, 3) == 3
    assert end_offset_for_epoch(plog, 0, 0) == (0, 0)


def test_check_leader_epoch() -> None:
    check_leader_epoch(-1, 4)
    check_leader_epoch(4, 4)
    with pytest.raises(FencedLeaderEpochError):
        check_leader_epoch(3, 4)
    with pytest.raises(UnknownLeaderEpochError):
        check_leader_epoch(5, 4)
