"""The bounded cache of open segment files (log.max.open.files) and lazy log opening."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from storage_helpers import START_MS, batch

from odradek.clock import ManualClock
from odradek.errors import KafkaStorageError
from odradek.protocol.records import decode_records
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import CLEAN_SHUTDOWN_FILE, DataDirLock, LogManager
from odradek.storage.open_files import OpenFileCache


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _values(plog: PartitionLog) -> list[bytes]:
    out: list[bytes] = []
    offset = plog.log_start_offset
    while offset < plog.log_end_offset:
        data = plog.read(offset, max_bytes=1 << 20).records
        records = decode_records(data)
        out.extend(r.value or b"" for r in records)
        offset = records[-1].offset + 1
    return out


def _logs(tmp_path: Path, n: int, files: OpenFileCache, **cfg: int) -> list[PartitionLog]:
    clock = ManualClock(START_MS)
    return [
        PartitionLog.open(tmp_path / f"t-{i}", "t", i, LogConfig(**cfg), clock, recover=False,
                          files=files)
        for i in range(n)
    ]


def test_appends_to_evicted_segments_land_at_the_end(tmp_path: Path) -> None:
    files = OpenFileCache(3)
    logs = _logs(tmp_path, 6, files, index_interval_bytes=1)
    for round_ in range(4):
        for i, plog in enumerate(logs):
            plog.append_as_leader(batch(1, value=b"%d-%d" % (i, round_)), leader_epoch=0)
            assert len(files) <= 3
    assert files.evicted > 0
    for i, plog in enumerate(logs):
        assert plog.log_end_offset == 4
        assert _values(plog) == [b"%d-%d-0" % (i, r) for r in range(4)]
        # The index written through reopened handles points at every batch.
        seg = plog.active_segment
        assert len(seg.offset_index) == 3
        assert os.path.getsize(seg.offset_index.path) == 3 * 8
    for plog in logs:
        plog.close()
    assert len(files) == 0
    reopened = _logs(tmp_path, 6, OpenFileCache(2))
    assert [_values(p) for p in reopened] == [[b"%d-%d-0" % (i, r) for r in range(4)]
                                                for i in range(6)]


def test_flush_after_eviction_fsyncs_the_evicted_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = OpenFileCache(2)
    a, b, c = _logs(tmp_path, 3, files)
    a.append_as_leader(batch(1), leader_epoch=0)
    log_inode = os.stat(a.active_segment.log_path).st_ino
    b.append_as_leader(batch(1), leader_epoch=0)
    c.append_as_leader(batch(1), leader_epoch=0)
    assert a.active_segment._fd is None  # evicted, still unflushed
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    a.flush()
    assert log_inode in synced
    synced.clear()
    a.flush()  # nothing new: no fsync
    assert log_inode not in synced
    assert len(files) <= 2


def test_eviction_during_recovery_and_reads(tmp_path: Path) -> None:
    files = OpenFileCache(1)  # every other file's use evicts the last one
    (plog,) = _logs(tmp_path, 1, files, index_interval_bytes=1, segment_bytes=400)
    for i in range(20):
        plog.append_as_leader(batch(2, value=b"r%d" % i), leader_epoch=0)
    expected = _values(plog)
    plog._close_handles()
    plog._closed = True
    clock = ManualClock(START_MS)
    again = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(index_interval_bytes=1,
                              segment_bytes=400), clock, recover=True, files=files)
    assert len(again.segments) > 3
    assert _values(again) == expected
    assert len(files) <= 1


def test_fds_stay_flat_with_2000_partitions(tmp_path: Path) -> None:
    before = _open_fds()
    lm = LogManager(tmp_path, ManualClock(START_MS), LogConfig(), max_open_files=32)
    lm.startup()
    for p in range(2000):
        lm.create_log(f"t{p // 100}", p % 100).append_as_leader(
            batch(1, value=b"p%d" % p), leader_epoch=0
        )
        assert _open_fds() <= before + 32 + 4
    for p in range(2000):
        plog = lm.get_log(f"t{p // 100}", p % 100)
        assert plog is not None and _values(plog) == [b"p%d-0" % p]
    assert _open_fds() <= before + 32 + 4
    lm.shutdown()
    assert _open_fds() <= before + 1


def test_clean_shutdown_of_many_logs_needs_no_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lm = LogManager(tmp_path, ManualClock(START_MS), LogConfig(), max_open_files=16)
    lm.startup()
    for p in range(300):
        lm.create_log("t", p).append_as_leader(batch(1), leader_epoch=0)
    lm.shutdown()
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    assert not list(tmp_path.glob("*/*.tmp"))
    caplog.set_level(logging.INFO, logger="odradek.storage")
    lm = LogManager(tmp_path, ManualClock(START_MS), LogConfig(), max_open_files=16)
    lm.startup(lazy=True)
    assert lm.had_clean_shutdown and lm.pending_count == 300
    assert "found 300 partition logs" in caplog.text and "after a clean shutdown" in caplog.text
    # Opening on use; nothing was recovered (a recovered segment has lost its .txnindex
    # and rebuilt its indexes, but above all: it says so).
    plog = lm.get_log("t", 7)
    assert plog is not None and plog.log_end_offset == 1 and lm.pending_count == 299
    assert lm.open_pending(100) == 199
    assert lm.open_pending() == 0
    assert all(p.log_end_offset == 1 for p in lm.all_logs())
    lm.shutdown()


def test_lazy_logs_after_a_crash_are_recovered_on_use_and_keep_the_marker_away(
    tmp_path: Path,
) -> None:
    lm = LogManager(tmp_path, ManualClock(START_MS), LogConfig())
    lm.startup()
    for p in range(3):
        lm.create_log("t", p).append_as_leader(batch(1), leader_epoch=0)
    for plog in lm.all_logs():
        plog._close_handles()
        plog._closed = True
    # Garbage after the last batch, as a machine crash leaves.
    with open(tmp_path / "t-1" / "00000000000000000000.log", "ab") as f:
        f.write(b"\xff" * 30)
    lm = LogManager(tmp_path, ManualClock(START_MS), LogConfig())
    lm.startup(lazy=True)
    assert not lm.had_clean_shutdown and lm.pending_count == 3
    plog = lm.get_log("t", 1)
    assert plog is not None and plog.log_end_offset == 1
    assert os.path.getsize(tmp_path / "t-1" / "00000000000000000000.log") == plog.size_in_bytes
    lm.shutdown()  # t-0 and t-2 were never recovered: no marker
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()


def test_a_data_dir_is_locked_by_one_owner(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    with pytest.raises(KafkaStorageError, match="in use by another process"):
        DataDirLock(tmp_path)
    lock.release()
    DataDirLock(tmp_path).release()


def test_a_log_that_cannot_be_opened_is_left_alone_by_the_background(tmp_path: Path) -> None:
    lm = LogManager(tmp_path, ManualClock(START_MS), LogConfig())
    lm.startup()
    for p in range(3):
        lm.create_log("t", p).append_as_leader(batch(1), leader_epoch=0)
    lm.shutdown()
    for name in os.listdir(tmp_path / "t-1"):
        os.unlink(tmp_path / "t-1" / name)
    (tmp_path / "t-1" / "00000000000000000000.log").mkdir()  # cannot be opened as a file
    lm = LogManager(tmp_path, ManualClock(START_MS), LogConfig())
    lm.startup(lazy=True)
    assert lm.open_pending() == 0  # t-1 failed, and is not retried in a loop
    assert lm.has_log("t", 1) and lm.pending_count == 0
    with pytest.raises(KafkaStorageError):
        lm.get_log("t", 1)
    assert [p.log_end_offset for p in lm.all_logs()] == [1, 1]
    lm.shutdown()
