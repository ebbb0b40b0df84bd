"""Leader epoch cache: which leader epoch started at which offset (Kafka's
LeaderEpochFileCache), persisted in ``leader-epoch-checkpoint``.

Owned by the partition's :class:`~odradek.storage.log.PartitionLog` (event-loop thread).

File format (Kafka's text checkpoint, version 0)::

    0
    <number of entries>
    <epoch> <start offset>
    ...

Entries have strictly increasing epochs and non-decreasing start offsets. The file is replaced
atomically (write ``.tmp``, rename) whenever the cache changes, so a crash leaves the previous or
the new version. A new epoch (:meth:`LeaderEpochFileCache.assign`, on the first append of every
partition) is written without fsync, as Kafka does since KAFKA-15046: the owner's
:meth:`~LeaderEpochFileCache.flush` makes it durable before the log's recovery point moves past
it, and recovery after a crash assigns the epochs of the batches after the recovery point again.
Truncations are fsynced at once. The cache may name a start offset beyond the log end
after a crash; start-up truncates it to the recovered log end.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from odradek.storage.checkpoint import read_checkpoint, warn_damaged, write_checkpoint

__all__ = ["EpochEntry", "LeaderEpochFileCache", "LEADER_EPOCH_CHECKPOINT", "UNDEFINED_EPOCH"]

LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
_VERSION = 0
_FORGOTTEN = ("the leader epochs it listed are forgotten (recovery and new appends record "
              "epochs again; OffsetForLeaderEpoch answers older epochs as unknown)")


@dataclass(frozen=True, slots=True)
class EpochEntry:
    epoch: int
    start_offset: int


class LeaderEpochFileCache:
    """In-memory epoch -> start offset list mirrored to ``leader-epoch-checkpoint``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LEADER_EPOCH_CHECKPOINT
        self._entries: list[EpochEntry] = []
        self._unsynced = False
        lines = read_checkpoint(self.path, _VERSION, if_damaged=_FORGOTTEN)
        for line in lines or []:
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError(line)
                entry = EpochEntry(int(parts[0]), int(parts[1]))
            except ValueError:
                warn_damaged(self.path, f"malformed entry {line!r}", _FORGOTTEN)
                self._entries = []
                break
            if self._entries and (
                entry.epoch <= self._entries[-1].epoch
                or entry.start_offset < self._entries[-1].start_offset
            ):
                continue
            self._entries.append(entry)

    @property
    def entries(self) -> list[EpochEntry]:
        return list(self._entries)

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    def _flush(self, *, sync: bool = True) -> None:
        write_checkpoint(
            self.path, _VERSION, [f"{e.epoch} {e.start_offset}" for e in self._entries],
            sync=sync,
        )
        self._unsynced = not sync

    def flush(self) -> None:
        """Make the file durable if a change was written without fsync."""
        if self._unsynced:
            self._flush()

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset`` if it is newer than the latest
        epoch; returns whether the cache changed."""
        if epoch < 0:
            return False
        if self._entries:
            last = self._entries[-1]
            if epoch <= last.epoch:
                return False
            # Remove entries that the new one supersedes (start offsets must not go back).
            while self._entries and self._entries[-1].start_offset > start_offset:
                self._entries.pop()
        self._entries.append(EpochEntry(epoch, start_offset))
        self._flush(sync=False)
        return True

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop entries starting at or after ``end_offset`` (the log was truncated there)."""
        keep = len(self._entries)
        while keep and self._entries[keep - 1].start_offset >= end_offset:
            keep -= 1
        if keep < len(self._entries):
            del self._entries[keep:]
            self._flush()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log now starts at ``start_offset``: drop entries wholly before it and move the
        start of the epoch that covers it up to it."""
        if not self._entries or self._entries[0].start_offset >= start_offset:
            return
        starts = [e.start_offset for e in self._entries]
        i = bisect_right(starts, start_offset) - 1  # entry covering start_offset
        new = [EpochEntry(self._entries[i].epoch, start_offset), *self._entries[i + 1 :]]
        if new != self._entries:
            self._entries = new
            self._flush()

    def epoch_for_offset(self, offset: int) -> int:
        """Epoch of the leader that wrote ``offset`` (-1 when before every entry)."""
        starts = [e.start_offset for e in self._entries]
        i = bisect_right(starts, offset) - 1
        return self._entries[i].epoch if i >= 0 else UNDEFINED_EPOCH

    def end_offset_for_epoch(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka's OffsetForLeaderEpoch answer -> (epoch, end offset).

        The latest epoch ends at the log end offset; an older epoch ends where the next larger
        epoch starts, reported with the largest known epoch <= ``epoch`` (or ``epoch`` itself
        when it is older than every entry); an unknown epoch newer than all -> (-1, -1)."""
        if epoch == UNDEFINED_EPOCH or not self._entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if epoch == self._entries[-1].epoch:
            return epoch, log_end_offset
        epochs = [e.epoch for e in self._entries]
        i = bisect_right(epochs, epoch)  # first entry with a larger epoch
        if i == len(self._entries):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if i == 0:
            return epoch, self._entries[0].start_offset
        return self._entries[i - 1].epoch, self._entries[i].start_offset

    def clear(self) -> None:
        if self._entries:
            self._entries = []
            self._flush()
