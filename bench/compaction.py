"""Compaction benchmark: write a compacted log of random keyed records, then clean it.

Reports the cleaning throughput (bytes read by the cleaner per second of cleaning, all passes)
and the peak Python heap during cleaning (tracemalloc: the offset map, I/O buffers, one batch),
each from its own run over a hard-linked copy of the same log.
The defaults follow the issue: 1 GiB of log with 1 M distinct keys. Run it from the repository
root, e.g. ``.venv/bin/python -m bench.compaction --bytes 64M --keys 100k``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

from odradek.protocol.records import COMPRESSION_NONE, SimpleRecord, encode_batch
from odradek.storage.cleaner import CleanerConfig, LogCleaner
from odradek.storage.clock import SystemClock
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig

__all__ = ["CompactionBenchResult", "bench_clean"]


@dataclass(frozen=True, slots=True)
class CompactionBenchResult:
    log_bytes: int
    records: int
    distinct_keys: int
    passes: int
    bytes_read: int
    bytes_written: int
    records_retained: int
    write_seconds: float
    clean_seconds: float
    clean_mb_per_s: float
    peak_memory_bytes: int

    def __str__(self) -> str:
        return (
            f"{self.log_bytes / 2**20:.0f} MiB, {self.records} records, {self.distinct_keys} keys: "
            f"{self.passes} pass(es), read {self.bytes_read / 2**20:.0f} MiB, wrote "
            f"{self.bytes_written / 2**20:.1f} MiB in {self.clean_seconds:.1f} s "
            f"= {self.clean_mb_per_s:.1f} MB/s; peak heap {self.peak_memory_bytes / 2**20:.1f} MiB"
        )


def bench_clean(
    total_bytes: int = 1 << 30,
    distinct_keys: int = 1_000_000,
    *,
    value_bytes: int = 100,
    records_per_batch: int = 50,
    compression: int = COMPRESSION_NONE,
    segment_bytes: int = 128 << 20,
    dedupe_buffer_size: int = 128 << 20,
    directory: str | Path | None = None,
    seed: int = 1,
) -> CompactionBenchResult:
    """Write ``total_bytes`` of batches with keys drawn uniformly from ``distinct_keys``, then
    clean until the whole log (but the active segment) is clean. The log lives in
    ``directory`` (a temporary one by default, removed afterwards)."""
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="odradek-compaction-")) if directory is None else None
    root = tmp if tmp is not None else Path(directory)  # type: ignore[arg-type]
    clock = SystemClock()
    config = LogConfig(cleanup_policy="compact", segment_bytes=segment_bytes,
                       min_cleanable_dirty_ratio=0.0)
    plog = PartitionLog.open(root / "bench-0", "bench", 0, config, clock, recover=False)
    try:
        value = bytes(rng.getrandbits(8) for _ in range(value_bytes))
        started = time.perf_counter()
        records = 0
        while plog.size_in_bytes < total_bytes:
            now = clock.milliseconds()
            batch = [
                SimpleRecord(value, key=b"key-%08d" % rng.randrange(distinct_keys), timestamp=now)
                for _ in range(records_per_batch)
            ]
            plog.append_as_leader(encode_batch(batch, compression=compression), leader_epoch=0)
            records += records_per_batch
        plog.roll()
        plog.update_high_watermark(plog.log_end_offset)
        log_bytes = plog.size_in_bytes
        write_seconds = time.perf_counter() - started

        plog.close()
        # Cleaning never changes a file in place (it writes new ones and renames), so a
        # hard-linked copy gives a second, identical log: one run is timed, the other traced
        # (tracemalloc slows every allocation and would distort the timing).
        traced_dir = root / "bench-traced"
        traced_dir.mkdir()
        for f in (root / "bench-0").iterdir():
            os.link(f, traced_dir / f.name)
        plog = PartitionLog.open(root / "bench-0", "bench", 0, config, clock, recover=False)
        plog.update_high_watermark(plog.log_end_offset)
        started = time.perf_counter()
        passes, read, written, retained = _clean_fully(plog, clock, dedupe_buffer_size)
        clean_seconds = time.perf_counter() - started
        traced = PartitionLog.open(traced_dir, "bench", 0, config, clock, recover=False)
        traced.update_high_watermark(traced.log_end_offset)
        tracemalloc.start()
        try:
            _clean_fully(traced, clock, dedupe_buffer_size)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            traced.close()
        return CompactionBenchResult(
            log_bytes, records, distinct_keys, passes, read, written, retained, write_seconds,
            clean_seconds, read / clean_seconds / 1e6 if clean_seconds else 0.0, peak,
        )
    finally:
        plog.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _clean_fully(plog: PartitionLog, clock: SystemClock,
                 dedupe_buffer_size: int) -> tuple[int, int, int, int]:
    cleaner = LogCleaner(lambda: [plog], CleanerConfig(dedupe_buffer_size=dedupe_buffer_size),
                         clock)
    passes = read = written = retained = 0
    while True:
        result = cleaner.clean_log(plog, clock.milliseconds())
        if result is None or result.error is not None:
            raise RuntimeError(f"cleaning failed: {result}")
        passes += 1
        read += result.stats.bytes_read
        written += result.stats.bytes_written
        retained = result.stats.records_retained
        if result.end_offset >= plog.active_segment.base_offset:
            return passes, read, written, retained


def _size(text: str) -> int:
    units = {"k": 10**3, "m": 2**20, "g": 2**30}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bytes", default="1g", help="log size (k/m/g suffixes)")
    parser.add_argument("--keys", default="1000k", help="distinct keys (k suffix = 1000)")
    parser.add_argument("--dedupe", default="128m", help="offset map memory")
    parser.add_argument("--segment", default="128m", help="segment.bytes")
    parser.add_argument("--dir", default=None, help="where to write the log")
    args = parser.parse_args()
    keys = args.keys.lower()
    distinct = int(float(keys[:-1]) * 1000) if keys.endswith("k") else int(keys)
    result = bench_clean(_size(args.bytes), distinct, dedupe_buffer_size=_size(args.dedupe),
                         segment_bytes=_size(args.segment), directory=args.dir)
    print(result)
    print(asdict(result))


if __name__ == "__main__":
    main()
