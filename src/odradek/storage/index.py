"""Sparse per-segment indexes: the offset index (``.index``) and the time index (``.timeindex``).

Both are owned by their :class:`~odradek.storage.segment.LogSegment` (and so by the partition's
owner, the broker's event-loop thread). Entries live in memory (``array`` columns, loaded lazily
on first use) and are appended to the file with ``os.write`` as they are added; there is no
pre-allocation and no mmap, so a file holds exactly its entries.

Byte formats (big endian, fixed-size entries, no header):

- ``<base>.index``: ``relative_offset int32, position int32`` (8 bytes). ``relative_offset`` is
  a batch's last offset minus the segment's base offset, ``position`` the byte position of that
  batch in the ``.log``. Strictly increasing in both columns.
- ``<base>.timeindex``: ``timestamp int64, relative_offset int32`` (12 bytes): the largest
  timestamp seen so far in the segment and the (last) offset of the batch that first reached it.
  Strictly increasing timestamps.

Crash behaviour: a crash can leave a torn final entry or entries that point past the valid end
of the ``.log`` (the index is not fsynced before the log). Unclean start-up rebuilds the indexes
of every segment it re-validates; a clean start-up only sanity-checks sizes and the last entry
(:meth:`sanity_check`) and rebuilds on failure. The indexes can always be rebuilt from the log.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_right
from pathlib import Path

from odradek.errors import KafkaStorageError
from odradek.storage.open_files import OpenFileCache, open_cached

__all__ = ["AppendOnlyFile", "CorruptIndexError", "OffsetIndex", "TimeIndex"]

_BIG_ENDIAN = sys.byteorder == "big"


class CorruptIndexError(Exception):
    """An index file failed its sanity check; the caller rebuilds it from the log."""


class AppendOnlyFile:
    """An index file appended through one lazily opened O_APPEND handle, fsynced on flush.
    Shared by the offset/time indexes and the transaction index; owned by its segment. With an
    :class:`~odradek.storage.open_files.OpenFileCache` the handle counts against
    ``log.max.open.files`` and may be closed between uses (reopened on the next append or flush;
    the dirty flag survives, so a flush still fsyncs what was written)."""

    def __init__(self, path: Path, *, files: OpenFileCache | None = None) -> None:
        self.path = path
        self.files = files
        self._fd: int | None = None
        self._dirty = False

    def _handle(self) -> int:
        fd = self._fd
        if fd is not None:
            if self.files is not None:
                self.files.touch(self)
            return fd
        fd = open_cached(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, self.files, self)
        self._fd = fd
        return fd

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._handle(), data)
        except OSError as e:
            raise KafkaStorageError(f"cannot write {self.path}: {e}") from e
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            try:
                os.fsync(self._handle())
            except OSError as e:
                raise KafkaStorageError(f"cannot fsync {self.path}: {e}") from e
            self._dirty = False

    def evict(self) -> None:
        """Called by the open-file cache: close the handle, keep the dirty flag."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def close_handle(self) -> None:
        """Close the append handle (an inactive segment's index is read-only, in memory). What
        was not flushed is no longer this object's concern (callers flush first, or delete)."""
        self._dirty = False
        if self._fd is not None:
            if self.files is not None:
                self.files.remove(self)
            fd, self._fd = self._fd, None
            os.close(fd)

    def close(self) -> None:
        self.flush()
        self.close_handle()


class _IndexFile(AppendOnlyFile):
    entry_size = 8

    def __init__(
        self, path: Path, base_offset: int, max_index_size: int, *,
        files: OpenFileCache | None = None,
    ) -> None:
        super().__init__(path, files=files)
        self.base_offset = base_offset
        self.max_entries = max(1, max_index_size // self.entry_size)
        self._loaded = False

    # -- file plumbing ----------------------------------------------------------------------

    def _file_size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def _truncate_file(self, n_entries: int) -> None:
        try:
            os.truncate(self.path, n_entries * self.entry_size)
        except FileNotFoundError:
            self._write(b"")
        except OSError as e:
            raise KafkaStorageError(f"cannot truncate index {self.path}: {e}") from e
        self._dirty = True

    def create(self) -> None:
        """Start an empty index (truncating any file of the same name)."""
        self._clear()
        self._loaded = True
        try:
            try:
                # Not O_TRUNC on a new file: ext4 flushes a truncated file at every close.
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC, 0o644)
            os.close(fd)
        except OSError as e:
            raise KafkaStorageError(f"cannot create index {self.path}: {e}") from e

    def rename(self, path: Path) -> None:
        os.replace(self.path, path)
        self.path = path

    def delete(self) -> None:
        self.close_handle()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _check_file_size(self) -> int:
        size = self._file_size()
        if size % self.entry_size:
            raise CorruptIndexError(
                f"{self.path}: size {size} is not a multiple of {self.entry_size}"
            )
        return size

    def _read_raw(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as e:
            raise KafkaStorageError(f"cannot read index {self.path}: {e}") from e

    def _read_last(self, size: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(size - self.entry_size)
            return f.read(self.entry_size)

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._load()
            self._loaded = True

    # -- subclasses -------------------------------------------------------------------------

    def _clear(self) -> None:
        raise NotImplementedError

    def _load(self) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def is_full(self) -> bool:
        return len(self) >= self.max_entries


class OffsetIndex(_IndexFile):
    """Maps offsets to byte positions in the segment's ``.log`` (see the module docstring)."""

    entry_size = 8
    _ENTRY = struct.Struct(">ii")

    def __init__(
        self, path: Path, base_offset: int, max_index_size: int, *,
        files: OpenFileCache | None = None,
    ) -> None:
        super().__init__(path, base_offset, max_index_size, files=files)
        self._rel = array("i")
        self._pos = array("i")

    def _clear(self) -> None:
        self._rel = array("i")
        self._pos = array("i")

    def _load(self) -> None:
        raw = self._read_raw()
        raw = raw[: len(raw) - len(raw) % self.entry_size]
        both = array("i")
        both.frombytes(raw)
        if not _BIG_ENDIAN:
            both.byteswap()
        self._rel = both[0::2]
        self._pos = both[1::2]

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._rel)

    def sanity_check(self, log_size: int) -> None:
        """Cheap check for a clean start-up: whole entries, and a plausible last entry."""
        size = self._check_file_size()
        if size:
            rel, pos = self._ENTRY.unpack(self._read_last(size))
            if rel < 0 or pos < 0 or pos >= max(log_size, 1):
                raise CorruptIndexError(f"{self.path}: last entry ({rel}, {pos}) is invalid")

    def append(self, offset: int, position: int) -> None:
        self._ensure_loaded()
        rel = offset - self.base_offset
        if self._rel and (rel <= self._rel[-1] or position <= self._pos[-1]):
            return
        self._rel.append(rel)
        self._pos.append(position)
        self._write(self._ENTRY.pack(rel, position))

    def lookup(self, offset: int) -> tuple[int, int]:
        """The entry with the largest offset <= ``offset`` -> (offset, position);
        ``(base_offset, 0)`` when there is none."""
        self._ensure_loaded()
        i = bisect_right(self._rel, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._rel[i], self._pos[i]

    def floor_position(self, position: int) -> int:
        """The largest indexed batch position <= ``position`` (0 when none): a batch boundary
        from which a header walk may start."""
        self._ensure_loaded()
        i = bisect_right(self._pos, position) - 1
        return self._pos[i] if i >= 0 else 0

    def last_entry(self) -> tuple[int, int]:
        self._ensure_loaded()
        if not self._rel:
            return self.base_offset, 0
        return self.base_offset + self._rel[-1], self._pos[-1]

    def truncate_to(self, offset: int) -> None:
        """Drop entries for offsets >= ``offset``."""
        self._ensure_loaded()
        keep = bisect_right(self._rel, offset - self.base_offset - 1)
        if keep < len(self._rel):
            del self._rel[keep:]
            del self._pos[keep:]
            self._truncate_file(keep)

    def truncate_to_position(self, position: int) -> None:
        """Drop entries pointing at ``position`` or beyond."""
        self._ensure_loaded()
        keep = bisect_right(self._pos, position - 1)
        if keep < len(self._pos):
            del self._rel[keep:]
            del self._pos[keep:]
            self._truncate_file(keep)


class TimeIndex(_IndexFile):
    """Maps timestamps to offsets within one segment (see the module docstring)."""

    entry_size = 12
    _ENTRY = struct.Struct(">qi")

    def __init__(
        self, path: Path, base_offset: int, max_index_size: int, *,
        files: OpenFileCache | None = None,
    ) -> None:
        super().__init__(path, base_offset, max_index_size, files=files)
        self._ts = array("q")
        self._rel = array("i")

    def _clear(self) -> None:
        self._ts = array("q")
        self._rel = array("i")

    def _load(self) -> None:
        raw = self._read_raw()
        raw = raw[: len(raw) - len(raw) % self.entry_size]
        ts = array("q")
        rel = array("i")
        for t, r in self._ENTRY.iter_unpack(raw):
            ts.append(t)
            rel.append(r)
        self._ts = ts
        self._rel = rel

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._ts)

    def sanity_check(self) -> None:
        size = self._check_file_size()
        if size:
            _ts, rel = self._ENTRY.unpack(self._read_last(size))
            if rel < 0:
                raise CorruptIndexError(f"{self.path}: last entry offset {rel} is invalid")

    def last_entry(self) -> tuple[int, int]:
        """(timestamp, offset) of the last entry; ``(-1, base_offset)`` when empty."""
        self._ensure_loaded()
        if not self._ts:
            return -1, self.base_offset
        return self._ts[-1], self.base_offset + self._rel[-1]

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Append when ``timestamp`` is larger than the last entry's."""
        self._ensure_loaded()
        rel = offset - self.base_offset
        if self._ts and (timestamp <= self._ts[-1] or rel < self._rel[-1]):
            return
        self._ts.append(timestamp)
        self._rel.append(rel)
        self._write(self._ENTRY.pack(timestamp, rel))

    def lookup(self, timestamp: int) -> tuple[int, int]:
        """The entry with the largest timestamp <= ``timestamp`` -> (timestamp, offset);
        ``(-1, base_offset)`` when there is none."""
        self._ensure_loaded()
        i = bisect_right(self._ts, timestamp) - 1
        if i < 0:
            return -1, self.base_offset
        return self._ts[i], self.base_offset + self._rel[i]

    def truncate_to(self, offset: int) -> None:
        """Drop entries for offsets >= ``offset``."""
        self._ensure_loaded()
        rel = offset - self.base_offset
        keep = len(self._rel)
        while keep and self._rel[keep - 1] >= rel:
            keep -= 1
        if keep < len(self._rel):
            del self._ts[keep:]
            del self._rel[keep:]
            self._truncate_file(keep)
