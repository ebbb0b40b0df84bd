"""One partition's log (Kafka's UnifiedLog + LocalLog); opening it from disk is
:mod:`odradek.storage.loader` (Kafka's LogLoader).

Directory layout of a partition ``<topic>-<partition>/``::

    00000000000000000000.log         record batches, exactly as appended (see segment.py)
    00000000000000000000.index       sparse offset index       (see index.py)
    00000000000000000000.timeindex   sparse time index         (see index.py)
    00000000000000000000.txnindex    aborted transactions, only when there are any
                                     (see txn_index.py)
    00000000000000004711.snapshot    producer state at offset 4711 (see producer_state.py)
    leader-epoch-checkpoint          epoch -> start offset     (see epoch.py)
    log-start-offset-checkpoint      "0\\n1\\n<topic> <partition> <log start offset>\\n"
    recovery-point-offset-checkpoint "0\\n1\\n<topic> <partition> <recovery point>\\n"
    cleaner-offset-checkpoint        "0\\n1\\n<topic> <partition> <first dirty offset>\\n"
                                     (written by the log cleaner, see cleaner.py)

The recovery point is the offset below which everything is known to be fsynced: it is written
on segment roll (the rolled segment is fsynced first) and on close; the loader re-validates the
log from it after an unclean shutdown.

Transactions: producer state (producer_state.py) tracks open transactions; an ABORT marker adds
an entry to the ``.txnindex`` of the segment it lands in. :attr:`PartitionLog.last_stable_offset`
bounds read_committed fetches, and :meth:`PartitionLog.fetch` returns, with the records, the
offsets a fetch response carries and the aborted transactions of the returned range.

Replication: a leader appends with :meth:`PartitionLog.append_as_leader` (offsets and its leader
epoch assigned here); a follower stores the leader's batches unchanged with
:meth:`PartitionLog.append_as_follower` and cuts a diverged tail with
:meth:`PartitionLog.truncate_to` or :meth:`PartitionLog.truncate_fully_and_start_at`, whose
docstrings give the order of their file operations: a crash at any point leaves a prefix of the
old log or the truncated one, which the loader makes consistent. The high watermark is the
owner's to move; it starts from the data directory's checkpoint (see log_manager.py).

Segment replacement (the log cleaner's swap, :meth:`PartitionLog.replace_segments`) goes through
suffix renames, as in Kafka: the replacement segments are written as ``<base>.log.cleaned`` (and
``.index.cleaned``, ``.timeindex.cleaned``) and fsynced; then renamed ``.cleaned`` -> ``.swap``;
then the manifest ``segment-swap-manifest.swap`` is written atomically -- the commit point --
listing the base offsets of the replaced and of the replacing segments; then the replaced
segments are renamed ``.deleted`` (unlinked after ``file.delete.delay.ms``), the ``.swap`` files
renamed to their final names and the manifest removed. A crash anywhere in between is rolled
forward (manifest written) or back (not written) by the loader, so the log holds exactly the
records of before or of after the swap.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import os
import shutil
import uuid
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from odradek.clock import Clock
from odradek.errors import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaError,
    KafkaStorageError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
)
from odradek.protocol.records import (
    ATTR_TIMESTAMP_TYPE,
    BATCH_HEADER_SIZE,
    BatchHeader,
    assign_offset_and_epoch,
    decode_records,
    next_offset_after,
    read_batch_header,
    set_log_append_time,
    validate_batches,
)
from odradek.storage.checkpoint import (
    fsync_dir,
    read_offset_checkpoint,
    write_checkpoint,
    write_offset_checkpoint,
)
from odradek.storage.epoch import LeaderEpochFileCache
from odradek.storage.file_records import FileRecords
from odradek.storage.health import CorruptBatch, PartitionHealth
from odradek.storage.loader import (
    CLEANER_OFFSET_CHECKPOINT,
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    SWAP_MANIFEST,
    LoadedLog,
    LogLoader,
    replay_producer_state,
)
from odradek.storage.log_config import LogConfig
from odradek.storage.open_files import OpenFileCache
from odradek.storage.page_cache import PageCacheTrimmer
from odradek.storage.producer_state import (
    ActiveProducer,
    EndTxnMarker,
    ProducerStateEntry,
    ProducerStateManager,
    StagedAppend,
    read_end_txn_marker,
)
from odradek.storage.segment import (
    CLEANED_SUFFIX,
    SWAP_SUFFIX,
    LogSegment,
    SegmentCorruptError,
    TimestampAndOffset,
)
from odradek.storage.txn_index import AbortedTxn

__all__ = [
    "AbortedTxn",
    "ActiveProducer",
    "AppendOrigin",
    "FetchDataInfo",
    "FetchIsolation",
    "FileRecords",
    "FetchOffsetOutOfRangeError",
    "LogAppendInfo",
    "LogConfig",
    "PartitionLog",
    "SegmentInfo",
    "TimestampAndOffset",
    "UnexpectedAppendOffsetError",
    "LOG_START_OFFSET_CHECKPOINT",
    "RECOVERY_POINT_CHECKPOINT",
    "CLEANER_OFFSET_CHECKPOINT",
    "SWAP_MANIFEST",
    "EARLIEST_TIMESTAMP",
    "LATEST_TIMESTAMP",
    "MAX_TIMESTAMP",
]

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3

_log = logging.getLogger("odradek.storage")

# A follower takes whatever batch its leader accepted (Kafka ignores max.message.bytes for
# replication): a change of the topic's limit must not stall replication.
_NO_BATCH_LIMIT = 2**31 - 1


class AppendOrigin(enum.Enum):
    """Who is appending: clients get every check; the coordinator (transaction markers,
    internal topics) skips the sequence checks and may write control batches; replication is a
    follower copying its leader's batches as they are (:meth:`PartitionLog.append_as_follower`,
    no checks beyond their structure)."""

    CLIENT = "client"
    COORDINATOR = "coordinator"
    REPLICATION = "replication"


class UnexpectedAppendOffsetError(KafkaError):
    """A follower's append whose first offset lies below the log end offset (Kafka's
    UnexpectedAppendOffsetException, which has no error code of its own): the fetcher and the
    log disagree about where the log ends. Nothing was written."""

    def __init__(self, message: str, *, first_offset: int, log_end_offset: int) -> None:
        super().__init__(message)
        self.first_offset = first_offset
        self.log_end_offset = log_end_offset


@dataclass(frozen=True, slots=True)
class LogAppendInfo:
    """Result of an append. ``first_offset``/``last_offset`` are -1 for an empty append;
    ``log_append_time_ms`` is -1 for CreateTime topics; ``duplicate`` marks a retried batch
    that was not appended again (the offsets are those of the original)."""

    first_offset: int
    last_offset: int
    log_append_time_ms: int
    log_start_offset: int
    record_count: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class FetchDataInfo:
    """Whole batches read from one segment, plus the log's offsets at the time of the read:
    everything a fetch response says about a partition. ``records`` is bytes, or -- when the
    caller allowed it with ``max_inline_bytes`` and the read is larger -- a
    :class:`~odradek.storage.file_records.FileRecords` slice of the segment file, which the
    caller then owns and must close. ``aborted_transactions`` is set only by a
    :attr:`FetchIsolation.TXN_COMMITTED` fetch that returns records: the aborted transactions
    overlapping them, possibly none; otherwise None (Kafka answers null then)."""

    records: bytes | FileRecords
    fetch_offset: int
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    last_stable_offset: int
    aborted_transactions: tuple[AbortedTxn, ...] | None = None


class FetchIsolation(enum.Enum):
    """How far a fetch may read (Kafka's FetchIsolation)."""

    LOG_END = "log_end"  # everything appended (replication)
    HIGH_WATERMARK = "high_watermark"  # read_uncommitted consumers
    TXN_COMMITTED = "txn_committed"  # read_committed consumers: up to the last stable offset


class FetchOffsetOutOfRangeError(OffsetOutOfRangeError):
    """OFFSET_OUT_OF_RANGE from a read, with the offsets the client resets from (Kafka answers
    them with this error)."""

    def __init__(self, message: str, *, high_watermark: int, log_start_offset: int) -> None:
        super().__init__(message)
        self.high_watermark = high_watermark
        self.log_start_offset = log_start_offset


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    operation: str,
) -> Callable[[Callable[Concatenate[PartitionLog, _P], _R]],
              Callable[Concatenate[PartitionLog, _P], _R]]:
    """Make ``operation`` (a public entry point) report to the log's :class:`PartitionHealth`:
    a corrupt batch is logged once and counted, an I/O failure logged once per errno (a raw
    OSError becomes KafkaStorageError, as Kafka turns an IOException into a storage error)."""

    def wrap(
        method: Callable[Concatenate[PartitionLog, _P], _R],
    ) -> Callable[Concatenate[PartitionLog, _P], _R]:
        @functools.wraps(method)
        def guarded(self: PartitionLog, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                result = method(self, *args, **kwargs)
            except SegmentCorruptError as e:
                self._on_corrupt_read(e, operation)
                raise
            except KafkaStorageError as e:
                self.health.on_storage_error(operation, e)
                raise
            except OSError as e:
                err = KafkaStorageError(f"{operation} on {self.topic}-{self.partition}: {e}")
                err.__cause__ = e
                self.health.on_storage_error(operation, err)
                raise err from e
            self.health.on_storage_ok(operation)
            return result

        return guarded

    return wrap


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    base_offset: int
    size: int
    max_timestamp: int
    is_active: bool


class PartitionLog:
    """The log of one partition: an ordered list of segments, the active one last.

    Owned by the broker's event-loop thread: every method is synchronous and none locks.
    Persistence formats and crash behaviour are described in the module docstring. Create
    instances with :meth:`open`. :attr:`health` logs and counts the corrupt batches its reads
    (and the scrubber) find and its failing I/O.
    """

    def __init__(
        self,
        directory: Path,
        topic: str,
        partition: int,
        config: LogConfig,
        clock: Clock,
        loaded: LoadedLog,
        epoch_cache: LeaderEpochFileCache,
        producer_state: ProducerStateManager,
        files: OpenFileCache | None = None,
        high_watermark: int | None = None,
        cache_trimmer: PageCacheTrimmer | None = None,
    ) -> None:
        self.directory = directory
        self._files = files
        self._cache_trimmer = cache_trimmer
        self.topic = topic
        self.partition = partition
        self.config = config
        self.clock = clock
        self.epoch_cache = epoch_cache
        self.producer_state = producer_state
        self._segments: list[LogSegment] = []
        self._bases: list[int] = []
        self._set_segments(list(loaded.segments))
        self._log_start_offset = loaded.log_start_offset
        self._log_end_offset = loaded.log_end_offset
        # The checkpointed high watermark, never past what survived on disk; without one (a
        # data directory from before replication, one replica) everything loaded counts as
        # replicated.
        hw = loaded.log_end_offset if high_watermark is None else high_watermark
        self._high_watermark = min(max(hw, loaded.log_start_offset), loaded.log_end_offset)
        self.producer_state.on_high_watermark_updated(self._high_watermark)
        self._recovery_point = loaded.log_end_offset
        self._last_flush_ms = clock.milliseconds()
        self._pending_deletes: list[tuple[int, list[Path]]] = []
        self._closed = False
        self.health = PartitionHealth(topic, partition)
        # A new partition's directory (and its entry in the data directory) is fsynced by the
        # first flush, not at creation: nothing in it needs to be durable before then, and a
        # lost directory is created again from the topic metadata (TopicManager.reconcile).
        self._directories_unsynced = not loaded.directory_synced
        # The values last written to the two offset checkpoints (None: unknown), so that
        # closing an unchanged log rewrites neither.
        self._checkpointed_recovery_point: int | None = None
        self._checkpointed_log_start: int | None = None
        #: Bumped by every truncation of the log's end (:meth:`truncate_to`,
        #: :meth:`truncate_fully_and_start_at`): a cleaning pass planned before it is void.
        self.truncations = 0

    # == loading =================================================================================

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        topic: str,
        partition: int,
        config: LogConfig,
        clock: Clock,
        *,
        recover: bool,
        files: OpenFileCache | None = None,
        high_watermark: int | None = None,
        cache_trimmer: PageCacheTrimmer | None = None,
    ) -> PartitionLog:
        """Open (creating if needed) the partition directory ``directory`` itself, i.e. the
        ``<topic>-<partition>`` folder. ``recover`` says the previous shutdown was unclean;
        :mod:`odradek.storage.loader` describes what loading does. ``files`` bounds the
        segment files held open (``log.max.open.files``; None: each segment keeps its own).
        ``high_watermark`` is the checkpointed one (``replication-offset-checkpoint``, see
        :mod:`odradek.storage.log_manager`): the log starts with it clamped to
        [log start, log end]; None (no checkpoint entry) starts it at the log end offset.
        ``cache_trimmer`` (the log manager's, if any) is told of every append, and drops all
        but the tail of the active segment from the OS page cache (see
        :mod:`odradek.storage.page_cache`)."""
        path = Path(directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KafkaStorageError(f"cannot create {path}: {e}") from e
        epoch_cache = LeaderEpochFileCache(path)
        producer_state = ProducerStateManager(path)
        loader = LogLoader(
            path, config, clock.milliseconds(), epoch_cache, producer_state, files=files
        )
        try:
            loaded = loader.load(recover)
        except OSError as e:
            raise KafkaStorageError(f"cannot load {path}: {e}") from e
        return cls(
            path, topic, partition, config, clock, loaded, epoch_cache, producer_state, files,
            high_watermark, cache_trimmer,
        )

    def _set_segments(self, segments: list[LogSegment]) -> None:
        self._segments = segments
        self._bases = [s.base_offset for s in segments]

    def _upper_bound(self, i: int) -> int:
        """Offset where segment ``i`` ends (the next segment's base, or the log end)."""
        if i + 1 < len(self._segments):
            return self._segments[i + 1].base_offset
        return self._log_end_offset

    # == properties ==============================================================================

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    def update_high_watermark(self, offset: int) -> int:
        """Set the high watermark, clamped to [log_start_offset, log_end_offset]."""
        self._high_watermark = min(max(offset, self._log_start_offset), self._log_end_offset)
        self.producer_state.on_high_watermark_updated(self._high_watermark)
        return self._high_watermark

    @property
    def size_in_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def leader_epoch(self) -> int:
        """Latest leader epoch in the epoch cache (-1 when none)."""
        return self.epoch_cache.latest_epoch

    @property
    def segments(self) -> list[SegmentInfo]:
        last = len(self._segments) - 1
        return [
            SegmentInfo(s.base_offset, s.size, s.max_timestamp, i == last)
            for i, s in enumerate(self._segments)
        ]

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    @property
    def log_segments(self) -> list[LogSegment]:
        """The segment objects, oldest first, the active one last (a copy of the list). For the
        log cleaner's planning on the owner thread; other threads must not touch them."""
        return list(self._segments)

    @property
    def is_closed(self) -> bool:
        return self._closed

    def producer_entry(self, producer_id: int) -> ProducerStateEntry | None:
        return self.producer_state.producers.get(producer_id)

    def find_duplicate(self, records: bytes | bytearray | memoryview) -> LogAppendInfo | None:
        """The append that ``records`` repeats, when it is one producer batch (a client retry)
        this log already holds, as :meth:`append_as_leader` would answer it; None otherwise.
        Reads only the batch header and the producer state: nothing is validated or written."""
        view = memoryview(records)
        if len(view) < BATCH_HEADER_SIZE:
            return None
        h = read_batch_header(view, 0)
        if h.producer_id < 0 or h.base_sequence < 0 or h.size != len(view):
            return None
        entry = self.producer_state.producers.get(h.producer_id)
        dup = entry.find_duplicate(h) if entry is not None else None
        if dup is None:
            return None
        return LogAppendInfo(
            dup.first_offset,
            dup.last_offset,
            dup.timestamp if self.config.log_append_time else -1,
            self._log_start_offset,
            dup.last_offset - dup.first_offset + 1,
            duplicate=True,
        )

    def update_config(self, config: LogConfig) -> None:
        self.config = config
        for seg in self._segments:
            seg.config = config

    # == appending ===============================================================================

    @_guarded("append")
    def append_as_leader(
        self,
        records: bytes | bytearray | memoryview,
        *,
        leader_epoch: int,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> LogAppendInfo:
        """Validate, assign offsets and append a producer's records blob (see module docs).

        Raises CorruptRecordError, InvalidRecordError, RecordTooLargeError,
        RecordListTooLargeError, InvalidProducerEpochError, OutOfOrderSequenceError,
        InvalidTxnStateError, TransactionCoordinatorFencedError (see producer_state.py) or
        KafkaStorageError; nothing is written when it raises.
        """
        self._check_open()
        if origin is AppendOrigin.REPLICATION:
            raise ValueError("a follower appends with append_as_follower")
        config = self.config
        # Offsets are written into the batches: in place when the caller's buffer is writable
        # (the produce path hands over a slice of the request frame), else into a copy.
        buf: bytearray | memoryview
        if isinstance(records, memoryview) and not records.readonly:
            buf = records
        else:
            buf = bytearray(records)
        headers = validate_batches(buf, max_batch_bytes=config.max_message_bytes)
        if not headers:
            return LogAppendInfo(-1, -1, -1, self._log_start_offset, 0)
        if config.compact:
            _check_keys(buf, headers)
        total = len(buf)
        if total > config.segment_bytes:
            raise RecordListTooLargeError(
                f"{total} bytes of records exceed the segment size {config.segment_bytes}"
            )
        now = self.clock.milliseconds()
        log_append = config.log_append_time
        first_offset = offset = self._log_end_offset
        finals: list[BatchHeader] = []
        record_count = 0
        pos = 0
        for h in headers:
            if h.is_control and origin is AppendOrigin.CLIENT:
                raise InvalidRecordError("clients may not write control batches")
            # Offsets and the leader epoch lie outside the CRC: patch them in place.
            assign_offset_and_epoch(buf, pos, offset, leader_epoch)
            if log_append:
                attributes = h.attributes | ATTR_TIMESTAMP_TYPE
                crc = set_log_append_time(buf, pos, h, now)
                base_ts = max_ts = now
            else:
                attributes, crc = h.attributes, h.crc
                base_ts, max_ts = h.base_timestamp, h.max_timestamp
            finals.append(
                BatchHeader(
                    offset,
                    h.batch_length,
                    leader_epoch,
                    h.magic,
                    crc,
                    attributes,
                    h.last_offset_delta,
                    base_ts,
                    max_ts,
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    h.records_count,
                )
            )
            offset += h.last_offset_delta + 1
            record_count += h.records_count
            pos += h.size
        last_offset = offset - 1
        staged = StagedAppend()
        pos = 0
        for h in finals:
            batch_pos, pos = pos, pos + h.size
            if h.producer_id < 0:
                continue
            if origin is AppendOrigin.CLIENT:
                if h.base_sequence < 0:
                    # As Kafka's LogValidator: a producer id makes the sequence mandatory.
                    raise InvalidRecordError(
                        f"batch of producer {h.producer_id} has no sequence number"
                    )
                dup = self.producer_state.check(staged, h)
                if dup is not None:
                    return LogAppendInfo(
                        dup.first_offset,
                        dup.last_offset,
                        dup.timestamp if log_append else -1,
                        self._log_start_offset,
                        dup.last_offset - dup.first_offset + 1,
                        duplicate=True,
                    )
            else:
                self._stage_coordinator_batch(staged, h, buf, batch_pos)
        seg = self._segments[-1]
        if self._should_roll(seg, total, last_offset, now):
            seg = self._roll(now)
        seg.append(buf, finals, now_ms=now)
        if self._cache_trimmer is not None:
            self._cache_trimmer.note_append(seg)
        self._log_end_offset = last_offset + 1
        if leader_epoch >= 0:
            self.epoch_cache.assign(leader_epoch, first_offset)
        if staged:
            self._commit_producer_state(staged, seg)
        if self._log_end_offset - self._recovery_point >= config.flush_messages:
            self.flush()
        return LogAppendInfo(
            first_offset,
            last_offset,
            now if log_append else -1,
            self._log_start_offset,
            record_count,
        )

    @_guarded("append")
    def append_as_follower(self, records: bytes | bytearray | memoryview) -> LogAppendInfo:
        """Append the leader's batches exactly as they are (Kafka's appendAsFollower).

        Offsets, timestamps, partition leader epochs and producer fields are kept: nothing is
        assigned and no sequence is checked, only each batch's structure and CRC
        (CorruptRecordError / InvalidRecordError, as for a producer's batches, but without the
        ``max.message.bytes`` limit the leader already applied). The first offset must be >=
        the log end offset (else :class:`UnexpectedAppendOffsetError`) and offsets must grow
        from batch to batch (else CorruptRecordError); a gap is allowed (a compacted leader).
        The epoch cache gets an entry for every batch whose leader epoch is newer than its
        latest; producer state and the ``.txnindex`` are updated as the leader updated them
        (control batches end transactions, aborts are indexed), so that this replica, once it
        leads, recognises retried batches and knows its last stable offset. The high
        watermark does not move (the fetcher sets it from the leader's).

        The batches may exceed ``segment.bytes`` together: the log rolls between them as
        needed, and before a batch that does not follow the previous one (a gap) unless the
        log is compacted, so that every segment of a non-compacted log stays contiguous for
        recovery. Nothing is written when a check fails; a KafkaStorageError may leave a
        prefix of the batches appended (and applied).
        """
        self._check_open()
        view = memoryview(records)
        headers = validate_batches(view, max_batch_bytes=_NO_BATCH_LIMIT)
        if not headers:
            return LogAppendInfo(-1, -1, -1, self._log_start_offset, 0)
        first_offset = headers[0].base_offset
        if first_offset < self._log_end_offset:
            raise UnexpectedAppendOffsetError(
                f"{self.topic}-{self.partition}: follower append starts at offset "
                f"{first_offset}, below the log end offset {self._log_end_offset}",
                first_offset=first_offset, log_end_offset=self._log_end_offset,
            )
        # Everything that can refuse the append is checked before a byte is written.
        markers: dict[int, EndTxnMarker | None] = {}
        expected = first_offset
        record_count = 0
        pos = 0
        for h in headers:
            if h.base_offset < expected:
                raise CorruptRecordError(
                    f"{self.topic}-{self.partition}: follower append has a batch at offset "
                    f"{h.base_offset} after one that ends at {expected - 1}"
                )
            if h.is_control and h.producer_id >= 0:
                markers[h.base_offset] = read_end_txn_marker(view[pos : pos + h.size])
            expected = h.next_offset
            record_count += h.records_count
            pos += h.size
        if 0 <= headers[0].partition_leader_epoch < self.epoch_cache.latest_epoch:
            # Epochs this replica began as leader at its log end and wrote nothing in: the
            # leader's older epoch continuing there proves them void (truncate_to drops them
            # too, if the fetcher truncated first).
            self.epoch_cache.truncate_from_end(self._log_end_offset)
        now = self.clock.milliseconds()
        config = self.config
        seg = self._segments[-1]
        run_start = 0  # byte position in ``view`` where the batches not yet written begin
        run: list[BatchHeader] = []
        run_size = 0
        pos = 0
        for h in headers:
            if run:
                full = (
                    seg.size + run_size + h.size > config.segment_bytes
                    or not seg.can_hold_offset(h.last_offset)
                    or (h.base_offset != run[-1].next_offset and not config.compact)
                )
                if full:
                    self._append_replicated(seg, view[run_start:pos], run, markers, now)
                    seg = self._roll(now, h.base_offset)
                    run, run_size, run_start = [], 0, pos
            else:
                gap = h.base_offset != self._log_end_offset and not config.compact
                if gap or self._should_roll(seg, h.size, h.last_offset, now):
                    seg = self._roll(now, h.base_offset)
            run.append(h)
            run_size += h.size
            pos += h.size
        self._append_replicated(seg, view[run_start:pos], run, markers, now)
        if self._log_end_offset - self._recovery_point >= config.flush_messages:
            self.flush()
        return LogAppendInfo(
            first_offset, headers[-1].last_offset, -1, self._log_start_offset, record_count
        )

    def _append_replicated(
        self,
        seg: LogSegment,
        data: memoryview,
        headers: list[BatchHeader],
        markers: dict[int, EndTxnMarker | None],
        now: int,
    ) -> None:
        """Write leader batches into ``seg`` and apply them: log end, epochs, producers."""
        seg.append(data, headers, now_ms=now)
        if self._cache_trimmer is not None:
            self._cache_trimmer.note_append(seg)
        self._log_end_offset = headers[-1].next_offset
        for h in headers:
            if h.partition_leader_epoch > self.epoch_cache.latest_epoch:
                self.epoch_cache.assign(h.partition_leader_epoch, h.base_offset)
            if h.producer_id >= 0:
                aborted = self.producer_state.replay(h, markers.get(h.base_offset))
                if aborted is not None:
                    seg.txn_index.append(aborted)

    # == transactions ============================================================================

    def _stage_coordinator_batch(
        self, staged: StagedAppend, h: BatchHeader, buf: bytearray | memoryview, pos: int
    ) -> None:
        """Stage a coordinator's batch: a COMMIT/ABORT marker (recognised from its control
        record, as Kafka's ProducerStateManager does) or transactional data such as offsets."""
        if h.is_control:
            marker = read_end_txn_marker(memoryview(buf)[pos : pos + h.size])
            if marker is not None:
                self.producer_state.stage_marker(staged, h, marker)
        else:
            self.producer_state.stage_coordinator_batch(staged, h)

    def _commit_producer_state(self, staged: StagedAppend, seg: LogSegment) -> None:
        """Apply a staged append whose batches are now in ``seg``; index its aborts there."""
        for aborted in self.producer_state.commit(staged):
            seg.txn_index.append(aborted)

    @property
    def last_stable_offset(self) -> int:
        """The LSO: the first offset of the oldest transaction that is still open or whose
        marker is not yet below the high watermark (never below the log start offset), or the
        high watermark when that is lower or there is none. read_committed reads stop here."""
        first = self.producer_state.first_unstable_offset()
        if first is None:
            return self._high_watermark
        return min(max(first, self._log_start_offset), self._high_watermark)

    def collect_aborted_transactions(
        self, start_offset: int, upper_offset: int
    ) -> list[AbortedTxn]:
        """Every aborted transaction intersecting [``start_offset``, ``upper_offset``): marker
        at or after the start, data from before the upper bound. Scans the ``.txnindex`` of the
        segment holding ``start_offset`` and the later ones, stopping at the first entry that
        was completed with an LSO at or past ``upper_offset`` (Kafka's collectAbortedTxns)."""
        self._check_open()
        out: list[AbortedTxn] = []
        i = max(0, bisect_right(self._bases, start_offset) - 1)
        for seg in self._segments[i:]:
            found = seg.txn_index.collect(start_offset, upper_offset)
            out.extend(found.aborted)
            if found.complete:
                break
        return out

    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Forget idle producers without an open transaction (``producer.id.expiration.ms``).
        The next snapshot no longer has them."""
        self._check_open()
        return self.producer_state.remove_expired(now_ms, expiration_ms)

    def active_producers(self) -> list[ActiveProducer]:
        """The producers this partition knows, for DescribeProducers."""
        return self.producer_state.active_producers()

    def _should_roll(self, seg: LogSegment, size: int, last_offset: int, now: int) -> bool:
        config = self.config
        if seg.size == 0:
            return not seg.can_hold_offset(last_offset)
        return (
            seg.size + size > config.segment_bytes
            or now - seg.rolling_base_ms() > config.max_segment_ms
            or seg.offset_index.is_full
            or seg.time_index.is_full
            or not seg.can_hold_offset(last_offset)
        )

    @_guarded("roll")
    def roll(self) -> None:
        """Start a new active segment at the log end offset (no-op when the active one is
        empty)."""
        self._check_open()
        self._roll(self.clock.milliseconds())

    def _roll(self, now: int, new_base: int | None = None) -> LogSegment:
        """Start a new active segment at ``new_base`` (default: the log end offset; a follower
        rolls at the base offset of a batch beyond a gap)."""
        old = self._segments[-1]
        if new_base is None:
            new_base = self._log_end_offset
        if old.size == 0 and old.base_offset == new_base:
            return old
        old.on_become_inactive()  # fsyncs the old segment
        self.producer_state.take_snapshot(new_base)
        seg = LogSegment.create(
            self.directory, new_base, self.config, now_ms=now, files=self._files
        )
        self._segments.append(seg)
        self._bases.append(new_base)
        self.epoch_cache.flush()
        self._maybe_sync_directories()
        self._recovery_point = max(self._recovery_point, old.base_offset, new_base)
        self._write_recovery_point()
        return seg

    # == flushing ================================================================================

    def flush(self) -> None:
        """fsync everything appended so far."""
        self._check_open()
        for seg in self._segments:
            seg.flush()
        self.epoch_cache.flush()
        self._maybe_sync_directories()
        self._recovery_point = self._log_end_offset
        self._last_flush_ms = self.clock.milliseconds()

    def _maybe_sync_directories(self) -> None:
        if self._directories_unsynced:
            fsync_dir(self.directory)
            fsync_dir(self.directory.parent)
            self._directories_unsynced = False

    @_guarded("flush")
    def maybe_flush(self, now_ms: int) -> bool:
        """Flush when ``flush_ms`` has passed since the last flush and there is unflushed
        data; also completes pending file deletions. Returns whether it flushed."""
        self._delete_due_files(now_ms)
        if self._closed or self._log_end_offset <= self._recovery_point:
            return False
        if now_ms - self._last_flush_ms >= self.config.flush_ms:
            self.flush()
            return True
        return False

    def _write_recovery_point(self, *, sync: bool = True) -> None:
        if self._checkpointed_recovery_point == self._recovery_point:
            return
        write_offset_checkpoint(
            self.directory / RECOVERY_POINT_CHECKPOINT,
            self.topic,
            self.partition,
            self._recovery_point,
            sync=sync,
        )
        self._checkpointed_recovery_point = self._recovery_point

    def _write_log_start_offset(self, *, sync: bool = True) -> None:
        if self._checkpointed_log_start == self._log_start_offset:
            return
        write_offset_checkpoint(
            self.directory / LOG_START_OFFSET_CHECKPOINT,
            self.topic,
            self.partition,
            self._log_start_offset,
            sync=sync,
        )
        self._checkpointed_log_start = self._log_start_offset

    # == reading =================================================================================

    @_guarded("read")
    def read(
        self,
        fetch_offset: int,
        *,
        max_bytes: int,
        max_offset: int | None = None,
        min_one_message: bool = True,
        max_inline_bytes: int | None = None,
    ) -> FetchDataInfo:
        """Whole batches from the one segment holding ``fetch_offset``, starting with the batch
        that contains it, never including a batch that reaches ``max_offset`` (default: the
        log end offset), at most ``max_bytes`` unless ``min_one_message`` and the first batch
        alone is larger. Raises FetchOffsetOutOfRangeError outside [log_start, log_end].

        With ``max_inline_bytes`` set, a read of more than that many bytes is returned as a
        :class:`FileRecords` slice (found from the batch headers, the records unread), which
        the caller owns; otherwise, and always when it is None, as bytes."""
        self._check_open()
        leo = self._log_end_offset
        if fetch_offset < self._log_start_offset or fetch_offset > leo:
            raise FetchOffsetOutOfRangeError(
                f"offset {fetch_offset} is outside [{self._log_start_offset}, {leo}] of "
                f"{self.topic}-{self.partition}",
                high_watermark=self._high_watermark,
                log_start_offset=self._log_start_offset,
            )
        limit = leo if max_offset is None else min(max_offset, leo)
        data: bytes | FileRecords = b""
        if fetch_offset < limit:
            i = max(0, bisect_right(self._bases, fetch_offset) - 1)
            while i < len(self._segments):
                seg = self._segments[i]
                found = seg.translate_offset(fetch_offset) if seg.size else None
                if found is None:
                    i += 1
                    continue
                pos, h = found
                if h.last_offset >= limit:
                    break
                if limit >= self._upper_bound(i):
                    max_pos = seg.size
                else:
                    end = seg.translate_offset(limit, pos)
                    max_pos = end[0] if end is not None else seg.size
                if max_inline_bytes is None:
                    data = seg.read(pos, max_bytes, max_pos, min_one_message)
                else:
                    data = _read_or_slice(seg, pos, max_bytes, max_pos, min_one_message,
                                          max_inline_bytes)
                break
        return FetchDataInfo(
            data, fetch_offset, self._high_watermark, self._log_start_offset, leo,
            self.last_stable_offset,
        )

    def fetch(
        self,
        fetch_offset: int,
        *,
        max_bytes: int,
        isolation: FetchIsolation = FetchIsolation.HIGH_WATERMARK,
        min_one_message: bool = True,
        max_inline_bytes: int | None = None,
    ) -> FetchDataInfo:
        """One partition's share of a Fetch: :meth:`read` up to what ``isolation`` allows,
        with the high watermark, last stable offset and log start offset of the same moment
        and, for ``TXN_COMMITTED``, the aborted transactions overlapping the returned batches.
        ``max_inline_bytes`` as for :meth:`read`: larger reads come back as a
        :class:`FileRecords` slice the caller must close. Raises FetchOffsetOutOfRangeError
        (carrying the offsets) or KafkaStorageError."""
        if isolation is FetchIsolation.TXN_COMMITTED:
            max_offset: int | None = self.last_stable_offset
        elif isolation is FetchIsolation.HIGH_WATERMARK:
            max_offset = self._high_watermark
        else:
            max_offset = None
        info = self.read(
            fetch_offset, max_bytes=max_bytes, max_offset=max_offset,
            min_one_message=min_one_message, max_inline_bytes=max_inline_bytes,
        )
        records = info.records
        if isolation is not FetchIsolation.TXN_COMMITTED or not len(records):
            return info
        if isinstance(records, FileRecords):
            upper = records.next_offset  # from the batch headers, the records unread
        else:
            upper = next_offset_after(records)
        aborted = tuple(self.collect_aborted_transactions(fetch_offset, upper))
        return replace(info, aborted_transactions=aborted)

    # == timestamps ==============================================================================

    @_guarded("list offsets")
    def fetch_offset_by_timestamp(self, timestamp: int) -> TimestampAndOffset | None:
        """Earliest record (at or after the log start offset) whose timestamp is >=
        ``timestamp``. Also answers Kafka's special values: -2 earliest (log start offset),
        -1 latest (log end offset), -3 max timestamp. None when no record qualifies."""
        self._check_open()
        if timestamp == EARLIEST_TIMESTAMP:
            start = self._log_start_offset
            return TimestampAndOffset(-1, start, self.epoch_cache.epoch_for_offset(start))
        if timestamp == LATEST_TIMESTAMP:
            return TimestampAndOffset(-1, self._log_end_offset, self.epoch_cache.latest_epoch)
        if timestamp == MAX_TIMESTAMP:
            return self._max_timestamp_and_offset()
        log_start_offset = self._log_start_offset
        for i, seg in enumerate(self._segments):
            if seg.size == 0 or self._upper_bound(i) <= log_start_offset:
                continue
            if seg.max_timestamp >= timestamp:
                found = seg.find_offset_by_timestamp(timestamp, log_start_offset)
                if found is not None:
                    return found
        return None

    @_guarded("list offsets")
    def max_timestamp_and_offset(self) -> TimestampAndOffset | None:
        """The largest record timestamp and the earliest offset carrying it (ListOffsets -3);
        None for an empty log."""
        return self._max_timestamp_and_offset()

    def _max_timestamp_and_offset(self) -> TimestampAndOffset | None:
        self._check_open()
        best: LogSegment | None = None
        for i, seg in enumerate(self._segments):
            if seg.size == 0 or self._upper_bound(i) <= self._log_start_offset:
                continue
            if best is None or seg.max_timestamp > best.max_timestamp:
                best = seg
        if best is None or best.max_timestamp < 0:
            return None
        ts = best.max_timestamp
        start = max(self._log_start_offset, best.base_offset)
        # offset_of_max_timestamp is the last offset of the first batch that reached the
        # maximum; start from the index entry at or below it.
        _off, pos = best.offset_index.lookup(best.offset_of_max_timestamp)
        for p, h in best.iter_headers(pos):
            if h.max_timestamp == ts and h.last_offset >= start:
                for r in decode_records(best.read_batch(p, h)):
                    if r.timestamp == ts and r.offset >= start:
                        return TimestampAndOffset(ts, r.offset, h.partition_leader_epoch)
        return None

    # == leader epochs ===========================================================================

    def epoch_for_offset(self, offset: int) -> int:
        return self.epoch_cache.epoch_for_offset(offset)

    def maybe_assign_epoch_start_offset(
        self, leader_epoch: int, start_offset: int | None = None
    ) -> bool:
        """Record that ``leader_epoch`` starts at ``start_offset`` (default: the log end
        offset), as a replica does when it becomes leader (Kafka's
        maybeAssignEpochStartOffset), so that OffsetForLeaderEpoch and diverging-epoch checks
        know the epoch before its first append. Only an epoch newer than the latest is
        recorded (written at once, fsynced by the next flush); returns whether it was."""
        self._check_open()
        offset = self._log_end_offset if start_offset is None else start_offset
        return self.epoch_cache.assign(leader_epoch, offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(epoch, end offset) as OffsetForLeaderEpoch answers it; (-1, -1) if unknown."""
        return self.epoch_cache.end_offset_for_epoch(epoch, self._log_end_offset)

    # == truncation (replication) ===============================================================

    @_guarded("truncate")
    def truncate_to(self, offset: int) -> bool:
        """Drop everything at or after ``offset`` (Kafka's truncateTo; a follower whose log
        diverged from its leader's). A batch straddling ``offset`` goes entirely, so the log
        end offset becomes ``offset`` or the base offset of that batch. Segments based above
        it are deleted, the one holding it is cut (its offset, time and transaction indexes
        with it), the epoch cache is truncated, producer state is rebuilt for the shorter log
        (snapshots past its end deleted), the high watermark, recovery point and log start
        offset are clamped to the new end. Below the first segment's base offset this is
        :meth:`truncate_fully_and_start_at`. Returns whether anything was removed; when
        nothing is, epoch cache entries starting at the log end offset still go (an epoch this
        replica began as leader and wrote nothing in, Kafka's rule).

        Crash safety (see the module docstring): the recovery point goes down first, so that
        an unclean start re-validates the segment being cut; later segments are renamed away
        newest first and the directory fsynced before the cut, which is fsynced at once; so a
        crash at any point leaves a prefix of the old log, never a hole, and the loader makes
        indexes, epochs and producer state agree with it. On KafkaStorageError the in-memory
        log may disagree with the files: close it and reopen it with ``recover=True``.
        """
        self._check_open()
        if offset < 0:
            raise ValueError(f"cannot truncate to negative offset {offset}")
        if offset >= self._log_end_offset:
            # As Kafka does: an epoch this replica started as leader without appending
            # anything conflicts with what its new leader says; it goes even so.
            self.epoch_cache.truncate_from_end(self._log_end_offset)
            return False
        old_end = self._log_end_offset
        if offset < self._segments[0].base_offset:
            self._truncate_fully(offset)
        else:
            self._cut_tail(offset)
        self.truncations += 1
        _log.info(
            "%s-%d: truncated to offset %d: log end offset %d -> %d, high watermark %d",
            self.topic, self.partition, offset, old_end, self._log_end_offset,
            self._high_watermark,
        )
        return True

    @_guarded("truncate")
    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and start an empty log at ``offset`` (Kafka's
        truncateFullyAndStartAt: the leader's log start moved past this replica's end). Log
        start, log end, high watermark and recovery point all become ``offset``; the epoch
        cache and producer state are emptied, their files with them.

        Crash safety: data from ``offset - 1`` on is first cut as by :meth:`truncate_to`; then
        the log start offset checkpoint is written -- the commit point: from then on the loader
        sees a start beyond whatever is left and finishes the job itself -- and only then are
        the epoch cache and producer state emptied and the segments deleted, newest first.
        (When ``offset`` is at or below the first segment's base, crash states before the new
        segment exists are prefixes of the old log instead.)"""
        self._check_open()
        if offset < 0:
            raise ValueError(f"cannot start a log at negative offset {offset}")
        old_start, old_end = self._log_start_offset, self._log_end_offset
        self._truncate_fully(offset)
        self.truncations += 1
        _log.info(
            "%s-%d: truncated fully and started at offset %d (log was [%d, %d))",
            self.topic, self.partition, offset, old_start, old_end,
        )

    def _cut_tail(self, offset: int) -> None:
        """:meth:`truncate_to` for ``first segment base <= offset < log end``."""
        keep = bisect_right(self._bases, offset)
        seg = self._segments[keep - 1]
        doomed = self._segments[keep:]
        found = seg.translate_offset(offset) if seg.size else None
        # Where the log will end (a compacted segment may end lower, before a gap).
        new_end = found[1].base_offset if found is not None else self._upper_bound(keep - 1)
        # 1. Durable bounds first: recovery re-validates the segment being cut (and rebuilds
        #    its indexes); no snapshot speaks for records about to go.
        self._recovery_point = min(self._recovery_point, new_end)
        self._write_recovery_point()
        if self._log_start_offset > new_end:
            self._log_start_offset = new_end
            self._write_log_start_offset()
        self.producer_state.delete_snapshots_after(new_end)
        # 2. Later segments go, newest first, durably before the cut (never a hole).
        now = self.clock.milliseconds()
        paths: list[Path] = []
        for doomed_seg in reversed(doomed):
            paths.extend(doomed_seg.mark_deleted())
        if doomed:
            self._set_segments(self._segments[:keep])
        fsync_dir(self.directory)
        # 3. The cut, fsynced with its indexes.
        if seg.truncate_to(offset, log_level=logging.DEBUG) == 0 and seg.next_offset is None:
            seg.load_tail()  # an inactive segment opened from disk does not know its end yet
        seg.flush()
        assert seg.next_offset is not None
        self._log_end_offset = seg.next_offset
        self._after_truncation()
        self._pending_deletes.append((now + self.config.file_delete_delay_ms, paths))
        self._delete_due_files(now)

    def _after_truncation(self) -> None:
        """Make everything derived from the log agree with its new end."""
        end = self._log_end_offset
        self.epoch_cache.truncate_from_end(end)
        if self._log_start_offset > end:
            self._log_start_offset = end
            self._write_log_start_offset()
        self._recovery_point = min(self._recovery_point, end)
        self._write_recovery_point()
        self._high_watermark = min(self._high_watermark, end)
        self._cap_cleaner_checkpoint(end)
        # Producer state as of the new end: the newest snapshot at or below it, then a replay
        # (the .txnindex entries below the end stay; the cut removed those at or after it).
        snapshot = self.producer_state.load(end)
        replay_from = snapshot if snapshot is not None else self._segments[0].base_offset
        if replay_from < end:
            replay_producer_state(self.producer_state, self._segments, end, replay_from)
        self.producer_state.on_high_watermark_updated(self._high_watermark)

    def _cap_cleaner_checkpoint(self, end: int) -> None:
        """A first dirty offset past the new end would call re-appended records clean."""
        path = self.directory / CLEANER_OFFSET_CHECKPOINT
        if not path.exists():
            return
        checkpointed = read_offset_checkpoint(path)
        if checkpointed is not None and checkpointed > end:
            write_offset_checkpoint(path, self.topic, self.partition, end)

    def _truncate_fully(self, offset: int) -> None:
        if self._segments[0].base_offset < offset <= self._log_end_offset:
            # Cut below ``offset`` (it all goes anyway) so that the checkpointed start below
            # lies strictly beyond what is left.
            self._cut_tail(offset - 1)
        beyond = offset > self._log_end_offset
        self._log_start_offset = offset
        self._write_log_start_offset()
        if beyond:
            # Committed: a loader finding this start beyond the data truncates fully itself;
            # what it would find of the epochs and producers must be gone before the data.
            self._clear_epochs_and_producers()
        else:
            # Every record is at or after ``offset``: until the last segment is gone a crash
            # leaves a prefix of the old log, which its epochs and producers must still
            # describe; only a snapshot at ``offset`` itself could outlive the segments.
            self.producer_state.delete_snapshots_after(offset - 1)
        now = self.clock.milliseconds()
        paths: list[Path] = []
        for seg in reversed(self._segments):
            paths.extend(seg.mark_deleted())
        fsync_dir(self.directory)
        if not beyond:
            self._clear_epochs_and_producers()
        fresh = LogSegment.create(
            self.directory, offset, self.config, now_ms=now, files=self._files
        )
        self._set_segments([fresh])
        fsync_dir(self.directory)
        self._log_end_offset = offset
        self._high_watermark = offset
        self._recovery_point = offset
        self._write_recovery_point()
        path = self.directory / CLEANER_OFFSET_CHECKPOINT
        if path.exists():
            write_offset_checkpoint(path, self.topic, self.partition, offset)
        self.producer_state.on_high_watermark_updated(offset)
        self._pending_deletes.append((now + self.config.file_delete_delay_ms, paths))
        self._delete_due_files(now)

    def _clear_epochs_and_producers(self) -> None:
        self.epoch_cache.clear()
        self.producer_state.clear()
        self.producer_state.delete_all_snapshots()

    # == deletion ================================================================================

    @_guarded("delete records")
    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: move the log start offset to ``offset`` (-1 means the high
        watermark) and delete segments wholly below it. Returns the new log start offset."""
        self._check_open()
        if offset < 0:
            offset = self._high_watermark
        if offset > self._high_watermark:
            raise OffsetOutOfRangeError(
                f"cannot delete records before {offset}: the high watermark is "
                f"{self._high_watermark}"
            )
        if offset <= self._log_start_offset:
            return self._log_start_offset
        self._log_start_offset = offset
        self._write_log_start_offset()
        self.epoch_cache.truncate_from_start(offset)
        now = self.clock.milliseconds()
        self._delete_prefix(lambda seg, upper: upper <= self._log_start_offset, now)
        return self._log_start_offset

    @_guarded("retention")
    def apply_retention(self, now_ms: int) -> int:
        """Roll an idle active segment older than segment_ms (for a compacted log also
        max_compaction_lag_ms, so its records become cleanable), then -- only when the cleanup
        policy includes ``delete`` -- delete old segments by retention_ms (segment max
        timestamp) and retention_bytes; and always segments below the log start offset. The
        active segment is never deleted. Returns the number of segments deleted."""
        self._check_open()
        self._delete_due_files(now_ms)
        config = self.config
        active = self._segments[-1]
        if active.size > 0 and now_ms - active.rolling_base_ms() > config.max_segment_ms:
            self._roll(now_ms)
        deleted = 0
        if config.delete and config.retention_ms >= 0:

            def too_old(seg: LogSegment, upper: int) -> bool:
                return now_ms - self._segment_timestamp(seg) > config.retention_ms

            deleted += self._delete_prefix(too_old, now_ms)
        if config.delete and config.retention_bytes >= 0:
            excess = self.size_in_bytes - config.retention_bytes

            def too_big(seg: LogSegment, upper: int) -> bool:
                nonlocal excess
                if excess - seg.size >= 0:
                    excess -= seg.size
                    return True
                return False

            deleted += self._delete_prefix(too_big, now_ms)
        deleted += self._delete_prefix(
            lambda seg, upper: upper <= self._log_start_offset, now_ms
        )
        return deleted

    @staticmethod
    def _segment_timestamp(seg: LogSegment) -> int:
        ts = seg.max_timestamp
        if ts >= 0:
            return ts
        try:
            return os.stat(seg.log_path).st_mtime_ns // 1_000_000
        except OSError:
            return 0

    def _delete_prefix(self, predicate: Callable[[LogSegment, int], bool], now: int) -> int:
        doomed: list[LogSegment] = []
        for i, seg in enumerate(self._segments[:-1]):
            upper = self._upper_bound(i)
            if upper > self._high_watermark or not predicate(seg, upper):
                break
            doomed.append(seg)
        if not doomed:
            return 0
        paths: list[Path] = []
        for seg in doomed:
            paths.extend(seg.mark_deleted())
        self._set_segments(self._segments[len(doomed) :])
        if self._segments[0].base_offset > self._log_start_offset:
            self._log_start_offset = self._segments[0].base_offset
            self._write_log_start_offset()
            self.epoch_cache.truncate_from_start(self._log_start_offset)
        self._pending_deletes.append((now + self.config.file_delete_delay_ms, paths))
        self._delete_due_files(now)
        return len(doomed)

    # == segment replacement (log cleaner) =======================================================

    def replace_segments(
        self,
        new: list[LogSegment],
        old: list[LogSegment],
        *,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        """Swap ``new`` in for ``old`` (Kafka's replaceSegments); owner thread, a few renames.

        ``old`` are consecutive non-active segments of this log; ``new`` are closed segments
        under the ``.cleaned`` suffix, fsynced, ascending, the first with ``old[0]``'s base offset,
        none at or beyond the end of ``old[-1]``. The protocol and crash behaviour are in the
        module docstring; ``on_step(name)`` is called after each durable step (tests use it to
        simulate crashes). On KafkaStorageError the in-memory log may disagree with the files:
        close it and reopen with ``recover=True``.
        """
        self._check_open()
        i = next((k for k, s in enumerate(self._segments) if s is old[0]), -1)
        if (
            i < 0
            or not new
            or self._segments[i : i + len(old)] != old
            or i + len(old) >= len(self._segments)
            or new[0].base_offset != old[0].base_offset
            or any(a.base_offset >= b.base_offset for a, b in zip(new, new[1:], strict=False))
            or new[-1].base_offset >= self._upper_bound(i + len(old) - 1)
            or any(seg.suffix != CLEANED_SUFFIX for seg in new)
        ):
            raise ValueError("replace_segments: old must be consecutive non-active segments and "
                             "new must be .cleaned segments covering the same offsets")
        step = on_step if on_step is not None else _no_step
        now = self.clock.milliseconds()
        d = self.directory
        manifest = d / (SWAP_MANIFEST + SWAP_SUFFIX)
        for seg in new:
            seg.config = self.config
            seg.attach_files(self._files)
            seg.rename_suffix(CLEANED_SUFFIX, SWAP_SUFFIX)
            step("cleaned-to-swap")
        fsync_dir(d)
        write_checkpoint(manifest, 0, [
            "old " + " ".join(str(s.base_offset) for s in old),
            "new " + " ".join(str(s.base_offset) for s in new),
        ])
        step("manifest-committed")
        self._set_segments(self._segments[:i] + new + self._segments[i + len(old) :])
        paths: list[Path] = []
        for seg in old:
            paths.extend(seg.mark_deleted())
            step("old-to-deleted")
        for seg in new:
            seg.rename_suffix(SWAP_SUFFIX, "")
            step("swap-to-final")
        fsync_dir(d)
        try:
            manifest.unlink()
        except OSError as e:
            raise KafkaStorageError(f"cannot delete {manifest}: {e}") from e
        fsync_dir(d)
        step("manifest-removed")
        self._pending_deletes.append((now + self.config.file_delete_delay_ms, paths))
        self._delete_due_files(now)

    def _delete_due_files(self, now: int, *, everything: bool = False) -> None:
        keep = []
        for due, paths in self._pending_deletes:
            if everything or due <= now:
                for p in paths:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
            else:
                keep.append((due, paths))
        self._pending_deletes = keep

    # == lifecycle ===============================================================================

    def _on_corrupt_read(self, e: SegmentCorruptError, operation: str) -> None:
        """A read met a corrupt batch: count it and log it once (see health.py)."""
        seg = next((s for s in self._segments if s.log_path == e.path), None)
        base = seg.base_offset if seg is not None else -1
        offset = -1
        if seg is not None and not self.health.knows_corruption(base, e.position):
            offset = _offset_at(seg, e.position)
        self.health.on_corrupt_read(CorruptBatch(base, e.position, offset, e.reason, operation))

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaStorageError(f"log {self.topic}-{self.partition} is closed")

    def _close_handles(self) -> None:
        for seg in self._segments:
            seg.close_handles()

    def abandon(self, *, unsynced_kept: Callable[[int], int] | None = None) -> None:
        """Close the file descriptors and write nothing: the log as a killed process leaves it
        (appended bytes in the page cache, no checkpoint or snapshot), for the next open to
        recover. The deterministic simulation's crash (``odradek.sim``).

        With ``unsynced_kept``, as a power loss leaves it instead: of the ``n`` bytes of a
        segment file appended since the last fsync (past the recovery point), only the first
        ``unsynced_kept(n)`` stay, which may end inside a batch (a torn write)."""
        if self._closed:
            return
        self._closed = True
        cuts: list[tuple[Path, int]] = []
        if unsynced_kept is not None:
            for seg in self._segments:
                found = seg.translate_offset(self._recovery_point) if seg.size else None
                if found is not None:
                    unsynced = seg.size - found[0]
                    cuts.append((seg.log_path, found[0] + unsynced_kept(unsynced)))
        self._close_handles()
        for path, size in cuts:
            os.truncate(path, size)

    @_guarded("close")
    def close(self, *, synced: bool = False) -> None:
        """Flush, record the final time-index entry, snapshot producer state at the log end and
        write both offset checkpoints, so a later ``open(recover=False)`` needs no rescan.

        ``synced`` says the caller has already made everything appended durable (one
        ``syncfs`` for all logs, :meth:`LogManager.shutdown`) and will do the same for what
        this writes: no fsync per file then."""
        if self._closed:
            return
        if synced:
            self._recovery_point = self._log_end_offset
            self._directories_unsynced = False
        else:
            self.flush()
        for seg in self._segments[:-1]:
            seg.close_handles()
        self._segments[-1].close(sync=not synced)
        self.producer_state.take_snapshot(self._log_end_offset, sync=not synced)
        self._write_recovery_point(sync=not synced)
        self._write_log_start_offset(sync=not synced)
        self._delete_due_files(0, everything=True)
        self._closed = True

    def delete(self) -> None:
        """Close without flushing, rename the directory ``<dir>.<hex>-delete`` and remove it."""
        if not self._closed:
            self._close_handles()
            self._closed = True
        target = self.directory.with_name(f"{self.directory.name}.{uuid.uuid4().hex}-delete")
        try:
            os.replace(self.directory, target)
            fsync_dir(target.parent)
        except OSError as e:
            raise KafkaStorageError(f"cannot rename {self.directory}: {e}") from e
        shutil.rmtree(target, ignore_errors=True)

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.topic}-{self.partition}, start={self._log_start_offset}, "
            f"end={self._log_end_offset}, hw={self._high_watermark}, "
            f"segments={len(self._segments)})"
        )


def _no_step(_name: str) -> None:
    pass


def _offset_at(seg: LogSegment, position: int) -> int:
    """The offset the batch at ``position`` should start with: where the batch before it
    ends (walking from the offset index entry before it); -1 when that cannot be read."""
    try:
        start = seg.offset_index.floor_position(position - 1) if position > 0 else 0
        expected = seg.base_offset
        for _p, h in seg.iter_headers(start, position):
            expected = h.next_offset
        return expected
    except Exception:  # best effort: the report matters more than its offset
        return -1


def _read_or_slice(
    seg: LogSegment, pos: int, max_bytes: int, max_pos: int, min_one: bool, max_inline: int
) -> bytes | FileRecords:
    """Bytes when the read cannot exceed ``max_inline`` (one pread, as :meth:`LogSegment.read`),
    else a slice located from headers; a first batch larger than ``max_bytes`` (``min_one``)
    counts by its own size."""
    if min(max_bytes, max_pos - pos) <= max_inline:
        data = seg.read(pos, max_bytes, max_pos, False)
        if data or not min_one:
            return data
    size, next_offset = seg.locate(pos, max_bytes, max_pos, min_one)
    if size <= max(0, max_inline):
        return seg.read_range(pos, size)
    return FileRecords.share(seg.fd, seg.log_path, pos, size, next_offset)


def _check_keys(buf: bytearray | memoryview, headers: list[BatchHeader]) -> None:
    """A compacted log keeps the latest record per key, so every record needs one (Kafka's
    LogValidator rejects the batch with INVALID_RECORD, naming the keyless records). Control
    batches are exempt."""
    pos = 0
    for h in headers:
        if not h.is_control:
            records = decode_records(memoryview(buf)[pos : pos + h.size])
            keyless = tuple(
                (i, "a compacted topic accepts only records with a key")
                for i, r in enumerate(records)
                if r.key is None
            )
            if keyless:
                raise InvalidRecordError(
                    f"{len(keyless)} of {len(records)} records have no key (the first at index "
                    f"{keyless[0][0]}): a compacted topic accepts only keyed records",
                    record_errors=keyless,
                )
        pos += h.size
