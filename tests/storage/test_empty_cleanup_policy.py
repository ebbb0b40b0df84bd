"""An empty cleanup.policy (Kafka accepts it): no retention by time or size, no compaction."""

from __future__ import annotations

from pathlib import Path

from storage_helpers import START_MS, OpenLog, batch

from odradek.clock import ManualClock
from odradek.storage.cleaner import CleanerConfig, LogCleaner
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig

NEITHER = LogConfig(cleanup_policy="", segment_bytes=300, retention_ms=1, retention_bytes=0,
                    file_delete_delay_ms=0, min_cleanable_dirty_ratio=0.0)


def _fill_old_duplicates(plog: PartitionLog, clock: ManualClock) -> None:
    """Twenty one-record batches, all with key k0 and an old timestamp, over several segments."""
    for i in range(20):
        plog.append_as_leader(batch(1, ts=START_MS - 10_000_000 + i, value=b"x" * 50),
                              leader_epoch=0)
    plog.roll()
    plog.update_high_watermark(plog.log_end_offset)
    clock.advance(60_000)


def test_neither_policy_means_no_retention(open_log: OpenLog, clock: ManualClock) -> None:
    plog = open_log(NEITHER)
    assert not NEITHER.delete and not NEITHER.compact and NEITHER.cleanup_policies == ()
    _fill_old_duplicates(plog, clock)
    segments = [s.base_offset for s in plog.segments]
    assert len(segments) > 3
    assert plog.apply_retention(clock.milliseconds()) == 0
    assert [s.base_offset for s in plog.segments] == segments
    assert plog.log_start_offset == 0
    # The same log with delete in its policy loses everything but the active segment.
    plog.update_config(LogConfig(cleanup_policy="delete", segment_bytes=300, retention_ms=1,
                                 file_delete_delay_ms=0))
    assert plog.apply_retention(clock.milliseconds()) == len(segments) - 1


def test_neither_policy_means_no_compaction(tmp_path: Path, clock: ManualClock) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, NEITHER, clock, recover=False)
    _fill_old_duplicates(plog, clock)
    cleaner = LogCleaner(lambda: [plog], CleanerConfig(dedupe_buffer_size=1 << 20), clock)
    now = clock.milliseconds()
    assert cleaner.log_to_clean(plog, now) is None
    assert cleaner.grab_filthiest(now) is None
    assert cleaner.clean_log(plog, now) is None
    assert plog.log_start_offset == 0 and plog.log_end_offset == 20
    size = plog.size_in_bytes
    # The control: compact would keep one record of the twenty (all share key k0).
    plog.update_config(LogConfig(cleanup_policy="compact", segment_bytes=300,
                                 min_cleanable_dirty_ratio=0.0))
    result = cleaner.clean_once(clock.milliseconds())
    assert result is not None and result.swapped
    assert plog.size_in_bytes < size / 4
    plog._close_handles()
