"""Reserving the disk blocks of a large append before writing it (Linux ``fallocate(2)``).

A buffered ``write`` to the end of a file on ext4 (delayed allocation) reserves space block by
block as it copies each page in; the blocks themselves are chosen later, when the page cache is
written back. Asking for the whole range first, with ``FALLOC_FL_KEEP_SIZE``, allocates it as
one unwritten extent in one call, and the ``write`` then only copies. On the benchmark VM (ext4),
the ``write`` plus the page-cache trimmer's ``fdatasync`` and drop of a 1 MB append took 300 ->
238 us of CPU, and a whole Produce request through the dispatcher (``bench/preallocate_ab.py``:
process CPU, alternating blocks with and without the reservation) about 13% less for 1 MB
batches (0.73-1.03 over ten runs on a shared machine, median 0.87) and 8% less for 500 KB
(0.81-1.02); 256 KB came out even (0.92, 1.03), and smaller appends cost more (128 KB: 1.10,
1.19; 16-64 KB: 1.14-1.20), the extra system call costing more than it saves: hence
:data:`PREALLOCATE_MIN_BYTES`.

``KEEP_SIZE`` leaves the file's size alone, and the range reserved is exactly the range the
append then writes, so the file holds what it held before, byte for byte: nothing is allocated
past its end once the write is done (if the write fails, the segment truncates the file back,
which releases the range too). Where the call is missing or the filesystem does not support it
(``EOPNOTSUPP``, ``ENOSYS``), :func:`reserve` stops trying for the rest of the process; any
other failure (``ENOSPC``) only skips the reservation: the ``write`` decides.

Called from :meth:`odradek.storage.segment.LogSegment.append`: on the event loop, and on the
cleaner's worker thread for the segments it builds. The switch that turns it off is
process-wide, one assignment, and only ever goes one way.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import sys
from collections.abc import Callable

__all__ = ["PREALLOCATE_MIN_BYTES", "reserve", "supported"]

_log = logging.getLogger("odradek.storage")

#: Appends at least this large reserve their blocks first.
PREALLOCATE_MIN_BYTES = 256 * 1024

_FALLOC_FL_KEEP_SIZE = 0x01
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.ENODEV)


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_fallocate = _load()


def supported() -> bool:
    """Whether :func:`reserve` still calls ``fallocate`` in this process."""
    return _fallocate is not None


def reserve(fd: int, offset: int, length: int) -> bool:
    """Allocate the blocks of ``[offset, offset + length)`` of ``fd`` without changing its
    size; returns whether it did. Never raises."""
    global _fallocate
    fn = _fallocate
    if fn is None or length <= 0:
        return False
    if fn(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        _fallocate = None
        _log.info("fallocate is not supported here (%s): appends are written without "
                  "reserving their blocks first", errno.errorcode.get(err, err))
    return False
