"""Crash the cleaner at every step: the log must then load and read exactly as before the
pass or exactly as after it, and a later pass must reach the same result."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from storage_helpers import START_MS
from test_cleaner import Rec, append, fill, records_of

from odradek.clock import ManualClock
from odradek.storage.cleaner import CleanerConfig, LogCleaner
from odradek.storage.cleaner_task import TaskState
from odradek.storage.log import SWAP_MANIFEST, PartitionLog
from odradek.storage.log_config import LogConfig

CONFIG = LogConfig(cleanup_policy="compact", segment_bytes=500, index_interval_bytes=60,
                   delete_retention_ms=1_000, min_cleanable_dirty_ratio=0.0)


SMALL_MAP = CleanerConfig(dedupe_buffer_size=1 << 20)


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    # A simulated crash keeps the page cache, so fsync only costs time here.
    monkeypatch.setattr(os, "fsync", lambda fd: None)


class Crash(BaseException):
    """Not an Exception: nothing on the way up may catch it and tidy up, like a kill -9."""


def build(directory: Path, clock: ManualClock) -> PartitionLog:
    """A log whose next pass merges small cleaned segments (so some old segments disappear
    without a namesake), rewrites batches, keeps an empty producer batch and tombstones."""
    plog = PartitionLog.open(directory, "t", 0, CONFIG, clock, recover=False)
    append(plog, [(b"p", b"0"), (b"q", b"0")], producer_id=3, producer_epoch=0, base_sequence=0)
    fill(plog, [(b"k%d" % (i % 6), b"v%d" % i) for i in range(20)])
    fill(plog, [(b"k%d" % (i % 6), b"w%d" % i) for i in range(20)])
    cleaner = LogCleaner(lambda: [plog], SMALL_MAP, clock)
    first = cleaner.clean_log(plog, clock.milliseconds())  # no crash here
    assert first is not None and first.swapped
    fill(plog, [(b"k%d" % (i % 9), b"x%d" % i if i % 5 else None) for i in range(30)],
         per_batch=3)
    append(plog, [(b"p", b"1"), (b"q", b"1")])
    plog.roll()
    plog.update_high_watermark(plog.log_end_offset)
    return plog


def snapshot_at_every_step(plog: PartitionLog, out: Path, clock: ManualClock,
                           monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """Run one pass, copying the partition directory after every step and every rename."""
    snaps: list[tuple[str, Path]] = []

    def copy(name: str) -> None:
        target = out / f"{len(snaps):03d}-{name}"
        shutil.copytree(plog.directory, target)
        snaps.append((name, target))

    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        if Path(dst).parent == plog.directory:
            copy("rename-" + Path(dst).name)

    cleaner = LogCleaner(lambda: [plog], SMALL_MAP, clock, on_step=copy)
    task = cleaner.plan(plog, clock.milliseconds())
    assert task is not None
    copy("planned")
    assert task.run() is TaskState.DONE
    monkeypatch.setattr(os, "replace", replace)
    try:
        result = cleaner.complete(task)
    finally:
        monkeypatch.setattr(os, "replace", real_replace)
    assert result.swapped
    return snaps


def reopen(directory: Path, clock: ManualClock) -> PartitionLog:
    plog = PartitionLog.open(directory, "t", 0, CONFIG, clock, recover=True)
    plog.update_high_watermark(plog.log_end_offset)
    return plog


def assert_tidy(directory: Path) -> None:
    names = os.listdir(directory)
    assert not [n for n in names if n.endswith((".cleaned", ".swap", ".deleted"))], names
    assert SWAP_MANIFEST + ".swap" not in names


def test_crash_at_every_step_reads_before_or_after(tmp_path: Path, clock: ManualClock,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    plog = build(tmp_path / "t-0", clock)
    before = records_of(plog)
    snaps = snapshot_at_every_step(plog, tmp_path / "snaps", clock, monkeypatch)
    after = records_of(plog)
    assert before != after and len(after) < len(before)
    names = {name for name, _ in snaps}
    assert {"group-cleaned", "cleaned-to-swap", "manifest-committed", "old-to-deleted",
            "swap-to-final", "manifest-removed", "checkpoint-written"} <= names
    outcomes = []
    for name, snap in snaps:
        again = reopen(snap, clock)
        got = records_of(again)
        assert got in (before, after), name
        outcomes.append(got == after)
        assert_tidy(snap)
        # Cleaning the recovered log (at the same time) ends where the uncrashed pass did.
        LogCleaner(lambda a=again: [a], SMALL_MAP, clock).clean_log(  # type: ignore[misc]
            again, clock.milliseconds())
        assert records_of(again) == after, name
        again.close()
    # Early crashes roll back, late ones roll forward; the commit point sits in between.
    assert outcomes[0] is False and outcomes[-1] is True
    assert outcomes == sorted(outcomes)
    commit = [i for i, (name, _) in enumerate(snaps) if name == "rename-" + SWAP_MANIFEST +
              ".swap"]
    assert commit and outcomes.index(True) == commit[0]


def count_steps(tmp_path: Path, clock: ManualClock) -> int:
    plog = build(tmp_path / "count" / "t-0", clock)
    seen: list[str] = []
    LogCleaner(lambda: [plog], SMALL_MAP, clock, on_step=seen.append).clean_log(
        plog, clock.milliseconds())
    plog.close()
    return len(seen)


def test_killed_by_exception_at_every_step(tmp_path: Path, clock: ManualClock) -> None:
    steps = count_steps(tmp_path, clock)
    assert steps >= 8
    reference = build(tmp_path / "ref" / "t-0", clock)
    before = records_of(reference)
    LogCleaner(lambda: [reference], SMALL_MAP, clock).clean_log(
        reference, clock.milliseconds())
    after = records_of(reference)
    reference.close()
    seen_after = False
    for k in range(steps):
        directory = tmp_path / f"k{k}" / "t-0"
        plog = build(directory, clock)
        calls = 0

        def crash_at(name: str, k: int = k) -> None:
            nonlocal calls
            calls += 1
            if calls == k + 1:
                raise Crash(name)

        cleaner = LogCleaner(lambda p=plog: [p], SMALL_MAP, clock,  # type: ignore[misc]
                             on_step=crash_at)
        task = cleaner.plan(plog, clock.milliseconds())
        assert task is not None
        with pytest.raises(Crash):
            task.run()
            cleaner.complete(task)
        task._close_reads()  # the dying process closes its descriptors
        plog._close_handles()
        again = reopen(directory, clock)
        got = records_of(again)
        assert got in (before, after), k
        seen_after |= got == after
        assert_tidy(directory)
        again.close()
    assert seen_after


def test_failure_inside_the_pass_leaves_the_live_log_usable(tmp_path: Path,
                                                            clock: ManualClock) -> None:
    plog = build(tmp_path / "t-0", clock)
    before = records_of(plog)

    def fail(name: str) -> None:
        raise OSError("disk full")

    cleaner = LogCleaner(lambda: [plog], SMALL_MAP, clock, on_step=fail)
    result = cleaner.clean_log(plog, clock.milliseconds())
    assert result is not None and not result.swapped and "disk full" in (result.error or "")
    assert records_of(plog) == before
    assert not [n for n in os.listdir(plog.directory) if n.endswith((".cleaned", ".swap"))]
    append(plog, [(b"z", b"1")])
    assert records_of(plog)[-1] == Rec(plog.log_end_offset - 1, b"z", b"1", START_MS, (("h", b"z"),))


def test_uncommitted_leftovers_are_rolled_back(tmp_path: Path, clock: ManualClock) -> None:
    plog = build(tmp_path / "t-0", clock)
    before = records_of(plog)
    plog.close()
    d = plog.directory
    first = sorted(n for n in os.listdir(d) if n.endswith(".log"))[0]
    (d / (first + ".cleaned")).write_bytes(b"garbage")
    (d / (first + ".swap")).write_bytes(b"garbage")
    (d / ("00000000000000000000.index.swap")).write_bytes(b"\0" * 8)
    again = reopen(d, clock)
    assert records_of(again) == before
    assert_tidy(d)
    again.close()


Step = Callable[[str], None]
