"""The durable high watermark: ``replication-offset-checkpoint`` of a data directory."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from storage_helpers import START_MS, batch, crash

from odradek.clock import ManualClock
from odradek.storage.checkpoint import TMP_SUFFIX
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import HIGH_WATERMARK_CHECKPOINT, LogManager


def manager(path: Path, clock: ManualClock, **kw: int) -> LogManager:
    lm = LogManager(path, clock, LogConfig(), **kw)
    return lm


def fill(lm: LogManager, topic: str, partition: int, n: int, hw: int) -> None:
    plog = lm.create_log(topic, partition)
    for _ in range(n):
        plog.append_as_leader(batch(1), leader_epoch=0)
    plog.update_high_watermark(hw)


def checkpoint_text(path: Path) -> str:
    return (path / HIGH_WATERMARK_CHECKPOINT).read_text()


def test_written_at_shutdown_in_kafkas_format_and_loaded(tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    lm = manager(tmp_path, clock)
    lm.startup()
    fill(lm, "orders", 0, 5, 3)
    fill(lm, "orders", 1, 4, 4)
    fill(lm, "a.b-c", 7, 2, 0)
    lm.shutdown()
    assert checkpoint_text(tmp_path) == "0\n3\na.b-c 7 0\norders 0 3\norders 1 4\n"
    assert not (tmp_path / (HIGH_WATERMARK_CHECKPOINT + TMP_SUFFIX)).exists()
    again = manager(tmp_path, clock)
    again.startup(lazy=True)
    hws = {key: again.get_log(*key).high_watermark for key in again.partitions()}  # type: ignore[union-attr]
    assert hws == {("a.b-c", 7): 0, ("orders", 0): 3, ("orders", 1): 4}
    again.shutdown()


def test_high_watermark_is_at_most_the_log_end_after_a_crash(tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    lm = manager(tmp_path, clock)
    lm.startup()
    fill(lm, "t", 0, 6, 6)
    assert lm.checkpoint_high_watermarks()
    plog = lm.get_log("t", 0)
    assert plog is not None
    plog.truncate_to(2)  # the data the checkpoint counted is gone (a follower's truncation)
    crash(plog)
    again = manager(tmp_path, clock)
    again.startup()
    reopened = again.get_log("t", 0)
    assert reopened is not None
    assert (reopened.log_end_offset, reopened.high_watermark) == (2, 2)


def test_without_a_checkpoint_partitions_start_at_their_log_end(tmp_path: Path) -> None:
    # A data directory from before replication has no checkpoint at all. A partition missing
    # from an existing checkpoint was created since it was written (a crash within the
    # interval): it may hold records its ISR never had, so it starts at its log start.
    clock = ManualClock(START_MS)
    lm = manager(tmp_path, clock)
    lm.startup()
    fill(lm, "old", 0, 4, 1)
    fill(lm, "listed", 0, 4, 1)
    for plog in lm.all_logs():
        crash(plog)
    (tmp_path / HIGH_WATERMARK_CHECKPOINT).unlink()  # as a data dir from before replication
    again = manager(tmp_path, clock)
    again.startup()
    assert again.get_log("old", 0).high_watermark == 4  # type: ignore[union-attr]
    again.shutdown()
    (tmp_path / HIGH_WATERMARK_CHECKPOINT).write_text("0\n1\nlisted 0 1\n")
    third = manager(tmp_path, clock)
    third.startup()
    assert third.get_log("old", 0).high_watermark == 0  # type: ignore[union-attr]
    assert third.get_log("listed", 0).high_watermark == 1  # type: ignore[union-attr]
    third.shutdown()


def test_a_new_data_dir_that_crashes_before_its_first_checkpoint_hides_its_tail(
    tmp_path: Path,
) -> None:
    # Found by the deterministic simulation (seed 27): a follower restarted within the
    # checkpoint interval of its first start served records its ISR never had, since its
    # directory, without the file, passed for one from before replication.
    clock = ManualClock(START_MS)
    lm = manager(tmp_path, clock)
    lm.startup()
    assert checkpoint_text(tmp_path) == "0\n0\n"
    fill(lm, "t", 0, 4, 1)
    for plog in lm.all_logs():
        crash(plog)
    again = manager(tmp_path, clock)
    again.startup()
    reopened = again.get_log("t", 0)
    assert reopened is not None
    assert (reopened.log_end_offset, reopened.high_watermark) == (4, 0)
    again.shutdown()


@pytest.mark.parametrize("text", ["0\n2\nt 0 3\n", "1\n1\nt 0 3\n", "0\n1\nt 0 x\n", "junk"])
def test_a_damaged_checkpoint_starts_logs_at_their_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    clock = ManualClock(START_MS)
    lm = manager(tmp_path, clock)
    lm.startup()
    fill(lm, "t", 0, 5, 5)
    lm.get_log("t", 0).delete_records_before(2)  # type: ignore[union-attr]
    lm.shutdown()
    (tmp_path / HIGH_WATERMARK_CHECKPOINT).write_text(text)
    caplog.set_level(logging.WARNING, "odradek.storage")
    again = manager(tmp_path, clock)
    again.startup()
    assert again.get_log("t", 0).high_watermark == 2  # type: ignore[union-attr]
    assert any(HIGH_WATERMARK_CHECKPOINT in r.getMessage() and "log start offset" in
               r.getMessage() for r in caplog.records)
    again.shutdown()
    assert checkpoint_text(tmp_path) == "0\n1\nt 0 2\n"


def test_periodic_checkpoint_only_when_changed_and_carries_unopened_logs(
    tmp_path: Path,
) -> None:
    clock = ManualClock(START_MS)
    lm = manager(tmp_path, clock, high_watermark_checkpoint_interval_ms=5000)
    lm.startup()
    fill(lm, "a", 0, 3, 3)
    fill(lm, "b", 0, 3, 2)
    lm.shutdown()
    again = manager(tmp_path, clock, high_watermark_checkpoint_interval_ms=5000)
    again.startup(lazy=True)  # nothing opened yet
    path = tmp_path / HIGH_WATERMARK_CHECKPOINT
    now = clock.milliseconds()
    again.flush_due(now)  # starts the interval
    a = again.get_log("a", 0)
    assert a is not None
    a.append_as_leader(batch(1), leader_epoch=0)
    a.update_high_watermark(4)
    again.flush_due(now + 4999)
    assert checkpoint_text(tmp_path) == "0\n2\na 0 3\nb 0 2\n"
    again.flush_due(now + 5000)
    assert checkpoint_text(tmp_path) == "0\n2\na 0 4\nb 0 2\n"  # "b" carried over unopened
    mtime = os.stat(path).st_mtime_ns
    os.utime(path, ns=(0, 0))
    again.flush_due(now + 10_000)  # nothing changed: not rewritten
    assert os.stat(path).st_mtime_ns == 0 != mtime
    again.delete_log("b", 0)
    assert again.checkpoint_high_watermarks()
    assert checkpoint_text(tmp_path) == "0\n1\na 0 4\n"
    again.shutdown()


def test_checkpoint_prepared_for_a_thread_is_written_there_and_never_over_newer_values(
    tmp_path: Path,
) -> None:
    """The broker takes the values on the event loop and writes them in a worker thread; a
    prepared write overtaken by a newer one (shutdown's) is skipped, not written over it."""
    clock = ManualClock(START_MS)
    lm = manager(tmp_path, clock, high_watermark_checkpoint_interval_ms=5000)
    lm.startup()
    fill(lm, "a", 0, 3, 3)
    now = clock.milliseconds()
    assert lm.due_high_watermark_checkpoint(now) is None  # starts the interval
    assert lm.due_high_watermark_checkpoint(now + 4999) is None
    write = lm.due_high_watermark_checkpoint(now + 5000)
    assert write is not None
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(write).result()
    assert checkpoint_text(tmp_path) == "0\n1\na 0 3\n"
    assert lm.due_high_watermark_checkpoint(now + 10_000) is None  # unchanged: nothing to do
    a = lm.get_log("a", 0)
    assert a is not None
    a.append_as_leader(batch(2), leader_epoch=0)
    a.update_high_watermark(4)
    stale = lm.due_high_watermark_checkpoint(now + 15_000)  # takes a 0 4
    assert stale is not None
    a.update_high_watermark(5)
    lm.shutdown()  # writes the newest values itself
    assert checkpoint_text(tmp_path) == "0\n1\na 0 5\n"
    os.unlink(tmp_path / HIGH_WATERMARK_CHECKPOINT)
    assert not stale()  # overtaken: the file is not written again with older values
    assert not (tmp_path / HIGH_WATERMARK_CHECKPOINT).exists()


def test_a_recreated_partition_does_not_inherit_a_stale_entry(tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    (tmp_path).mkdir(exist_ok=True)
    (tmp_path / HIGH_WATERMARK_CHECKPOINT).write_text("0\n1\nt 0 9\n")
    lm = manager(tmp_path, clock)
    lm.startup()  # no t-0 directory: the entry is ignored
    fill(lm, "t", 0, 3, 0)
    plog = lm.get_log("t", 0)
    assert plog is not None and plog.high_watermark == 0
    lm.shutdown()
    assert checkpoint_text(tmp_path) == "0\n1\nt 0 0\n"
