"""Checking segment files without trusting them: the batch walk shared by the scrubber, the
offline ``odradek storage verify`` and recovery's account of what it dropped.

:func:`scan_batches` validates the batches in a byte range of a ``.log`` file: whole headers,
magic 2, a length that fits, offsets that never go backwards (and, unless the log was compacted,
follow on without gaps), relative offsets that fit the segment, and the CRC32C of each batch.
It stops at the first bad batch: after it the framing is unknown.

:func:`verify_data_dir` checks a whole data directory offline (every partition, every segment,
and the offset and time indexes against the segments). It only reads; it is meant for a
stopped broker (a running one may append, roll or delete while it reads, which it reports as
whatever it then finds).

Nothing here keeps state between calls; any thread may call it with its own file descriptor.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from odradek.protocol.records import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
    compute_crc,
    read_batch_header,
)

__all__ = [
    "BatchScan",
    "DirReport",
    "Finding",
    "PartitionReport",
    "describe_dropped",
    "scan_batches",
    "verify_data_dir",
    "verify_partition",
]

_INT32_MAX = 2**31 - 1
_CHUNK = 1 << 20
_LOG_NAME = re.compile(r"^(\d{20})\.log$")
_PARTITION_DIR = re.compile(r"^([A-Za-z0-9._-]+)-(\d+)$")
_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")
#: Its presence means the log was compacted, so batches may leave offset gaps (see loader.py).
_CLEANER_CHECKPOINT = "cleaner-offset-checkpoint"
_CLEAN_SHUTDOWN = ".kafka_cleanshutdown"

Pread = Callable[[int, int], bytes]  # (size, position) -> bytes, like os.pread on one fd


@dataclass(frozen=True, slots=True)
class BatchScan:
    """What :func:`scan_batches` found. Every batch in [start, ``end_position``) is valid and
    the last one ends before ``next_offset``. ``problem`` says why the scan stopped before the
    range's end (None when it did not, or when it stopped early for its byte budget);
    ``problem_offset`` is the offset the bad batch should have started with."""

    end_position: int
    next_offset: int
    batches: int
    bytes_read: int
    problem: str | None = None
    problem_offset: int = -1


def scan_batches(
    pread: Pread,
    start: int,
    end: int,
    *,
    base_offset: int,
    expected_offset: int,
    contiguous: bool,
    budget: int | None = None,
    on_batch: Callable[[int, BatchHeader], None] | None = None,
) -> BatchScan:
    """Validate the batches in [``start``, ``end``) of the segment based at ``base_offset``;
    the first should start at ``expected_offset`` (or later, unless ``contiguous``). With a
    ``budget`` the scan stops at the first batch boundary after reading that many bytes (at
    least one batch is read). ``on_batch(position, header)`` sees each valid batch."""
    pos = start
    expected = expected_offset
    batches = 0
    read = 0
    buf = b""
    buf_start = start
    while pos < end:
        if budget is not None and pos - start >= budget:
            break
        off = pos - buf_start
        if off + BATCH_HEADER_SIZE > len(buf):
            want = min(end - pos, _CHUNK if budget is None else max(budget, BATCH_HEADER_SIZE))
            buf = pread(want, pos)
            read += len(buf)
            buf_start, off = pos, 0
        if end - pos < BATCH_HEADER_SIZE or len(buf) < BATCH_HEADER_SIZE:
            left = end - pos
            return BatchScan(pos, expected, batches, read,
                             f"partial batch header ({left} bytes left)", expected)
        h = read_batch_header(buf, off)
        problem = _header_problem(h, pos, end, base_offset, expected, contiguous)
        if problem is None:
            if off + h.size > len(buf):
                # Straddles the buffer's end: read on from this batch's start.
                buf = pread(max(h.size, min(end - pos, _CHUNK)) if budget is None
                            else h.size, pos)
                read += len(buf)
                buf_start, off = pos, 0
            whole = buf[off : off + h.size]
            if len(whole) < h.size:
                problem = f"batch of {h.size} bytes cut short at {len(whole)}"
            else:
                crc = compute_crc(whole)
                if crc != h.crc:
                    problem = f"CRC32C mismatch (stored {h.crc:#010x}, computed {crc:#010x})"
        if problem is not None:
            return BatchScan(pos, expected, batches, read, problem, expected)
        if on_batch is not None:
            on_batch(pos, h)
        batches += 1
        expected = h.next_offset
        pos += h.size
    return BatchScan(pos, expected, batches, read)


def _header_problem(
    h: BatchHeader, pos: int, end: int, base_offset: int, expected: int, contiguous: bool
) -> str | None:
    if h.magic != MAGIC:
        return f"magic {h.magic}, not {MAGIC}"
    if h.size < BATCH_HEADER_SIZE:
        return f"batch length {h.batch_length} is too small"
    if pos + h.size > end:
        return f"batch of {h.size} bytes runs past the end of the segment ({end - pos} left)"
    if h.last_offset_delta < 0:
        return f"negative last offset delta {h.last_offset_delta}"
    if h.base_offset < expected:
        return f"base offset {h.base_offset} goes backwards (expected {expected} or later)"
    if contiguous and h.base_offset != expected:
        return f"base offset {h.base_offset} leaves a gap (expected {expected})"
    if h.last_offset - base_offset > _INT32_MAX:
        return f"last offset {h.last_offset} does not fit segment {base_offset}"
    return None


def describe_dropped(pread: Pread, start: int, end: int) -> str:
    """What the bytes [start, end) that recovery is about to drop held, as far as their batch
    headers can be believed (offsets, batches), for the truncation's log line."""
    first = last = -1
    batches = 0
    pos = start
    # Bounded: this is for a log line, not a recovery.
    while pos + BATCH_HEADER_SIZE <= end and batches < 100_000:
        head = pread(BATCH_HEADER_SIZE, pos)
        if len(head) < BATCH_HEADER_SIZE:
            break
        h = read_batch_header(head)
        if h.magic != MAGIC or h.size < BATCH_HEADER_SIZE or h.last_offset_delta < 0:
            break
        if first < 0:
            first = h.base_offset
        elif h.base_offset <= last:
            break
        last = h.last_offset
        batches += 1
        pos += max(h.size, LOG_OVERHEAD)
    if batches == 0:
        return "no readable batch header"
    more = "" if pos >= end else f", then {end - pos} unreadable bytes"
    return f"by their headers offsets {first}-{last} in {batches} batches{more}"


# == offline verification =========================================================================


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: the partition directory, the file, and where in it."""

    partition: str
    file: str
    position: int
    offset: int
    problem: str

    def __str__(self) -> str:
        where = f"position {self.position}" if self.position >= 0 else "file"
        offset = f", offset {self.offset}" if self.offset >= 0 else ""
        return f"{self.partition}/{self.file} {where}{offset}: {self.problem}"


@dataclass(slots=True)
class PartitionReport:
    """What :func:`verify_partition` checked and found in one partition directory."""

    name: str
    segments: int = 0
    batches: int = 0
    bytes: int = 0
    next_offset: int = 0
    findings: list[Finding] = field(default_factory=list)


@dataclass(slots=True)
class DirReport:
    """What :func:`verify_data_dir` checked and found; ``clean_shutdown`` says whether the
    broker's clean-shutdown marker was there (without it a torn tail is expected, and start-up
    would truncate it)."""

    path: Path
    clean_shutdown: bool
    partitions: list[PartitionReport] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for p in self.partitions for f in p.findings]


def verify_data_dir(path: Path) -> DirReport:
    """Verify every partition directory in the data directory ``path`` (which must exist)."""
    report = DirReport(path, (path / _CLEAN_SHUTDOWN).exists())
    for name in sorted(os.listdir(path)):
        if _PARTITION_DIR.match(name) and (path / name).is_dir():
            report.partitions.append(verify_partition(path / name))
    return report


def verify_partition(directory: Path) -> PartitionReport:
    """Verify every segment of one partition directory: batch framing, CRCs, offsets
    increasing within and across segments, and the indexes against the batches."""
    report = PartitionReport(directory.name)
    contiguous = not (directory / _CLEANER_CHECKPOINT).exists()
    bases = sorted(
        int(m.group(1)) for m in map(_LOG_NAME.match, os.listdir(directory)) if m is not None
    )
    expected = bases[0] if bases else 0
    for base in bases:
        damaged_before = bool(report.findings)
        # After damage the offsets the lost bytes held are unknown: no gap to report.
        if base < expected or (contiguous and base != expected and not damaged_before):
            report.findings.append(Finding(
                report.name, f"{base:020d}.log", -1, base,
                f"segment starts at offset {base}, but the one before ends at {expected}",
            ))
        expected = _verify_segment(directory, base, max(base, expected), contiguous, report)
    report.next_offset = expected
    return report


def _verify_segment(
    directory: Path, base: int, expected: int, contiguous: bool, report: PartitionReport
) -> int:
    name = f"{base:020d}.log"
    batch_at: dict[int, BatchHeader] = {}
    try:
        fd = os.open(directory / name, os.O_RDONLY)
    except OSError as e:
        report.findings.append(Finding(report.name, name, -1, -1, f"cannot open: {e}"))
        return expected
    try:
        size = os.fstat(fd).st_size

        def pread(n: int, pos: int) -> bytes:
            return os.pread(fd, n, pos)

        def remember(pos: int, h: BatchHeader) -> None:
            batch_at[pos] = h

        # After compaction a segment's first batch may start above its base, never below.
        scan = scan_batches(
            pread, 0, size, base_offset=base, expected_offset=expected,
            contiguous=contiguous, on_batch=remember,
        )
    except OSError as e:
        report.findings.append(Finding(report.name, name, -1, -1, f"cannot read: {e}"))
        return expected
    finally:
        os.close(fd)
    report.segments += 1
    report.batches += scan.batches
    report.bytes += scan.end_position
    if scan.problem is not None:
        dropped = size - scan.end_position
        report.findings.append(Finding(
            report.name, name, scan.end_position, scan.problem_offset,
            f"{scan.problem} ({dropped} bytes from here on cannot be read)",
        ))
    # Index entries past the damage cannot be judged: they are checked up to it only.
    damaged = scan.problem is not None
    _verify_offset_index(directory, base, batch_at, scan.end_position, damaged, report)
    _verify_time_index(directory, base, scan.next_offset - 1, batch_at, damaged, report)
    return scan.next_offset


def _verify_offset_index(
    directory: Path, base: int, batch_at: dict[int, BatchHeader], valid_end: int,
    damaged: bool, report: PartitionReport,
) -> None:
    name = f"{base:020d}.index"
    raw = _read_index(directory / name, _OFFSET_ENTRY.size, name, report)
    if raw is None:
        return
    prev_rel = prev_pos = -1
    for i, (rel, pos) in enumerate(_OFFSET_ENTRY.iter_unpack(raw)):
        where = i * _OFFSET_ENTRY.size
        problem = None
        if damaged and pos >= valid_end:
            return
        if rel <= prev_rel or pos <= prev_pos:
            problem = f"entry {i} ({rel}, {pos}) does not increase"
        elif pos >= valid_end:
            problem = f"entry {i} points at position {pos}, past the valid batches ({valid_end})"
        elif pos not in batch_at:
            problem = f"entry {i} points at position {pos}, which is not a batch boundary"
        elif batch_at[pos].last_offset != base + rel:
            problem = (f"entry {i} says offset {base + rel} at position {pos}, the batch there "
                       f"ends at {batch_at[pos].last_offset}")
        if problem is not None:
            report.findings.append(Finding(report.name, name, where, base + rel, problem))
            return  # one finding per index: the rest follows from it
        prev_rel, prev_pos = rel, pos


def _verify_time_index(
    directory: Path, base: int, last_offset: int, batch_at: dict[int, BatchHeader],
    damaged: bool, report: PartitionReport,
) -> None:
    name = f"{base:020d}.timeindex"
    raw = _read_index(directory / name, _TIME_ENTRY.size, name, report)
    if raw is None:
        return
    max_ts = max((h.max_timestamp for h in batch_at.values()), default=-1)
    prev_ts = prev_rel = -(2**63)
    for i, (ts, rel) in enumerate(_TIME_ENTRY.iter_unpack(raw)):
        where = i * _TIME_ENTRY.size
        problem = None
        if damaged and (base + rel > last_offset or ts > max_ts):
            return
        if ts <= prev_ts or rel < prev_rel:
            problem = f"entry {i} ({ts}, {rel}) does not increase"
        elif rel < 0 or base + rel > last_offset:
            problem = f"entry {i} names offset {base + rel}, outside the segment"
        elif ts > max_ts:
            problem = f"entry {i} names timestamp {ts}, later than any batch ({max_ts})"
        if problem is not None:
            report.findings.append(Finding(report.name, name, where, base + rel, problem))
            return
        prev_ts, prev_rel = ts, rel


def _read_index(path: Path, entry: int, name: str, report: PartitionReport) -> bytes | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None  # rebuilt by the next start-up; not damage to data
    except OSError as e:
        report.findings.append(Finding(report.name, name, -1, -1, f"cannot read: {e}"))
        return None
    if len(raw) % entry:
        report.findings.append(Finding(
            report.name, name, len(raw) - len(raw) % entry, -1,
            f"size {len(raw)} is not a multiple of the {entry}-byte entries",
        ))
        raw = raw[: len(raw) - len(raw) % entry]
    return raw
