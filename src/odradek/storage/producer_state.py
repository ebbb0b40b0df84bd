"""Producer state (Kafka's ProducerStateManager): idempotence, transactions, snapshots.

Owned by the partition's :class:`~odradek.storage.log.PartitionLog` (event-loop thread).

Per producer id the manager keeps the producer epoch, the metadata of the last
:data:`NUM_BATCHES_TO_RETAIN` batches (first/last sequence, first/last offset, max timestamp),
which is what duplicate detection and sequence checks need, the epoch of the transaction
coordinator that wrote its last marker, and the first offset of its open transaction.

Transactions (KIP-98). A transactional data batch starts the producer's transaction unless one
is open (``current_txn_first_offset`` = the batch's base offset); the manager lists the open
("ongoing") transactions by first offset. A control batch of the producer (COMMIT or ABORT
marker, written by the transaction coordinator) ends it. A completed transaction stays
"unreplicated" until the high watermark passes its marker, so the first unstable offset --
``min`` over ongoing and unreplicated transactions' first offsets -- never moves past a
decision that is not yet durable. The owner turns it into the last stable offset and writes
an aborted transaction's entry into the ``.txnindex`` of the segment holding its marker
(:meth:`ProducerStateManager.commit` returns those entries).

Fencing (as Kafka's ProducerAppendInfo): a batch or marker whose producer epoch is older than
the producer's is refused with INVALID_PRODUCER_EPOCH; a marker with a newer epoch raises the
producer's epoch (and forgets its batches), so later client batches of the old epoch are
refused; a marker whose coordinator epoch is older than the last one seen is refused with
TRANSACTION_COORDINATOR_FENCED; a non-transactional batch of a producer with an open
transaction is refused with INVALID_TXN_STATE. A marker for a producer without an open
transaction only updates the epochs. Batches replayed from the log are not checked.

Snapshot files ``<offset>.snapshot`` (offset zero-padded to 20 digits; the state reflects every
batch below that offset). Byte format, big endian::

    version      int16   = 1
    crc          uint32  CRC32C of every byte after this field
    count        int32   number of producers
    count x:
      producer_id               int64
      producer_epoch            int16
      coordinator_epoch         int32   (-1: no transaction coordinator seen)
      current_txn_first_offset  int64   (-1: no open transaction)
      last_timestamp            int64
      batch_count               int32
      batch_count x:
        first_seq int32, last_seq int32, first_offset int64, last_offset int64, timestamp int64

Version 1 already carries both transactional fields (as Kafka's snapshot does), so the open
transactions are restored from a snapshot without a format change.

Snapshots are written atomically (``.tmp``, fsync, rename) on segment roll and on close; the
newest two are kept. A crash can leave a stray ``.tmp`` (deleted at start-up) but never a torn
snapshot under its final name; a snapshot that fails its CRC is deleted and an older one used.
After loading a snapshot, the owner replays the log from the snapshot's offset.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from odradek.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
)
from odradek.protocol.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchHeader,
    control_type,
    crc32c,
    decode_records,
)
from odradek.storage.checkpoint import atomic_write
from odradek.storage.txn_index import AbortedTxn

__all__ = [
    "NUM_BATCHES_TO_RETAIN",
    "SNAPSHOT_SUFFIX",
    "ActiveProducer",
    "BatchMetadata",
    "CompletedTxn",
    "EndTxnMarker",
    "InvalidTxnStateError",
    "ProducerStateEntry",
    "ProducerStateManager",
    "StagedAppend",
    "TransactionCoordinatorFencedError",
    "in_sequence",
    "read_end_txn_marker",
]

log = logging.getLogger("odradek.storage")

NUM_BATCHES_TO_RETAIN = 5
SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOTS_TO_KEEP = 2
_VERSION = 1
_INT32_MAX = 2**31 - 1

_HEAD = struct.Struct(">hI")
_COUNT = struct.Struct(">i")
_PRODUCER = struct.Struct(">qhiqqi")
_BATCH = struct.Struct(">iiqqq")
_MARKER_VALUE = struct.Struct(">hi")  # version, coordinator epoch




def in_sequence(last_seq: int, next_seq: int) -> bool:
    """Whether ``next_seq`` directly follows ``last_seq`` (wrapping at int32 max)."""
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == _INT32_MAX)


@dataclass(frozen=True, slots=True)
class EndTxnMarker:
    """The content of a COMMIT/ABORT control record."""

    control_type: int
    coordinator_epoch: int

    @property
    def is_abort(self) -> bool:
        return self.control_type == CONTROL_ABORT


def read_end_txn_marker(batch: bytes | bytearray | memoryview) -> EndTxnMarker | None:
    """The marker in a whole control batch (its first record, as Kafka reads it); None for an
    empty batch or another kind of control record, which carries no transaction state (Kafka
    would refuse the latter; only coordinators write control batches, so it is tolerated).
    Raises InvalidRecordError / CorruptRecordError for a damaged batch or marker value."""
    records = decode_records(batch)
    if not records:
        return None
    record = records[0]
    kind = control_type(record.key)
    if kind not in (CONTROL_ABORT, CONTROL_COMMIT):
        return None
    value = record.value
    if value is None or len(value) < _MARKER_VALUE.size:
        raise InvalidRecordError("transaction marker without a coordinator epoch")
    # Versions above 0 may append fields; the leading ones keep their meaning.
    _version, coordinator_epoch = _MARKER_VALUE.unpack_from(value)
    return EndTxnMarker(kind, coordinator_epoch)


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    """A transaction ended by a marker: data from ``first_offset``, marker at ``last_offset``."""

    producer_id: int
    first_offset: int
    last_offset: int
    is_aborted: bool


@dataclass(frozen=True, slots=True)
class ActiveProducer:
    """What DescribeProducers reports for one producer id (-1: unknown / none)."""

    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_timestamp: int
    coordinator_epoch: int
    current_txn_start_offset: int


def _batches() -> deque[BatchMetadata]:
    return deque(maxlen=NUM_BATCHES_TO_RETAIN)


@dataclass(slots=True)
class ProducerStateEntry:
    """Mutable state of one producer id (copied before staging an append)."""

    producer_id: int
    producer_epoch: int
    batches: deque[BatchMetadata] = field(default_factory=_batches)
    coordinator_epoch: int = -1
    current_txn_first_offset: int = -1
    last_timestamp: int = -1

    def copy(self) -> ProducerStateEntry:
        return ProducerStateEntry(
            self.producer_id,
            self.producer_epoch,
            deque(self.batches, maxlen=NUM_BATCHES_TO_RETAIN),
            self.coordinator_epoch,
            self.current_txn_first_offset,
            self.last_timestamp,
        )

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def find_duplicate(self, h: BatchHeader) -> BatchMetadata | None:
        if h.producer_epoch != self.producer_epoch:
            return None
        last_seq = h.last_sequence
        for b in self.batches:
            if b.first_seq == h.base_sequence and b.last_seq == last_seq:
                return b
        return None

    def _set_epoch(self, epoch: int) -> None:
        if epoch != self.producer_epoch:
            self.producer_epoch = epoch
            self.batches.clear()

    def add(self, h: BatchHeader) -> bool:
        """Record data batch ``h`` (which carries its final offsets); returns whether it
        started a transaction."""
        self._set_epoch(h.producer_epoch)
        self.last_timestamp = h.max_timestamp
        self.batches.append(
            BatchMetadata(h.base_sequence, h.last_sequence, h.base_offset, h.last_offset,
                          h.max_timestamp)
        )
        if h.is_transactional and self.current_txn_first_offset < 0:
            self.current_txn_first_offset = h.base_offset
            return True
        return False

    def end_txn(self, h: BatchHeader, marker: EndTxnMarker) -> CompletedTxn | None:
        """Apply marker batch ``h``; returns the transaction it ends, if one was open."""
        completed = None
        if self.current_txn_first_offset >= 0:
            completed = CompletedTxn(
                self.producer_id, self.current_txn_first_offset, h.base_offset, marker.is_abort
            )
        self._set_epoch(h.producer_epoch)
        self.coordinator_epoch = marker.coordinator_epoch
        self.current_txn_first_offset = -1
        self.last_timestamp = h.max_timestamp
        return completed

    def describe(self) -> ActiveProducer:
        return ActiveProducer(
            self.producer_id,
            self.producer_epoch,
            self.last_seq,
            self.last_timestamp,
            self.coordinator_epoch,
            self.current_txn_first_offset,
        )


@dataclass(slots=True)
class StagedAppend:
    """Producer-state changes of one append, applied by :meth:`ProducerStateManager.commit`
    only once the batches are written (so a refused append changes nothing)."""

    entries: dict[int, ProducerStateEntry] = field(default_factory=dict)
    started: list[tuple[int, int]] = field(default_factory=list)  # (first offset, pid)
    completed: list[CompletedTxn] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entries)


class ProducerStateManager:
    """Producer id -> :class:`ProducerStateEntry`, the partition's open transactions, and
    snapshots in the partition directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.producers: dict[int, ProducerStateEntry] = {}
        # first offset -> producer id, in increasing first offset (appends only add larger ones)
        self.ongoing_txns: dict[int, int] = {}
        # first offset -> transaction whose marker is not yet below the high watermark
        self.unreplicated_txns: dict[int, CompletedTxn] = {}

    # -- append path ------------------------------------------------------------------------

    def _staged_entry(self, staged: StagedAppend, h: BatchHeader) -> ProducerStateEntry:
        pid = h.producer_id
        entry = staged.entries.get(pid)
        if entry is None:
            current = self.producers.get(pid)
            entry = (
                current.copy() if current is not None else ProducerStateEntry(pid, h.producer_epoch)
            )
            staged.entries[pid] = entry
        return entry

    def _current(self, staged: StagedAppend, pid: int) -> ProducerStateEntry | None:
        return staged.entries.get(pid) or self.producers.get(pid)

    @staticmethod
    def _check_epoch(current: ProducerStateEntry | None, h: BatchHeader) -> None:
        if current is not None and h.producer_epoch < current.producer_epoch:
            raise InvalidProducerEpochError(
                f"producer {h.producer_id} epoch {h.producer_epoch} is older than the current "
                f"epoch {current.producer_epoch}"
            )

    def _stage_data(self, staged: StagedAppend, h: BatchHeader) -> None:
        entry = self._staged_entry(staged, h)
        if entry.current_txn_first_offset >= 0 and not h.is_transactional:
            raise InvalidTxnStateError(
                f"producer {h.producer_id} wrote a non-transactional batch at offset "
                f"{h.base_offset} while its transaction from offset "
                f"{entry.current_txn_first_offset} is open"
            )
        if entry.add(h):
            staged.started.append((h.base_offset, h.producer_id))

    def check(self, staged: StagedAppend, h: BatchHeader) -> BatchMetadata | None:
        """Check a client data batch of an idempotent or transactional producer.

        Returns the cached metadata when ``h`` retries an already-appended batch; otherwise
        stages the update in ``staged`` (``h`` must carry its final offsets) or raises
        ``InvalidProducerEpochError`` / ``OutOfOrderSequenceError`` / ``InvalidTxnStateError``.
        """
        pid = h.producer_id
        current = self._current(staged, pid)
        if current is None:
            self._stage_data(staged, h)
            return None
        dup = current.find_duplicate(h)
        if dup is not None:
            return dup
        epoch = h.producer_epoch
        first_seq = h.base_sequence
        self._check_epoch(current, h)
        if epoch > current.producer_epoch:
            if first_seq != 0 and current.producer_epoch >= 0:
                raise OutOfOrderSequenceError(
                    f"producer {pid} started epoch {epoch} at sequence {first_seq}, expected 0"
                )
        elif not in_sequence(current.last_seq, first_seq):
            raise OutOfOrderSequenceError(
                f"producer {pid} epoch {epoch}: sequence {first_seq} does not follow "
                f"{current.last_seq}"
            )
        self._stage_data(staged, h)
        return None

    def stage_coordinator_batch(self, staged: StagedAppend, h: BatchHeader) -> None:
        """Stage a data batch written by a coordinator (no sequence; epoch still checked)."""
        self._check_epoch(self._current(staged, h.producer_id), h)
        self._stage_data(staged, h)

    def stage_marker(self, staged: StagedAppend, h: BatchHeader, marker: EndTxnMarker) -> None:
        """Stage a COMMIT/ABORT marker batch ``h``; raises ``InvalidProducerEpochError`` or
        ``TransactionCoordinatorFencedError`` when it is fenced."""
        current = self._current(staged, h.producer_id)
        self._check_epoch(current, h)
        if current is not None and marker.coordinator_epoch < current.coordinator_epoch:
            raise TransactionCoordinatorFencedError(
                f"marker for producer {h.producer_id} has coordinator epoch "
                f"{marker.coordinator_epoch}, older than {current.coordinator_epoch}"
            )
        completed = self._staged_entry(staged, h).end_txn(h, marker)
        if completed is not None:
            staged.completed.append(completed)

    def commit(self, staged: StagedAppend) -> list[AbortedTxn]:
        """Apply a staged append; returns the index entries of the transactions it aborted,
        in marker order, for the segment that holds the markers."""
        self.producers.update(staged.entries)
        for first, pid in staged.started:
            self.ongoing_txns[first] = pid
        aborted = []
        for txn in staged.completed:
            entry = self._complete(txn)
            if entry is not None:
                aborted.append(entry)
        return aborted

    def _complete(self, txn: CompletedTxn) -> AbortedTxn | None:
        entry = None
        if txn.is_aborted:
            entry = AbortedTxn(
                txn.producer_id, txn.first_offset, txn.last_offset,
                self.last_stable_offset_at_completion(txn),
            )
        self.ongoing_txns.pop(txn.first_offset, None)
        self.unreplicated_txns[txn.first_offset] = txn
        return entry

    def last_stable_offset_at_completion(self, txn: CompletedTxn) -> int:
        """The LSO recorded with an aborted transaction: the first offset of the oldest other
        open transaction, else just past the marker (Kafka's definition)."""
        for first, pid in self.ongoing_txns.items():
            if pid != txn.producer_id:
                return first
        return txn.last_offset + 1

    # -- replay (loading) -------------------------------------------------------------------

    def replay(self, h: BatchHeader, marker: EndTxnMarker | None = None) -> AbortedTxn | None:
        """Apply a batch read back from the log (no checks). A control batch needs its
        ``marker`` (None: an empty control batch, which changes nothing). Returns the index
        entry when the batch is an ABORT marker that ended a transaction."""
        if h.producer_id < 0:
            return None
        entry = self.producers.get(h.producer_id)
        if entry is None:
            entry = ProducerStateEntry(h.producer_id, h.producer_epoch)
            self.producers[h.producer_id] = entry
        if not h.is_control:
            if entry.add(h):
                self.ongoing_txns[h.base_offset] = h.producer_id
            return None
        if marker is None:
            return None
        completed = entry.end_txn(h, marker)
        return self._complete(completed) if completed is not None else None

    # -- stability --------------------------------------------------------------------------

    def first_unstable_offset(self) -> int | None:
        """First offset of the oldest transaction that is open, or ended by a marker not yet
        below the high watermark; None when there is none."""
        first = next(iter(self.ongoing_txns), None)
        if self.unreplicated_txns:
            unreplicated = min(self.unreplicated_txns)
            if first is None or unreplicated < first:
                return unreplicated
        return first

    def first_undecided_offset(self) -> int | None:
        """First offset of the oldest open transaction (None when there is none)."""
        return next(iter(self.ongoing_txns), None)

    def on_high_watermark_updated(self, high_watermark: int) -> None:
        """Forget completed transactions whose marker is below ``high_watermark``."""
        if self.unreplicated_txns:
            self.unreplicated_txns = {
                k: t for k, t in self.unreplicated_txns.items() if t.last_offset >= high_watermark
            }

    def active_producers(self) -> list[ActiveProducer]:
        return [e.describe() for e in self.producers.values()]

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for ``producer.id.expiration.ms`` (measured from their last
        batch's max timestamp) that have no open transaction, as Kafka does; returns how many.
        A forgotten producer that writes again starts afresh at any sequence (KIP-360)."""
        expired = [
            pid
            for pid, e in self.producers.items()
            if e.current_txn_first_offset < 0 and now_ms - e.last_timestamp >= expiration_ms
        ]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    def clear(self) -> None:
        self.producers = {}
        self.ongoing_txns = {}
        self.unreplicated_txns = {}

    def _set_producers(self, producers: dict[int, ProducerStateEntry]) -> None:
        self.producers = producers
        self.unreplicated_txns = {}
        self.ongoing_txns = {
            e.current_txn_first_offset: e.producer_id
            for e in sorted(producers.values(), key=lambda e: e.current_txn_first_offset)
            if e.current_txn_first_offset >= 0
        }

    # -- snapshots --------------------------------------------------------------------------

    def snapshot_path(self, offset: int) -> Path:
        return self.directory / f"{offset:020d}{SNAPSHOT_SUFFIX}"

    def snapshot_offsets(self) -> list[int]:
        out = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        for name in names:
            if name.endswith(SNAPSHOT_SUFFIX):
                stem = name[: -len(SNAPSHOT_SUFFIX)]
                if stem.isdigit():
                    out.append(int(stem))
        return sorted(out)

    def encode(self) -> bytes:
        body = bytearray(_COUNT.pack(len(self.producers)))
        for e in self.producers.values():
            body += _PRODUCER.pack(
                e.producer_id,
                e.producer_epoch,
                e.coordinator_epoch,
                e.current_txn_first_offset,
                e.last_timestamp,
                len(e.batches),
            )
            for b in e.batches:
                body += _BATCH.pack(b.first_seq, b.last_seq, b.first_offset, b.last_offset,
                                    b.timestamp)
        return _HEAD.pack(_VERSION, crc32c(bytes(body))) + bytes(body)

    @staticmethod
    def decode(data: bytes) -> dict[int, ProducerStateEntry]:
        """Parse a snapshot; raises ValueError when it is damaged."""
        if len(data) < _HEAD.size + _COUNT.size:
            raise ValueError("snapshot too short")
        version, crc = _HEAD.unpack_from(data, 0)
        if version != _VERSION:
            raise ValueError(f"unknown snapshot version {version}")
        body = memoryview(data)[_HEAD.size :]
        if crc32c(body) != crc:
            raise ValueError("snapshot CRC mismatch")
        try:
            (count,) = _COUNT.unpack_from(body, 0)
            pos = _COUNT.size
            out: dict[int, ProducerStateEntry] = {}
            for _ in range(count):
                pid, epoch, coord, txn_first, last_ts, n = _PRODUCER.unpack_from(body, pos)
                pos += _PRODUCER.size
                batches = _batches()
                for _b in range(n):
                    batches.append(BatchMetadata(*_BATCH.unpack_from(body, pos)))
                    pos += _BATCH.size
                out[pid] = ProducerStateEntry(pid, epoch, batches, coord, txn_first, last_ts)
        except struct.error as e:
            raise ValueError(f"snapshot truncated: {e}") from e
        if pos != len(body):
            raise ValueError("trailing bytes in snapshot")
        return out

    def take_snapshot(self, offset: int, *, sync: bool = True) -> None:
        """Write ``<offset>.snapshot`` and keep only the newest :data:`SNAPSHOTS_TO_KEEP`
        (without ``sync`` the caller makes it durable later)."""
        atomic_write(self.snapshot_path(offset), self.encode(), sync=sync)
        offsets = self.snapshot_offsets()
        for old in offsets[:-SNAPSHOTS_TO_KEEP]:
            self._delete_snapshot(old)

    def _delete_snapshot(self, offset: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.snapshot_path(offset))

    def delete_snapshots_after(self, offset: int) -> None:
        """Delete snapshots whose offset is > ``offset`` (the log was truncated)."""
        for o in self.snapshot_offsets():
            if o > offset:
                self._delete_snapshot(o)

    def delete_all_snapshots(self) -> None:
        for o in self.snapshot_offsets():
            self._delete_snapshot(o)

    def load(self, log_end_offset: int, *, at_or_below: int | None = None) -> int | None:
        """Load the newest valid snapshot at or below ``log_end_offset`` (deleting any beyond
        it), or at or below ``at_or_below`` when given (used when segments from there on are
        re-validated, so their transaction indexes can be rebuilt by the replay); returns its
        offset (the owner replays the log from there) or None when there is none."""
        self.delete_snapshots_after(log_end_offset)
        limit = log_end_offset if at_or_below is None else min(at_or_below, log_end_offset)
        for offset in reversed(self.snapshot_offsets()):
            if offset > limit:
                continue
            try:
                data = self.snapshot_path(offset).read_bytes()
                self._set_producers(self.decode(data))
                return offset
            except (OSError, ValueError) as e:
                log.warning(
                    "producer state snapshot %s is damaged (%s): deleted; the producer state is "
                    "rebuilt from an older snapshot or, without one, by replaying the log",
                    self.snapshot_path(offset), e,
                )
                self._delete_snapshot(offset)
        self.clear()
        return None
