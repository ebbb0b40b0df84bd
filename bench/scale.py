"""Scale benchmark: what one broker pays for many partitions.

Against a broker in its own process (``python -m odradek serve``), with ``topics`` x
``partitions`` partitions holding one record each: the time to create them, to produce one record
to each, a Metadata request for every topic (median of several, timed around librdkafka's
``list_topics``), the broker's resident memory and open file descriptors (``/proc/<pid>``) with
no topic and with all partitions, a clean restart (SIGTERM, then start) and a kill -9 restart,
each up to the first Metadata answer that lists every partition.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.storage.open_files import default_max_open_files

__all__ = ["ScaleResult", "bench_scale"]


@dataclass(frozen=True)
class ScaleResult:
    partitions: int
    rss_idle_mb: float
    fds_idle: int
    create_s: float
    produce_s: float
    metadata_ms: float
    rss_full_mb: float
    fds_full: int
    shutdown_s: float
    clean_restart_s: float
    clean_restart_recovered: bool
    clean_all_open_s: float
    kill_restart_s: float
    kill_all_open_s: float
    max_open_files: int


def _start(data_dir: str, properties: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    config = Path(data_dir).with_suffix(".properties")
    config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", data_dir, "--log-level", "INFO", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=open(Path(data_dir).with_suffix(".log"), "a"),  # noqa: SIM115 - the child keeps it
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("odradek listening on "):
        proc.kill()
        raise SystemExit(f"broker did not start: {line!r}")
    return proc, line.split()[-1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _metadata_partitions(admin: AdminClient) -> int:
    md = admin.list_topics(timeout=30)
    return sum(len(t.partitions) for t in md.topics.values())


def _wait_serving(bootstrap: str, partitions: int, t0: float) -> float:
    """Seconds from ``t0`` until a Metadata answer lists at least ``partitions`` partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    while _metadata_partitions(admin) < partitions:
        time.sleep(0.01)
    return time.perf_counter() - t0


def _all_open_s(log_file: Path, after: int, timeout: float = 300) -> float:
    """Seconds the broker took to open (or recover) every log in the background, from the
    line it logs when done (after byte ``after`` of its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_file.read_text()[after:]
        m = re.search(r"opened \d+ partition logs in the background in (\d+) ms", text)
        if m:
            return int(m.group(1)) / 1000
        time.sleep(0.1)
    return float("nan")


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 120) -> float:
    t0 = time.perf_counter()
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise SystemExit(f"broker did not stop within {timeout:.0f} s of signal {sig}") from None
    return time.perf_counter() - t0


def bench_scale(topics: int = 100, partitions: int = 100,
                properties: dict[str, str] | None = None) -> ScaleResult:
    props = {"log.flush.interval.ms": "9223372036854775807", **(properties or {})}
    total = topics * partitions
    with tempfile.TemporaryDirectory(prefix="odradek-scale-") as tmp:
        data_dir = str(Path(tmp) / "data")
        proc, bootstrap = _start(data_dir, props)
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
            _metadata_partitions(admin)
            time.sleep(0.5)  # let start-up garbage settle before reading RSS
            rss_idle, fds_idle = _rss_mb(proc.pid), _fds(proc.pid)

            names = [f"scale-{t:04d}" for t in range(topics)]
            t0 = time.perf_counter()
            futures = admin.create_topics(
                [NewTopic(n, partitions, 1) for n in names], operation_timeout=600,
                request_timeout=600,
            )
            for f in futures.values():
                f.result(timeout=600)
            create_s = time.perf_counter() - t0

            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "log_level": 0,
                                 "enable.idempotence": False, "acks": "1"})
            errors: list[object] = []

            def on_delivery(err: object, _msg: object) -> None:
                if err is not None:
                    errors.append(err)

            t0 = time.perf_counter()
            for n in names:
                for p in range(partitions):
                    producer.produce(n, b"x" * 100, partition=p, on_delivery=on_delivery)
                producer.poll(0)
            if producer.flush(300) or errors:
                raise SystemExit(f"produce failed: {errors[:1]}")
            produce_s = time.perf_counter() - t0

            samples = []
            for _ in range(9):
                t0 = time.perf_counter()
                got = _metadata_partitions(admin)
                samples.append(time.perf_counter() - t0)
                if got < total:
                    raise SystemExit(f"metadata listed {got} of {total} partitions")
            metadata_ms = statistics.median(samples) * 1000
            rss_full, fds_full = _rss_mb(proc.pid), _fds(proc.pid)

            del producer, admin
            shutdown_s = _stop(proc)
            log_file = Path(data_dir).with_suffix(".log")
            mark = len(log_file.read_text())
            t0 = time.perf_counter()
            proc, bootstrap = _start(data_dir, props)
            clean_restart_s = _wait_serving(bootstrap, total, t0)
            clean_all_open_s = _all_open_s(log_file, mark)
            recovered = "unclean shutdown" in log_file.read_text()[mark:]

            _stop(proc, signal.SIGKILL)
            mark = len(log_file.read_text())
            t0 = time.perf_counter()
            proc, bootstrap = _start(data_dir, props)
            kill_restart_s = _wait_serving(bootstrap, total, t0)
            kill_all_open_s = _all_open_s(log_file, mark)
        finally:
            if proc.poll() is None:
                _stop(proc)
    return ScaleResult(
        total, rss_idle, fds_idle, create_s, produce_s, metadata_ms, rss_full, fds_full,
        shutdown_s, clean_restart_s, recovered, clean_all_open_s, kill_restart_s,
        kill_all_open_s, default_max_open_files(),
    )


def report(r: ScaleResult) -> str:
    n = f"{r.partitions:,}"
    return "\n".join([
        f"idle broker, no topics             {r.rss_idle_mb:8.1f} MB RSS {r.fds_idle:6d} fds"
        "   (target RSS < 60 MB)",
        f"create {n} partitions          {r.create_s:8.2f} s",
        f"produce 1 record to each           {r.produce_s:8.2f} s",
        f"Metadata, all topics (median)      {r.metadata_ms:8.1f} ms"
        "        (target < 50 ms)",
        f"with {n} partitions            {r.rss_full_mb:8.1f} MB RSS {r.fds_full:6d} fds"
        f"   (target: fds flat; log.max.open.files {r.max_open_files})",
        f"clean shutdown (SIGTERM)           {r.shutdown_s:8.2f} s",
        f"clean restart to serving           {r.clean_restart_s:8.2f} s"
        f"   {'RECOVERED (unclean!)' if r.clean_restart_recovered else 'no recovery'}"
        f"  (target < 2 s); all logs open after {r.clean_all_open_s:.2f} s",
        f"kill -9 restart to serving         {r.kill_restart_s:8.2f} s"
        f"   all logs recovered after {r.kill_all_open_s:.2f} s",
    ])


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=100)
    a = ap.parse_args()
    print(report(bench_scale(a.topics, a.partitions)))
