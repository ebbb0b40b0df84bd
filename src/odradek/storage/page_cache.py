"""Drop-behind: old bytes of the segments being appended to leave the OS page cache.

Every byte appended to a segment lands in a page of the OS page cache, and Linux keeps the
page after it is written back for as long as memory is free. A broker that takes a steady
stream of records therefore asks the kernel for new pages all the time, and never gives any
back while the machine has free memory. On the VM the benchmarks run on (Firecracker, whose
kernel reports free memory to the host: virtio-balloon free page reporting), new pages are
dear, apparently because each faults on the host first: appending 1 MB took 0.2 ms while
recently freed pages were around and 2-2.5 ms once they were not (a plain loop of ``os.write``
shows it after about 1.5 GB), and the broker's CPU per record quadrupled
(``bench/run.py --only vsmock``, issue 11).

:class:`PageCacheTrimmer` keeps the last ``retain_bytes`` of each segment in the page cache and
drops what lies before them, in steps of ``step_bytes``: once a segment has grown
``retain_bytes + step_bytes`` past the point it was last dropped to, its worker thread writes
the file back (``fdatasync``) and advises the kernel that its bytes up to ``retain_bytes``
before the end are not needed (``POSIX_FADV_DONTNEED``). The pages freed that way are the ones
the next appends get, so writing recycles the same few megabytes of memory. The cost is that a
reader of older bytes (a consumer catching up from further back than ``retain_bytes``) reads
them from the disk, as it would after the kernel had evicted them; consumers at the tail and
followers in sync read within the retained window.

Nothing here changes what a log holds or when it is durable: the ``fdatasync`` only makes
bytes durable earlier than the flush policy would (the recovery point is not moved, so a
restart after a crash recovers as before), and dropping a clean page loses nothing. The worker
opens the file itself by path, read-only, so the log's open-file cache may close or reopen the
segment's descriptor meanwhile; a segment deleted or renamed (retention, the cleaner's swap)
before the worker gets to it is skipped, and a range past a truncated end is harmless.

Owned by the :class:`~odradek.storage.log_manager.LogManager`: :meth:`note_append` is called on
the event loop after each append (it only compares two integers and, once per step, queues a
path), the worker thread only makes system calls. The thread starts with the first step
queued (the deterministic simulation configures no trimmer, so it runs no thread).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from odradek.storage.segment import LogSegment

__all__ = ["PageCacheTrimmer", "DEFAULT_RETAIN_BYTES", "DEFAULT_STEP_BYTES"]

_log = logging.getLogger("odradek.storage")

#: Bytes at the end of each segment left in the page cache (``log.page.cache.retain.bytes``).
DEFAULT_RETAIN_BYTES = 64 * 1024 * 1024
#: Bytes dropped at a time: one ``fdatasync`` and one ``posix_fadvise`` per this many appended.
DEFAULT_STEP_BYTES = 16 * 1024 * 1024

_STOP = None
#: ``posix_fadvise`` and ``fdatasync`` are Linux's (and some other systems'); not macOS's.
_SUPPORTED = hasattr(os, "posix_fadvise") and hasattr(os, "fdatasync")


class PageCacheTrimmer:
    """Writes back and drops from the page cache all but the last ``retain_bytes`` of each
    segment appended to (see the module docstring)."""

    def __init__(self, retain_bytes: int = DEFAULT_RETAIN_BYTES,
                 step_bytes: int = DEFAULT_STEP_BYTES) -> None:
        if retain_bytes < 0 or step_bytes <= 0:
            raise ValueError(f"retain_bytes {retain_bytes} and step_bytes {step_bytes}")
        self.retain_bytes = retain_bytes
        self.step_bytes = step_bytes
        self._queue: queue.SimpleQueue[tuple[Path, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Steps queued and steps done (written back and dropped, or skipped: file gone).
        self.queued = 0
        self.done = 0
        self._progress = threading.Condition()

    def note_append(self, seg: LogSegment) -> None:
        """``seg`` has grown (event loop): queue a step once it has grown enough."""
        end = seg.size - self.retain_bytes
        if end - seg.cache_dropped_to < self.step_bytes or self._closed:
            return
        seg.cache_dropped_to = end
        if self._thread is None:
            # Advice to the kernel only: where it cannot be given, or no thread can start, the
            # trimmer turns itself off rather than fail the append that called it.
            if not _SUPPORTED:
                self._closed = True
                return
            thread = threading.Thread(target=self._run, name="odradek-page-cache", daemon=True)
            try:
                thread.start()
            except RuntimeError as e:
                _log.warning("page-cache drop-behind turned off: %s", e)
                self._closed = True
                return
            self._thread = thread
        self.queued += 1
        self._queue.put((seg.log_path, end))

    def wait_done(self, timeout: float) -> bool:
        """Wait until every step queued so far is done; False at ``timeout`` seconds (tests)."""
        target = self.queued
        with self._progress:
            return self._progress.wait_for(lambda: self.done >= target, timeout)

    def close(self) -> None:
        """Stop the worker; steps still queued are dropped (nothing depends on them)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._closed:
                return
            path, end = item
            try:
                drop_behind(path, end)
            except FileNotFoundError:  # deleted or renamed meanwhile: nothing to drop
                pass
            except OSError as e:  # advisory, but a failing write-back must not pass unseen
                _log.warning("writing back %s up to %d to drop it from the page cache: %s",
                             path, end, e)
            except Exception:  # never the end of the worker: later steps still run
                _log.exception("dropping %s up to %d from the page cache", path, end)
            with self._progress:
                self.done += 1
                self._progress.notify_all()


def drop_behind(path: Path, end: int) -> None:
    """Write ``path`` back and drop its bytes before ``end`` from the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, end, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
