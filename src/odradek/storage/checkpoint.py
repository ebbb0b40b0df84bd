"""Small crash-safe files: atomic replace and Kafka's text checkpoint format.

Kafka's checkpoint files are text::

    <version>\\n
    <entry count>\\n
    <entry>\\n ...

Every write goes to ``<name>.tmp``, is fsynced, renamed over ``<name>`` and the directory is
fsynced, so a crash leaves either the old file or the new one (plus possibly a stray ``.tmp``,
which partition start-up deletes). A file that exists but cannot be parsed (disk damage, or
a hand edit) is treated as missing; callers that say what they do instead get it logged once
at WARNING.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

from odradek.errors import KafkaStorageError

__all__ = [
    "TMP_SUFFIX",
    "atomic_write",
    "fsync_dir",
    "sync_filesystem",
    "write_checkpoint",
    "read_checkpoint",
    "write_offset_checkpoint",
    "read_offset_checkpoint",
    "warn_damaged",
]

TMP_SUFFIX = ".tmp"

log = logging.getLogger("odradek.storage")


def fsync_dir(directory: Path) -> None:
    """Make renames and creations inside ``directory`` durable (best effort on odd filesystems)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return libc.syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def sync_filesystem(directory: Path) -> None:
    """Make everything written to the filesystem holding ``directory`` durable: Linux's
    ``syncfs`` (one call instead of an fsync per file, for shutting down thousands of logs), or
    ``os.sync`` where it is missing. Raises KafkaStorageError on a write-back error."""
    if _syncfs is None:
        os.sync()
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as e:
        raise KafkaStorageError(f"cannot open {directory}: {e}") from e
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise KafkaStorageError(f"cannot sync {directory}: {os.strerror(err)}")
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, sync: bool = True) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync:
            fsync_dir(path.parent)
    except OSError as e:
        raise KafkaStorageError(f"cannot write {path}: {e}") from e


def write_checkpoint(path: Path, version: int, entries: list[str], *, sync: bool = True) -> None:
    """Atomically replace ``path``; without ``sync`` the caller makes it durable later."""
    text = f"{version}\n{len(entries)}\n" + "".join(f"{e}\n" for e in entries)
    atomic_write(path, text.encode("utf-8"), sync=sync)


def read_checkpoint(
    path: Path, version: int, *, if_damaged: str | None = None
) -> list[str] | None:
    """The entry lines, or None when the file is missing or malformed. With ``if_damaged``
    (what the caller does instead), a malformed or unreadable file is logged at WARNING."""
    entries, why = _parse_checkpoint(path, version)
    if why is not None and if_damaged is not None:
        warn_damaged(path, why, if_damaged)
    return entries


def warn_damaged(path: Path, why: str, instead: str) -> None:
    """The one log line for a damaged checkpoint: which file, what is wrong, what happens."""
    log.warning("%s is damaged (%s): %s", path, why, instead)


def _parse_checkpoint(path: Path, version: int) -> tuple[list[str] | None, str | None]:
    """(entries, None), (None, None) for a missing file, or (None, why it is malformed)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable: {e}"
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        return None, f"{len(lines)} lines, a header needs 2"
    try:
        if int(lines[0]) != version:
            return None, f"version {lines[0]!r}, expected {version}"
        count = int(lines[1])
    except ValueError:
        return None, f"malformed header {lines[:2]!r}"
    entries = lines[2:]
    if count != len(entries):
        return None, f"{len(entries)} entries where the header says {count}"
    return entries, None


def write_offset_checkpoint(
    path: Path, topic: str, partition: int, offset: int, *, sync: bool = True
) -> None:
    """One-partition version of Kafka's ``<topic> <partition> <offset>`` checkpoint (version 0)."""
    write_checkpoint(path, 0, [f"{topic} {partition} {offset}"], sync=sync)


def read_offset_checkpoint(path: Path, *, if_damaged: str | None = None) -> int | None:
    """The offset of a one-partition checkpoint; None when missing or malformed (logged at
    WARNING with ``if_damaged``, see :func:`read_checkpoint`)."""
    entries = read_checkpoint(path, 0, if_damaged=if_damaged)
    if not entries:
        return None
    parts = entries[0].split(" ")
    try:
        if len(parts) != 3:
            raise ValueError(entries[0])
        return int(parts[2])
    except ValueError:
        if if_damaged is not None:
            warn_damaged(path, f"malformed entry {entries[0]!r}", if_damaged)
        return None
