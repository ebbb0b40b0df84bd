"""The log scrubber: finds corrupt batches in closed segments before a reader does.

Disks and filesystems do lose bits, and a fetch only checks what it must to frame its answer
(the CRC is the client's job), so damage in a segment nobody reads goes unseen until a consumer
falls behind or replays. The scrubber walks every closed segment of every log (the active one
is still being written; recovery validates it after a crash), checking each batch's framing,
offsets and CRC32C with :func:`odradek.storage.verify.scan_batches`, and reports a bad batch to
the log's :class:`~odradek.storage.health.PartitionHealth` (one WARNING with partition, segment,
offset and position, counted; reads from there answer CORRUPT_MESSAGE anyway). Once replication
exists this is where a damaged replica would be repaired from another.

Pacing: one :meth:`LogScrubber.next_job` reads about ``min(step_bytes, bytes_per_second)``
bytes (at least one whole batch), and the next job is due only when the bytes read so far fit
``bytes_per_second`` (time from the injected clock's monotonic reading). After a full pass over
every log the next pass starts ``interval_ms`` later.

Threads: the :class:`LogScrubber` is owned by the broker's event-loop thread, which plans a
job (:meth:`LogScrubber.next_job`) and takes its result (:meth:`LogScrubber.complete`). The
job itself, :meth:`ScrubJob.run`, may run on a worker thread: it reads only through a file
descriptor it opens itself, so a segment deleted or swapped meanwhile is either read as it was
(the open descriptor keeps the old file) or not found (the job says so). :meth:`complete`
drops the result of a segment that is no longer part of its log, so a swap can never be
mistaken for damage. Nothing is persisted: a restarted broker starts a new pass.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from odradek.clock import Clock
from odradek.storage.health import CorruptBatch
from odradek.storage.loader import CLEANER_OFFSET_CHECKPOINT
from odradek.storage.log import PartitionLog
from odradek.storage.segment import LogSegment
from odradek.storage.verify import BatchScan, scan_batches

__all__ = ["LogScrubber", "ScrubJob", "ScrubResult", "ScrubberConfig"]

log = logging.getLogger("odradek.storage")


@dataclass(frozen=True, slots=True)
class ScrubberConfig:
    """``log.scrubber.enable``, ``log.scrubber.bytes.per.second`` and
    ``log.scrubber.interval.ms`` (pause between the end of a pass and the next);
    ``step_bytes`` bounds one job's read."""

    enable: bool = True
    bytes_per_second: int = 1 << 20
    interval_ms: int = 3_600_000
    step_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.bytes_per_second <= 0 or self.step_bytes <= 0 or self.interval_ms < 0:
            raise ValueError(f"invalid scrubber settings: {self}")


@dataclass(frozen=True, slots=True)
class ScrubJob:
    """Validate [start, end) of one closed segment's ``.log``; safe on any thread (see the
    module docstring). ``segment`` is for :meth:`LogScrubber.complete` on the owner thread
    only."""

    log: PartitionLog
    segment: LogSegment
    path: Path
    start: int
    end: int
    expected_offset: int
    contiguous: bool
    budget: int

    def run(self) -> ScrubResult:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return ScrubResult(self, vanished=True)
        except OSError as e:
            return ScrubResult(self, error=e)
        try:
            scan = scan_batches(
                lambda n, pos: os.pread(fd, n, pos), self.start, self.end,
                base_offset=self.segment.base_offset, expected_offset=self.expected_offset,
                contiguous=self.contiguous, budget=self.budget,
            )
        except OSError as e:
            return ScrubResult(self, error=e)
        finally:
            os.close(fd)
        return ScrubResult(self, scan=scan)


@dataclass(frozen=True, slots=True)
class ScrubResult:
    """What a :class:`ScrubJob` found: a scan, an I/O error, or that the file was gone."""

    job: ScrubJob
    scan: BatchScan | None = None
    error: OSError | None = None
    vanished: bool = False

    @property
    def bytes_read(self) -> int:
        return self.scan.bytes_read if self.scan is not None else 0


class LogScrubber:
    """Plans scrub jobs over ``logs()`` and takes their results (see the module docstring).
    Owned by the broker's event-loop thread.

    Counters for tests (and, later, metrics): ``bytes_scrubbed``, ``segments_scrubbed``,
    ``passes`` completed and ``corrupt_batches_found`` (new ones only).
    """

    def __init__(
        self, logs: Callable[[], list[PartitionLog]], config: ScrubberConfig, clock: Clock
    ) -> None:
        self._logs = logs
        self.config = config
        self.clock = clock
        self._queue: list[PartitionLog] = []  # logs still to visit in this pass, reversed
        self._segment: LogSegment | None = None  # in progress, with its log
        self._log: PartitionLog | None = None
        self._after = -1  # base offset of the last segment left in the current log
        self._position = 0
        self._expected = 0
        # Monotonic, fractional: many small steps must add up to the rate, not round to 0.
        self._due_ms: float = clock.monotonic_ms()  # the first pass starts at once
        self._in_pass = False
        self.bytes_scrubbed = 0
        self.segments_scrubbed = 0
        self.passes = 0
        self.corrupt_batches_found = 0
        self._pass_bytes = 0
        self._pass_segments = 0

    def delay_ms(self) -> int:
        """How long until :meth:`next_job` may return a job (0: now)."""
        return max(0, math.ceil(self._due_ms - self.clock.monotonic_ms()))

    def next_job(self) -> ScrubJob | None:
        """The next piece of work, or None when it is not due yet (see :meth:`delay_ms`) or
        the pass just ended (the next one is then due ``interval_ms`` later)."""
        now = self.clock.monotonic_ms()
        if now < self._due_ms:
            return None
        if not self._in_pass:
            self._in_pass = True
            self._queue = sorted(self._logs(), key=lambda p: (p.topic, p.partition))[::-1]
            self._pass_bytes = self._pass_segments = 0
        while True:
            if self._segment is None and not self._advance():
                self._end_pass(now)
                return None
            plog, seg = self._log, self._segment
            assert plog is not None and seg is not None
            if plog.is_closed or not _is_closed_segment_of(plog, seg):
                self._drop_segment()  # deleted, or swapped by the cleaner: go on after it
                continue
            if self._position >= seg.size:
                self._finish_segment()
                continue
            return ScrubJob(
                plog, seg, seg.log_path, self._position, seg.size, self._expected,
                contiguous=not (plog.config.compact
                                or (plog.directory / CLEANER_OFFSET_CHECKPOINT).exists()),
                budget=max(1, min(self.config.step_bytes, self.config.bytes_per_second)),
            )

    def complete(self, result: ScrubResult) -> CorruptBatch | None:
        """Take a job's result (owner thread): report corruption, move on, pace the next job.
        Returns the corrupt batch it reported, if any."""
        job = result.job
        n = result.bytes_read
        self.bytes_scrubbed += n
        self._pass_bytes += n
        # Pace by bytes actually read: the next job waits until they fit the rate.
        self._due_ms = max(self._due_ms, self.clock.monotonic_ms()) + (
            n * 1000 / self.config.bytes_per_second
        )
        if job.segment is not self._segment:
            return None  # a job from before the cursor moved on; nothing to record
        if (
            result.vanished
            or job.log.is_closed
            or not _is_closed_segment_of(job.log, job.segment)
        ):
            self._drop_segment()  # replaced or deleted while being read: not damage
            return None
        if result.error is not None:
            job.log.health.on_storage_error("scrub", result.error)
            self._finish_segment()
            return None
        scan = result.scan
        assert scan is not None
        if scan.problem is None:
            self._position = scan.end_position
            self._expected = scan.next_offset
            if self._position >= job.end:
                self._finish_segment()
            return None
        found = CorruptBatch(
            job.segment.base_offset, scan.end_position, scan.problem_offset, scan.problem,
            "scrubber",
        )
        if job.log.health.report_corruption(found):
            self.corrupt_batches_found += 1
        self._finish_segment()  # after a bad batch the framing is unknown: next segment
        return found

    def step(self) -> ScrubResult | None:
        """Plan, run and complete one job on the calling (owner) thread; None when none was
        due. For tests and for callers without a worker thread."""
        job = self.next_job()
        if job is None:
            return None
        result = job.run()
        self.complete(result)
        return result

    # -- cursor -----------------------------------------------------------------------------

    def _advance(self) -> bool:
        """Move to the first closed segment based after ``_after`` in the current log, else in
        the next logs of the pass; False at the end of the pass."""
        while True:
            plog = self._log
            if plog is not None and not plog.is_closed:
                for seg in plog.log_segments[:-1]:
                    if seg.base_offset > self._after:
                        self._segment = seg
                        self._position = 0
                        self._expected = seg.base_offset
                        return True
            if not self._queue:
                self._log = None
                return False
            self._log = self._queue.pop()
            self._after = -1

    def _finish_segment(self) -> None:
        if self._segment is not None:
            self.segments_scrubbed += 1
            self._pass_segments += 1
            self._drop_segment()

    def _drop_segment(self) -> None:
        """Leave the current segment; the cursor continues after its base offset."""
        if self._segment is not None:
            self._after = self._segment.base_offset
        self._segment = None

    def _end_pass(self, now: int) -> None:
        self._in_pass = False
        self.passes += 1
        self._due_ms = max(self._due_ms, now) + self.config.interval_ms
        log.info(
            "log scrubber: pass %d verified %d segments, %d bytes; %d corrupt batches found so "
            "far", self.passes, self._pass_segments, self._pass_bytes, self.corrupt_batches_found,
        )


def _is_closed_segment_of(plog: PartitionLog, seg: LogSegment) -> bool:
    segments = plog.log_segments
    return any(s is seg for s in segments[:-1])
