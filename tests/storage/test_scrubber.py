"""The log scrubber finds a flipped byte in a closed segment within a bounded number of steps,
at no more than its rate, reports it once, and takes a segment deleted or swapped under it for
what it is, not for damage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from storage_helpers import batch, batch_positions, flip

from odradek.clock import ManualClock
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.scrubber import LogScrubber, ScrubberConfig

SEGMENT_BYTES = 4000
RATE = 2000  # bytes per second
STEP = 500


def make_logs(tmp_path: Path, clock: ManualClock, n_logs: int = 2) -> list[PartitionLog]:
    logs = []
    config = LogConfig(segment_bytes=SEGMENT_BYTES)
    for p in range(n_logs):
        plog = PartitionLog.open(tmp_path / f"t-{p}", "t", p, config, clock, recover=False)
        for i in range(120):
            plog.append_as_leader(batch(1, value=b"payload-%04d" % i), leader_epoch=0)
        plog.update_high_watermark(plog.log_end_offset)
        logs.append(plog)
    return logs


def run_until(scrubber: LogScrubber, clock: ManualClock, done, max_steps: int) -> int:
    """Step the scrubber, advancing the clock whenever it must wait; returns steps taken."""
    for steps in range(1, max_steps + 1):
        if scrubber.step() is None:
            clock.advance(max(scrubber.delay_ms(), 1))
        if done():
            return steps
    raise AssertionError(f"not done after {max_steps} steps")


def test_finds_a_flipped_record_byte_within_bounded_steps_at_its_rate(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    logs = make_logs(tmp_path, clock)
    victim = logs[1]
    seg = victim.log_segments[1]  # closed
    positions = batch_positions(seg.log_path)
    offset = sorted(positions)[len(positions) // 2]
    pos, size = positions[offset]
    flip(seg.log_path, pos + size - 2)  # inside a record: only the CRC can tell
    # A read serves it without noticing (the CRC is the client's or the scrubber's job).
    assert victim.read(offset, max_bytes=100_000).records
    scrubber = LogScrubber(
        lambda: logs, ScrubberConfig(bytes_per_second=RATE, step_bytes=STEP, interval_ms=60_000),
        clock,
    )
    start = clock.monotonic_ms()
    caplog.set_level(logging.WARNING, "odradek.storage")
    total = sum(s.size for p in logs for s in p.log_segments[:-1])
    steps = run_until(scrubber, clock, lambda: victim.health.corrupt_batches == 1,
                      max_steps=4 * (total // STEP + 20))
    elapsed = clock.monotonic_ms() - start
    # The rate holds: what was read fits the time taken, give or take one step.
    assert scrubber.bytes_scrubbed <= RATE * elapsed / 1000 + STEP + size
    assert steps <= 2 * (total // STEP + 20)
    (found,) = victim.health.corruptions()
    assert (found.segment_base_offset, found.position, found.offset) == (seg.base_offset, pos,
                                                                          offset)
    assert found.found_by == "scrubber" and "CRC32C" in found.reason
    (line,) = [r.getMessage() for r in caplog.records if "corrupt record batch" in r.getMessage()]
    assert "t-1" in line and f"segment {seg.base_offset:020d}" in line
    assert f"position {pos}" in line and f"offset {offset})" in line
    assert logs[0].health.corrupt_batches == 0
    # The pass finishes, the next one waits for the interval and reports nothing new.
    run_until(scrubber, clock, lambda: scrubber.passes == 2, max_steps=10 * (total // STEP + 20))
    assert scrubber.corrupt_batches_found == 1
    assert len([r for r in caplog.records if "corrupt record batch" in r.getMessage()]) == 1
    for plog in logs:
        plog.close()


def test_a_clean_pass_reads_every_closed_segment_once_then_waits(
    tmp_path: Path, clock: ManualClock
) -> None:
    logs = make_logs(tmp_path, clock)
    closed = sum(len(p.log_segments) - 1 for p in logs)
    total = sum(s.size for p in logs for s in p.log_segments[:-1])
    scrubber = LogScrubber(
        lambda: logs, ScrubberConfig(bytes_per_second=10**9, step_bytes=STEP, interval_ms=5000),
        clock,
    )
    while scrubber.passes == 0:
        if scrubber.step() is None:
            clock.advance(1)  # each step's share of a second at this rate is under 1 ms
    assert (scrubber.passes, scrubber.segments_scrubbed) == (1, closed)
    # Every byte once, plus the batches cut by a step's end, read again by the next step.
    assert total <= scrubber.bytes_scrubbed <= total * 1.5
    assert 4999 <= scrubber.delay_ms() <= 5000 and scrubber.next_job() is None
    for plog in logs:
        plog.close()


def test_a_segment_deleted_while_it_is_read_is_not_reported(
    tmp_path: Path, clock: ManualClock
) -> None:
    (plog,) = make_logs(tmp_path, clock, 1)
    scrubber = LogScrubber(lambda: [plog], ScrubberConfig(step_bytes=STEP), clock)
    job = scrubber.next_job()
    assert job is not None and job.segment is plog.log_segments[0]
    # DeleteRecords removes the segment (renamed .deleted) before the worker opens it.
    plog.delete_records_before(plog.log_segments[1].base_offset)
    result = job.run()
    assert result.vanished
    assert scrubber.complete(result) is None
    # The next job moves on to a segment still in the log.
    nxt = scrubber.next_job()
    assert nxt is not None and nxt.segment is plog.log_segments[0]
    assert plog.health.corrupt_batches == 0
    plog.close()


def test_a_segment_swapped_after_it_was_opened_is_not_reported(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The job read the old file; the log moved on meanwhile: the result is dropped, even if
    the bytes it read would not match the segment now in the log."""
    (plog,) = make_logs(tmp_path, clock, 1)
    seg = plog.log_segments[0]
    flip(seg.log_path, 100)
    scrubber = LogScrubber(lambda: [plog], ScrubberConfig(step_bytes=STEP), clock)
    job = scrubber.next_job()
    assert job is not None
    result = job.run()
    assert result.scan is not None and result.scan.problem is not None
    plog.delete_records_before(plog.log_segments[1].base_offset)
    assert scrubber.complete(result) is None
    assert plog.health.corrupt_batches == 0
    plog.close()


def test_many_small_segments_add_up_to_the_rate(tmp_path: Path, clock: ManualClock) -> None:
    """Steps of a few hundred bytes each (tiny segments) still wait their share of a second."""
    config = LogConfig(segment_bytes=200)
    plog = PartitionLog.open(tmp_path / "t-0", "t", 0, config, clock, recover=False)
    for i in range(60):
        plog.append_as_leader(batch(1, value=b"payload-%04d" % i), leader_epoch=0)
    closed = plog.log_segments[:-1]
    assert len(closed) >= 20 and all(s.size < 300 for s in closed)
    rate = 1_000_000  # a step of ~100 bytes is worth 0.1 ms
    scrubber = LogScrubber(
        lambda: [plog], ScrubberConfig(bytes_per_second=rate, interval_ms=60_000), clock
    )
    start = clock.monotonic_ms()
    run_until(scrubber, clock, lambda: scrubber.passes == 1, max_steps=1000)
    elapsed = clock.monotonic_ms() - start
    assert scrubber.bytes_scrubbed >= sum(s.size for s in closed)
    assert scrubber.bytes_scrubbed <= rate * elapsed / 1000 + 300
    plog.close()
