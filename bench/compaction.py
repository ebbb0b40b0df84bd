"""Compaction benchmark (issue 5).

1. **Cleaning throughput and peak memory**: write a log of random keyed records (default 1 GiB,
   1 M distinct keys, 100-byte values), then clean it until everything but the active segment
   is clean. The cleaning runs in a child process, which reports its time and its peak resident
   memory above what it used before cleaning (the offset map, I/O buffers, one batch): the
   high-water mark of its own address space (``VmHWM``, reset before cleaning where the kernel
   allows), not ``ru_maxrss``, which after fork and exec also holds the parent's peak (this
   script's parent writes the log first, and ``bench/run.py`` ran other benchmarks before). Throughput is given two ways: MB of log cleaned per second, and MB the cleaner read
   per second (it reads the dirty section twice: once to map keys, once to copy).
2. **Produce throughput while the cleaner runs**: a broker subprocess gets a large keyed topic
   (``cleanup.policy=delete``); librdkafka measures produce throughput to another topic with
   the cleaner idle, then the first topic is switched to ``compact`` through AlterConfigs and
   the same measurement is repeated from the start of the cleaner's pass over it, and once
   more after the pass; the idle figure is the mean of the windows before and after (the
   machine's load drifts).

Run from the repository root, e.g. ``.venv/bin/python -m bench.compaction --bytes 64m --keys
100k`` (part 1) or ``--broker`` (part 2); ``bench/run.py --only compaction`` runs both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from odradek.clock import SystemClock
from odradek.protocol.records import MAGIC, BatchHeader, pack_batch
from odradek.protocol.varint import encode_varint
from odradek.storage.cleaner import CleanerConfig, LogCleaner
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig

__all__ = ["CompactionBenchResult", "ProduceWhileCleaning", "bench_clean",
           "produce_while_cleaning"]


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
    clean_mb_per_s: float  # log bytes cleaned per second
    read_mb_per_s: float  # bytes read by the cleaner (both phases) per second
    peak_memory_bytes: int  # peak RSS of the cleaning process above its RSS before cleaning
    paced_seconds: float = 0.0  # the cleaner slept to let others run (Pacer)

    def __str__(self) -> str:
        return (
            f"{self.log_bytes / 2**20:.0f} MiB, {self.records:,} records, "
            f"{self.distinct_keys:,} keys: {self.passes} pass(es) in {self.clean_seconds:.1f} s "
            f"= {self.clean_mb_per_s:.1f} MB/s of log ({self.read_mb_per_s:.1f} MB/s read), "
            f"wrote {self.bytes_written / 2**20:.1f} MiB; cleaner peak memory "
            f"{self.peak_memory_bytes / 2**20:.0f} MiB; paced {self.paced_seconds:.1f} s"
        )


def _batch(keys: list[bytes], value: bytes, timestamp: int) -> bytes:
    """A v2 batch of ``keys`` each with ``value`` (no headers, CreateTime, no compression),
    built directly: the generic encoder would dominate the writing time."""
    tail = encode_varint(len(value)) + value + b"\x00"
    parts = []
    for i, key in enumerate(keys):
        body = b"\x00\x00" + encode_varint(i) + encode_varint(len(key)) + key + tail
        parts.append(encode_varint(len(body)) + body)
    header = BatchHeader(0, 0, -1, MAGIC, 0, 0, len(keys) - 1, timestamp, timestamp, -1, -1, -1,
                         len(keys))
    return pack_batch(header, b"".join(parts))


def write_log(directory: Path, total_bytes: int, distinct_keys: int, *, value_bytes: int = 100,
              records_per_batch: int = 50, segment_bytes: int = 128 << 20,
              seed: int = 1) -> tuple[int, int, float]:
    """Write the log to clean; returns (bytes, records, seconds). Written under
    ``cleanup.policy=delete`` (compacted topics decode every record at append to check its
    key, which is not what is measured here) and reopened compacted by the cleaning run."""
    rng = random.Random(seed)
    clock = SystemClock()
    plog = PartitionLog.open(directory, "bench", 0, LogConfig(segment_bytes=segment_bytes),
                             clock, recover=False)
    value = rng.randbytes(value_bytes)
    keys = [b"key-%08d" % i for i in range(distinct_keys)]
    started = time.perf_counter()
    records = 0
    try:
        while plog.size_in_bytes < total_bytes:
            batch = [keys[rng.randrange(distinct_keys)] for _ in range(records_per_batch)]
            plog.append_as_leader(_batch(batch, value, clock.milliseconds()), leader_epoch=0)
            records += records_per_batch
        plog.roll()
        size = plog.size_in_bytes
    finally:
        plog.close()
    return size, records, time.perf_counter() - started


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Start the peak-RSS mark afresh at the current RSS (Linux >= 4.0; ignored where refused:
    the mark then also covers what came before, which is at most a little above the baseline)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_bytes() -> int:
    """Peak RSS of this process's address space (``VmHWM``). Not ``ru_maxrss``: Linux carries
    the old address space's peak into it across exec, so a child started by a process that
    once held 500 MiB reports at least 500 MiB whatever it does itself."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no VmHWM: best effort


def clean_fully(directory: Path, segment_bytes: int, dedupe_buffer_size: int) -> dict[str, float]:
    """Clean the log in ``directory`` until only the active segment is dirty (run in a child
    process: its peak RSS is the figure)."""
    clock = SystemClock()
    config = LogConfig(cleanup_policy="compact", segment_bytes=segment_bytes,
                       min_cleanable_dirty_ratio=0.0)
    plog = PartitionLog.open(directory, "bench", 0, config, clock, recover=False)
    plog.update_high_watermark(plog.log_end_offset)
    # Paced as in a broker: it steps aside only when something else wants to run.
    cleaner = LogCleaner(lambda: [plog], CleanerConfig(dedupe_buffer_size=dedupe_buffer_size),
                         clock, sleep=time.sleep, cpu_time=time.thread_time)
    baseline = _rss_bytes()
    _reset_peak_rss()
    passes = read = written = retained = 0
    paced = 0.0
    started = time.perf_counter()
    try:
        while True:
            result = cleaner.clean_log(plog, clock.milliseconds())
            if result is None or result.error is not None:
                raise RuntimeError(f"cleaning failed: {result}")
            passes += 1
            read += result.stats.bytes_read
            written += result.stats.bytes_written
            retained = result.stats.records_retained
            paced += result.stats.paced_s
            if result.end_offset >= plog.active_segment.base_offset:
                break
        seconds = time.perf_counter() - started
    finally:
        plog.close()
    peak = _peak_rss_bytes()
    return {"passes": passes, "bytes_read": read, "bytes_written": written,
            "records_retained": retained, "seconds": seconds, "paced_seconds": paced,
            "peak_memory_bytes": max(0, peak - baseline)}


def bench_clean(
    total_bytes: int = 1 << 30,
    distinct_keys: int = 1_000_000,
    *,
    value_bytes: int = 100,
    segment_bytes: int = 128 << 20,
    dedupe_buffer_size: int = 128 << 20,
    directory: str | Path | None = None,
) -> CompactionBenchResult:
    """Write ``total_bytes`` of batches with keys drawn uniformly from ``distinct_keys``, then
    clean them in a child process. The log lives in ``directory`` (a temporary one by default,
    removed afterwards)."""
    tmp = Path(tempfile.mkdtemp(prefix="odradek-compaction-")) if directory is None else None
    root = tmp if tmp is not None else Path(directory)  # type: ignore[arg-type]
    try:
        log_bytes, records, write_seconds = write_log(
            root / "bench-0", total_bytes, distinct_keys, value_bytes=value_bytes,
            segment_bytes=segment_bytes,
        )
        out = subprocess.run(
            [sys.executable, __file__, "--clean-only", str(root / "bench-0"),
             "--segment", str(segment_bytes), "--dedupe", str(dedupe_buffer_size)],
            check=True, capture_output=True, text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        seconds = r["seconds"]
        return CompactionBenchResult(
            log_bytes, records, distinct_keys, int(r["passes"]), int(r["bytes_read"]),
            int(r["bytes_written"]), int(r["records_retained"]), write_seconds, seconds,
            log_bytes / seconds / 1e6, r["bytes_read"] / seconds / 1e6,
            int(r["peak_memory_bytes"]), float(r.get("paced_seconds", 0.0)),
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# == produce throughput while the broker cleans ====================================================


@dataclass(frozen=True, slots=True)
class ProduceWhileCleaning:
    compacted_bytes: int
    idle_records_per_s: float  # mean of the idle windows before and after the pass
    cleaning_records_per_s: float
    cleaner_busy_throughout: bool
    clean_seconds: float  # from the switch to compact until the pass was swapped in
    idle_before_records_per_s: float
    idle_after_records_per_s: float

    @property
    def ratio(self) -> float:
        return self.cleaning_records_per_s / self.idle_records_per_s

    def __str__(self) -> str:
        busy = "" if self.cleaner_busy_throughout else " (cleaner finished early!)"
        return (
            f"produce 100 B acks=1 while cleaning a {self.compacted_bytes / 2**20:.0f} MiB log: "
            f"{self.cleaning_records_per_s:,.0f} records/s vs {self.idle_records_per_s:,.0f} "
            f"idle ({self.ratio:.1%}; idle {self.idle_before_records_per_s:,.0f} before, "
            f"{self.idle_after_records_per_s:,.0f} after){busy}; that pass took "
            f"{self.clean_seconds:.1f} s"
        )


def produce_while_cleaning(compacted_bytes: int = 256 << 20, keys: int = 1_000_000,
                           seconds: float = 5.0) -> ProduceWhileCleaning:
    from confluent_kafka import Producer
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewTopic,
    )

    with tempfile.TemporaryDirectory(prefix="odradek-bench-") as tmp:
        data = Path(tmp) / "data"
        props = Path(tmp) / "broker.properties"
        props.write_text("log.cleaner.backoff.ms=100\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "odradek", "serve", "--listen", "127.0.0.1:0",
             "--data-dir", str(data), "--log-level", "WARNING", "--config", str(props)],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("odradek listening on "):
                raise SystemExit(f"broker did not start: {line!r}")
            bootstrap = line.split()[-1]
            admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
            topics = [
                NewTopic("keyed", 1, 1, config={"cleanup.policy": "delete",
                                                "segment.bytes": str(64 << 20)}),
                NewTopic("idle", 1, 1), NewTopic("busy", 1, 1), NewTopic("after", 1, 1),
            ]
            for future in admin.create_topics(topics).values():
                future.result(timeout=30)
            _fill(Producer, bootstrap, "keyed", compacted_bytes, keys)
            idle = _produce_for(Producer, bootstrap, "idle", seconds)
            partition = data / "keyed-0"
            resource_ = ConfigResource(ConfigResource.Type.TOPIC, "keyed", incremental_configs=[
                ConfigEntry("cleanup.policy", "compact",
                            incremental_operation=AlterConfigOpType.SET)])
            switched = time.perf_counter()
            admin.incremental_alter_configs([resource_])[resource_].result(timeout=30)
            # The cleaner looks for work every log.cleaner.backoff.ms (100 ms here): measure
            # from the start of the pass, its map phase included (a pass that never starts is
            # caught below: no checkpoint).
            time.sleep(0.2)
            busy = _produce_for(Producer, bootstrap, "busy", seconds)
            checkpoint = partition / "cleaner-offset-checkpoint"
            busy_throughout = not checkpoint.exists()
            while not checkpoint.exists():
                if time.perf_counter() - switched > 600:
                    raise SystemExit("the cleaner did not finish")
                time.sleep(0.05)
            clean_seconds = time.perf_counter() - switched
            # Idle again once the pass is in: the machine's load drifts, so the busy window is
            # compared with the mean of the idle windows around it.
            after = _produce_for(Producer, bootstrap, "after", seconds)
        finally:
            proc.terminate()
            proc.wait(30)
    return ProduceWhileCleaning(compacted_bytes, (idle + after) / 2, busy, busy_throughout,
                                clean_seconds, idle, after)


_PRODUCER = {"linger.ms": 5, "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000,
             "queue.buffering.max.kbytes": 1_048_576, "acks": "1", "enable.idempotence": False,
             "log_level": 0}  # quiet once the broker is gone


def _fill(producer_type: type, bootstrap: str, topic: str, total: int, keys: int) -> None:
    p = producer_type({"bootstrap.servers": bootstrap, **_PRODUCER})
    value = os.urandom(100)
    rng = random.Random(2)
    for _ in range(total // 130):
        while True:
            try:
                p.produce(topic, value, b"key-%08d" % rng.randrange(keys))
                break
            except BufferError:
                p.poll(0.01)
    if p.flush(300) != 0:
        raise SystemExit("filling the compacted topic failed")


def _produce_for(producer_type: type, bootstrap: str, topic: str, seconds: float) -> float:
    """Records of 100 bytes acknowledged per second over ``seconds`` of producing."""
    p = producer_type({"bootstrap.servers": bootstrap, **_PRODUCER})
    payload = os.urandom(100)
    acked = 0

    def on_delivery(err: object, msg: object) -> None:
        nonlocal acked
        if err is None:
            acked += 1

    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(1000):
            try:
                p.produce(topic, payload, on_delivery=on_delivery)
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(120)
    return acked / (time.perf_counter() - started)


# == command line =================================================================================


def _size(text: str) -> int:
    units = {"k": 10**3, "m": 2**20, "g": 2**30}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", default="1g", help="log size (k/m/g suffixes)")
    parser.add_argument("--keys", default="1000k", help="distinct keys (k suffix = 1000)")
    parser.add_argument("--dedupe", default="128m", help="offset map memory")
    parser.add_argument("--segment", default="128m", help="segment.bytes")
    parser.add_argument("--dir", default=None, help="where to write the log")
    parser.add_argument("--broker", action="store_true",
                        help="measure produce throughput while a broker cleans instead")
    parser.add_argument("--clean-only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clean_only:
        print(json.dumps(clean_fully(Path(args.clean_only), _size(args.segment),
                                     _size(args.dedupe))))
        return
    keys = args.keys.lower()
    distinct = int(float(keys[:-1]) * 1000) if keys.endswith("k") else int(keys)
    if args.broker:
        print(produce_while_cleaning(_size(args.bytes), distinct))
        return
    result = bench_clean(_size(args.bytes), distinct, dedupe_buffer_size=_size(args.dedupe),
                         segment_bytes=_size(args.segment), directory=args.dir)
    print(result)
    print(asdict(result))


if __name__ == "__main__":
    main()
