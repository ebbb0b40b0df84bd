"""The log cleaner: compaction of logs whose ``cleanup.policy`` includes ``compact``.

Follows Kafka's LogCleaner / Cleaner / SkimpyOffsetMap / LogCleanerManager (KIP-58 min lag,
KIP-354 max lag, KIP-534 tombstone horizons).

**What is cleaned.** A compacted log is split by its *first dirty offset* (the cleaner
checkpoint): below it the log has been cleaned, from it on records are *dirty*. The dirty
section ends at the *first uncleanable offset*: the base offset of the segment holding the
smallest of the last stable offset (so no open or undecided transaction is ever cleaned), the
active segment's base offset, and the base of the first dirty segment with a record newer than
``min.compaction.lag.ms``. A pass (1) maps each key of the dirty section to its last offset in an
:class:`OffsetMap` of fixed memory; when the map fills, the pass maps only up to there (the
*end offset*) and the next pass carries on; (2) rewrites every segment from the start of the log
up to the end offset, in groups that each fit one segment (``segment.bytes``, index sizes, 32-bit
relative offsets): a record is kept when it is at or past the end offset or it is the latest for
its key, and a tombstone (null value) is kept until its batch's delete horizon has passed;
(3) swaps the rewritten segments in (:meth:`PartitionLog.replace_segments`) and moves the
checkpoint to the end offset. Keyless records below the end offset are dropped (a compacted
topic rejects them at append). The active segment is never touched; nothing at or past the end
offset changes.

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
always keeps the marker after it, and replaying the cleaned log never reopens a transaction.

**Threads.** :class:`LogCleaner` belongs to the thread that owns the logs (the broker's event
loop): :meth:`LogCleaner.grab_filthiest` plans a pass and opens read handles on the segments it
will read; :meth:`LogCleaner.complete` swaps the result in -- a few renames, a small fsynced
manifest and the checkpoint write. The heavy part, :meth:`CleanTask.run` (or repeated
:meth:`CleanTask.step`), may run on any one worker thread: it reads only through its own file
descriptors, writes only the ``.cleaned`` files it creates and never touches the log's objects,
so produce and fetch carry on meanwhile and always see the old segments until the swap.
:meth:`CleanTask.cancel` may be called from any thread. If the log changed meanwhile (segments
deleted by retention, log closed), ``complete`` swaps in only the groups whose segments are all
still there, in place, and deletes the rest.

**Files.** ``cleaner-offset-checkpoint`` in the partition directory holds the first dirty offset
in Kafka's checkpoint text format (``0\\n1\\n<topic> <partition> <offset>\\n``; per partition, like
this code base's other checkpoints). A crash during a pass leaves ``*.cleaned`` files, which
start-up deletes; a crash during the swap is rolled back or forward at start-up (see
:mod:`odradek.storage.log`), so the log always reads as before or as after the pass. A crash
between the swap and the checkpoint write only means the next pass re-cleans some records.

**Memory.** The offset map is allocated once per cleaner thread at ``log.cleaner.dedupe.buffer.size
/ log.cleaner.threads`` bytes and reused; the rest is a few I/O buffers of
``log.cleaner.io.buffer.size`` plus one batch at a time, and the aborted-transaction entries
of the log being cleaned.

**Speed.** Every record is decoded twice per pass (map, then clean) in pure Python, so the two
record loops (:func:`_map_records`, :func:`_select_records`) decode only the fields they need and
inline the offset map's probing; a batch whose records all survive is copied unchanged.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import struct
import threading
from array import array
from bisect import bisect_right
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
    LOG_OVERHEAD,
    MAGIC,
    TIMESTAMP_LOG_APPEND_TIME,
    BatchHeader,
    batch_crc_ok,
    compress,
    control_type,
    crc32c,
    decode_records,
    decompress,
    read_batch_header,
)
from odradek.storage.checkpoint import read_offset_checkpoint, write_offset_checkpoint
from odradek.storage.clock import Clock
from odradek.storage.log import CLEANER_OFFSET_CHECKPOINT, PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.segment import CLEANED_SUFFIX, LogSegment
from odradek.storage.txn_index import AbortedTxn

__all__ = [
    "CleanedTransactions",
    "CleanerConfig",
    "CleanerStats",
    "CleanResult",
    "CleanTask",
    "LogCleaner",
    "LogToClean",
    "OffsetMap",
    "TaskState",
    "Throttler",
    "read_cleaner_checkpoint",
    "write_cleaner_checkpoint",
]

log = logging.getLogger("odradek.storage.cleaner")

_INT32_MAX = 2**31 - 1
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC = struct.Struct(">I")
_CRC_START = 21


# == configuration ================================================================================


@dataclass(frozen=True, slots=True)
class CleanerConfig:
    """Broker-wide cleaner settings (Kafka's ``log.cleaner.*``; names without the prefix)."""

    enable: bool = True
    threads: int = 1
    dedupe_buffer_size: int = 128 * 1024 * 1024
    io_buffer_size: int = 512 * 1024
    io_buffer_load_factor: float = 0.9
    io_max_bytes_per_second: float = math.inf
    backoff_ms: int = 15000

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

    @property
    def map_memory(self) -> int:
        """Bytes of one thread's offset map."""
        return self.dedupe_buffer_size // self.threads


# == offset map ===================================================================================


def _largest_prime_at_most(n: int) -> int:
    def is_prime(k: int) -> bool:
        if k < 4:
            return k >= 2
        if k % 2 == 0:
            return False
        return all(k % d for d in range(3, math.isqrt(k) + 1, 2))

    while n >= 2 and not is_prime(n):
        n -= 1
    return n


class OffsetMap:
    """Key -> last offset in fixed memory (Kafka's SkimpyOffsetMap).

    Open addressing over three flat arrays allocated once: per slot a 128-bit digest of the key
    (two 64-bit words) and the offset, 24 bytes as Kafka counts them; ``memory // 24`` slots,
    rounded down to a prime so double hashing visits every slot. At most ``load_factor`` of the
    slots are used; :meth:`put` refuses a new key beyond that.

    The digest is two SipHash values -- Python's ``hash`` of the key and of the key plus one
    byte -- rather than a cryptographic hash: this interpreter's SipHash is keyed per process
    (``PYTHONHASHSEED``), so digests are stable for the lifetime of one pass, which is all a map
    lives, and cost a fifth of BLAKE2b, which dominated the cleaner's time. Two distinct keys
    with the same 128-bit digest (probability ~2**-128 per pair) would make the cleaner drop a
    record of one of them, as in Kafka.

    Owned by one cleaning task at a time (any thread); not thread-safe.
    """

    HASH_SIZE = 16
    ENTRY_SIZE = HASH_SIZE + 8

    def __init__(self, memory: int, load_factor: float = 0.9) -> None:
        slots = _largest_prime_at_most(memory // self.ENTRY_SIZE)
        if slots < 2:
            raise ValueError(f"an offset map needs at least {2 * self.ENTRY_SIZE} bytes")
        self.slots = slots
        self.max_entries = max(1, int(slots * load_factor))
        self._h1 = array("q", [0]) * slots
        self._h2 = array("q", [0]) * slots
        self._offsets = array("q", [0]) * slots  # offset + 1; 0 marks a free slot
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def utilization(self) -> float:
        return self._size / self.slots

    def clear(self) -> None:
        # Zero only the offsets (a free slot's digest is never compared), in chunks so clearing
        # never allocates a second map's worth of memory.
        view = memoryview(self._offsets).cast("B")
        chunk = bytes(min(len(view), 1 << 20))
        for start in range(0, len(view), len(chunk)):
            end = min(start + len(chunk), len(view))
            view[start:end] = chunk[: end - start]
        view.release()
        self._size = 0

    def _probe(self, i: int, d1: int, d2: int) -> tuple[int, int]:
        """From occupied slot ``i`` (not holding the digest), the slot holding ``(d1, d2)`` or
        the free slot where it would go, with its stored value."""
        slots = self.slots
        step = 1 + d2 % (slots - 1)
        offsets, h1, h2 = self._offsets, self._h1, self._h2
        while True:
            i += step
            if i >= slots:
                i -= slots
            o = offsets[i]
            if o == 0 or (h1[i] == d1 and h2[i] == d2):
                return i, o

    def put(self, key: bytes, offset: int) -> bool:
        """Map ``key`` to ``offset``; False (and no change) when the key is new and the map is
        full."""
        d1 = hash(key)
        d2 = hash(key + b"\x01")
        i = d1 % self.slots
        o = self._offsets[i]
        if o != 0 and (self._h1[i] != d1 or self._h2[i] != d2):
            i, o = self._probe(i, d1, d2)
        if o == 0:
            if self._size >= self.max_entries:
                return False
            self._h1[i] = d1
            self._h2[i] = d2
            self._size += 1
        self._offsets[i] = offset + 1
        return True

    def get(self, key: bytes) -> int:
        """The offset mapped to ``key``; -1 when absent."""
        d1 = hash(key)
        i = d1 % self.slots
        o = self._offsets[i]
        if o == 0:
            return -1
        d2 = hash(key + b"\x01")
        if self._h1[i] != d1 or self._h2[i] != d2:
            i, o = self._probe(i, d1, d2)
        return o - 1


# == throttling ===================================================================================


class Throttler:
    """Token bucket on the cleaner's bytes read plus written (``log.cleaner.io.max.bytes.per.
    second``); the bucket holds one second's worth. Time comes from ``clock.monotonic_ms``; it
    sleeps only through the ``sleep`` function it is given (seconds), else it just reports the
    wait. Owned by the thread running the cleaning task."""

    def __init__(
        self,
        bytes_per_second: float,
        clock: Clock,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.rate = bytes_per_second
        self.clock = clock
        self.sleep = sleep
        self._tokens = bytes_per_second if math.isfinite(bytes_per_second) else 0.0
        self._last_ms = clock.monotonic_ms()
        self.total_wait_s = 0.0

    def acquire(self, n: int) -> float:
        """Take ``n`` bytes; returns the seconds the caller should wait (0 if none). With a sleep
        function it sleeps that long itself."""
        if not math.isfinite(self.rate):
            return 0.0
        now = self.clock.monotonic_ms()
        self._tokens = min(self.rate, self._tokens + (now - self._last_ms) * self.rate / 1000)
        self._last_ms = now
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self.total_wait_s += wait
        if self.sleep is not None:
            self.sleep(wait)
        return wait


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


# == checkpoint ===================================================================================


def read_cleaner_checkpoint(directory: Path) -> int | None:
    """The first dirty offset recorded in ``directory``; None when never cleaned."""
    return read_offset_checkpoint(directory / CLEANER_OFFSET_CHECKPOINT)


def write_cleaner_checkpoint(plog: PartitionLog, offset: int) -> None:
    write_offset_checkpoint(
        plog.directory / CLEANER_OFFSET_CHECKPOINT, plog.topic, plog.partition, offset
    )


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


class TaskState(enum.Enum):
    PLANNED = "planned"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPLETED = "completed"  # swapped in (or discarded) by LogCleaner.complete


# == the cleaning task ============================================================================


@dataclass(slots=True)
class _SegmentPlan:
    """What a pass needs of one segment, captured on the owner thread."""

    segment: LogSegment  # identity only: the worker never touches it
    base_offset: int
    upper_offset: int  # next segment's base offset
    size: int
    index_bytes: int
    time_index_bytes: int
    fd: int
    aborted_txns: list[AbortedTxn]


@dataclass(slots=True)
class _Group:
    plans: list[_SegmentPlan]
    cleaned: LogSegment | None = None


class _Cancelled(Exception):
    pass


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """An unsigned (still zigzag-encoded) varint at ``pos``: (value, position after it)."""
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptRecordError("varint longer than 10 bytes")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    v, pos = _uvarint(buf, pos)
    return (v >> 1) ^ -(v & 1), pos


def _encode_varint(value: int) -> bytes:
    v = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


# The two loops below are the cleaner's hot path: every record of the log goes through each
# once per pass. They decode only the fields they need, with one- and two-byte varints (record
# lengths under 8 KiB, small deltas and key lengths) inline, and allocate nothing per record
# but the key. A record (KIP-98) is: length varint, attributes int8, timestamp delta varint,
# offset delta varint, key length varint + key, value length varint + value, headers. A null
# value has length -1, which is the single byte 0x01.


def _map_records(body: bytes, count: int, base: int, start: int, omap: OffsetMap) -> int:
    """Map the key of every keyed record at or after ``start`` of an uncompressed records
    section to its offset; returns the offset of the first record that did not fit in the map,
    or -1. Raises CorruptRecordError."""
    # OffsetMap.put, inlined.
    slots, max_entries, size = omap.slots, omap.max_entries, omap._size
    offsets, h1, h2, probe = omap._offsets, omap._h1, omap._h2, omap._probe
    pos = 0
    n = len(body)
    try:
        for _ in range(count):
            b = body[pos]
            if b < 0x80:
                v, p = b, pos + 1
            elif body[pos + 1] < 0x80:
                v, p = (b & 0x7F) | (body[pos + 1] << 7), pos + 2
            else:
                v, p = _uvarint(body, pos)
            end = p + ((v >> 1) ^ -(v & 1))
            if end <= p or end > n:
                raise CorruptRecordError("record length runs past the end of its batch")
            p += 1  # attributes
            while body[p] >= 0x80:  # timestamp delta: not needed here
                p += 1
            b = body[p + 1]
            if b < 0x80:
                delta, p = (b >> 1) ^ -(b & 1), p + 2
            else:
                delta, p = _varint(body, p + 1)
            b = body[p]
            if b < 0x80:
                key_len, p = (b >> 1) ^ -(b & 1), p + 1
            else:
                key_len, p = _varint(body, p)
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
    except IndexError as e:
        raise CorruptRecordError("truncated record") from e
    finally:
        omap._size = size
    if pos != n:
        raise CorruptRecordError("trailing bytes after the last record")
    return -1


def _select_records(
    body: bytes, count: int, base: int, end_offset: int, omap: OffsetMap, now: int,
    horizon: int | None,
) -> tuple[list[int], bool]:
    """The records of an uncompressed records section that survive cleaning, as a flat list
    ``[start, end, start, end, ...]`` of byte ranges, and whether a kept one (below
    ``end_offset``) is a tombstone. Below ``end_offset`` a record survives when it has a key,
    is the key's latest (``omap``) and is not a tombstone past ``horizon``; at and after it
    every record survives. Raises CorruptRecordError."""
    # OffsetMap.get, inlined.
    slots, offsets, h1, h2, probe = omap.slots, omap._offsets, omap._h1, omap._h2, omap._probe
    spans: list[int] = []
    keep = spans.append
    tombstones = False
    expired = horizon is not None and now >= horizon
    pos = 0
    n = len(body)
    try:
        for _ in range(count):
            b = body[pos]
            if b < 0x80:
                v, p = b, pos + 1
            elif body[pos + 1] < 0x80:
                v, p = (b & 0x7F) | (body[pos + 1] << 7), pos + 2
            else:
                v, p = _uvarint(body, pos)
            end = p + ((v >> 1) ^ -(v & 1))
            if end <= p or end > n:
                raise CorruptRecordError("record length runs past the end of its batch")
            p += 1
            while body[p] >= 0x80:
                p += 1
            b = body[p + 1]
            if b < 0x80:
                delta, p = (b >> 1) ^ -(b & 1), p + 2
            else:
                delta, p = _varint(body, p + 1)
            offset = base + delta
            if offset < end_offset:
                b = body[p]
                if b < 0x80:
                    key_len, p = (b >> 1) ^ -(b & 1), p + 1
                else:
                    key_len, p = _varint(body, p)
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
    except IndexError as e:
        raise CorruptRecordError("truncated record") from e
    if pos != n:
        raise CorruptRecordError("trailing bytes after the last record")
    return spans, tombstones


def _timestamp_delta(body: bytes, pos: int) -> tuple[int, int, int]:
    """For the record at ``pos``: (position of its attributes, timestamp delta, position after
    the timestamp delta)."""
    _length, p = _uvarint(body, pos)
    delta, ts_end = _varint(body, p + 1)
    return p, delta, ts_end


def _pack_batch(
    h: BatchHeader, attributes: int, base_ts: int, max_ts: int, count: int, payload: bytes
) -> bytes:
    out = bytearray(BATCH_HEADER_SIZE + len(payload))
    _HEADER.pack_into(
        out, 0, h.base_offset, len(out) - LOG_OVERHEAD, h.partition_leader_epoch, MAGIC, 0,
        attributes, h.last_offset_delta, base_ts, max_ts, h.producer_id, h.producer_epoch,
        h.base_sequence, count,
    )
    out[BATCH_HEADER_SIZE:] = payload
    _CRC.pack_into(out, 17, crc32c(memoryview(out)[_CRC_START:]))
    return bytes(out)


class CleanTask:
    """One cleaning pass over one log: build the offset map, write the cleaned segments as
    ``.cleaned`` files. Created by :meth:`LogCleaner.grab_filthiest` (owner thread); run with
    :meth:`run` or :meth:`step` on one thread (see the module docstring); finished by
    :meth:`LogCleaner.complete` on the owner thread."""

    def __init__(
        self,
        plog: PartitionLog,
        to_clean: LogToClean,
        plans: list[_SegmentPlan],
        offset_map: OffsetMap,
        *,
        config: LogConfig,
        cleaner_config: CleanerConfig,
        now_ms: int,
        producer_last_offsets: dict[int, int],
        aborted_txns: list[AbortedTxn],
        throttler: Throttler,
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
        self.cleaner_config = cleaner_config
        self.offset_map = offset_map
        self._plans = plans
        self._producer_last_offsets = producer_last_offsets
        # Each phase reads the batches in order once, with its own view of the transactions.
        self._map_txns = CleanedTransactions(aborted_txns)
        self._clean_txns = CleanedTransactions(aborted_txns)
        self._throttler = throttler
        self._on_step = on_step
        self.end_offset = self.first_dirty_offset
        self.groups: list[_Group] = []
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
        self._discard_files()

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
                if wait > 0 and self._throttler.sleep is None:
                    self.wait_s = wait
                    return False
        except StopIteration:
            self._finish(TaskState.DONE)
            return True
        except _Cancelled:
            self._discard_files()
            self._finish(TaskState.CANCELLED)
            return True
        except Exception as e:  # any failure leaves the log untouched; report it
            self.error = f"{type(e).__name__}: {e}"
            log.warning("cleaning %s-%d failed: %s", self.topic, self.partition, self.error)
            self._discard_files()
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

    def _discard_files(self) -> None:
        self._close_reads()
        for group in self.groups:
            _delete_segment_files(group.cleaned)
            group.cleaned = None

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
        )

    # -- the pass ---------------------------------------------------------------------------

    def _step_done(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)

    def _read_batches(self, plan: _SegmentPlan) -> Iterator[tuple[BatchHeader, bytes, float]]:
        """(header, whole batch, throttle wait) for every batch of a planned segment, checking
        each CRC; the wait is non-zero only on the batch that ends a read chunk."""
        chunk = self.cleaner_config.io_buffer_size
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
                    full = _map_records(body, h.records_count, h.base_offset, start, omap)
                    if full >= 0:
                        self.end_offset = full
                        return
                yield wait

    def _clean_groups(self) -> Iterator[float]:
        end = self.end_offset
        cfg = self.config
        candidates = [p for p in self._plans if p.base_offset < end]
        groups: list[list[_SegmentPlan]] = []
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
            grp = _Group(plans)
            self.groups.append(grp)
            yield from self._clean_group(grp)
            self._step_done("group-cleaned")

    def _clean_group(self, grp: _Group) -> Iterator[float]:
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
        flush_at = self.cleaner_config.io_buffer_size
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
                self.now_ms, horizon,
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
            return _pack_batch(h, attributes, h.max_timestamp, h.max_timestamp, 0, b"")
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
                       + _encode_varint(base_ts + ts_delta - new_horizon) + body[ts_end:end])
                parts.append(_encode_varint(len(rec)) + rec)
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
        return _pack_batch(h, attributes, base_ts, max_ts, len(deltas), payload)

    def _note_horizon(self, horizon: int) -> None:
        if self.next_tombstone_horizon is None or horizon < self.next_tombstone_horizon:
            self.next_tombstone_horizon = horizon


def _record_spans(body: bytes, count: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each record of an uncompressed records section."""
    pos = 0
    for _ in range(count):
        length, p = _varint(body, pos)
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


# == the cleaner ==================================================================================


@dataclass(slots=True)
class _LogState:
    log: PartitionLog
    checkpoint: int | None = None
    tombstone_due_ms: int | None = None
    uncleanable: str | None = None
    task: CleanTask | None = None


class LogCleaner:
    """Chooses the dirtiest compacted log and drives passes over it (Kafka's LogCleaner +
    LogCleanerManager). Owned by the logs' owner thread; see the module docstring for which
    part may run elsewhere.

    ``logs`` lists the partition logs (e.g. ``LogManager.all_logs``). ``sleep`` (seconds), when
    given, lets the throttle block the cleaning thread; ``on_step`` is called with a step name
    after every durable step of a pass and its swap (tests inject crashes there).
    """

    def __init__(
        self,
        logs: Callable[[], Iterable[PartitionLog]],
        config: CleanerConfig,
        clock: Clock,
        *,
        sleep: Callable[[float], None] | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self._logs = logs
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.on_step = on_step
        self._state: dict[tuple[str, int], _LogState] = {}
        self._free_maps: list[OffsetMap] = []
        self._orphans: list[CleanTask] = []  # cancelled while running; their maps come back

    # -- bookkeeping ------------------------------------------------------------------------

    def _state_of(self, plog: PartitionLog) -> _LogState:
        key = (plog.topic, plog.partition)
        st = self._state.get(key)
        if st is None or st.log is not plog:
            st = _LogState(plog, read_cleaner_checkpoint(plog.directory))
            self._state[key] = st
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
        plans: list[_SegmentPlan] = []
        try:
            for i, seg in enumerate(segments[:-1]):
                if seg.base_offset >= ltc.first_uncleanable_offset:
                    break
                plans.append(_SegmentPlan(
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
            cleaner_config=self.config,
            now_ms=now_ms,
            producer_last_offsets=producer_last,
            aborted_txns=aborted,
            throttler=Throttler(self.config.io_max_bytes_per_second, self.clock, self.sleep),
            on_step=self.on_step,
        )
        self._state_of(plog).task = task
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
        elif task.state is TaskState.DONE and (st is None or st.log is not plog or plog.is_closed):
            error = "log closed or deleted during cleaning"
        elif task.state is TaskState.FAILED and st is not None:
            st.uncleanable = error
        if error is not None or task.state is not TaskState.DONE:
            task._discard_files()
            task._state = TaskState.COMPLETED
            return self._result(task, swapped=False, replaced=0, written=0, error=error)
        assert st is not None
        kept = self._groups_still_in_place(task)
        for grp in task.groups:
            if grp not in kept:
                _delete_segment_files(grp.cleaned)
                grp.cleaned = None
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
            task._state = TaskState.COMPLETED
            raise
        st.checkpoint = task.end_offset
        st.tombstone_due_ms = task.next_tombstone_horizon
        task._state = TaskState.COMPLETED
        return self._result(task, swapped=bool(kept), replaced=replaced, written=written,
                            error=None)

    def _groups_still_in_place(self, task: CleanTask) -> list[_Group]:
        """The groups whose old segments are all still in the log, consecutively (retention may
        have removed a prefix meanwhile); they form a suffix of the planned groups."""
        current = task.log.log_segments
        position = {id(s): i for i, s in enumerate(current)}
        kept: list[_Group] = []
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

