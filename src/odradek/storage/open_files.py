"""A bounded, least-recently-used set of open segment files (``log.max.open.files``).

A broker's descriptors must not grow with its partitions: every segment's ``.log`` handle and
the append handles of its ``.index``, ``.timeindex`` and ``.txnindex`` are opened on demand and
registered here; when more than :attr:`OpenFileCache.capacity` are open, the least recently used
one is closed. Its owner reopens it on next use (``O_APPEND`` puts later writes at the end of
the file wherever the old handle was). Closing needs no fsync: the bytes are in the page cache
and fsync applies to the file, so a later flush through a new handle makes them durable, and
the owner keeps its "dirty" flag across the eviction.

Owned by the :class:`~odradek.storage.log_manager.LogManager` and used only on its thread (the
broker's event loop); the log cleaner's worker builds its segments outside the cache. Callers
use a descriptor only until their next call into another cached file: never hold one across
such a call (the eviction could close it, and the number could be reused).
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict
from typing import Protocol

__all__ = ["CachedFile", "OpenFileCache", "default_max_open_files", "open_cached"]

#: Descriptors ``default_max_open_files`` leaves to everything else (connections, checkpoints,
#: directory fsyncs, the cleaner's reads, Python itself), as a share of RLIMIT_NOFILE.
_SHARE_FOR_SEGMENTS = 0.25
_MIN_OPEN_FILES = 16
_MAX_DEFAULT_OPEN_FILES = 4096


def default_max_open_files() -> int:
    """``log.max.open.files`` when not set: a quarter of the soft RLIMIT_NOFILE, between 16 and
    4,096, leaving the rest for connections and short-lived files."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_DEFAULT_OPEN_FILES
    return max(_MIN_OPEN_FILES, min(_MAX_DEFAULT_OPEN_FILES, int(soft * _SHARE_FOR_SEGMENTS)))


class CachedFile(Protocol):
    """Something holding one descriptor that the cache may close (see the module docstring)."""

    def evict(self) -> None:
        """Close the descriptor without flushing; reopen on next use."""


class OpenFileCache:
    """The LRU of open files; see the module docstring for the contract."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._open: OrderedDict[CachedFile, None] = OrderedDict()
        self.opened = 0  # files registered since creation (a reopen counts again)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._open)

    def add(self, file: CachedFile) -> None:
        """``file`` has just opened its descriptor: make room (closing the least recently used
        others) and record it as the most recently used."""
        while len(self._open) >= self.capacity:
            victim, _ = self._open.popitem(last=False)
            self.evicted += 1
            victim.evict()
        self._open[file] = None
        self.opened += 1

    def touch(self, file: CachedFile) -> None:
        """``file`` was used: it becomes the most recently used."""
        try:
            self._open.move_to_end(file)
        except KeyError:
            pass

    def remove(self, file: CachedFile) -> None:
        """``file`` closed its descriptor itself."""
        self._open.pop(file, None)


def open_cached(path: os.PathLike[str] | str, flags: int, cache: OpenFileCache | None,
                owner: CachedFile, mode: int = 0o644) -> int:
    """Open ``path`` for ``owner``, registered in ``cache`` (room is made before the open, so a
    full cache never pushes the process over its limit). Raises OSError."""
    if cache is None:
        return os.open(path, flags, mode)
    cache.add(owner)
    try:
        return os.open(path, flags, mode)
    except BaseException:
        cache.remove(owner)
        raise
