"""The log cleaner: compaction of logs whose ``cleanup.policy`` includes ``compact``.

Follows Kafka's LogCleaner / Cleaner / SkimpyOffsetMap / LogCleanerManager (KIP-58 min lag,
KIP-354 max lag, KIP-534 tombstone horizons).

**What is cleaned.** A compacted log is split by its *first dirty offset* (the cleaner
checkpoint): below it the log has been cleaned, from it on records are *dirty*. The dirty
section ends at the *first uncleanable offset*: the base offset of the segment holding the
smallest of the last stable offset (so no open or undecided transaction is ever cleaned), the
active segment's base offset, and the base of the first dirty segment with a record newer than
``min.compaction.lag.ms``. A pass (:class:`~odradek.storage.cleaner_task.CleanTask`) maps the
dirty section's keys as far as its offset map holds them (its *end offset*) and rewrites the log
below that; :meth:`LogCleaner.complete` swaps the rewritten segments in
(:meth:`PartitionLog.replace_segments`) and moves the checkpoint to the end offset. The active
segment is never touched. Beyond Kafka, the cleaner remembers the earliest tombstone or marker
delete horizon a pass wrote per log and cleans that log once it is due even when it is not dirty
enough, so tombstones do not outlive ``delete.retention.ms`` by more than one pass.


**Threads.** :class:`LogCleaner` belongs to the thread that owns the logs (the broker's event
loop): :meth:`LogCleaner.grab_filthiest` plans a pass and opens read handles on the segments it
will read; :meth:`LogCleaner.complete` swaps the result in -- a few renames, a small fsynced
manifest and the checkpoint write. The heavy part, :meth:`CleanTask.run` (or repeated
:meth:`CleanTask.step`), may run on any one worker thread: it reads only through its own file
descriptors, writes only the ``.cleaned`` files it creates and never touches the log's objects,
so produce and fetch carry on meanwhile and always see the old segments until the swap.
:meth:`CleanTask.cancel` may be called from any thread. If the log changed meanwhile (segments
deleted by retention, log closed), ``complete`` swaps in only the groups whose segments are all
still there, in place, and deletes the rest. Given a sleep and a CPU-time function, the worker
steps aside while the event loop (or another process) wants to run
(:class:`~odradek.storage.offset_map.Pacer`), so a pass costs produce and fetch little.

**Files.** ``cleaner-offset-checkpoint`` in the partition directory holds the first dirty offset
in Kafka's checkpoint text format (``0\\n1\\n<topic> <partition> <offset>\\n``; per partition, like
this code base's other checkpoints). A crash during a pass leaves ``*.cleaned`` files, which
start-up deletes; a crash during the swap is rolled back or forward at start-up (see
:mod:`odradek.storage.log`), so the log always reads as before or as after the pass. A crash
between the swap and the checkpoint write only means the next pass re-cleans some records.

**Memory.** The offset map is allocated once per cleaner thread at ``log.cleaner.dedupe.buffer.size
/ log.cleaner.threads`` bytes and reused; the rest is a few I/O buffers of
``log.cleaner.io.buffer.size`` plus one batch at a time (and, while the map is cleared, a chunk
of zeros of at most 1 MiB), and the aborted-transaction entries of the log being cleaned --
nothing grows with the size of a segment or of the log. Measured with ``bench/compaction.py``:
cleaning 1 GiB (1 M keys) takes the map plus about 5 MiB of RSS, with 128 MiB segments or one
1 GiB segment alike; ``tests/storage/test_cleaner.py`` bounds the rest with tracemalloc.

"""


from __future__ import annotations

import math
import os
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from odradek.clock import Clock
from odradek.errors import KafkaStorageError
from odradek.protocol.records import BATCH_HEADER_SIZE
from odradek.storage.checkpoint import read_offset_checkpoint, write_offset_checkpoint
from odradek.storage.cleaner_task import (
    CleanedGroup,
    CleanerStats,
    CleanTask,
    LogToClean,
    SegmentPlan,
    TaskState,
)
from odradek.storage.log import CLEANER_OFFSET_CHECKPOINT, PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.offset_map import OffsetMap, Pacer, Throttler
from odradek.storage.segment import LogSegment

__all__ = [
    "CleanerConfig",
    "CleanResult",
    "LogCleaner",
    "read_cleaner_checkpoint",
    "write_cleaner_checkpoint",
]


# == configuration ================================================================================


@dataclass(frozen=True, slots=True)
class CleanerConfig:
    """Broker-wide cleaner settings (Kafka's ``log.cleaner.*``; names without the prefix), and
    how a pass shares the interpreter with the event loop (``pace_*``, not Kafka settings: see
    :class:`~odradek.storage.offset_map.Pacer`; they apply only when the cleaner has a sleep
    and a CPU-time function)."""

    enable: bool = True
    threads: int = 1
    dedupe_buffer_size: int = 128 * 1024 * 1024
    io_buffer_size: int = 512 * 1024
    io_buffer_load_factor: float = 0.9
    io_max_bytes_per_second: float = math.inf
    backoff_ms: int = 15000
    # Look every 2 ms; while kept waiting, use at most a fifth of the time (measured with
    # bench/compaction.py --broker: produce loses ~2% during a pass instead of ~10%).
    pace_slice_ms: float = 2.0
    pace_share: float = 0.2

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("log.cleaner.threads must be at least 1")
        if self.map_memory < 2 * OffsetMap.ENTRY_SIZE:
            raise ValueError("log.cleaner.dedupe.buffer.size is too small for one offset map")
        if not 0.0 < self.io_buffer_load_factor <= 1.0:
            raise ValueError("log.cleaner.io.buffer.load.factor must be in (0, 1]")
        if self.io_buffer_size < BATCH_HEADER_SIZE:
            raise ValueError("log.cleaner.io.buffer.size is too small")
        if self.io_max_bytes_per_second <= 0:
            raise ValueError("log.cleaner.io.max.bytes.per.second must be positive")
        if self.pace_slice_ms <= 0 or not 0.0 < self.pace_share <= 1.0:
            raise ValueError("the cleaner's pace needs slice_ms > 0 and share in (0, 1]")

    @property
    def map_memory(self) -> int:
        """Bytes of one thread's offset map."""
        return self.dedupe_buffer_size // self.threads


# == checkpoint ===================================================================================


def read_cleaner_checkpoint(directory: Path) -> int | None:
    """The first dirty offset recorded in ``directory``; None when never cleaned."""
    return read_offset_checkpoint(
        directory / CLEANER_OFFSET_CHECKPOINT,
        if_damaged="the next cleaning pass starts from the beginning of the log",
    )


def write_cleaner_checkpoint(plog: PartitionLog, offset: int) -> None:
    write_offset_checkpoint(
        plog.directory / CLEANER_OFFSET_CHECKPOINT, plog.topic, plog.partition, offset
    )


@dataclass(frozen=True, slots=True)
class CleanResult:
    """Outcome of one pass. ``end_offset`` is the new first dirty offset (the checkpoint) when
    ``swapped``; ``error`` says why a pass did not complete."""

    topic: str
    partition: int
    first_dirty_offset: int
    end_offset: int
    swapped: bool
    segments_replaced: int
    segments_written: int
    stats: CleanerStats
    error: str | None = None


# == the cleaner ==================================================================================


@dataclass(slots=True)
class _LogState:
    log: PartitionLog
    checkpoint: int | None = None
    tombstone_due_ms: int | None = None
    uncleanable: str | None = None
    task: CleanTask | None = None
    #: The log's truncation count when ``checkpoint`` was read and when ``task`` was planned:
    #: a truncation (a follower's) caps the checkpoint and voids a pass planned before it.
    truncations: int = 0
    task_truncations: int = 0


class LogCleaner:
    """Chooses the dirtiest compacted log and drives passes over it (Kafka's LogCleaner +
    LogCleanerManager). Owned by the logs' owner thread; see the module docstring for which
    part may run elsewhere.

    ``logs`` lists the partition logs (e.g. ``LogManager.all_logs``). ``sleep`` (seconds), when
    given, lets the throttle block the cleaning thread; with ``cpu_time`` too (the calling
    thread's CPU seconds, e.g. ``time.thread_time``) a pass also steps aside while others want
    to run (:class:`~odradek.storage.offset_map.Pacer`). ``on_step`` is called with a step name
    after every durable step of a pass and its swap (tests inject crashes there).
    """

    def __init__(
        self,
        logs: Callable[[], Iterable[PartitionLog]],
        config: CleanerConfig,
        clock: Clock,
        *,
        sleep: Callable[[float], None] | None = None,
        cpu_time: Callable[[], float] | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self._logs = logs
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.cpu_time = cpu_time
        self.on_step = on_step
        self._state: dict[tuple[str, int], _LogState] = {}
        self._free_maps: list[OffsetMap] = []
        self._orphans: list[CleanTask] = []  # cancelled while running; their maps come back

    # -- bookkeeping ------------------------------------------------------------------------

    def _state_of(self, plog: PartitionLog) -> _LogState:
        key = (plog.topic, plog.partition)
        st = self._state.get(key)
        if st is None or st.log is not plog:
            st = _LogState(plog, read_cleaner_checkpoint(plog.directory),
                           truncations=plog.truncations)
            self._state[key] = st
        elif st.truncations != plog.truncations:
            st.checkpoint = read_cleaner_checkpoint(plog.directory)
            st.truncations = plog.truncations
        return st

    @property
    def in_flight(self) -> list[CleanTask]:
        """Planned passes not yet completed, including cancelled ones still running."""
        self._reap_orphans()
        tasks = [st.task for st in self._state.values() if st.task is not None]
        return tasks + self._orphans

    def _reap_orphans(self) -> None:
        for task in [t for t in self._orphans if t.finished]:
            self._orphans.remove(task)
            self._release_map(task)

    def _drop_task(self, task: CleanTask) -> None:
        task.cancel()
        if task.finished:
            self._release_map(task)
        else:
            self._orphans.append(task)  # its worker still holds the map

    def forget(self, plog: PartitionLog) -> None:
        """The log is being deleted or closed: cancel its pass and drop what is known of it."""
        st = self._state.pop((plog.topic, plog.partition), None)
        if st is not None and st.task is not None:
            self._drop_task(st.task)

    def shutdown(self) -> None:
        """Cancel every pass (a running worker stops at its next batch; join it before closing
        the logs if you want its files gone -- start-up deletes them anyway)."""
        for st in list(self._state.values()):
            if st.task is not None:
                self._drop_task(st.task)
                st.task = None

    def uncleanable_logs(self) -> dict[tuple[str, int], str]:
        """Logs a pass failed on (until restart or :meth:`forget`), with the reason."""
        return {k: st.uncleanable for k, st in self._state.items() if st.uncleanable}

    # -- choosing ---------------------------------------------------------------------------

    def log_to_clean(self, plog: PartitionLog, now_ms: int) -> LogToClean | None:
        """How dirty ``plog`` is, or None for a closed or non-compacted log."""
        if plog.is_closed or not plog.config.compact:
            return None
        st = self._state_of(plog)
        config = plog.config
        segments = plog.log_segments
        bases = [s.base_offset for s in segments]
        checkpoint = st.checkpoint
        first_dirty = plog.log_start_offset
        if checkpoint is not None and plog.log_start_offset <= checkpoint <= plog.log_end_offset:
            first_dirty = checkpoint

        active_base = segments[-1].base_offset
        # Non-active segments holding dirty records (Kafka's nonActiveLogSegmentsFrom).
        dirty = [s for i, s in enumerate(segments[:-1]) if bases[i + 1] > first_dirty]
        # Never past the last stable offset: an open transaction may still abort, and one whose
        # marker is not yet replicated is undecided (the LSO is at most the high watermark).
        limit = min(plog.last_stable_offset, plog.high_watermark, active_base)
        if config.min_compaction_lag_ms > 0:
            for s in dirty:
                if s.max_timestamp > now_ms - config.min_compaction_lag_ms:
                    limit = min(limit, s.base_offset)
                    break
        # Only whole segments are cleanable: round down to the base of the segment holding it.
        first_uncleanable = bases[max(0, bisect_right(bases, limit) - 1)]
        clean_bytes = sum(s.size for s in segments if s.base_offset < first_dirty)
        cleanable_bytes = sum(
            s.size for i, s in enumerate(segments[:-1])
            if s.base_offset < first_uncleanable and bases[i + 1] > first_dirty
        )
        need_now = False
        lag = config.max_compaction_lag_ms
        if lag < 2**62:
            first_ts = [_first_batch_timestamp(s) for s in dirty]
            stamps = [t for t in first_ts if t > 0]
            need_now = bool(stamps) and min(stamps) < now_ms - lag
        due = st.tombstone_due_ms is not None and st.tombstone_due_ms <= now_ms
        return LogToClean(
            plog.topic, plog.partition, first_dirty, first_uncleanable, clean_bytes,
            cleanable_bytes, need_now, due,
        )

    def dirty_logs(self, now_ms: int) -> list[LogToClean]:
        """Every compacted log that is not being cleaned and not marked uncleanable."""
        out = []
        for plog in self._logs():
            if plog.is_closed or not plog.config.compact:
                continue
            st = self._state_of(plog)
            if st.task is not None or st.uncleanable:
                continue
            ltc = self.log_to_clean(plog, now_ms)
            if ltc is not None and ltc.total_bytes > 0:
                out.append(ltc)
        return out

    def grab_filthiest(self, now_ms: int) -> CleanTask | None:
        """Plan a pass over the log most in need (owner thread): the highest dirty ratio among
        those above ``min.cleanable.dirty.ratio`` or past ``max.compaction.lag.ms`` with
        something to clean; failing that, a log whose tombstones are due. None when nothing
        needs cleaning or every cleaner thread is busy."""
        if not self.config.enable or len(self.in_flight) >= self.config.threads:
            return None
        candidates = self.dirty_logs(now_ms)
        ready = [
            c for c in candidates
            if (c.need_compaction_now and c.cleanable_bytes > 0)
            or c.cleanable_ratio > self._config_of(c).min_cleanable_dirty_ratio
        ]
        if not ready:
            ready = [c for c in candidates if c.tombstones_due]
        if not ready:
            return None
        best = max(ready, key=lambda c: (c.cleanable_ratio, c.topic, -c.partition))
        return self._plan(self._state[(best.topic, best.partition)].log, best, now_ms)

    def _config_of(self, c: LogToClean) -> LogConfig:
        return self._state[(c.topic, c.partition)].log.config

    def plan(self, plog: PartitionLog, now_ms: int) -> CleanTask | None:
        """Plan a pass over ``plog`` whatever its dirty ratio (owner thread); None when it is
        not compacted, busy, or has no closed segment below its first uncleanable offset."""
        st = self._state_of(plog)
        if st.task is not None:
            return None
        ltc = self.log_to_clean(plog, now_ms)
        if ltc is None:
            return None
        return self._plan(plog, ltc, now_ms)

    def _plan(self, plog: PartitionLog, ltc: LogToClean, now_ms: int) -> CleanTask | None:
        segments = plog.log_segments
        # Snapshots (the owner appends index entries for new aborts while the pass runs): every
        # aborted transaction with data in the section the pass may rewrite, wherever its
        # marker, and each planned segment's own entries.
        aborted = plog.collect_aborted_transactions(
            segments[0].base_offset, ltc.first_uncleanable_offset
        )
        plans: list[SegmentPlan] = []
        try:
            for i, seg in enumerate(segments[:-1]):
                if seg.base_offset >= ltc.first_uncleanable_offset:
                    break
                plans.append(SegmentPlan(
                    seg, seg.base_offset, segments[i + 1].base_offset, seg.size,
                    _file_size(seg.offset_index.path), _file_size(seg.time_index.path),
                    os.open(seg.log_path, os.O_RDONLY), list(seg.txn_index.entries),
                ))
        except (OSError, KafkaStorageError) as e:
            for p in plans:
                os.close(p.fd)
            raise KafkaStorageError(f"cannot open {plog.directory} for cleaning: {e}") from e
        if not plans:
            return None
        producer_last = {
            pid: entry.batches[-1].last_offset
            for pid, entry in plog.producer_state.producers.items()
            if entry.batches
        }
        task = CleanTask(
            plog, ltc, plans, self._take_map(),
            config=plog.config,
            io_buffer_size=self.config.io_buffer_size,
            now_ms=now_ms,
            producer_last_offsets=producer_last,
            aborted_txns=aborted,
            throttler=Throttler(self.config.io_max_bytes_per_second, self.clock, self.sleep),
            pacer=Pacer(self.clock, self.sleep, self.cpu_time,
                        slice_ms=self.config.pace_slice_ms, share=self.config.pace_share),
            on_step=self.on_step,
        )
        st = self._state_of(plog)
        st.task = task
        st.task_truncations = plog.truncations
        return task

    def _take_map(self) -> OffsetMap:
        self._reap_orphans()
        if self._free_maps:
            return self._free_maps.pop()
        return OffsetMap(self.config.map_memory, self.config.io_buffer_load_factor)

    def _release_map(self, task: CleanTask) -> None:
        if task.offset_map not in self._free_maps:
            self._free_maps.append(task.offset_map)

    # -- finishing --------------------------------------------------------------------------

    def complete(self, task: CleanTask) -> CleanResult:
        """Swap a finished pass in (owner thread, short) and advance the checkpoint. A pass
        that failed or was cancelled, or whose log went away, changes nothing."""
        plog = task.log
        st = self._state.get((task.topic, task.partition))
        if not task.finished:
            raise ValueError("complete() needs a finished task (run it, or cancel it first)")
        if st is not None and st.task is task:
            st.task = None
        self._release_map(task)
        error = task.error
        if task.state is TaskState.CANCELLED:
            error = error or "cancelled"
        elif st is not None and st.log is plog and st.task_truncations != plog.truncations:
            # Whatever the pass met (it may have read a segment being cut): its offset map may
            # hold keys whose later records are gone. Not the log's fault: it stays cleanable.
            error = "log truncated during cleaning"
        elif task.state is TaskState.DONE and (st is None or st.log is not plog or plog.is_closed):
            error = "log closed or deleted during cleaning"
        elif task.state is TaskState.FAILED and st is not None:
            st.uncleanable = error
        if error is not None or task.state is not TaskState.DONE:
            task.discard_files()
            task.mark_completed()
            return self._result(task, swapped=False, replaced=0, written=0, error=error)
        assert st is not None
        kept = self._groups_still_in_place(task)
        for grp in task.groups:
            if grp not in kept:
                task.discard_group(grp)
        replaced = written = 0
        try:
            if st.checkpoint is None:
                # Gaps are about to appear: recovery must know the log was cleaned even if the
                # topic stops being compacted before the checkpoint below is written.
                write_cleaner_checkpoint(plog, task.first_dirty_offset)
            if kept:
                new = [g.cleaned for g in kept if g.cleaned is not None]
                old = [p.segment for g in kept for p in g.plans]
                plog.replace_segments(new, old, on_step=self.on_step)
                replaced, written = len(old), len(new)
            write_cleaner_checkpoint(plog, task.end_offset)
            if self.on_step is not None:
                self.on_step("checkpoint-written")
        except KafkaStorageError as e:
            st.uncleanable = str(e)
            task.mark_completed()
            raise
        st.checkpoint = task.end_offset
        st.tombstone_due_ms = task.next_tombstone_horizon
        task.mark_completed()
        return self._result(task, swapped=bool(kept), replaced=replaced, written=written,
                            error=None)

    def _groups_still_in_place(self, task: CleanTask) -> list[CleanedGroup]:
        """The groups whose old segments are all still in the log, consecutively (retention may
        have removed a prefix meanwhile); they form a suffix of the planned groups."""
        current = task.log.log_segments
        position = {id(s): i for i, s in enumerate(current)}
        kept: list[CleanedGroup] = []
        expected: int | None = None
        for grp in task.groups:
            first = position.get(id(grp.plans[0].segment), -1)
            ok = (
                grp.cleaned is not None
                and first >= 0
                and (expected is None or first == expected)
                and first + len(grp.plans) < len(current)  # never the active segment
                and all(
                    current[first + k] is p.segment and current[first + k].size == p.size
                    for k, p in enumerate(grp.plans)
                )
            )
            if ok:
                kept.append(grp)
                expected = first + len(grp.plans)
            elif kept:
                # A hole after kept groups cannot come from prefix-only deletion; stay safe.
                return []
        return kept

    def _result(self, task: CleanTask, *, swapped: bool, replaced: int, written: int,
                error: str | None) -> CleanResult:
        return CleanResult(
            task.topic, task.partition, task.first_dirty_offset,
            task.end_offset if error is None else task.first_dirty_offset,
            swapped, replaced, written, task.stats(), error,
        )

    # -- conveniences -----------------------------------------------------------------------

    def clean_once(self, now_ms: int) -> CleanResult | None:
        """Plan, run and complete one pass on the calling thread (tests, or a broker that
        cleans inline); None when no log needs cleaning."""
        task = self.grab_filthiest(now_ms)
        if task is None:
            return None
        task.run()
        return self.complete(task)

    def clean_log(self, plog: PartitionLog, now_ms: int) -> CleanResult | None:
        """One pass over ``plog`` on the calling thread, whatever its dirty ratio."""
        task = self.plan(plog, now_ms)
        if task is None:
            return None
        task.run()
        return self.complete(task)


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _first_batch_timestamp(seg: LogSegment) -> int:
    h = seg.read_header(0)
    return h.max_timestamp if h is not None else -1
