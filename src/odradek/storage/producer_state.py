"""Idempotent-producer state (Kafka's ProducerStateManager) and its snapshots.

Owned by the partition's :class:`~odradek.storage.log.PartitionLog` (event-loop thread).

Per producer id the manager keeps the producer epoch and the metadata of the last
:data:`NUM_BATCHES_TO_RETAIN` batches (first/last sequence, first/last offset, max timestamp),
which is what duplicate detection and sequence checks need.

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

Snapshots are written atomically (``.tmp``, fsync, rename) on segment roll and on close; the
newest two are kept. A crash can leave a stray ``.tmp`` (deleted at start-up) but never a torn
snapshot under its final name; a snapshot that fails its CRC is deleted and an older one used.
After loading a snapshot, the owner replays the log from the snapshot's offset.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from odradek.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from odradek.protocol.records import BatchHeader, crc32c
from odradek.storage.checkpoint import atomic_write

__all__ = [
    "NUM_BATCHES_TO_RETAIN",
    "SNAPSHOT_SUFFIX",
    "BatchMetadata",
    "ProducerStateEntry",
    "ProducerStateManager",
    "in_sequence",
]

NUM_BATCHES_TO_RETAIN = 5
SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOTS_TO_KEEP = 2
_VERSION = 1
_INT32_MAX = 2**31 - 1

_HEAD = struct.Struct(">hI")
_COUNT = struct.Struct(">i")
_PRODUCER = struct.Struct(">qhiqqi")
_BATCH = struct.Struct(">iiqqq")


def in_sequence(last_seq: int, next_seq: int) -> bool:
    """Whether ``next_seq`` directly follows ``last_seq`` (wrapping at int32 max)."""
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == _INT32_MAX)


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int


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

    def add(self, h: BatchHeader) -> None:
        """Record batch ``h`` (which carries its final offsets)."""
        if h.producer_epoch != self.producer_epoch:
            self.producer_epoch = h.producer_epoch
            self.batches.clear()
        self.last_timestamp = h.max_timestamp
        if h.is_control:
            # A transaction marker ends the producer's open transaction; it has no sequence.
            self.current_txn_first_offset = -1
            return
        if h.is_transactional and self.current_txn_first_offset < 0:
            self.current_txn_first_offset = h.base_offset
        self.batches.append(
            BatchMetadata(h.base_sequence, h.last_sequence, h.base_offset, h.last_offset,
                          h.max_timestamp)
        )


class ProducerStateManager:
    """Producer id -> :class:`ProducerStateEntry`, with snapshots in the partition directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.producers: dict[int, ProducerStateEntry] = {}

    # -- append path ------------------------------------------------------------------------

    def check(
        self, staged: dict[int, ProducerStateEntry], h: BatchHeader
    ) -> BatchMetadata | None:
        """Check a client batch of an idempotent producer against its state.

        Returns the cached metadata when ``h`` retries an already-appended batch; otherwise
        stages the updated entry in ``staged`` (``h`` must carry its final offsets) or raises
        ``InvalidProducerEpochError`` / ``OutOfOrderSequenceError``.
        """
        pid = h.producer_id
        current = staged.get(pid) or self.producers.get(pid)
        if current is None:
            entry = ProducerStateEntry(pid, h.producer_epoch)
            entry.add(h)
            staged[pid] = entry
            return None
        dup = current.find_duplicate(h)
        if dup is not None:
            return dup
        epoch = h.producer_epoch
        first_seq = h.base_sequence
        if epoch < current.producer_epoch:
            raise InvalidProducerEpochError(
                f"producer {pid} epoch {epoch} is older than the current epoch "
                f"{current.producer_epoch}"
            )
        if epoch > current.producer_epoch:
            if first_seq != 0 and current.producer_epoch >= 0:
                raise OutOfOrderSequenceError(
                    f"producer {pid} started epoch {epoch} at sequence {first_seq}, expected 0"
                )
        elif not h.is_control and not in_sequence(current.last_seq, first_seq):
            raise OutOfOrderSequenceError(
                f"producer {pid} epoch {epoch}: sequence {first_seq} does not follow "
                f"{current.last_seq}"
            )
        entry = current.copy() if pid not in staged else current
        entry.add(h)
        staged[pid] = entry
        return None

    def commit(self, staged: dict[int, ProducerStateEntry]) -> None:
        self.producers.update(staged)

    def replay(self, h: BatchHeader) -> None:
        """Apply a batch read back from the log (no checks)."""
        if h.producer_id < 0:
            return
        entry = self.producers.get(h.producer_id)
        if entry is None:
            entry = ProducerStateEntry(h.producer_id, h.producer_epoch)
            self.producers[h.producer_id] = entry
        entry.add(h)

    def clear(self) -> None:
        self.producers = {}

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

    def take_snapshot(self, offset: int) -> None:
        """Write ``<offset>.snapshot`` and keep only the newest :data:`SNAPSHOTS_TO_KEEP`."""
        atomic_write(self.snapshot_path(offset), self.encode())
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

    def load(self, log_end_offset: int) -> int | None:
        """Load the newest valid snapshot at or below ``log_end_offset``; returns its offset
        (the owner replays the log from there) or None when there is none."""
        self.delete_snapshots_after(log_end_offset)
        for offset in reversed(self.snapshot_offsets()):
            try:
                data = self.snapshot_path(offset).read_bytes()
                self.producers = self.decode(data)
                return offset
            except (OSError, ValueError):
                self._delete_snapshot(offset)
        self.producers = {}
        return None
