"""One log segment: ``<base>.log`` plus its ``.index`` and ``.timeindex``.

Owned by its :class:`~odradek.storage.log.PartitionLog` (the broker's event-loop thread); no
locking. File names carry the segment's base offset zero-padded to 20 digits.

An optional ``<base>.txnindex`` lists the aborted transactions whose ABORT marker is in the
segment (see :mod:`odradek.storage.txn_index`); it is created by the first such marker.

``.log`` byte format: v2 record batches (see :mod:`odradek.protocol.records`) exactly as they
were appended, back to back, with absolute offsets; nothing else. The file is written with
``os.write`` (the bytes are in the OS page cache when ``append`` returns, so a killed process
loses nothing acknowledged) and fsynced only by :meth:`flush`. A machine crash can leave a
torn or garbage tail after the last fsync; :meth:`recover` re-validates batch by batch and
truncates at the first invalid byte, rebuilding both indexes.

Descriptors: the ``.log`` handle and the indexes' append handles are opened on first use. Given
an :class:`~odradek.storage.open_files.OpenFileCache` (the log manager's ``log.max.open.files``),
each counts against it and may be closed between uses; it is reopened on the next one, and a
flush after an eviction fsyncs the file through the new handle. Code here therefore reads
:attr:`LogSegment.fd` again for every system call instead of keeping the number across a call
that may open another file.

A segment may also live under a file suffix (``.cleaned`` or ``.swap``): the log cleaner builds
replacement segments that way and moves them to their final names with :meth:`rename_suffix`
(see :mod:`odradek.storage.log` for the swap and :mod:`odradek.storage.loader` for what a
crash leaves).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from odradek.errors import CorruptRecordError, KafkaStorageError
from odradek.protocol.records import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
    batch_crc_ok,
    decode_records,
    read_batch_header,
    read_batch_size,
)
from odradek.storage.index import CorruptIndexError, OffsetIndex, TimeIndex
from odradek.storage.log_config import LogConfig
from odradek.storage.open_files import OpenFileCache, open_cached
from odradek.storage.preallocate import PREALLOCATE_MIN_BYTES, reserve
from odradek.storage.txn_index import TXN_INDEX_SUFFIX, TransactionIndex

__all__ = [
    "LOG_SUFFIX",
    "INDEX_SUFFIX",
    "TIME_INDEX_SUFFIX",
    "DELETED_SUFFIX",
    "CLEANED_SUFFIX",
    "SWAP_SUFFIX",
    "LogSegment",
    "SegmentCorruptError",
    "TimestampAndOffset",
    "segment_file_name",
]

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"

_log = logging.getLogger("odradek.storage")

_INT32_MAX = 2**31 - 1
_SCAN_CHUNK = 16 * 1024
#: Batches of the active segment whose positions are remembered (see ``translate_offset``).
_RECENT_BATCHES = 8
#: Batches :meth:`LogSegment.locate` remembers where reads stopped, until a read starts there
#: (one per consumer reading the segment; forgotten all at once beyond this).
_LOCATED_BATCHES = 8
_RECOVER_CHUNK = 4 * 1024 * 1024


_MAGIC_AT = 16  # magic byte of a v2 batch header (see protocol/records.py)


def _plausible(data: bytes, off: int, size: int) -> bool:
    """Whether the batch at ``data[off:]`` of declared ``size`` looks like a batch: a header's
    worth of bytes at least and magic 2. The CRC is the scrubber's and the client's job."""
    return (
        size >= BATCH_HEADER_SIZE
        and len(data) - off > _MAGIC_AT
        and data[off + _MAGIC_AT] == MAGIC
    )


def segment_file_name(offset: int, suffix: str) -> str:
    return f"{offset:020d}{suffix}"


def _create_file(path: Path, flags: int, files: OpenFileCache | None, owner: LogSegment) -> int:
    """Create ``path`` empty. O_TRUNC only when it exists: on ext4 a file truncated to zero
    has its dirty data pushed out at every close (auto_da_alloc), and the open-file cache closes
    active segments often."""
    try:
        return open_cached(path, flags | os.O_CREAT | os.O_EXCL, files, owner)
    except FileExistsError:
        return open_cached(path, flags | os.O_TRUNC, files, owner)


class SegmentCorruptError(CorruptRecordError):
    """Segment data that should be whole batches is not: at start-up the loader falls back to
    recovery; on a read it is answered with CORRUPT_MESSAGE (Kafka's code for a corrupt batch
    found by a read). ``position`` is the byte position of the bad batch in ``path``."""

    def __init__(self, path: Path, position: int, reason: str) -> None:
        super().__init__(f"{path}: {reason} at position {position}")
        self.path = path
        self.position = position
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TimestampAndOffset:
    """Result of a timestamp lookup: a record's timestamp, offset and its batch's leader epoch
    (-1 when unknown)."""

    timestamp: int
    offset: int
    leader_epoch: int = -1


class LogSegment:
    """A ``.log`` file and its two indexes; see the module docstring for format and crashes."""

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        config: LogConfig,
        *,
        created_ms: int,
        suffix: str = "",
        files: OpenFileCache | None = None,
    ) -> None:
        self.directory = directory
        self.files = files
        self.base_offset = base_offset
        self.config = config
        self.suffix = suffix
        self.log_path = directory / (segment_file_name(base_offset, LOG_SUFFIX) + suffix)
        self.offset_index = OffsetIndex(
            directory / (segment_file_name(base_offset, INDEX_SUFFIX) + suffix),
            base_offset,
            config.segment_index_bytes,
            files=files,
        )
        self.time_index = TimeIndex(
            directory / (segment_file_name(base_offset, TIME_INDEX_SUFFIX) + suffix),
            base_offset,
            config.segment_index_bytes,
            files=files,
        )
        # Aborted transactions whose ABORT marker is in this segment; the file is created
        # lazily by the first entry (see txn_index.py).
        self.txn_index = TransactionIndex(
            directory / (segment_file_name(base_offset, TXN_INDEX_SUFFIX) + suffix), base_offset,
            files=files,
        )
        self._fd: int | None = None
        self.size = 0
        self.next_offset: int | None = None  # known for the active and recovered segments
        self._max_ts: int | None = None  # None: not yet loaded
        self._offset_of_max_ts = base_offset
        self._rolling_base_ms: int | None = None
        self._created_ms = created_ms
        self._bytes_since_index = 0
        self._dirty = False
        # Base offset -> (position, header) of the last few batches appended: a consumer at
        # the tail fetches from one of them, found here without a walk over the headers after
        # the last index entry. Emptied when the segment is truncated, recovered or rolled.
        self._recent: dict[int, tuple[int, BatchHeader]] = {}
        # Base offset -> (position, header) of the batches reads stopped before (see
        # :meth:`locate`): a consumer's next fetch starts at one of them, found here without an
        # index lookup and a header read, and taken out (so a consumer reading on leaves one
        # entry, not one per fetch). Unlike ``_recent`` kept when the segment rolls (its
        # batches stay where they are); emptied when it is truncated or recovered.
        self._located: dict[int, tuple[int, BatchHeader]] = {}
        #: Bytes before this position were handed to the log's page-cache trimmer to be
        #: written back and dropped from the OS page cache (storage/page_cache.py).
        self.cache_dropped_to = 0

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path, base_offset: int, config: LogConfig, *, now_ms: int,
        suffix: str = "", files: OpenFileCache | None = None,
    ) -> LogSegment:
        """A new, empty segment (truncating files of the same names); ``suffix`` is appended to
        every file name (``.cleaned`` for a segment the cleaner is building)."""
        seg = cls(directory, base_offset, config, created_ms=now_ms, suffix=suffix, files=files)
        try:
            fd = _create_file(seg.log_path, os.O_RDWR | os.O_APPEND, files, seg)
        except OSError as e:
            raise KafkaStorageError(f"cannot create {seg.log_path}: {e}") from e
        seg._fd = fd
        seg.offset_index.create()
        seg.time_index.create()
        seg.txn_index.reset()  # a stale file of the same name must not leak into the new one
        seg.next_offset = base_offset
        seg._max_ts = -1
        return seg

    @classmethod
    def open_existing(
        cls, directory: Path, base_offset: int, config: LogConfig, *, now_ms: int,
        files: OpenFileCache | None = None,
    ) -> LogSegment:
        """Open without reading data (sizes come from ``stat``, stats from the indexes)."""
        seg = cls(directory, base_offset, config, created_ms=now_ms, files=files)
        try:
            seg.size = os.stat(seg.log_path).st_size
        except OSError as e:
            raise KafkaStorageError(f"cannot stat {seg.log_path}: {e}") from e
        seg._bytes_since_index = seg.size
        if seg.size == 0:
            seg.next_offset = base_offset
            seg._max_ts = -1
        return seg

    @property
    def fd(self) -> int:
        """The ``.log`` descriptor, opened on demand; valid until the next call that may open
        another cached file (see the module docstring)."""
        fd = self._fd
        if fd is not None:
            if self.files is not None:
                self.files.touch(self)
            return fd
        try:
            fd = open_cached(self.log_path, os.O_RDWR | os.O_APPEND, self.files, self)
        except OSError as e:
            raise KafkaStorageError(f"cannot open {self.log_path}: {e}") from e
        self._fd = fd
        return fd

    def evict(self) -> None:
        """Called by the open-file cache: close the ``.log`` descriptor (the dirty flag stays,
        so the next :meth:`flush` reopens the file to fsync it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def attach_files(self, files: OpenFileCache | None) -> None:
        """Hand this segment's descriptors to ``files`` (a cleaned, fsynced segment joining its
        log); open ones are closed first and reopened on demand."""
        self.close_handles()
        self.files = files
        for f in (self.offset_index, self.time_index, self.txn_index):
            f.files = files

    def _close_fd(self) -> None:
        if self._fd is not None:
            if self.files is not None:
                self.files.remove(self)
            fd, self._fd = self._fd, None
            os.close(fd)

    # -- statistics -------------------------------------------------------------------------

    def _ensure_max_ts(self) -> None:
        if self._max_ts is not None:
            return
        ts, off = self.time_index.last_entry()
        if ts < 0 and self.size > 0:
            # No time index entry (tiny segment written before a crash): derive from headers.
            best, best_off = -1, self.base_offset
            for _pos, h in self.iter_headers(0):
                if h.max_timestamp > best:
                    best, best_off = h.max_timestamp, h.last_offset
            ts, off = best, best_off
        self._max_ts = ts
        self._offset_of_max_ts = off

    @property
    def max_timestamp(self) -> int:
        """Largest batch max timestamp in the segment (-1 when empty)."""
        self._ensure_max_ts()
        assert self._max_ts is not None
        return self._max_ts

    @property
    def offset_of_max_timestamp(self) -> int:
        """Last offset of the first batch that reached :attr:`max_timestamp`."""
        self._ensure_max_ts()
        return self._offset_of_max_ts

    def rolling_base_ms(self) -> int:
        """Age reference for time-based rolling: first append time (or, for a segment loaded
        from disk, its first batch's max timestamp, as Kafka does)."""
        if self._rolling_base_ms is None:
            if self.size >= BATCH_HEADER_SIZE:
                h = self.read_header(0)
                if h is not None and h.max_timestamp >= 0:
                    self._rolling_base_ms = h.max_timestamp
                    return h.max_timestamp
            return self._created_ms
        return self._rolling_base_ms

    def can_hold_offset(self, offset: int) -> bool:
        return 0 <= offset - self.base_offset <= _INT32_MAX

    # -- writing ----------------------------------------------------------------------------

    def append(self, data: bytes | bytearray | memoryview, batches: list[BatchHeader],
               *, now_ms: int) -> None:
        """Append whole batches (already carrying their final offsets) and index them."""
        fd = self.fd
        start = self.size
        view = memoryview(data)
        if len(view) >= PREALLOCATE_MIN_BYTES:
            # Exactly the range written: nothing stays allocated past the end (preallocate.py).
            reserve(fd, start, len(view))
        try:
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
        except OSError as e:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise KafkaStorageError(f"cannot append to {self.log_path}: {e}") from e
        self._dirty = True
        if self._rolling_base_ms is None and start == 0:
            self._rolling_base_ms = now_ms
        self._ensure_max_ts()
        assert self._max_ts is not None
        interval = self.config.index_interval_bytes
        position = start
        recent = self._recent
        if len(recent) + len(batches) > _RECENT_BATCHES:
            recent.clear()
        for h in batches:
            recent[h.base_offset] = (position, h)
            if h.max_timestamp > self._max_ts:
                self._max_ts = h.max_timestamp
                self._offset_of_max_ts = h.last_offset
            if self._bytes_since_index > interval:
                self.offset_index.append(h.last_offset, position)
                self.time_index.maybe_append(self._max_ts, self._offset_of_max_ts)
                self._bytes_since_index = 0
            size = h.batch_length + LOG_OVERHEAD
            position += size
            self._bytes_since_index += size
        self.size = position
        self.next_offset = batches[-1].next_offset

    def flush(self) -> None:
        if self._dirty:
            try:
                os.fsync(self.fd)
            except OSError as e:
                raise KafkaStorageError(f"cannot fsync {self.log_path}: {e}") from e
            self._dirty = False
        self.offset_index.flush()
        self.time_index.flush()
        self.txn_index.flush()

    def on_become_inactive(self) -> None:
        """Called when a newer segment takes over: record the final max timestamp in the time
        index (so a clean start-up can trust it) and release the index append handles."""
        self._recent.clear()
        if self.size > 0:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        self.flush()
        self.offset_index.close_handle()
        self.time_index.close_handle()
        self.txn_index.close_handle()

    def close(self, *, sync: bool = True) -> None:
        """Record the final time-index entry and close; without ``sync`` nothing is fsynced
        (the caller syncs the whole filesystem)."""
        if self.size > 0 and self._max_ts is not None:
            self.time_index.maybe_append(self._max_ts, self._offset_of_max_ts)
        if sync:
            self.flush()
        self.offset_index.close_handle()
        self.time_index.close_handle()
        self.txn_index.close_handle()
        self._close_fd()
        self._dirty = False

    def close_handles(self) -> None:
        """Close file descriptors without flushing (used before deleting, or on a segment that
        is already fsynced)."""
        self.offset_index.close_handle()
        self.time_index.close_handle()
        self.txn_index.close_handle()
        self._close_fd()
        self._dirty = False

    def rename_suffix(self, old: str, new: str) -> None:
        """Rename the three files from suffix ``old`` to ``new`` (Kafka's changeFileSuffixes):
        ``.log`` first, then the indexes. A file that is already renamed is skipped, so a
        repeated call after a failure completes the job. Does not fsync the directory."""
        if self.suffix != old:
            raise ValueError(f"{self.log_path}: suffix is {self.suffix!r}, not {old!r}")

        def renamed(path: Path) -> Path:
            return path.with_name(path.name[: len(path.name) - len(old)] + new)

        for path in (self.log_path, self.offset_index.path, self.time_index.path):
            target = renamed(path)
            try:
                os.replace(path, target)
            except FileNotFoundError:
                if not target.exists():
                    raise KafkaStorageError(f"cannot rename {path}: missing") from None
            except OSError as e:
                raise KafkaStorageError(f"cannot rename {path}: {e}") from e
        self.log_path = renamed(self.log_path)
        self.offset_index.path = renamed(self.offset_index.path)
        self.time_index.path = renamed(self.time_index.path)
        # The optional .txnindex goes last; a missing one is simply none.
        self.txn_index.rename(renamed(self.txn_index.path))
        self.suffix = new

    def mark_deleted(self) -> list[Path]:
        """Close and rename every file with a ``.deleted`` suffix; returns the new paths."""
        self.close_handles()
        out = []
        paths = (self.log_path, self.offset_index.path, self.time_index.path, self.txn_index.path)
        for path in paths:
            target = path.with_name(path.name + DELETED_SUFFIX)
            try:
                os.replace(path, target)
                out.append(target)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise KafkaStorageError(f"cannot rename {path}: {e}") from e
        return out

    def truncate_to(self, offset: int, *, log_level: int = logging.WARNING) -> int:
        """Remove every batch whose last offset is >= ``offset`` (as Kafka does, a batch that
        straddles ``offset`` goes entirely); returns the number of bytes removed. Nothing is
        fsynced. ``log_level``: of the line saying what was dropped (a follower's truncation
        is routine and its log says so itself)."""
        found = self.translate_offset(offset) if self.size else None
        self._recent.clear()
        self._located.clear()
        if found is None:
            return 0
        pos = found[0]
        removed = self.size - pos
        # Dropping records is never silent (the partition is the directory's name).
        _log.log(
            log_level,
            "%s: truncating segment %s to offset %d at position %d: %d bytes dropped "
            "(offsets %d to %s)", self.directory.name, self.log_path.name, found[1].base_offset,
            pos, removed, found[1].base_offset,
            self.next_offset - 1 if self.next_offset is not None else "its end",
        )
        try:
            os.ftruncate(self.fd, pos)
        except OSError as e:
            raise KafkaStorageError(f"cannot truncate {self.log_path}: {e}") from e
        self._dirty = True
        self.size = pos
        self.cache_dropped_to = min(self.cache_dropped_to, pos)
        self.offset_index.truncate_to_position(pos)
        self._reload_tail()
        assert self.next_offset is not None
        self.time_index.truncate_to(self.next_offset)
        self._reload_tail()
        self.txn_index.truncate_to(offset)
        if pos == 0:
            self._rolling_base_ms = None
        return removed

    # -- reading ----------------------------------------------------------------------------

    def read_header(self, pos: int) -> BatchHeader | None:
        if pos + BATCH_HEADER_SIZE > self.size:
            return None
        data = os.pread(self.fd, BATCH_HEADER_SIZE, pos)
        if len(data) < BATCH_HEADER_SIZE:
            return None
        return read_batch_header(data)

    def iter_headers(
        self, start_pos: int, end_pos: int | None = None, chunk: int = _SCAN_CHUNK
    ) -> Iterator[tuple[int, BatchHeader]]:
        """Yield (position, header) of trusted batches from ``start_pos`` (a batch boundary).
        Raises :class:`SegmentCorruptError` if the data is not a sequence of batches."""
        end = self.size if end_pos is None else min(end_pos, self.size)
        pos = start_pos
        buf = b""
        buf_start = pos
        while pos < end:
            off = pos - buf_start
            if off < 0 or off + BATCH_HEADER_SIZE > len(buf):
                buf = os.pread(self.fd, max(chunk, BATCH_HEADER_SIZE), pos)
                buf_start = pos
                off = 0
                if len(buf) < BATCH_HEADER_SIZE:
                    raise SegmentCorruptError(self.log_path, pos, "partial batch header")
            h = read_batch_header(buf, off)
            if h.magic != MAGIC:
                raise SegmentCorruptError(self.log_path, pos, f"magic {h.magic}, not {MAGIC}")
            if h.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD:
                raise SegmentCorruptError(
                    self.log_path, pos, f"batch length {h.batch_length} is too small"
                )
            if pos + h.size > end and end_pos is None:
                raise SegmentCorruptError(
                    self.log_path, pos, f"batch of {h.size} bytes runs past the end ({end})"
                )
            yield pos, h
            pos += h.size

    def translate_offset(
        self, offset: int, start_pos: int = 0
    ) -> tuple[int, BatchHeader] | None:
        """The first batch whose last offset is >= ``offset`` -> (position, header)."""
        # Offsets grow along the file: the batch that starts at ``offset`` is the first one
        # whose last offset reaches it.
        hit = self._located.pop(offset, None) or self._recent.get(offset)
        if hit is not None and hit[0] >= start_pos:
            return hit
        _idx_off, pos = self.offset_index.lookup(offset)
        pos = max(pos, start_pos)
        for p, h in self.iter_headers(pos):
            if h.base_offset + h.last_offset_delta >= offset:
                return p, h
        return None

    def read(self, pos: int, max_bytes: int, max_pos: int, min_one: bool) -> bytes:
        """Whole batches starting at ``pos`` (a batch boundary), ending at or before
        ``max_pos``, totalling at most ``max_bytes`` -- except that with ``min_one`` the first
        batch is returned whole even when it is larger."""
        max_pos = min(max_pos, self.size)
        want = min(max_bytes, max_pos - pos)
        data = os.pread(self.fd, want, pos) if want >= LOG_OVERHEAD else b""
        end = 0
        n = len(data)
        if n > 2 * LOG_OVERHEAD:
            # Skip the walk over batches the offset index already vouches for.
            boundary = self.offset_index.floor_position(pos + n)
            if boundary > pos:
                end = boundary - pos
        while end + LOG_OVERHEAD <= n:
            size = read_batch_size(data, end)
            if end + size > n:
                break
            if not _plausible(data, end, size):
                if end == 0:
                    self._raise_corrupt(data, 0, pos)
                break  # serve the good batches before it; the next read starts at it
            end += size
        if end == 0:
            if not min_one or max_pos - pos < LOG_OVERHEAD:
                return b""
            head = data if len(data) >= BATCH_HEADER_SIZE else os.pread(
                self.fd, BATCH_HEADER_SIZE, pos
            )
            size = read_batch_size(head)
            if not _plausible(head, 0, size) or pos + size > self.size:
                self._raise_corrupt(head, 0, pos)
            return os.pread(self.fd, min(size, max_pos - pos), pos)
        return data if end == n else data[:end]

    def _raise_corrupt(self, data: bytes, off: int, pos: int) -> NoReturn:
        """Raise SegmentCorruptError for the implausible batch at ``data[off:]`` (file
        position ``pos``), saying which field is wrong."""
        if len(data) - off < BATCH_HEADER_SIZE:
            reason = "partial batch header"
        elif data[off + _MAGIC_AT] != MAGIC:
            magic = int.from_bytes(data[off + _MAGIC_AT : off + _MAGIC_AT + 1], signed=True)
            reason = f"magic {magic}, not {MAGIC}"
        else:
            size = read_batch_size(data, off)
            reason = f"batch of {size} bytes does not fit the segment ({self.size} bytes)"
        raise SegmentCorruptError(self.log_path, pos, reason)

    def locate(self, pos: int, max_bytes: int, max_pos: int, min_one: bool) -> tuple[int, int]:
        """What :meth:`read` would return, found from batch headers without reading the
        records: ``(size, next_offset)``, where ``next_offset`` follows the last batch included
        ((0, -1) when none is). The walk starts at the offset index's last entry before the
        limit, so it reads a few headers whatever the size. When that entry's batch is the
        first one left out, ``next_offset`` is its base offset: exact for a contiguous log, and
        for a compacted one an upper bound past a gap that holds no records (as Kafka's
        fetchUpperBoundOffset, it only bounds the aborted transactions listed)."""
        max_pos = min(max_pos, self.size)
        limit = pos + max(0, min(max_bytes, max_pos - pos))
        start = pos
        if limit - pos > 2 * LOG_OVERHEAD:
            start = max(pos, self.offset_index.floor_position(limit - 1))
        end, next_offset = start, -1
        for p, h in self.iter_headers(start, max_pos):
            if p + h.size > limit:
                if end > pos and next_offset < 0:
                    next_offset = h.base_offset
                if p == end:  # the batch the reader asks for next
                    located = self._located
                    if len(located) >= _LOCATED_BATCHES:
                        located.clear()
                    located[h.base_offset] = (p, h)
                break
            end, next_offset = p + h.size, h.next_offset
        if end > pos:
            return end - pos, next_offset
        if not min_one or max_pos - pos < BATCH_HEADER_SIZE:
            return 0, -1
        first = self.read_header(pos)
        if first is None:
            return 0, -1
        # A first batch that cannot be whole is damage, not a batch to send in part.
        if first.magic != MAGIC:
            raise SegmentCorruptError(self.log_path, pos, f"magic {first.magic}, not {MAGIC}")
        if pos + first.size > self.size:
            raise SegmentCorruptError(
                self.log_path, pos,
                f"batch of {first.size} bytes does not fit the segment ({self.size} bytes)",
            )
        return min(first.size, max_pos - pos), first.next_offset

    def read_range(self, pos: int, size: int) -> bytes:
        """``size`` bytes at ``pos``, as :meth:`locate` found them."""
        return os.pread(self.fd, size, pos) if size > 0 else b""

    def read_batch(self, pos: int, header: BatchHeader) -> bytes:
        return os.pread(self.fd, header.size, pos)

    def find_offset_by_timestamp(
        self, timestamp: int, start_offset: int
    ) -> TimestampAndOffset | None:
        """Earliest record at or after ``start_offset`` with timestamp >= ``timestamp``."""
        _ts, ts_offset = self.time_index.lookup(timestamp)
        _off, pos = self.offset_index.lookup(max(ts_offset, start_offset))
        for p, h in self.iter_headers(pos):
            if h.max_timestamp >= timestamp and h.last_offset >= start_offset:
                for r in decode_records(self.read_batch(p, h)):
                    if r.timestamp >= timestamp and r.offset >= start_offset:
                        return TimestampAndOffset(r.timestamp, r.offset, h.partition_leader_epoch)
        return None

    # -- start-up ---------------------------------------------------------------------------

    def sanity_check(self) -> None:
        """Clean start-up check of the index files; raises CorruptIndexError."""
        if not self.offset_index.path.exists() or not self.time_index.path.exists():
            raise CorruptIndexError(f"{self.log_path}: index file missing")
        self.offset_index.sanity_check(self.size)
        self.time_index.sanity_check()
        self.txn_index.sanity_check()

    def load_tail(self) -> None:
        """Learn ``next_offset`` and the tail's statistics by scanning the batches after the
        last offset-index entry (a few KB). Raises SegmentCorruptError/CorruptIndexError."""
        self._reload_tail()

    def _reload_tail(self) -> None:
        last_off, pos = self.offset_index.last_entry()
        if pos >= self.size and pos > 0:
            raise CorruptIndexError(f"{self.offset_index.path}: points past the log")
        ts, ts_off = self.time_index.last_entry()
        next_offset = self.base_offset
        max_ts, max_off = ts, ts_off
        first = True
        for _p, h in self.iter_headers(pos):
            if first and pos > 0 and h.last_offset != last_off:
                raise CorruptIndexError(f"{self.offset_index.path}: last entry disagrees")
            first = False
            next_offset = h.next_offset
            if h.max_timestamp > max_ts:
                max_ts, max_off = h.max_timestamp, h.last_offset
        self.next_offset = next_offset
        self._max_ts = max_ts
        self._offset_of_max_ts = max_off
        self._bytes_since_index = self.size - pos

    def recover(
        self,
        min_base_offset: int,
        on_batch: Callable[[BatchHeader], None] | None = None,
        *,
        contiguous: bool = True,
        on_truncate: Callable[[int, int], None] | None = None,
    ) -> int:
        """Re-validate every batch, rebuild both indexes, truncate at the first invalid byte.

        A batch is valid when its header is complete, magic is 2, it lies wholly in the file,
        its CRC32C matches, its offsets do not go backwards (the first must be >=
        ``min_base_offset`` and the segment's base offset) and fit the segment's 32-bit
        relative offsets. With ``contiguous`` (any log that is not compacted) each batch must
        start exactly where the previous one ended, the first at the segment's base offset,
        which also catches damage to the base offset field (outside the CRC). Returns the
        number of bytes truncated, having called ``on_truncate(position, file size)`` first
        (while the bytes are still there, so the caller can say what it drops). The
        ``.txnindex`` is emptied: its entries depend on the producer state before the
        segment, so the owner rebuilds them while replaying it.
        """
        try:
            file_size = os.fstat(self.fd).st_size
        except OSError as e:
            raise KafkaStorageError(f"cannot stat {self.log_path}: {e}") from e
        self.offset_index.create()
        self.time_index.create()
        self.txn_index.reset()
        self._recent.clear()
        self._located.clear()
        self.size = 0
        self._max_ts = -1
        self._offset_of_max_ts = self.base_offset
        self._bytes_since_index = 0
        self._rolling_base_ms = None
        expected = max(self.base_offset, min_base_offset)
        next_offset = self.base_offset
        interval = self.config.index_interval_bytes
        buf = b""
        buf_start = 0
        pos = 0
        while pos + BATCH_HEADER_SIZE <= file_size:
            off = pos - buf_start
            if off + BATCH_HEADER_SIZE > len(buf):
                buf = os.pread(self.fd, _RECOVER_CHUNK, pos)
                buf_start, off = pos, 0
            h = read_batch_header(buf, off)
            size = h.batch_length + LOG_OVERHEAD
            if (
                h.magic != MAGIC
                or size < BATCH_HEADER_SIZE
                or pos + size > file_size
                or h.last_offset_delta < 0
                or h.base_offset < expected
                or (contiguous and h.base_offset != expected)
                or h.last_offset - self.base_offset > _INT32_MAX
            ):
                break
            if off + size <= len(buf):
                ok = batch_crc_ok(buf, off, h)
            else:
                whole = os.pread(self.fd, size, pos)
                ok = len(whole) == size and batch_crc_ok(whole, 0, h)
            if not ok:
                break
            if h.max_timestamp > self._max_ts:
                self._max_ts = h.max_timestamp
                self._offset_of_max_ts = h.last_offset
            if self._bytes_since_index > interval:
                self.offset_index.append(h.last_offset, pos)
                self.time_index.maybe_append(self._max_ts, self._offset_of_max_ts)
                self._bytes_since_index = 0
            self._bytes_since_index += size
            if on_batch is not None:
                on_batch(h)
            expected = next_offset = h.next_offset
            pos += size
        truncated = file_size - pos
        if truncated > 0:
            if on_truncate is not None:
                on_truncate(pos, file_size)
            try:
                os.ftruncate(self.fd, pos)
            except OSError as e:
                raise KafkaStorageError(f"cannot truncate {self.log_path}: {e}") from e
            self._dirty = True
        self.size = pos
        self.next_offset = next_offset
        return truncated
