"""The per-segment aborted-transaction index (Kafka's ``TransactionIndex``), ``<base>.txnindex``.

Owned by its :class:`~odradek.storage.segment.LogSegment` (and so by the partition's owner, the
broker's event-loop thread); no locking.

Each entry describes one aborted transaction whose ABORT marker lies in the segment. Byte format
(Kafka's, big endian, fixed 34-byte entries, no header)::

    version             int16   = 0
    producer_id         int64
    first_offset        int64   first offset of the transaction's data
    last_offset         int64   offset of the ABORT marker
    last_stable_offset  int64   the partition's LSO right after the abort was applied

Entries are appended in marker order, so ``last_offset`` strictly increases. The file is created
lazily by the first entry: most segments never have one. It is appended with ``os.write`` and
fsynced with the segment. A crash can leave a torn final entry; start-up rebuilds the index of
every segment it re-validates (the entries follow from the batches and the producer state), and
a clean start-up only checks the size (:meth:`sanity_check`) and rebuilds on failure.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from odradek.errors import KafkaStorageError
from odradek.storage.index import AppendOnlyFile, CorruptIndexError
from odradek.storage.open_files import OpenFileCache

__all__ = [
    "TXN_INDEX_SUFFIX",
    "AbortedTxn",
    "TransactionIndex",
    "TxnIndexSearchResult",
]

TXN_INDEX_SUFFIX = ".txnindex"

_ENTRY = struct.Struct(">hqqqq")
_VERSION = 0


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One aborted transaction: what Fetch reports (``producer_id``, ``first_offset``) plus the
    marker offset and the LSO at completion, which bound the search."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def encode(self) -> bytes:
        return _ENTRY.pack(
            _VERSION, self.producer_id, self.first_offset, self.last_offset,
            self.last_stable_offset,
        )


@dataclass(frozen=True, slots=True)
class TxnIndexSearchResult:
    """Entries of one segment relevant to a fetch range; ``complete`` says no later segment
    can hold another one (an entry here was completed with an LSO at or past the range end)."""

    aborted: tuple[AbortedTxn, ...]
    complete: bool


class TransactionIndex(AppendOnlyFile):
    """The ``.txnindex`` of one segment. Entries are kept in memory after the first access."""

    entry_size = _ENTRY.size

    def __init__(
        self, path: Path, base_offset: int, *, files: OpenFileCache | None = None
    ) -> None:
        super().__init__(path, files=files)
        self.base_offset = base_offset
        self._entries: list[AbortedTxn] | None = None  # None: not read yet

    # -- reading ----------------------------------------------------------------------------

    @property
    def entries(self) -> list[AbortedTxn]:
        """All entries, oldest first (reads the file on first use; a torn tail is ignored
        here -- :meth:`sanity_check` is what rejects it)."""
        if self._entries is None:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                data = b""
            except OSError as e:
                raise KafkaStorageError(f"cannot read {self.path}: {e}") from e
            n = len(data) // _ENTRY.size
            out = []
            for i in range(n):
                version, pid, first, last, last_stable = _ENTRY.unpack_from(data, i * _ENTRY.size)
                out.append(AbortedTxn(pid, first, last, last_stable))
            self._entries = out
        return self._entries

    def collect(self, fetch_offset: int, upper_offset: int) -> TxnIndexSearchResult:
        """Entries whose transaction intersects [``fetch_offset``, ``upper_offset``): marker at
        or after the fetch offset and data starting before the upper bound."""
        found = []
        for e in self.entries:
            if e.last_offset >= fetch_offset and e.first_offset < upper_offset:
                found.append(e)
            if e.last_stable_offset >= upper_offset:
                return TxnIndexSearchResult(tuple(found), True)
        return TxnIndexSearchResult(tuple(found), False)

    def sanity_check(self) -> None:
        """Clean start-up check: whole entries of version 0, markers in the segment and in
        increasing order. A missing file is a valid empty index. Raises CorruptIndexError."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return
        if size % _ENTRY.size:
            raise CorruptIndexError(f"{self.path}: size {size} is not a multiple of 34")
        self._entries = None
        data = self.path.read_bytes()
        last = -1
        for i in range(len(data) // _ENTRY.size):
            version, _pid, first, marker, _last_stable = _ENTRY.unpack_from(data, i * _ENTRY.size)
            if version != _VERSION or marker < self.base_offset or marker <= last or first > marker:
                raise CorruptIndexError(f"{self.path}: bad entry {i}")
            last = marker

    # -- writing ----------------------------------------------------------------------------

    def append(self, entry: AbortedTxn) -> None:
        """Add an entry (creating the file on the first one); markers must increase."""
        entries = self.entries
        if entries and entry.last_offset <= entries[-1].last_offset:
            raise ValueError(
                f"{self.path}: marker offset {entry.last_offset} does not follow "
                f"{entries[-1].last_offset}"
            )
        self._write(entry.encode())
        entries.append(entry)

    def truncate_to(self, offset: int) -> None:
        """Drop the entries whose marker is at or after ``offset`` (the log was truncated)."""
        entries = self.entries
        keep = sum(1 for e in entries if e.last_offset < offset)
        if keep == len(entries):
            return
        if keep == 0:
            self.reset()
            return
        try:
            os.truncate(self.path, keep * _ENTRY.size)
        except OSError as e:
            raise KafkaStorageError(f"cannot truncate {self.path}: {e}") from e
        self._dirty = True
        del entries[keep:]

    def reset(self) -> None:
        """Forget every entry and delete the file (it is rebuilt from the log)."""
        self.delete()
        self._entries = []

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def rename(self, path: Path) -> None:
        """Move the file (when there is one) to ``path``; the index follows it."""
        self.close()
        try:
            os.replace(self.path, path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise KafkaStorageError(f"cannot rename {self.path}: {e}") from e
        self.path = path

    def delete(self) -> None:
        self.close_handle()
        self._dirty = False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise KafkaStorageError(f"cannot delete {self.path}: {e}") from e
        self._entries = []
