"""A slice of a segment file holding whole record batches, to be sent without reading it.

Kafka serves fetches from ``FileRecords`` slices that go to the socket with ``sendfile``; this is
the same idea. A :class:`FileRecords` holds its own file descriptor of the segment's ``.log``
file, taken when the read happens (a duplicate of the segment's, :meth:`FileRecords.share`: no
path lookup), so the bytes it describes stay readable however the log changes before they are
sent: a segment deleted by retention or swapped out by the cleaner is
only unlinked, and an open descriptor keeps an unlinked file's data. Only a truncation of the
same file (recovery of a torn tail, which happens at start-up) can make it shorter than promised;
whoever sends it must then check what it actually sent (see ``broker/connection.py``).

Ownership: created by :meth:`odradek.storage.log.PartitionLog.fetch` on the event loop and handed
to whoever builds the response; from then on the holder owns the descriptor and must
:meth:`close` it once sent or dropped. A finalizer closes it if the holder forgets (a response
dropped by an exception), so descriptors never leak, only linger until collection.
"""

from __future__ import annotations

import os
from pathlib import Path

from odradek.errors import KafkaStorageError

__all__ = ["FileRecords"]


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class FileRecords:
    """``size`` bytes of whole batches at ``position`` of a segment file, ending before offset
    ``next_offset``. Not thread-safe; see the module docstring for ownership."""

    __slots__ = ("fd", "position", "size", "next_offset", "path", "_open", "__weakref__")

    def __init__(self, fd: int, position: int, size: int, next_offset: int, path: Path) -> None:
        self.fd = fd
        self.position = position
        self.size = size
        self.next_offset = next_offset
        self.path = path
        self._open = True

    def __del__(self) -> None:
        # The finalizer of a slice dropped unclosed (an exception on its way to the socket).
        # A method, not a weakref.finalize per slice: a fetch makes one or more of these.
        if getattr(self, "_open", False):
            self._open = False
            _close_fd(self.fd)

    @classmethod
    def open(cls, path: Path, position: int, size: int, next_offset: int) -> FileRecords:
        """Open ``path`` read-only for the region; KafkaStorageError if it cannot be opened."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise KafkaStorageError(f"cannot open {path} for a fetch: {e}") from e
        return cls(fd, position, size, next_offset, path)

    @classmethod
    def share(cls, fd: int, path: Path, position: int, size: int, next_offset: int) -> FileRecords:
        """The region of the file open as ``fd`` (the segment's own descriptor of ``path``),
        through a duplicate of it that the region owns; KafkaStorageError if the process is out
        of descriptors. The duplicate reads the file ``fd`` has open whatever happens to
        ``path`` later, as a descriptor opened now would; reads give their position, so the
        offset the two share does not matter."""
        try:
            dup = os.dup(fd)
        except OSError as e:
            raise KafkaStorageError(f"cannot open {path} for a fetch: {e}") from e
        return cls(dup, position, size, next_offset, path)

    def __len__(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return not self._open

    def close(self) -> None:
        """Release the file descriptor (idempotent)."""
        if self._open:
            self._open = False
            _close_fd(self.fd)

    def read_all(self) -> bytes:
        """The region's bytes, read into memory: for tests and the rare caller that needs them.
        Raises KafkaStorageError if the file no longer holds them all."""
        if self.closed:
            raise ValueError("FileRecords is closed")
        try:
            data = os.pread(self.fd, self.size, self.position)
        except OSError as e:
            raise KafkaStorageError(f"cannot read {self.path}: {e}") from e
        if len(data) != self.size:
            raise KafkaStorageError(
                f"{self.path}: {len(data)} of {self.size} bytes at {self.position} remain"
            )
        return data

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fd}"
        return f"FileRecords({self.path.name}@{self.position}+{self.size}, {state})"
