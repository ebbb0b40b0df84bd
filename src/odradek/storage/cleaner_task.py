"""One cleaning pass over one compacted log (Kafka's Cleaner): build the offset map of the dirty
section, then rewrite the log from its start up to the pass's end offset into ``.cleaned``
segments. :class:`~odradek.storage.cleaner.LogCleaner` plans a pass (which log, which segments)
and swaps its result in; see :mod:`odradek.storage.cleaner` for what is cleaned and which thread
does what.

**The pass.** (1) Map each key of the dirty section [first dirty offset, first uncleanable
offset) to its last offset in the :class:`~odradek.storage.offset_map.OffsetMap`; when the map
fills, the pass maps only up to there (the *end offset*) and the next pass carries on.
(2) Rewrite every planned segment below the end offset, in groups that each fit one segment
(``segment.bytes``, index sizes, 32-bit relative offsets): a record is kept when it is at or
past the end offset or it is the latest for its key, and a tombstone (null value) is kept until
its batch's delete horizon has passed. Keyless records below the end offset are dropped (a
compacted topic rejects them at append). Nothing at or past the end offset changes.

**Batches.** A batch keeps its base offset, last offset delta (so the producer's last sequence
survives), producer id/epoch/base sequence, partition leader epoch and attributes. A batch whose
records all survive is copied byte for byte. Otherwise the kept records are copied as they were
(same offset and timestamp deltas, so the batch keeps its base timestamp) and recompressed with
the batch's codec; the record count, max timestamp (CreateTime) and CRC are recomputed. A batch
left with no records is dropped, except the last batch of a producer that is still in the
producer state, which stays as an empty batch (header only, no compression, base and max
timestamp = the old max timestamp), as Kafka keeps it, for idempotence.

**Tombstones (KIP-534 semantics, not Kafka 2.x's segment-mtime rule).** When a pass keeps a
tombstone in a batch that has no delete horizon yet, it rewrites the batch with attribute bit 6
set and ``baseTimestamp`` = pass time + ``delete.retention.ms`` (record timestamp deltas are
re-based so every record keeps its timestamp). A later pass whose time is at or past the horizon
drops the batch's tombstones. Beyond Kafka, the cleaner remembers the earliest horizon it wrote
per log and cleans that log once it is due even when it is not dirty enough, so tombstones do
not outlive ``delete.retention.ms`` by more than one pass.

**Transactions (KIP-98's compaction rules, Kafka's CleanedTransactionMetadata).** Planning
snapshots the aborted-transaction index entries of every transaction with data in the section a
pass may rewrite (:meth:`PartitionLog.collect_aborted_transactions`) and of each planned
segment; :class:`CleanedTransactions` replays them against the batches in offset order. Below the
end offset, batches of aborted transactions lose their records (they are never mapped either,
so an aborted update never hides the committed one before it); an aborted batch that is its
producer's last stays as an empty batch, like any other. A COMMIT or ABORT marker below the end
offset stays as long as a batch of its transaction is written to the cleaned log; once none is,
the marker is treated like a tombstone: the first such pass stamps a delete horizon (now +
``delete.retention.ms``) into it and a pass at or past the horizon removes it, so a read_committed
consumer that fetched the transaction's data before it was cleaned still finds its marker. Other
control batches stay. A cleaned segment's ``.txnindex`` keeps the entries whose ABORT marker it
keeps (an aborted transaction without data needs no entry once its marker is gone; one with a
marker keeps its entry, so fetches report exactly what they did). When the old segment of the
same base offset had a ``.txnindex``, the cleaned segment gets one even if empty, so a swap rolled
forward after a crash cannot leave the old entries behind. Markers are never the last batch of a
producer here (producer state records data batches only), so a retained transactional batch

**Threads.** A task is created on the logs' owner thread, then :meth:`CleanTask.run` (or
repeated :meth:`CleanTask.step`) runs on any one worker thread: it reads only through the file
descriptors opened at planning, writes only the ``.cleaned`` files it creates and never touches
the log's objects. :meth:`CleanTask.cancel` may be called from any thread.

**Speed.** Every record is decoded twice per pass (map, then clean) in pure Python, so the two
record loops (:func:`_map_records`, :func:`_select_records`) decode only the fields they need and
inline the offset map's probing; a batch whose records all survive is copied unchanged.
"""


from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from odradek.errors import CorruptRecordError, KafkaStorageError
from odradek.protocol.records import (
    ATTR_COMPRESSION_MASK,
    ATTR_DELETE_HORIZON,
    BATCH_HEADER_SIZE,
    CONTROL_ABORT,
    CONTROL_COMMIT,
    MAGIC,
    TIMESTAMP_LOG_APPEND_TIME,
    BatchHeader,
    batch_crc_ok,
    compress,
    control_type,
    decode_records,
    decompress,
    read_batch_header,
    rebuild_batch,
)
from odradek.protocol.varint import VarintError, encode_varint, read_uvarint, read_varint
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.offset_map import OffsetMap, Pacer, Throttler
from odradek.storage.segment import CLEANED_SUFFIX, LogSegment
from odradek.storage.txn_index import AbortedTxn

__all__ = [
    "CleanedGroup",
    "CleanedTransactions",
    "CleanerStats",
    "CleanTask",
    "LogToClean",
    "SegmentPlan",
    "TaskState",
]

log = logging.getLogger("odradek.storage.cleaner")

_INT32_MAX = 2**31 - 1
_TICK_EVERY = 512  # records between two calls of the pacer in the record loops


def _no_tick() -> None:
    pass


# == transactions =================================================================================


class CleanedTransactions:
    """What one pass knows of transactions (Kafka's CleanedTransactionMetadata), fed the batches
    of the log in offset order, once per pass (map building and cleaning use separate
    instances). Built on the owner thread from a snapshot of the aborted-transaction index;
    used on the cleaning thread only.

    * A data batch is *aborted* when an index entry of its producer spans it (first offset <=
      batch <= ABORT marker); its records are dropped and never enter the offset map.
    * A transactional batch that goes into the cleaned log (with records, or emptied because it
      is its producer's last) gives its transaction *data*; :meth:`on_marker` tells whether the
      transaction its COMMIT/ABORT marker ends still has any, which decides whether the marker
      must stay. Data always precedes its marker and every pass rewrites the log from its
      start, so by the time the marker is read every batch of its transaction has been judged.
    """

    def __init__(self, aborted: Iterable[AbortedTxn]) -> None:
        by_producer: dict[int, list[AbortedTxn]] = {}
        for entry in aborted:
            by_producer.setdefault(entry.producer_id, []).append(entry)
        # A producer's transactions never overlap, so ordering by first offset also orders the
        # markers; entries behind the read position are popped as the pass moves on.
        self._aborted = {
            pid: deque(sorted(entries, key=lambda e: e.first_offset))
            for pid, entries in by_producer.items()
        }
        self._with_data: set[int] = set()

    def is_aborted(self, h: BatchHeader) -> bool:
        """Whether data batch ``h`` belongs to an aborted transaction."""
        pending = self._aborted.get(h.producer_id)
        if not pending or not h.is_transactional:
            return False
        base = h.base_offset
        while pending and pending[0].last_offset < base:
            pending.popleft()
        return bool(pending) and pending[0].first_offset <= base

    def on_batch_kept(self, h: BatchHeader) -> None:
        """Data batch ``h`` goes into the cleaned log."""
        if h.is_transactional:
            self._with_data.add(h.producer_id)

    def on_marker(self, producer_id: int) -> bool:
        """A COMMIT/ABORT marker of ``producer_id`` was read: whether the transaction it ends
        has a batch in the cleaned log (the producer's next transaction starts afresh)."""
        if producer_id in self._with_data:
            self._with_data.discard(producer_id)
            return True
        return False


# == values =======================================================================================


@dataclass(frozen=True, slots=True)
class LogToClean:
    """How dirty one compacted log is (Kafka's LogToClean)."""

    topic: str
    partition: int
    first_dirty_offset: int
    first_uncleanable_offset: int
    clean_bytes: int
    cleanable_bytes: int
    need_compaction_now: bool
    tombstones_due: bool = False

    @property
    def total_bytes(self) -> int:
        return self.clean_bytes + self.cleanable_bytes

    @property
    def cleanable_ratio(self) -> float:
        total = self.total_bytes
        return self.cleanable_bytes / total if total else 0.0


@dataclass(frozen=True, slots=True)
class CleanerStats:
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_retained: int = 0
    batches_read: int = 0
    batches_retained: int = 0
    keys_mapped: int = 0
    map_utilization: float = 0.0
    throttle_wait_s: float = 0.0
    paced_s: float = 0.0  # slept to let others run (Pacer)


class TaskState(enum.Enum):
    PLANNED = "planned"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPLETED = "completed"  # swapped in (or discarded) by LogCleaner.complete


# == the cleaning task ============================================================================


@dataclass(slots=True)
class SegmentPlan:
    """What a pass needs of one segment, captured on the owner thread; ``fd`` is a read handle
    the task owns (closed, and set to -1, when the task finishes)."""

    segment: LogSegment  # identity only: the worker never touches it
    base_offset: int
    upper_offset: int  # next segment's base offset
    size: int
    index_bytes: int
    time_index_bytes: int
    fd: int
    aborted_txns: list[AbortedTxn]


@dataclass(slots=True)
class CleanedGroup:
    """Consecutive planned segments rewritten into one ``.cleaned`` segment (None until
    written, or once discarded)."""

    plans: list[SegmentPlan]
    cleaned: LogSegment | None = None


class _Cancelled(Exception):
    pass


# The two loops below are the cleaner's hot path: every record of the log goes through each
# once per pass. They decode only the fields they need, with one- and two-byte varints (record
# lengths under 8 KiB, small deltas and key lengths) inline, and allocate nothing per record
# but the key. A record (KIP-98) is: length varint, attributes int8, timestamp delta varint,
# offset delta varint, key length varint + key, value length varint + value, headers. A null
# value has length -1, which is the single byte 0x01.


def _map_records(
    body: bytes, count: int, base: int, start: int, omap: OffsetMap, tick: Callable[[], None]
) -> int:
    """Map the key of every keyed record at or after ``start`` of an uncompressed records
    section to its offset; returns the offset of the first record that did not fit in the map,
    or -1; ``tick`` is called every few hundred records. Raises CorruptRecordError."""
    # OffsetMap.put, inlined.
    slots, max_entries, size = omap.slots, omap.max_entries, omap._size
    offsets, h1, h2, probe = omap._offsets, omap._h1, omap._h2, omap._probe
    pos = 0
    n = len(body)
    try:
        for first in range(0, count, _TICK_EVERY):
            if first:  # CleanTask.step ticks between batches
                tick()
            for _ in range(min(_TICK_EVERY, count - first)):
                b = body[pos]
                if b < 0x80:
                    v, p = b, pos + 1
                elif body[pos + 1] < 0x80:
                    v, p = (b & 0x7F) | (body[pos + 1] << 7), pos + 2
                else:
                    v, p = read_uvarint(body, pos)
                end = p + ((v >> 1) ^ -(v & 1))
                if end <= p or end > n:
                    raise CorruptRecordError("record length runs past the end of its batch")
                p += 1  # attributes
                while body[p] >= 0x80:  # timestamp delta: not needed here
                    p += 1
                b = body[p + 1]
                if b < 0x80:
                    delta, p = (b >> 1) ^ -(b & 1), p + 2
                elif body[p + 2] < 0x80:  # offset deltas of big batches take two bytes
                    v = (b & 0x7F) | (body[p + 2] << 7)
                    delta, p = (v >> 1) ^ -(v & 1), p + 3
                else:
                    delta, p = read_varint(body, p + 1)
                b = body[p]
                if b < 0x80:
                    key_len, p = (b >> 1) ^ -(b & 1), p + 1
                else:
                    key_len, p = read_varint(body, p)
                if key_len >= 0:
                    if p + key_len > end:
                        raise CorruptRecordError("record key runs past the record")
                    offset = base + delta
                    if offset >= start:
                        key = body[p : p + key_len]
                        d1 = hash(key)
                        d2 = hash(key + b"\x01")
                        i = d1 % slots
                        o = offsets[i]
                        if o != 0 and (h1[i] != d1 or h2[i] != d2):
                            i, o = probe(i, d1, d2)
                        if o == 0:
                            if size >= max_entries:
                                return offset
                            h1[i] = d1
                            h2[i] = d2
                            size += 1
                        offsets[i] = offset + 1
                pos = end
    except (IndexError, VarintError) as e:
        raise CorruptRecordError("truncated record") from e
    finally:
        omap._size = size
    if pos != n:
        raise CorruptRecordError("trailing bytes after the last record")
    return -1


def _select_records(
    body: bytes, count: int, base: int, end_offset: int, omap: OffsetMap, now: int,
    horizon: int | None, tick: Callable[[], None],
) -> tuple[list[int], bool]:
    """The records of an uncompressed records section that survive cleaning, as a flat list
    ``[start, end, start, end, ...]`` of byte ranges, and whether a kept one (below
    ``end_offset``) is a tombstone. Below ``end_offset`` a record survives when it has a key,
    is the key's latest (``omap``) and is not a tombstone past ``horizon``; at and after it
    every record survives. ``tick`` is called every few hundred records. Raises
    CorruptRecordError."""
    # OffsetMap.get, inlined.
    slots, offsets, h1, h2, probe = omap.slots, omap._offsets, omap._h1, omap._h2, omap._probe
    spans: list[int] = []
    keep = spans.append
    tombstones = False
    expired = horizon is not None and now >= horizon
    pos = 0
    n = len(body)
    try:
        for first in range(0, count, _TICK_EVERY):
            if first:  # CleanTask.step ticks between batches
                tick()
            for _ in range(min(_TICK_EVERY, count - first)):
                b = body[pos]
                if b < 0x80:
                    v, p = b, pos + 1
                elif body[pos + 1] < 0x80:
                    v, p = (b & 0x7F) | (body[pos + 1] << 7), pos + 2
                else:
                    v, p = read_uvarint(body, pos)
                end = p + ((v >> 1) ^ -(v & 1))
                if end <= p or end > n:
                    raise CorruptRecordError("record length runs past the end of its batch")
                p += 1
                while body[p] >= 0x80:
                    p += 1
                b = body[p + 1]
                if b < 0x80:
                    delta, p = (b >> 1) ^ -(b & 1), p + 2
                elif body[p + 2] < 0x80:  # offset deltas of big batches take two bytes
                    v = (b & 0x7F) | (body[p + 2] << 7)
                    delta, p = (v >> 1) ^ -(v & 1), p + 3
                else:
                    delta, p = read_varint(body, p + 1)
                offset = base + delta
                if offset < end_offset:
                    b = body[p]
                    if b < 0x80:
                        key_len, p = (b >> 1) ^ -(b & 1), p + 1
                    else:
                        key_len, p = read_varint(body, p)
                    if key_len < 0:
                        pos = end
                        continue  # keyless: a compacted log has no use for it
                    if p + key_len >= end:
                        raise CorruptRecordError("record key runs past the record")
                    key = body[p : p + key_len]
                    d1 = hash(key)
                    i = d1 % slots
                    o = offsets[i]
                    if o != 0:
                        d2 = hash(key + b"\x01")
                        if h1[i] != d1 or h2[i] != d2:
                            i, o = probe(i, d1, d2)
                        if offset < o - 1:
                            pos = end
                            continue  # a later record of the key exists
                    if body[p + key_len] == 1:  # null value: a tombstone
                        if expired:
                            pos = end
                            continue
                        tombstones = True
                keep(pos)
                keep(end)
                pos = end
    except (IndexError, VarintError) as e:
        raise CorruptRecordError("truncated record") from e
    if pos != n:
        raise CorruptRecordError("trailing bytes after the last record")
    return spans, tombstones


def _timestamp_delta(body: bytes, pos: int) -> tuple[int, int, int]:
    """For the record at ``pos``: (position of its attributes, timestamp delta, position after
    the timestamp delta)."""
    _length, p = read_uvarint(body, pos)
    delta, ts_end = read_varint(body, p + 1)
    return p, delta, ts_end


class CleanTask:
    """One cleaning pass over one log: build the offset map, write the cleaned segments as
    ``.cleaned`` files. Created by :meth:`LogCleaner.grab_filthiest` (owner thread); run with
    :meth:`run` or :meth:`step` on one thread (see the module docstring); finished by
    :meth:`LogCleaner.complete` on the owner thread."""

    def __init__(
        self,
        plog: PartitionLog,
        to_clean: LogToClean,
        plans: list[SegmentPlan],
        offset_map: OffsetMap,
        *,
        config: LogConfig,
        io_buffer_size: int,
        now_ms: int,
        producer_last_offsets: dict[int, int],
        aborted_txns: list[AbortedTxn],
        throttler: Throttler,
        pacer: Pacer | None = None,
        on_step: Callable[[str], None] | None,
    ) -> None:
        self.log = plog
        self.topic = plog.topic
        self.partition = plog.partition
        self.directory = plog.directory
        self.to_clean = to_clean
        self.first_dirty_offset = to_clean.first_dirty_offset
        self.first_uncleanable_offset = to_clean.first_uncleanable_offset
        self.now_ms = now_ms
        self.config = config
        self.io_buffer_size = io_buffer_size
        self.offset_map = offset_map
        self._plans = plans
        self._producer_last_offsets = producer_last_offsets
        # Each phase reads the batches in order once, with its own view of the transactions.
        self._map_txns = CleanedTransactions(aborted_txns)
        self._clean_txns = CleanedTransactions(aborted_txns)
        self._throttler = throttler
        self._pacer = pacer
        self._tick = pacer.tick if pacer is not None and pacer.active else _no_tick
        self._on_step = on_step
        self.end_offset = self.first_dirty_offset
        self.groups: list[CleanedGroup] = []
        self.next_tombstone_horizon: int | None = None
        self.error: str | None = None
        self.wait_s = 0.0
        self._state = TaskState.PLANNED
        self._lock = threading.Lock()
        self._cancel = False
        self._work = self._run_pass()
        self._bytes_read = 0
        self._bytes_written = 0
        self._records_read = 0
        self._records_retained = 0
        self._batches_read = 0
        self._batches_retained = 0

    # -- control ----------------------------------------------------------------------------

    @property
    def state(self) -> TaskState:
        return self._state

    @property
    def finished(self) -> bool:
        return self._state in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED,
                               TaskState.COMPLETED)

    def cancel(self) -> None:
        """Ask the pass to stop (any thread). A task that is not running (planned, or done but
        not completed) is cleaned up now; a running one stops at its next batch and deletes its
        own files. No effect on a completed, failed or cancelled task."""
        with self._lock:
            self._cancel = True
            if self._state not in (TaskState.PLANNED, TaskState.DONE):
                return
            self._state = TaskState.CANCELLED
        self._work.close()
        self.discard_files()

    def run(self) -> TaskState:
        """Do the whole pass (worker thread); returns DONE, FAILED or CANCELLED. Throttling
        happens through the throttler's sleep function only."""
        while not self.step(1 << 62):
            pass
        return self._state

    def step(self, max_bytes: int) -> bool:
        """Read and write roughly ``max_bytes`` more (at least one batch); True when the pass
        is over. Afterwards ``wait_s`` is how long the throttle asks the caller to wait before
        the next step (always 0 with a sleep function)."""
        with self._lock:
            if self._state is TaskState.PLANNED:
                self._state = TaskState.RUNNING
            if self._state is not TaskState.RUNNING:
                return True
        self.wait_s = 0.0
        target = self._bytes_read + self._bytes_written + max_bytes
        try:
            while self._bytes_read + self._bytes_written < target:
                wait = next(self._work)
                self._tick()
                if wait > 0 and self._throttler.sleep is None:
                    self.wait_s = wait
                    return False
        except StopIteration:
            self._finish(TaskState.DONE)
            return True
        except _Cancelled:
            self.discard_files()
            self._finish(TaskState.CANCELLED)
            return True
        except Exception as e:  # any failure leaves the log untouched; report it
            self.error = f"{type(e).__name__}: {e}"
            log.warning("cleaning %s-%d failed: %s", self.topic, self.partition, self.error)
            self.discard_files()
            self._finish(TaskState.FAILED)
            return True
        return False

    def _finish(self, state: TaskState) -> None:
        self._close_reads()
        with self._lock:
            self._state = state

    def _close_reads(self) -> None:
        for plan in self._plans:
            if plan.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(plan.fd)
                plan.fd = -1

    def discard_files(self) -> None:
        """Close the read handles and delete every ``.cleaned`` file the pass wrote."""
        self._close_reads()
        for group in self.groups:
            self.discard_group(group)

    @staticmethod
    def discard_group(group: CleanedGroup) -> None:
        """Delete the ``.cleaned`` segment of one group (one that will not be swapped in)."""
        _delete_segment_files(group.cleaned)
        group.cleaned = None

    def mark_completed(self) -> None:
        """The owner thread swapped the result in or gave it up (:meth:`LogCleaner.complete`)."""
        with self._lock:
            self._state = TaskState.COMPLETED

    def stats(self) -> CleanerStats:
        return CleanerStats(
            bytes_read=self._bytes_read,
            bytes_written=self._bytes_written,
            records_read=self._records_read,
            records_retained=self._records_retained,
            batches_read=self._batches_read,
            batches_retained=self._batches_retained,
            keys_mapped=self.offset_map.size,
            map_utilization=self.offset_map.utilization,
            throttle_wait_s=self._throttler.total_wait_s,
            paced_s=self._pacer.paced_s if self._pacer is not None else 0.0,
        )

    # -- the pass ---------------------------------------------------------------------------

    def _step_done(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)

    def _read_batches(self, plan: SegmentPlan) -> Iterator[tuple[BatchHeader, bytes, float]]:
        """(header, whole batch, throttle wait) for every batch of a planned segment, checking
        each CRC; the wait is non-zero only on the batch that ends a read chunk."""
        chunk = self.io_buffer_size
        pos = 0
        while pos < plan.size:
            if self._cancel:
                raise _Cancelled
            buf = os.pread(plan.fd, min(chunk, plan.size - pos), pos)
            if len(buf) < BATCH_HEADER_SIZE:
                raise CorruptRecordError(f"segment {plan.base_offset}: short read at {pos}")
            off = 0
            batches: list[tuple[BatchHeader, bytes]] = []
            while off + BATCH_HEADER_SIZE <= len(buf):
                h = read_batch_header(buf, off)
                if h.magic != MAGIC or h.size < BATCH_HEADER_SIZE:
                    raise CorruptRecordError(f"segment {plan.base_offset}: bad batch at {pos}")
                if off + h.size > len(buf):
                    break
                batches.append((h, buf[off : off + h.size]))
                off += h.size
            if not batches:
                # One batch larger than the buffer: read it whole.
                h = read_batch_header(buf, 0)
                whole = os.pread(plan.fd, h.size, pos)
                if len(whole) != h.size:
                    raise CorruptRecordError(f"segment {plan.base_offset}: partial batch")
                batches.append((h, whole))
                off = h.size
            pos += off
            self._bytes_read += off
            wait = self._throttler.acquire(off)
            for i, (h, raw) in enumerate(batches):
                if not batch_crc_ok(raw, 0, h):
                    raise CorruptRecordError(
                        f"segment {plan.base_offset}: batch at offset {h.base_offset} fails "
                        f"its CRC"
                    )
                yield h, raw, (wait if i == len(batches) - 1 else 0.0)

    def _run_pass(self) -> Generator[float, None, None]:
        yield 0.0
        yield from self._build_offset_map()
        yield from self._clean_groups()

    def _build_offset_map(self) -> Iterator[float]:
        """Map the dirty section [first dirty, first uncleanable); stop where the map fills.
        Aborted transactions and markers are not mapped."""
        start, upper = self.first_dirty_offset, self.first_uncleanable_offset
        self.offset_map.clear()
        # A checkpoint past the first uncleanable offset (min.compaction.lag.ms moved it back)
        # maps nothing and must not move the checkpoint backwards.
        self.end_offset = max(upper, start)
        omap = self.offset_map
        txns = self._map_txns
        for plan in self._plans:
            if plan.upper_offset <= start or plan.base_offset >= upper:
                continue
            for h, raw, wait in self._read_batches(plan):
                if h.last_offset >= start and not h.is_control and not txns.is_aborted(h):
                    body = raw[BATCH_HEADER_SIZE:]
                    if h.compression:
                        body = decompress(h.compression, body)
                    full = _map_records(
                        body, h.records_count, h.base_offset, start, omap, self._tick
                    )
                    if full >= 0:
                        self.end_offset = full
                        return
                yield wait

    def _clean_groups(self) -> Iterator[float]:
        end = self.end_offset
        cfg = self.config
        candidates = [p for p in self._plans if p.base_offset < end]
        groups: list[list[SegmentPlan]] = []
        i = 0
        while i < len(candidates):
            group = [candidates[i]]
            size, idx, tidx = candidates[i].size, candidates[i].index_bytes, \
                candidates[i].time_index_bytes
            i += 1
            while i < len(candidates):
                nxt = candidates[i]
                if (
                    size + nxt.size > cfg.segment_bytes
                    or idx + nxt.index_bytes > cfg.segment_index_bytes
                    or tidx + nxt.time_index_bytes > cfg.segment_index_bytes
                    or (nxt.size > 0 and nxt.upper_offset - 1 - group[0].base_offset > _INT32_MAX)
                ):
                    break
                group.append(nxt)
                size += nxt.size
                idx += nxt.index_bytes
                tidx += nxt.time_index_bytes
                i += 1
            groups.append(group)
        for plans in groups:
            grp = CleanedGroup(plans)
            self.groups.append(grp)
            yield from self._clean_group(grp)
            self._step_done("group-cleaned")

    def _clean_group(self, grp: CleanedGroup) -> Iterator[float]:
        seg = LogSegment.create(
            self.directory, grp.plans[0].base_offset, self.config, now_ms=self.now_ms,
            suffix=CLEANED_SUFFIX,
        )
        grp.cleaned = seg
        # ABORT markers that have an index entry in these segments: the entry stays exactly
        # when its marker does.
        indexed = {e.last_offset for plan in grp.plans for e in plan.aborted_txns}
        kept_markers: set[int] = set()
        out = bytearray()
        headers: list[BatchHeader] = []
        flush_at = self.io_buffer_size
        for plan in grp.plans:
            for h, raw, wait in self._read_batches(plan):
                kept = self._filter_batch(h, raw)
                if kept is not None:
                    out += kept
                    headers.append(h if kept is raw else read_batch_header(kept))
                    if h.base_offset in indexed and h.is_control:
                        kept_markers.add(h.base_offset)
                if len(out) >= flush_at:
                    wait = max(wait, self._write(seg, out, headers))
                    out = bytearray()
                    headers = []
                yield wait
        if headers:
            self._write(seg, out, headers)
        for plan in grp.plans:
            for entry in plan.aborted_txns:
                if entry.last_offset in kept_markers:
                    seg.txn_index.append(entry)
        if grp.plans[0].aborted_txns and not seg.txn_index.exists:
            # The old segment of the same base has a .txnindex; an interrupted swap that is
            # rolled forward would keep it unless an (empty) replacement is swapped in too.
            _create_empty_file(seg.txn_index.path)
        seg.on_become_inactive()  # final time-index entry; fsyncs the log and every index
        seg.close_handles()

    def _write(self, seg: LogSegment, out: bytearray, headers: list[BatchHeader]) -> float:
        seg.append(out, headers, now_ms=self.now_ms)
        self._bytes_written += len(out)
        return self._throttler.acquire(len(out))

    def _filter_batch(self, h: BatchHeader, raw: bytes) -> bytes | None:
        """The batch as it should be after cleaning (``raw`` itself when unchanged), or None."""
        self._batches_read += 1
        self._records_read += h.records_count
        if h.is_control:
            kept = self._filter_control_batch(h, raw)
        elif h.base_offset >= self.end_offset:
            kept = raw  # past the cleaning point: untouched
            self._records_retained += h.records_count
        else:
            kept = self._filter_data_batch(h, raw)
        if kept is not None:
            self._batches_retained += 1
            if not h.is_control:
                self._clean_txns.on_batch_kept(h)
        return kept

    def _filter_data_batch(self, h: BatchHeader, raw: bytes) -> bytes | None:
        last_of_producer = (
            h.producer_id >= 0 and self._producer_last_offsets.get(h.producer_id) == h.last_offset
        )
        if h.records_count == 0:  # an empty batch kept earlier for its producer
            return raw if last_of_producer else None
        body = b""
        spans: list[int] = []
        tombstones = False
        horizon = h.base_timestamp if h.attributes & ATTR_DELETE_HORIZON else None
        if not self._clean_txns.is_aborted(h):
            body = raw[BATCH_HEADER_SIZE:]
            if h.compression:
                body = decompress(h.compression, body)
            spans, tombstones = _select_records(
                body, h.records_count, h.base_offset, self.end_offset, self.offset_map,
                self.now_ms, horizon, self._tick,
            )
        kept = len(spans) // 2
        self._records_retained += kept
        if kept == h.records_count and not (tombstones and horizon is None):
            if tombstones:
                assert horizon is not None
                self._note_horizon(horizon)
            return raw
        if kept:
            new_horizon = None
            if tombstones and horizon is None:
                # First pass to keep a tombstone of this batch: stamp the delete horizon.
                new_horizon = horizon = self.now_ms + self.config.delete_retention_ms
            if tombstones and horizon is not None:
                self._note_horizon(horizon)
            return self._rebuild(h, body, spans, new_horizon)
        if last_of_producer:
            attributes = h.attributes & ~(ATTR_COMPRESSION_MASK | ATTR_DELETE_HORIZON)
            return rebuild_batch(h, b"", attributes, h.max_timestamp, h.max_timestamp, 0)
        return None

    def _filter_control_batch(self, h: BatchHeader, raw: bytes) -> bytes | None:
        """A COMMIT/ABORT marker stays while its transaction has a batch in the cleaned log;
        once it has none the marker gets a delete horizon, like a tombstone (KIP-534: a
        read_committed consumer that saw the transaction's data must still find the marker),
        and a pass past the horizon drops it. Other control batches stay."""
        records = decode_records(raw) if h.records_count else []
        kind = control_type(records[0].key) if records else -1
        if kind not in (CONTROL_ABORT, CONTROL_COMMIT):
            if h.base_offset < self.end_offset and not records:
                return None  # an empty control batch carries nothing
            self._records_retained += h.records_count
            return raw
        has_data = self._clean_txns.on_marker(h.producer_id)
        if h.base_offset >= self.end_offset or has_data:
            self._records_retained += h.records_count
            return raw
        if h.attributes & ATTR_DELETE_HORIZON:
            if self.now_ms >= h.base_timestamp:
                return None
            self._note_horizon(h.base_timestamp)
            self._records_retained += h.records_count
            return raw
        body = raw[BATCH_HEADER_SIZE:]
        if h.compression:
            body = decompress(h.compression, body)
        spans = [s for r in _record_spans(body, h.records_count) for s in r]
        horizon = self.now_ms + self.config.delete_retention_ms
        self._note_horizon(horizon)
        self._records_retained += h.records_count
        return self._rebuild(h, body, spans, horizon)

    def _rebuild(
        self, h: BatchHeader, body: bytes, spans: list[int], new_horizon: int | None
    ) -> bytes:
        """A batch of the records at ``spans`` of ``body``; with ``new_horizon``, stamped with
        that delete horizon (KIP-534): it becomes ``baseTimestamp`` and every record's
        timestamp delta is re-based on it, so each record keeps its timestamp."""
        base_ts = h.base_timestamp
        deltas = []
        parts: list[bytes] = []
        for k in range(0, len(spans), 2):
            start, end = spans[k], spans[k + 1]
            attr_pos, ts_delta, ts_end = _timestamp_delta(body, start)
            deltas.append(ts_delta)
            if new_horizon is None:
                parts.append(body[start:end])
            else:
                rec = (body[attr_pos : attr_pos + 1]
                       + encode_varint(base_ts + ts_delta - new_horizon) + body[ts_end:end])
                parts.append(encode_varint(len(rec)) + rec)
        if h.timestamp_type == TIMESTAMP_LOG_APPEND_TIME:
            max_ts = h.max_timestamp
        else:
            max_ts = base_ts + max(deltas)
        payload = b"".join(parts)
        if h.compression:
            payload = compress(h.compression, payload)
        attributes = h.attributes
        if new_horizon is not None:
            attributes |= ATTR_DELETE_HORIZON
            base_ts = new_horizon
        return rebuild_batch(h, payload, attributes, base_ts, max_ts, len(deltas))

    def _note_horizon(self, horizon: int) -> None:
        if self.next_tombstone_horizon is None or horizon < self.next_tombstone_horizon:
            self.next_tombstone_horizon = horizon


def _record_spans(body: bytes, count: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each record of an uncompressed records section."""
    pos = 0
    for _ in range(count):
        length, p = read_varint(body, pos)
        yield pos, p + length
        pos = p + length


def _create_empty_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise KafkaStorageError(f"cannot create {path}: {e}") from e


def _delete_segment_files(seg: LogSegment | None) -> None:
    if seg is None:
        return
    seg.close_handles()
    for path in (seg.log_path, seg.offset_index.path, seg.time_index.path, seg.txn_index.path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

