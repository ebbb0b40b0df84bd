"""All partition logs of one broker in one data directory (Kafka's LogManager, one log dir).

Owned by the broker's event-loop thread. It knows only directories: ``<topic>-<partition>``
folders are partition logs, ``<topic>-<partition>.<hex>-delete`` folders are deleted partitions
whose removal did not finish (removed at start-up), anything else is left alone (e.g. the
broker's metadata store). Topic metadata and configs live elsewhere; the broker passes configs.

The clean-shutdown marker ``.kafka_cleanshutdown`` (an empty file in the data directory) is
written, fsynced, as the very last step of :meth:`shutdown`, after every log was closed. At
:meth:`startup` its absence means the previous run crashed, so every log is opened with
recovery; the marker is deleted once all logs are open, so a crash from then on is detected.
Without the marker and without any partition log there is nothing to recover: start-up reports
a new data directory, not an unclean shutdown.

**Lazy opening.** ``startup(lazy=True)`` (what the broker does) only lists the partition
directories: a log is opened (and, after an unclean shutdown, recovered) on first use
(:meth:`get_log`) or by :meth:`open_pending`, which the broker calls in slices after it starts
serving, so start-up time and memory do not grow with the number of partitions. Until then a
partition costs a dictionary entry. A clean shutdown with partitions still waiting for recovery
writes no marker: they are recovered on the next start.

**Shutdown** closes every log without an fsync per file: one ``syncfs`` of the data directory's
filesystem first makes everything appended durable, then the logs write their final index
entries, producer snapshots and checkpoints (unchanged checkpoints are not rewritten), a second
``syncfs`` makes those durable, and only then is the marker written. A crash at any point before
the marker leaves checkpoints that are old or new but never ahead of durable data.

**Lock.** :class:`DataDirLock` (``.lock``, an ``flock``) keeps a second broker process off a data
directory in use: a broker starting while the previous one was still shutting down deleted the
``.tmp`` files of checkpoints being written (start-up removes them as crash leftovers).

**High watermarks.** ``replication-offset-checkpoint`` in the data directory (Kafka's name and
text format, version 0)::

    0
    <number of entries>
    <topic> <partition> <high watermark>
    ...

holds every partition's high watermark, so that a restarted replica neither exposes records
that were never committed nor hides committed ones until its leader says so again. It is
replaced atomically (``.tmp``, fsync, rename, fsync of the directory) by
:meth:`LogManager.checkpoint_high_watermarks`: every
``replica.high.watermark.checkpoint.interval.ms`` when a value changed (the broker takes the
values on the event loop with :meth:`LogManager.due_high_watermark_checkpoint` and writes them
in a worker thread, as Kafka's scheduler thread does: the two fsyncs took 4-13 ms on ext4 under
load, a stall of every request), and at shutdown before the clean-shutdown marker. One write at
a time (a lock), and never an older set of values over a newer one. A crash leaves the previous or the new file;
either may lag the logs (the high watermark only grows while a partition lives, so a lagging
value is merely conservative). Opening a log starts it at ``min(checkpoint, log end offset)``;
a data directory without the file (written before replication, when a partition had one
replica and its high watermark was its log end; a new directory writes the empty file at its
first start, so that a crash before the first checkpoint is not taken for one) starts every
partition at its log end offset,
but a partition missing from an existing file (created within the interval before a crash)
starts at its log start offset, as in Kafka, until its leader moves it; a damaged file starts every log found at its log start offset (its leader or its ISR
moves it up again) and says so at WARNING. Entries of partitions not opened yet are carried
over into each new file; those of deleted partitions are dropped.

Compaction: :attr:`LogManager.cleaner` is the :class:`~odradek.storage.cleaner.LogCleaner` of
these logs. :meth:`clean_once` runs one whole pass inline; a broker with a cleaner thread instead
calls ``cleaner.grab_filthiest(now)`` here, ``task.run()`` on the thread and
``cleaner.complete(task)`` back here (see cleaner.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from odradek.clock import Clock
from odradek.errors import KafkaStorageError
from odradek.storage.checkpoint import (
    fsync_dir,
    read_checkpoint,
    sync_filesystem,
    warn_damaged,
    write_checkpoint,
)
from odradek.storage.cleaner import CleanerConfig, CleanResult, LogCleaner
from odradek.storage.health import os_error_of
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.open_files import OpenFileCache, default_max_open_files
from odradek.storage.page_cache import PageCacheTrimmer

__all__ = [
    "CLEAN_SHUTDOWN_FILE",
    "HIGH_WATERMARK_CHECKPOINT",
    "LOCK_FILE",
    "DataDirLock",
    "LogManager",
    "parse_partition_dir",
    "partition_dir_name",
]

CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
LOCK_FILE = ".lock"
HIGH_WATERMARK_CHECKPOINT = "replication-offset-checkpoint"
#: ``replica.high.watermark.checkpoint.interval.ms``'s default.
DEFAULT_HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS = 5000

_PARTITION_DIR = re.compile(r"^([A-Za-z0-9._-]+)-(\d+)$")
_DELETED_DIR = re.compile(r"^[A-Za-z0-9._-]+-\d+\.[0-9a-f]+-delete$")

log = logging.getLogger("odradek.storage")

ConfigSource = Callable[[str], LogConfig | None] | Mapping[str, LogConfig] | None


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def parse_partition_dir(name: str) -> tuple[str, int] | None:
    m = _PARTITION_DIR.match(name)
    if m is None:
        return None
    return m.group(1), int(m.group(2))


class DataDirLock:
    """An exclusive ``flock`` on ``<data dir>/.lock`` (Kafka's log directory lock), held by one
    broker process from start to stop. Owned by whoever created it; :meth:`release` is
    idempotent, and the kernel drops the lock when the process dies."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        path = Path(data_dir) / LOCK_FILE
        try:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise KafkaStorageError(f"cannot create {path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            raise KafkaStorageError(
                f"data directory {data_dir} is in use by another process (cannot lock {path}: "
                f"{e.strerror})"
            ) from e
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class LogManager:
    """Opens, creates, deletes and maintains the :class:`PartitionLog` s of a data directory."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        clock: Clock,
        default_config: LogConfig,
        *,
        cleaner_config: CleanerConfig | None = None,
        cleaner_sleep: Callable[[float], None] | None = None,
        cleaner_cpu_time: Callable[[], float] | None = None,
        max_open_files: int | None = None,
        high_watermark_checkpoint_interval_ms: int = (
            DEFAULT_HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS
        ),
        page_cache_retain_bytes: int | None = None,
    ) -> None:
        """``max_open_files`` is ``log.max.open.files`` (None: derived from RLIMIT_NOFILE,
        see :func:`~odradek.storage.open_files.default_max_open_files`);
        ``page_cache_retain_bytes`` is ``log.page.cache.retain.bytes`` (None: the page cache
        is left to the OS; see :mod:`odradek.storage.page_cache`);
        ``high_watermark_checkpoint_interval_ms`` is
        ``replica.high.watermark.checkpoint.interval.ms``."""
        self.data_dir = Path(data_dir)
        #: Every segment file the logs hold open, least recently used closed first.
        self.open_files = OpenFileCache(max_open_files or default_max_open_files())
        #: Drops all but the tail of the segments appended to from the page cache.
        self.cache_trimmer = (
            PageCacheTrimmer(page_cache_retain_bytes)
            if page_cache_retain_bytes is not None else None
        )
        self.clock = clock
        self.default_config = default_config
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        # Partition directories found at start-up and not opened yet -> whether they need
        # recovery (see "Lazy opening" in the module docstring).
        self._unopened: dict[tuple[str, int], bool] = {}
        # Of those, the ones open_pending failed to open (not retried in the background).
        self._failed: set[tuple[str, int]] = set()
        self._configs: ConfigSource = None
        self._topic_configs: dict[str, LogConfig] = {}
        self.had_clean_shutdown = False
        # High watermarks read from the checkpoint at start-up, for the logs not opened yet.
        self._checkpointed_hws: dict[tuple[str, int], int] = {}
        # What the checkpoint file holds now (None: unknown, so the next write happens).
        self._written_hws: dict[tuple[str, int], int] | None = None
        #: Held while the checkpoint file is written (a worker thread or the event loop).
        self._hw_write_lock = threading.Lock()
        #: Bumped each time values are taken for a write: a write whose values were taken
        #: before another's (it waited for the lock) is skipped, so the file never goes back.
        self._hw_generation = 0
        self.high_watermark_checkpoint_interval_ms = high_watermark_checkpoint_interval_ms
        self._next_hw_checkpoint_ms: int | None = None
        self.cleaner = LogCleaner(
            self.all_logs, cleaner_config or CleanerConfig(), clock, sleep=cleaner_sleep,
            cpu_time=cleaner_cpu_time,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def startup(self, configs: ConfigSource = None, *, lazy: bool = False) -> None:
        """Open every partition directory (recovering if the last shutdown was unclean), or with
        ``lazy`` only list them (see the module docstring).

        ``configs`` gives a topic's LogConfig (a callable or a mapping; None or a missing
        topic means the default config)."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KafkaStorageError(f"cannot create {self.data_dir}: {e}") from e
        marker = self.data_dir / CLEAN_SHUTDOWN_FILE
        clean = marker.exists()
        self.had_clean_shutdown = clean
        self._configs = configs
        recovered = 0
        with os.scandir(self.data_dir) as entries:
            names = sorted(e.name for e in entries if e.is_dir())
        for name in names:
            if _DELETED_DIR.match(name):
                shutil.rmtree(self.data_dir / name, ignore_errors=True)
                continue
            parsed = parse_partition_dir(name)
            if parsed is None:
                continue
            self._unopened[parsed] = not clean
            if not clean:
                recovered += 1
        self._checkpointed_hws = self._read_high_watermarks()
        checkpoint = self.data_dir / HIGH_WATERMARK_CHECKPOINT
        if not self._unopened and not checkpoint.exists():
            # A new data directory says so on disk at once: one that crashes before its first
            # checkpoint must not pass for one from before replication, whose logs start at
            # their log end (records its ISR never had would be exposed).
            write_checkpoint(checkpoint, 0, [], sync=True)
            self._written_hws = {}
        if not lazy:
            self.open_pending()
        if clean:
            marker.unlink()
            fsync_dir(self.data_dir)
        if clean:
            how = "after a clean shutdown"
        elif recovered:
            how = "recovered after an unclean shutdown"
        else:
            # No marker and no log: a first start (or nothing was ever written), not a crash.
            how = "new data directory"
        log.info(
            "%s %d partition logs from %s (%s)", "found" if lazy else "loaded",
            len(self._logs) + len(self._unopened), self.data_dir, how,
        )

    @property
    def pending_count(self) -> int:
        """Partition logs found at start-up and not opened yet (failed ones excluded)."""
        return len(self._unopened) - len(self._failed)

    def open_pending(self, limit: int | None = None) -> int:
        """Open up to ``limit`` (None: all) of the logs not opened yet; returns how many are
        left. A log that fails to open is logged and left alone (each use tries again and
        raises KafkaStorageError)."""
        n = 0
        for key in list(self._unopened):
            if limit is not None and n >= limit:
                break
            if key in self._failed:
                continue
            n += 1
            try:
                self._open_found(key)
            except Exception:  # noqa: BLE001 - one bad partition must not stop the others
                log.exception("cannot open the log of %s-%d", *key)
                self._failed.add(key)
        return self.pending_count

    def _open_found(self, key: tuple[str, int]) -> PartitionLog:
        recover = self._unopened[key]
        topic, partition = key
        config = self._config_from(self._configs, topic)
        plog = PartitionLog.open(
            self.data_dir / partition_dir_name(topic, partition), topic, partition, config,
            self.clock, recover=recover, files=self.open_files,
            high_watermark=self._checkpointed_hws.get(key), cache_trimmer=self.cache_trimmer,
        )
        self._checkpointed_hws.pop(key, None)
        del self._unopened[key]
        self._failed.discard(key)
        self._logs[key] = plog
        return plog

    def _config_from(self, configs: ConfigSource, topic: str) -> LogConfig:
        config: LogConfig | None = None
        if callable(configs):
            config = configs(topic)
        elif configs is not None:
            config = configs.get(topic)
        if config is not None:
            self._topic_configs[topic] = config
            return config
        return self._topic_configs.get(topic, self.default_config)

    def abandon(self, *, unsynced_kept: Callable[[int], int] | None = None) -> None:
        """Let go of every log as a killed process does: descriptors closed, nothing written
        (no checkpoint, no clean-shutdown marker), so the next start recovers. The
        deterministic simulation's crash (``odradek.sim``); ``unsynced_kept`` makes it a
        power loss (:meth:`PartitionLog.abandon`)."""
        if self.cache_trimmer is not None:
            self.cache_trimmer.close()
        for _key, plog in sorted(self._logs.items()):
            plog.abandon(unsynced_kept=unsynced_kept)
        self._logs.clear()

    def shutdown(self) -> None:
        """Cancel cleaning, close every log, then write the clean-shutdown marker (see the
        module docstring for the order of the syncs)."""
        t0 = time.monotonic()
        self.cleaner.shutdown()
        if self.cache_trimmer is not None:
            self.cache_trimmer.close()
        errors: list[BaseException] = []
        try:
            # Everything appended so far becomes durable in one call, not one fsync per file.
            sync_filesystem(self.data_dir)
        except KafkaStorageError as e:
            log.error("%s", e)
            errors.append(e)
        high_watermarks = self._high_watermarks()
        for key, plog in list(self._logs.items()):
            try:
                plog.close(synced=not errors)
            except Exception as e:  # keep closing the others; no marker if any failed
                log.exception("closing %s-%d failed", *key)
                errors.append(e)
        closed = len(self._logs)
        self._logs.clear()
        try:
            # Made durable by the sync below (or at once when that will not run).
            self._write_high_watermarks(high_watermarks, sync=bool(errors))
        except KafkaStorageError as e:
            log.error("%s", e)
            errors.append(e)
        if not errors:
            try:
                sync_filesystem(self.data_dir)
            except KafkaStorageError as e:
                log.error("%s", e)
                errors.append(e)
        unrecovered = sum(self._unopened.values())
        self._unopened.clear()
        self._failed.clear()
        log.info("closed %d partition logs in %.0f ms", closed, (time.monotonic() - t0) * 1000)
        if errors:
            return
        if unrecovered:
            log.warning(
                "%d partition logs were never opened after the unclean shutdown: no "
                "clean-shutdown marker, so the next start recovers them", unrecovered,
            )
            return
        marker = self.data_dir / CLEAN_SHUTDOWN_FILE
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.data_dir)
        except OSError as e:
            raise KafkaStorageError(f"cannot write {marker}: {e}") from e

    # -- partitions -------------------------------------------------------------------------

    def get_log(self, topic: str, partition: int) -> PartitionLog | None:
        """The partition's log, opening it now if start-up only found it (raises
        KafkaStorageError when that fails)."""
        key = (topic, partition)
        plog = self._logs.get(key)
        if plog is None and key in self._unopened:
            plog = self._open_found(key)
        return plog

    def opened_log(self, topic: str, partition: int) -> PartitionLog | None:
        """The partition's log if it is open (opens nothing)."""
        return self._logs.get((topic, partition))

    def has_log(self, topic: str, partition: int) -> bool:
        """Whether the partition has a log, opened or not (opens nothing)."""
        key = (topic, partition)
        return key in self._logs or key in self._unopened

    def partitions(self) -> list[tuple[str, int]]:
        """Every partition with a log, opened or not."""
        return [*self._logs, *self._unopened]

    def all_logs(self) -> list[PartitionLog]:
        """The logs opened so far (all of them once :attr:`pending_count` is 0)."""
        return list(self._logs.values())

    def logs_for_topic(self, topic: str) -> list[PartitionLog]:
        return [plog for (t, _p), plog in self._logs.items() if t == topic]

    def create_log(
        self, topic: str, partition: int, config: LogConfig | None = None
    ) -> PartitionLog:
        """Open or create the log of ``topic``/``partition`` (returns an existing one)."""
        return self.create_logs(topic, (partition,), config)[0]

    def create_logs(
        self, topic: str, partitions: Iterable[int], config: LogConfig | None = None
    ) -> list[PartitionLog]:
        """:meth:`create_log` for several partitions of one topic, with one fsync of the data
        directory for all of them."""
        if config is not None:
            self._topic_configs[topic] = config
        else:
            config = self._topic_configs.get(topic, self.default_config)
        out = []
        created = False
        try:
            for partition in partitions:
                plog = self.get_log(topic, partition)
                if plog is None:
                    path = self.data_dir / partition_dir_name(topic, partition)
                    try:
                        plog = PartitionLog.open(
                            path, topic, partition, config, self.clock, recover=False,
                            files=self.open_files, cache_trimmer=self.cache_trimmer,
                        )
                    except KafkaStorageError as e:
                        # Once per partition asked for (a CreateTopics), not per request after it.
                        log.error("creating the log of %s-%d failed (errno %s): %s", topic,
                                  partition, getattr(os_error_of(e), "errno", None), e)
                        raise
                    self._logs[(topic, partition)] = plog
                    created = True
                out.append(plog)
        finally:
            if created:
                fsync_dir(self.data_dir)
        return out

    def delete_log(self, topic: str, partition: int) -> bool:
        """Delete a partition's log and directory; returns whether there was one."""
        self._unopened.pop((topic, partition), None)
        self._failed.discard((topic, partition))
        self._checkpointed_hws.pop((topic, partition), None)
        plog = self._logs.pop((topic, partition), None)
        if plog is not None:
            self.cleaner.forget(plog)
            try:
                plog.delete()
            except KafkaStorageError as e:
                log.error("deleting the log of %s-%d failed (errno %s): %s", topic, partition,
                          getattr(os_error_of(e), "errno", None), e)
                raise
            return True
        path = self.data_dir / partition_dir_name(topic, partition)
        if path.is_dir():
            target = path.with_name(f"{path.name}.{os.urandom(16).hex()}-delete")
            with contextlib.suppress(OSError):
                os.replace(path, target)
                shutil.rmtree(target, ignore_errors=True)
            return True
        return False

    def update_config(self, topic: str, config: LogConfig) -> None:
        self._topic_configs[topic] = config
        for plog in self.logs_for_topic(topic):
            plog.update_config(config)

    # -- housekeeping -----------------------------------------------------------------------

    def run_retention(self, now_ms: int) -> int:
        """Apply retention to every log; returns the number of segments deleted."""
        total = 0
        for plog in list(self._logs.values()):
            total += plog.apply_retention(now_ms)
        return total

    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> int:
        """``producer.id.expiration.ms`` for every log; returns how many producers expired."""
        return sum(
            plog.remove_expired_producers(now_ms, expiration_ms)
            for plog in list(self._logs.values())
        )

    def flush_due(self, now_ms: int, *, checkpoint: bool = True) -> int:
        """Flush logs whose flush_ms has elapsed and (unless ``checkpoint`` is false: the
        caller writes it off the event loop with :meth:`due_high_watermark_checkpoint`),
        every ``replica.high.watermark.checkpoint.interval.ms``, checkpoint the high
        watermarks; returns how many logs were flushed."""
        n = 0
        for plog in list(self._logs.values()):
            if plog.maybe_flush(now_ms):
                n += 1
        if checkpoint:
            self.maybe_checkpoint_high_watermarks(now_ms)
        return n

    def due_high_watermark_checkpoint(self, now_ms: int) -> Callable[[], bool] | None:
        """When the checkpoint interval has passed (the first call only starts it) and a
        high watermark changed: the values, taken now (on the owner's thread), and a callable
        that writes them, to be run in a worker thread; None otherwise. The callable returns
        whether it wrote (not when a later write overtook it) and raises KafkaStorageError."""
        due = self._next_hw_checkpoint_ms
        if due is not None and now_ms < due:
            return None
        self._next_hw_checkpoint_ms = now_ms + self.high_watermark_checkpoint_interval_ms
        if due is None:
            return None
        hws = self._high_watermarks()
        if hws == self._written_hws:
            return None
        self._hw_generation += 1
        generation = self._hw_generation

        def write() -> bool:
            return self._write_high_watermarks(hws, sync=True, generation=generation)

        return write

    # -- high watermarks --------------------------------------------------------------------

    def maybe_checkpoint_high_watermarks(self, now_ms: int) -> bool:
        """:meth:`checkpoint_high_watermarks` when the interval has passed since the last
        one (the first call only starts the interval); returns whether it wrote the file."""
        due = self._next_hw_checkpoint_ms
        if due is not None and now_ms < due:
            return False
        self._next_hw_checkpoint_ms = now_ms + self.high_watermark_checkpoint_interval_ms
        if due is None:
            return False
        return self.checkpoint_high_watermarks()

    def checkpoint_high_watermarks(self) -> bool:
        """Write ``replication-offset-checkpoint`` (see the module docstring) unless it already
        holds these values; returns whether it wrote. Raises KafkaStorageError."""
        return self._write_high_watermarks(self._high_watermarks(), sync=True)

    def _high_watermarks(self) -> dict[tuple[str, int], int]:
        hws = {
            key: hw for key, hw in self._checkpointed_hws.items() if key in self._unopened
        }
        for key, plog in self._logs.items():
            if not plog.is_closed:
                hws[key] = plog.high_watermark
        return hws

    def _write_high_watermarks(
        self, hws: dict[tuple[str, int], int], *, sync: bool, generation: int | None = None
    ) -> bool:
        """Write ``hws`` unless the file holds them; ``generation`` (a write prepared for a
        worker thread) is skipped when values were taken since. Values taken on the event
        loop without a generation (shutdown, a direct call) are the newest there are."""
        with self._hw_write_lock:
            if generation is not None and generation != self._hw_generation:
                return False
            if generation is None:
                self._hw_generation += 1  # a prepared write still waiting is now stale
            if hws == self._written_hws:
                return False
            write_checkpoint(
                self.data_dir / HIGH_WATERMARK_CHECKPOINT, 0,
                [f"{t} {p} {hw}" for (t, p), hw in sorted(hws.items())], sync=sync,
            )
            self._written_hws = hws
            return True

    def _read_high_watermarks(self) -> dict[tuple[str, int], int]:
        """The checkpoint's entries for the partitions found (see the module docstring)."""
        path = self.data_dir / HIGH_WATERMARK_CHECKPOINT
        instead = ("every partition log starts with its high watermark at its log start "
                   "offset, until its leader moves it")
        entries = read_checkpoint(path, 0, if_damaged=instead)
        conservative = {key: 0 for key in self._unopened}  # clamped up to each log start
        if entries is None:
            return conservative if path.exists() else {}
        out: dict[tuple[str, int], int] = {}
        for line in entries:
            parts = line.split(" ")
            try:
                if len(parts) != 3:
                    raise ValueError(line)
                key, hw = (parts[0], int(parts[1])), int(parts[2])
            except ValueError:
                warn_damaged(path, f"malformed entry {line!r}", instead)
                return conservative
            if key in self._unopened:
                out[key] = hw
        # Entries of partitions gone since must leave the file at the next write.
        self._written_hws = dict(out) if len(out) == len(entries) else None
        # A partition the file does not list was created since it was last written (a crash
        # within the checkpoint interval): its log may hold records its ISR never had, so it
        # starts at its log start, as Kafka starts it, until its leader moves it. Only a data
        # dir without the file (written before replication) starts at its log ends.
        for key in self._unopened:
            out.setdefault(key, 0)
        return out

    def corrupt_batches(self) -> int:
        """Distinct corrupt batches found (by reads or the scrubber) in the open logs."""
        return sum(plog.health.corrupt_batches for plog in self._logs.values())

    def storage_errors(self) -> int:
        """Failed storage operations (disk full, I/O errors) of the open logs."""
        return sum(plog.health.storage_errors for plog in self._logs.values())

    def clean_once(self, now_ms: int) -> CleanResult | None:
        """Run one compaction pass over the dirtiest compacted log on the calling (owner)
        thread; None when no log needs cleaning. Blocks for the whole pass."""
        return self.cleaner.clean_once(now_ms)
