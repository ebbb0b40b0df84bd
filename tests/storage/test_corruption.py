"""Corruption is never silent: recovery says what it truncates, a read that meets a corrupt
batch raises CORRUPT_MESSAGE (logged once, counted), damaged checkpoints and snapshots are
reported with what replaces them, and failing I/O is logged once per operation and errno."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
from storage_helpers import batch, batch_positions, crash, flip

from odradek.clock import ManualClock
from odradek.errors import CorruptRecordError, ErrorCode, KafkaStorageError
from odradek.protocol.records import read_batch_header
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.segment import SegmentCorruptError

MAGIC_AT = 16


def fill(tmp_path: Path, clock: ManualClock, n: int, config: LogConfig) -> PartitionLog:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, config, clock, recover=False)
    for i in range(n):
        plog.append_as_leader(batch(1, value=b"record-%03d" % i), leader_epoch=0)
    return plog


def storage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "odradek.storage" and r.levelno == logging.WARNING]


# -- recovery ---------------------------------------------------------------------------------


def test_torn_tail_after_unclean_shutdown_is_logged_with_offsets_and_bytes(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plog = fill(tmp_path, clock, 100, LogConfig())
    crash(plog)
    seg = tmp_path / "t-0" / "00000000000000000000.log"
    positions = batch_positions(seg)
    pos80, _ = positions[80]
    size = seg.stat().st_size
    flip(seg, pos80 + 70)  # a record byte: the CRC fails, the header still reads
    caplog.set_level(logging.WARNING, "odradek.storage")
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(), clock, recover=True)
    assert plog.log_end_offset == 80
    (line,) = [m for m in storage_warnings(caplog) if "truncated" in m]
    assert "t-0" in line and "00000000000000000000.log" in line
    assert f"position {pos80}, offset 80" in line
    assert f"{size - pos80} bytes dropped" in line
    assert "offsets 80-99 in 20 batches" in line
    plog.close()


def test_damage_in_older_segment_logs_the_later_segments_deleted(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plog = fill(tmp_path, clock, 30, LogConfig(segment_bytes=1000))
    bases = [s.base_offset for s in plog.segments]
    assert len(bases) >= 3
    crash(plog)
    (tmp_path / "t-0" / "recovery-point-offset-checkpoint").unlink()
    seg0 = tmp_path / "t-0" / f"{bases[0]:020d}.log"
    flip(seg0, MAGIC_AT)
    caplog.set_level(logging.WARNING, "odradek.storage")
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(segment_bytes=1000), clock,
                             recover=True)
    assert plog.log_end_offset == 0
    lines = storage_warnings(caplog)
    assert any("truncated segment 00000000000000000000.log at position 0, offset 0" in m
               for m in lines), lines
    (deleted,) = [m for m in lines if "later segments" in m]
    assert f"deleted {len(bases) - 1} later segments" in deleted
    assert f"offsets {bases[1]} to {bases[-1]}" in deleted
    plog.close()


def test_index_failing_its_check_at_clean_start_is_logged(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plog = fill(tmp_path, clock, 50, LogConfig(index_interval_bytes=100))
    plog.close()
    index = tmp_path / "t-0" / "00000000000000000000.index"
    with open(index, "ab") as f:
        f.write(b"\x00\x01\x02")  # a torn entry
    caplog.set_level(logging.WARNING, "odradek.storage")
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(), clock, recover=False)
    assert plog.log_end_offset == 50
    assert any("failed its start-up check" in m and "t-0" in m and "rebuilt" in m
               for m in storage_warnings(caplog))
    assert plog.read(25, max_bytes=1 << 20).records
    plog.close()


# -- reads ------------------------------------------------------------------------------------


def closed_segment_with_bad_header(
    tmp_path: Path, clock: ManualClock
) -> tuple[PartitionLog, int, int, int]:
    """A cleanly reopened log whose first segment has a batch with a broken magic byte;
    returns the log, the damaged batch's offset and position, and the next segment's base."""
    config = LogConfig(segment_bytes=2000, index_interval_bytes=300)
    plog = fill(tmp_path, clock, 60, config)
    bases = [s.base_offset for s in plog.segments]
    plog.close()
    seg0 = tmp_path / "t-0" / f"{bases[0]:020d}.log"
    positions = batch_positions(seg0)
    bad = max(o for o in positions if o < bases[1]) - 3
    pos, _ = positions[bad]
    flip(seg0, pos + MAGIC_AT)
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, config, clock, recover=False)
    return plog, bad, pos, bases[1]


def test_corrupt_header_in_closed_segment_is_corrupt_message_logged_once_and_counted(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plog, bad, pos, next_base = closed_segment_with_bad_header(tmp_path, clock)
    caplog.set_level(logging.WARNING, "odradek.storage")
    for _ in range(3):
        with pytest.raises(SegmentCorruptError) as info:
            plog.read(bad, max_bytes=1 << 20)
        assert isinstance(info.value, CorruptRecordError)
        assert info.value.code == ErrorCode.corrupt_message
    (line,) = [m for m in storage_warnings(caplog) if "corrupt record batch" in m]
    assert "t-0" in line and "segment 00000000000000000000" in line
    assert f"position {pos}" in line and f"offset {bad})" in line
    assert plog.health.corrupt_batches == 1
    assert plog.health.corrupt_reads == 3
    # Before the damage: the good batches up to it; after it: the later segment is intact.
    before = plog.read(bad - 2, max_bytes=1 << 20).records
    assert before and read_batch_header(before).base_offset == bad - 2
    assert len(batch_positions_of(before)) == 2
    after = plog.read(next_base, max_bytes=1 << 20)
    assert read_batch_header(after.records).base_offset == next_base
    plog.close()


def batch_positions_of(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        out.append(pos)
        pos += read_batch_header(data, pos).size
    return out


def test_corrupt_batch_length_is_corrupt_message_not_garbage(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = LogConfig(segment_bytes=2000)
    plog = fill(tmp_path, clock, 40, config)
    plog.close()
    seg0 = tmp_path / "t-0" / "00000000000000000000.log"
    pos, _ = batch_positions(seg0)[5]
    with open(seg0, "r+b") as f:
        f.seek(pos + 8)
        f.write((-12).to_bytes(4, "big", signed=True))  # a length that would loop forever
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, config, clock, recover=False)
    with pytest.raises(SegmentCorruptError):
        plog.read(5, max_bytes=1 << 20)
    assert plog.health.corrupt_batches == 1
    plog.close()


# -- checkpoints and snapshots ----------------------------------------------------------------


def test_damaged_checkpoints_and_snapshot_are_logged_with_what_replaces_them(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plog = fill(tmp_path, clock, 10, LogConfig())
    plog.append_as_leader(
        batch(1, producer_id=7, producer_epoch=0, base_sequence=0), leader_epoch=3
    )
    plog.close()
    d = tmp_path / "t-0"
    (d / "log-start-offset-checkpoint").write_text("0\n1\nt 0 nonsense\n")
    (d / "leader-epoch-checkpoint").write_text("0\n2\n0 0\n")  # says 2 entries, has 1
    (snapshot,) = d.glob("*.snapshot")
    flip(snapshot, snapshot.stat().st_size - 1)
    caplog.set_level(logging.WARNING, "odradek.storage")
    plog = PartitionLog.open(d, "t", 0, LogConfig(), clock, recover=False)
    lines = storage_warnings(caplog)
    (start,) = [m for m in lines if "log-start-offset-checkpoint" in m]
    assert "damaged" in start and "malformed entry" in start and "first segment" in start
    (epochs,) = [m for m in lines if "leader-epoch-checkpoint" in m]
    assert "1 entries where the header says 2" in epochs and "forgotten" in epochs
    (snap,) = [m for m in lines if ".snapshot" in m]
    assert snapshot.name in snap and "CRC" in snap and "replaying the log" in snap
    # The producer state is rebuilt: the producer's next sequence is known again.
    entry = plog.producer_entry(7)
    assert entry is not None and entry.batches[-1].last_seq == 0
    plog.close()


def test_a_missing_checkpoint_is_not_reported(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plog = fill(tmp_path, clock, 3, LogConfig())
    plog.close()
    (tmp_path / "t-0" / "log-start-offset-checkpoint").unlink()
    caplog.set_level(logging.WARNING, "odradek.storage")
    PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(), clock, recover=False).close()
    assert storage_warnings(caplog) == []


# -- I/O failures -----------------------------------------------------------------------------


def test_disk_full_is_logged_once_per_operation_and_errno_until_it_succeeds(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plog = fill(tmp_path, clock, 3, LogConfig())
    seg = plog.active_segment
    good_fd = seg.fd
    full = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
    seg._fd = full
    caplog.set_level(logging.WARNING, "odradek.storage")
    try:
        for _ in range(5):
            with pytest.raises(KafkaStorageError):
                plog.append_as_leader(batch(1), leader_epoch=0)
    finally:
        seg._fd = good_fd
        os.close(full)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    msg = errors[0].getMessage()
    assert "t-0" in msg and "append" in msg and f"errno {errno.ENOSPC}" in msg
    assert plog.health.storage_errors == 5
    plog.append_as_leader(batch(1), leader_epoch=0)
    assert any("append succeeds again" in m for m in storage_warnings(caplog))
    assert plog.log_end_offset == 4
    plog.close()


def test_a_closed_log_is_not_an_io_failure(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plog = fill(tmp_path, clock, 1, LogConfig())
    plog.close()
    caplog.set_level(logging.WARNING, "odradek.storage")
    with pytest.raises(KafkaStorageError):
        plog.read(0, max_bytes=100)
    assert caplog.records == [] and plog.health.storage_errors == 0


def test_a_log_that_cannot_be_created_is_logged(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    from odradek.storage.log_manager import LogManager

    manager = LogManager(tmp_path / "data", clock, LogConfig())
    manager.startup()
    (tmp_path / "data" / "t-0").write_bytes(b"")  # a file where the directory should go
    caplog.set_level(logging.WARNING, "odradek.storage")
    with pytest.raises(KafkaStorageError):
        manager.create_log("t", 0)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "t-0" in line and f"errno {errno.EEXIST}" in line
    manager.shutdown()


def test_a_segment_truncation_is_logged_with_offsets_and_bytes(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plog = fill(tmp_path, clock, 10, LogConfig())
    seg = plog.active_segment
    before = seg.size
    caplog.set_level(logging.WARNING, "odradek.storage")
    removed = seg.truncate_to(7)
    (line,) = storage_warnings(caplog)
    assert line == (
        f"t-0: truncating segment 00000000000000000000.log to offset 7 at position "
        f"{before - removed}: {removed} bytes dropped (offsets 7 to 9)"
    )
    plog.close()
