"""Opening one partition's log from its directory (Kafka's LogLoader): crash leftovers,
interrupted segment swaps, recovery, producer-state replay.

Files this module reads or names (the layout is in :mod:`odradek.storage.log`)::

    log-start-offset-checkpoint      "0\\n1\\n<topic> <partition> <log start offset>\\n"
    recovery-point-offset-checkpoint "0\\n1\\n<topic> <partition> <recovery point>\\n"
    cleaner-offset-checkpoint        "0\\n1\\n<topic> <partition> <first dirty offset>\\n"
                                     (written by the log cleaner, see cleaner.py)
    segment-swap-manifest.swap       a committed segment swap (see below)

**Recovery.** The recovery point is the offset below which everything is known to be fsynced
(:class:`~odradek.storage.log.PartitionLog` writes it on segment roll and on close). After an
unclean shutdown (``recover=True``) the loader re-validates every segment from the one holding
the recovery point, truncates at the first invalid byte and deletes any later segment, rebuilds
the indexes of the re-validated segments, and replays producer state from the newest snapshot.
After a clean shutdown nothing is rescanned: indexes are sanity-checked by size and last entry,
and only the few KB after the active segment's last index entry are read to find the log end
offset (a failed check falls back to recovering from that segment). Re-validated segments get
their ``.txnindex`` rebuilt by the producer-state replay, which then starts from a snapshot at
or below the first of them. A log that has been cleaned has offset gaps, so the presence of
``cleaner-offset-checkpoint`` (like ``cleanup.policy=compact``) makes recovery accept gaps
between batches.

Every truncation is logged at WARNING, naming the partition, the segment, the offset and
position where the valid data ends, the bytes dropped and what their batch headers say they
held; so are later segments deleted after damage, a log emptied because its start offset
checkpoint lies beyond the recovered end, an index that fails its check, and a checkpoint
that cannot be parsed (with what is done instead).

**Leftovers.** Files that a crash can leave behind and that loading removes: ``*.deleted``
(segments whose deletion was pending), ``*.tmp`` (unfinished atomic writes), ``*.cleaned``
(an unfinished cleaning pass) and index files without a ``.log``.

**Interrupted swaps.** :meth:`PartitionLog.replace_segments` commits a swap by writing the
manifest ``segment-swap-manifest.swap`` (checkpoint text format, version 0, two entries:
``old <base> ...`` and ``new <base> ...``). Loading finishes or undoes an interrupted swap before
anything else: with a manifest it deletes the listed replaced segments' files, renames every
remaining ``.swap`` file to its final name (replacing an old file of the same name) and removes
the manifest; without one it deletes every ``*.cleaned`` and ``*.swap`` file, leaving the old
segments untouched. Either way the log holds exactly the records of before or of after the
swap.

A :class:`LogLoader` is used once, on the thread that will own the log, before the log exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from odradek.errors import KafkaError
from odradek.protocol.records import BatchHeader
from odradek.storage.checkpoint import (
    TMP_SUFFIX,
    fsync_dir,
    read_checkpoint,
    read_offset_checkpoint,
)
from odradek.storage.epoch import LeaderEpochFileCache
from odradek.storage.index import CorruptIndexError
from odradek.storage.log_config import LogConfig
from odradek.storage.open_files import OpenFileCache
from odradek.storage.producer_state import EndTxnMarker, ProducerStateManager, read_end_txn_marker
from odradek.storage.segment import (
    CLEANED_SUFFIX,
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    SWAP_SUFFIX,
    TIME_INDEX_SUFFIX,
    LogSegment,
    SegmentCorruptError,
    segment_file_name,
)
from odradek.storage.txn_index import TXN_INDEX_SUFFIX
from odradek.storage.verify import describe_dropped

__all__ = [
    "CLEANER_OFFSET_CHECKPOINT",
    "LOG_START_OFFSET_CHECKPOINT",
    "RECOVERY_POINT_CHECKPOINT",
    "SWAP_MANIFEST",
    "LoadedLog",
    "LogLoader",
    "replay_producer_state",
]

LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
SWAP_MANIFEST = "segment-swap-manifest"

_log = logging.getLogger("odradek.storage")

_STRAY_SUFFIXES = (DELETED_SUFFIX, CLEANED_SUFFIX, SWAP_SUFFIX, TMP_SUFFIX)
_SEGMENT_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX)


@dataclass(frozen=True, slots=True)
class LoadedLog:
    """What loading found: the segments, oldest first, the active one last (only the active
    segment keeps its index handles open), and the log's offsets. Everything below
    ``log_end_offset`` is on disk and validated, so it is also the recovery point."""

    segments: tuple[LogSegment, ...]
    log_start_offset: int
    log_end_offset: int
    #: False when loading created the directory's first segment without fsyncing the
    #: directories: the log does that before anything in it must be durable (its first flush).
    directory_synced: bool = True


class LogLoader:
    """Loads one partition directory into segments, filling the given leader-epoch cache and
    producer state as it goes (both belong to the log being opened). Use :meth:`load` once."""

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        now_ms: int,
        epoch_cache: LeaderEpochFileCache,
        producer_state: ProducerStateManager,
        *,
        files: OpenFileCache | None = None,
    ) -> None:
        self.directory = directory
        self.files = files
        self.config = config
        self.now_ms = now_ms
        self.epoch_cache = epoch_cache
        self.producer_state = producer_state
        self._may_have_gaps = False
        self._opened: list[LogSegment] = []  # every segment opened, to close on failure

    def load(self, recover: bool) -> LoadedLog:
        """Open the log; ``recover`` says the previous shutdown was unclean. Raises OSError or
        KafkaStorageError, having closed whatever it opened."""
        try:
            return self._load(recover)
        except BaseException:
            for seg in self._opened:
                seg.close_handles()
            raise

    def _load(self, recover: bool) -> LoadedLog:
        bases = self._remove_stray_files()
        start_ckpt = read_offset_checkpoint(
            self.directory / LOG_START_OFFSET_CHECKPOINT,
            if_damaged="the log starts at its first segment's base offset (records deleted "
            "below a later start offset become readable again)",
        )
        segments = [self._open_existing(b) for b in bases]
        recover_from: int | None = None  # index of the first segment to re-validate
        if recover:
            rp = read_offset_checkpoint(
                self.directory / RECOVERY_POINT_CHECKPOINT,
                if_damaged="recovering the whole log, from its first segment",
            ) or 0
            recover_from = max(0, bisect_right(bases, rp) - 1) if segments else None
        else:
            for i, seg in enumerate(segments):
                try:
                    seg.sanity_check()
                    if i == len(segments) - 1:
                        seg.load_tail()
                except (CorruptIndexError, SegmentCorruptError) as e:
                    _log.warning(
                        "%s: segment %s failed its start-up check (%s): recovering the log "
                        "from that segment (its indexes are rebuilt)", self.directory.name,
                        seg.log_path.name, e,
                    )
                    recover_from = i
                    break
        if recover_from is not None:
            segments = self._recover_segments(segments, recover_from)
        for seg in segments[:-1]:
            seg.offset_index.close_handle()
            seg.time_index.close_handle()
        directory_synced = True
        if not segments:
            segments = [self._create(max(start_ckpt or 0, 0))]
            directory_synced = False
        active = segments[-1]
        assert active.next_offset is not None
        log_end_offset = active.next_offset
        log_start_offset = max(start_ckpt or 0, segments[0].base_offset)
        if log_start_offset > log_end_offset:
            # The checkpointed start survived a crash that lost the data before it.
            segments = self._truncate_fully_and_start_at(segments, log_start_offset)
            log_end_offset = log_start_offset
        self.epoch_cache.truncate_from_end(log_end_offset)
        self.epoch_cache.truncate_from_start(log_start_offset)
        # Re-validated segments lost their .txnindex: the producer-state replay rebuilds it,
        # so it must start from a snapshot at or below the first of them.
        rebuild_from: int | None = None
        if recover_from is not None and recover_from < len(segments):
            rebuild_from = segments[recover_from].base_offset
        snapshot = self.producer_state.load(log_end_offset, at_or_below=rebuild_from)
        # No usable snapshot (missing, or failed its CRC even after a clean shutdown): the
        # state is rebuilt from the whole log, so deduplication never silently lapses.
        replay_from = snapshot if snapshot is not None else segments[0].base_offset
        if replay_from < log_end_offset:
            self._replay_producer_state(segments, log_end_offset, replay_from, rebuild_from)
        if recover_from is not None:
            for seg in segments[recover_from:]:
                seg.flush()
                if seg is not segments[-1]:
                    seg.txn_index.close_handle()
        return LoadedLog(tuple(segments), log_start_offset, log_end_offset, directory_synced)

    def _open_existing(self, base: int) -> LogSegment:
        seg = LogSegment.open_existing(
            self.directory, base, self.config, now_ms=self.now_ms, files=self.files
        )
        self._opened.append(seg)
        return seg

    def _create(self, base: int) -> LogSegment:
        seg = LogSegment.create(
            self.directory, base, self.config, now_ms=self.now_ms, files=self.files
        )
        self._opened.append(seg)
        return seg

    # -- leftovers and swaps ----------------------------------------------------------------

    def _remove_stray_files(self) -> list[int]:
        """Finish or undo an interrupted segment swap, delete crash leftovers; return the base
        offsets of the ``.log`` files, sorted."""
        self._finish_interrupted_swap()
        self._may_have_gaps = (self.directory / CLEANER_OFFSET_CHECKPOINT).exists()
        names = os.listdir(self.directory)
        logs = set()
        for name in names:
            if name.endswith(LOG_SUFFIX):
                stem = name[: -len(LOG_SUFFIX)]
                if stem.isdigit():
                    logs.add(stem)
        for name in names:
            path = self.directory / name
            stray = name.endswith(_STRAY_SUFFIXES)
            for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX):
                if name.endswith(suffix) and name[: -len(suffix)] not in logs:
                    stray = True
            if stray and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return sorted(int(s) for s in logs)

    def _finish_interrupted_swap(self) -> None:
        """Roll a committed swap forward (see the module docstring); without a manifest the
        stray-file pass that follows rolls an uncommitted one back."""
        manifest = self.directory / (SWAP_MANIFEST + SWAP_SUFFIX)
        plan = _read_swap_manifest(manifest)
        if plan is None:
            return
        old_bases, new_bases = plan
        d = self.directory
        for base in sorted(old_bases - new_bases):
            for suffix in _SEGMENT_SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    (d / segment_file_name(base, suffix)).unlink()
        for base in sorted(new_bases):
            for suffix in _SEGMENT_SUFFIXES:
                final = d / segment_file_name(base, suffix)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(final.with_name(final.name + SWAP_SUFFIX), final)
        fsync_dir(d)
        manifest.unlink()
        fsync_dir(d)

    # -- recovery ---------------------------------------------------------------------------

    def _recover_segments(self, segments: list[LogSegment], start: int) -> list[LogSegment]:
        """Re-validate ``segments[start:]``; drop everything after the first damage."""
        min_base = segments[start].base_offset
        # Whether batches may have offset gaps: compacted now, or cleaned at some time.
        contiguous = not (self.config.compact or self._may_have_gaps)
        for i in range(start, len(segments)):
            seg = segments[i]
            dropped: list[str] = []

            def describe(
                pos: int, file_size: int, seg: LogSegment = seg, dropped: list[str] = dropped
            ) -> None:
                fd = seg.fd
                dropped.append(describe_dropped(lambda n, p: os.pread(fd, n, p), pos, file_size))

            truncated = seg.recover(
                min_base, self._on_recovered_batch, contiguous=contiguous, on_truncate=describe
            )
            assert seg.next_offset is not None
            min_base = seg.next_offset
            if truncated > 0:
                _log.warning(
                    "%s: recovery truncated segment %s at position %d, offset %d: %d bytes "
                    "dropped (%s)", self.directory.name, seg.log_path.name, seg.size,
                    seg.next_offset, truncated, dropped[0] if dropped else "not examined",
                )
            if truncated > 0 and i < len(segments) - 1:
                later = segments[i + 1 :]
                _log.warning(
                    "%s: recovery deleted %d later segments after the damage (offsets %d to "
                    "%d as named, %d bytes)", self.directory.name, len(later),
                    later[0].base_offset, later[-1].base_offset, sum(s.size for s in later),
                )
                for seg_after in later:
                    _delete_segment(seg_after)
                segments = segments[: i + 1]
                break
            if i < len(segments) - 1:
                seg.on_become_inactive()
        return segments

    def _on_recovered_batch(self, h: BatchHeader) -> None:
        if h.partition_leader_epoch >= 0:
            self.epoch_cache.assign(h.partition_leader_epoch, h.base_offset)

    def _truncate_fully_and_start_at(
        self, segments: list[LogSegment], offset: int
    ) -> list[LogSegment]:
        _log.warning(
            "%s: the log start offset %d lies beyond the recovered log end %d: deleting all %d "
            "segments (%d bytes, from offset %d) and starting the log at %d",
            self.directory.name, offset, segments[-1].next_offset, len(segments),
            sum(s.size for s in segments), segments[0].base_offset, offset,
        )
        for seg in segments:
            _delete_segment(seg)
        fresh = [self._create(offset)]
        fsync_dir(self.directory)
        self.epoch_cache.clear()
        self.producer_state.clear()
        self.producer_state.delete_all_snapshots()
        return fresh

    def _replay_producer_state(
        self,
        segments: list[LogSegment],
        log_end_offset: int,
        start: int,
        rebuild_from: int | None,
    ) -> None:
        replay_producer_state(
            self.producer_state, segments, log_end_offset, start, rebuild_from=rebuild_from
        )


def replay_producer_state(
    producer_state: ProducerStateManager,
    segments: list[LogSegment],
    log_end_offset: int,
    start: int,
    *,
    rebuild_from: int | None = None,
) -> None:
    """Replay the batches of ``segments`` from offset ``start`` up to ``log_end_offset`` into
    ``producer_state`` (loading, and rebuilding it after a truncation); segments based at or
    after ``rebuild_from`` get their aborted transactions indexed again."""
    for i, seg in enumerate(segments):
        upper = segments[i + 1].base_offset if i + 1 < len(segments) else log_end_offset
        if upper <= start or seg.size == 0:
            continue
        pos = 0
        if start > seg.base_offset:
            found = seg.translate_offset(start)
            if found is None:
                continue
            pos = found[0]
        rebuild = rebuild_from is not None and seg.base_offset >= rebuild_from
        for p, h in seg.iter_headers(pos):
            if h.producer_id >= 0 and h.last_offset >= start:
                _replay_batch(producer_state, seg, p, h, rebuild_txn_index=rebuild)


def _replay_batch(
    producer_state: ProducerStateManager,
    seg: LogSegment,
    pos: int,
    h: BatchHeader,
    *,
    rebuild_txn_index: bool,
) -> None:
    """Replay one stored batch into the producer state; with ``rebuild_txn_index`` an
    abort it completes is indexed again in ``seg``."""
    marker: EndTxnMarker | None = None
    if h.is_control:
        try:
            marker = read_end_txn_marker(seg.read_batch(pos, h))
        except KafkaError:
            marker = None  # not a transaction marker: nothing to replay
    aborted = producer_state.replay(h, marker)
    if aborted is not None and rebuild_txn_index:
        seg.txn_index.append(aborted)


def _delete_segment(seg: LogSegment) -> None:
    seg.close_handles()
    seg.txn_index.delete()
    for p in (seg.log_path, seg.offset_index.path, seg.time_index.path):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _read_swap_manifest(path: Path) -> tuple[set[int], set[int]] | None:
    """(old bases, new bases) of a committed swap, or None when there is none (or it is
    unreadable, which the atomic write rules out short of disk damage)."""
    if not path.exists():
        return None
    entries = read_checkpoint(path, 0)
    try:
        if entries is None or len(entries) != 2:
            raise ValueError(entries)
        old_tag, *old = entries[0].split()
        new_tag, *new = entries[1].split()
        if old_tag != "old" or new_tag != "new":
            raise ValueError(entries)
        return {int(b) for b in old}, {int(b) for b in new}
    except ValueError:
        _log.warning("ignoring unreadable segment swap manifest %s", path)
        return None
