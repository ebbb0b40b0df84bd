"""Drop-behind of appended segment bytes from the OS page cache (storage/page_cache.py)."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import pytest
from storage_helpers import START_MS, batch

from odradek.clock import ManualClock
from odradek.protocol.records import decode_records
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import LogManager
from odradek.storage.page_cache import PageCacheTrimmer

KIB = 1024


def _open(tmp_path: Path, trimmer: PageCacheTrimmer | None) -> PartitionLog:
    return PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(), ManualClock(START_MS),
                             recover=False, cache_trimmer=trimmer)


def _fill(plog: PartitionLog, batches: int, value_bytes: int = 4 * KIB) -> None:
    for i in range(batches):
        plog.append_as_leader(batch(4, value=b"%06d" % i + b"x" * value_bytes), leader_epoch=0)


def _values(plog: PartitionLog) -> list[bytes]:
    out: list[bytes] = []
    offset = plog.log_start_offset
    while offset < plog.log_end_offset:
        records = decode_records(plog.read(offset, max_bytes=1 << 20).records)
        out.extend(r.value or b"" for r in records)
        offset = records[-1].offset + 1
    return out


def _resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache (mincore over a private mapping)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        buf = (ctypes.c_char * size).from_buffer(mm)
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_size_t(size), vec)
        assert rc == 0, os.strerror(ctypes.get_errno())
        del buf
        return sum(v & 1 for v in vec)
    finally:
        mm.close()


def _filesystem_of(path: Path) -> str:
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if str(path).startswith(fields[1]) and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind


def test_steps_follow_the_end_and_leave_the_records_intact(tmp_path: Path) -> None:
    trimmer = PageCacheTrimmer(retain_bytes=64 * KIB, step_bytes=32 * KIB)
    plog = _open(tmp_path, trimmer)
    try:
        _fill(plog, 4)  # ~66 KiB: below retain + step, nothing to drop
        assert trimmer.queued == 0
        _fill(plog, 200)
        seg = plog.active_segment
        assert trimmer.queued > 0
        # Each step drops everything but the retained tail; the next comes a step later.
        assert seg.size - 64 * KIB - 32 * KIB < seg.cache_dropped_to <= seg.size - 64 * KIB
        assert trimmer.wait_done(timeout=30)
        assert trimmer.done == trimmer.queued
        values = _values(plog)
        assert len(values) == 204 * 4
        assert [v[:6] for v in values[::4]] == [b"%06d" % (i % 200 if i >= 4 else i)
                                               for i in list(range(4)) + list(range(200))]
    finally:
        trimmer.close()
        plog.close()


def test_dropped_bytes_leave_the_page_cache(tmp_path: Path) -> None:
    if _filesystem_of(tmp_path) in ("tmpfs", "ramfs", "overlay"):
        pytest.skip("the page cache is the storage of this file system")
    trimmer = PageCacheTrimmer(retain_bytes=256 * KIB, step_bytes=256 * KIB)
    plog = _open(tmp_path, trimmer)
    try:
        _fill(plog, 300)  # ~4.8 MiB, all of it just written: in the page cache
        path = plog.active_segment.log_path
        assert trimmer.wait_done(timeout=30)
        total = (path.stat().st_size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        resident = _resident_pages(path)
        # At most the retained tail and a step (plus a partial page) stay.
        assert resident <= (512 * KIB) // mmap.PAGESIZE + 2 < total
    finally:
        trimmer.close()
        plog.close()


def test_truncation_moves_the_mark_back(tmp_path: Path) -> None:
    trimmer = PageCacheTrimmer(retain_bytes=16 * KIB, step_bytes=16 * KIB)
    plog = _open(tmp_path, trimmer)
    try:
        _fill(plog, 40)
        seg = plog.active_segment
        assert seg.cache_dropped_to > 0
        plog.truncate_to(8)  # two batches of four stay
        assert 0 < seg.size < 40 * KIB and seg.cache_dropped_to <= seg.size
        queued = trimmer.queued
        _fill(plog, 40)  # grows again past retain + step from the new mark: dropped again
        assert trimmer.queued > queued
        assert trimmer.wait_done(timeout=30)
        assert len(_values(plog)) == (2 + 40) * 4
    finally:
        trimmer.close()
        plog.close()


def test_a_deleted_segment_is_skipped(tmp_path: Path) -> None:
    trimmer = PageCacheTrimmer(retain_bytes=16 * KIB, step_bytes=16 * KIB)
    gone = tmp_path / "gone.log"
    gone.write_bytes(b"x")
    gone.unlink()

    class _Seg:  # what note_append reads of a segment
        size = 64 * KIB
        cache_dropped_to = 0
        log_path = gone

    trimmer.note_append(_Seg())  # type: ignore[arg-type]
    assert trimmer.queued == 1
    assert trimmer.wait_done(timeout=30)
    trimmer.close()
    trimmer.note_append(_Seg())  # type: ignore[arg-type]
    assert trimmer.queued == 1  # closed: nothing more


def test_the_log_manager_hands_its_trimmer_to_its_logs(tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    plain = LogManager(tmp_path / "a", clock, LogConfig())
    assert plain.cache_trimmer is None
    lm = LogManager(tmp_path / "b", clock, LogConfig(), page_cache_retain_bytes=16 * KIB)
    lm.startup()
    trimmer = lm.cache_trimmer
    assert trimmer is not None
    plog = lm.create_log("t", 0)
    _fill(plog, 1100)  # 17 MiB: past the retained tail and one step (16 MiB)
    assert trimmer.queued > 0
    lm.shutdown()  # stops the worker too
    assert trimmer._thread is None
