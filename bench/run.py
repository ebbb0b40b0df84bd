"""`make bench`: throughput and latency of a real odradek broker, driven by librdkafka.

The broker runs as its own process (`odradek serve`, port 0, a temporary data dir); the load
generator is confluent-kafka in this process. Both share the machine, as they will in CI.
Prints one line per measurement; targets from the issue are shown beside each figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def start_broker(
    data_dir: str, properties: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, float]:
    extra: list[str] = []
    if properties:
        config = Path(data_dir).with_suffix(".properties")
        config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        extra = ["--config", str(config)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", data_dir, "--log-level", "WARNING", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    if not line.startswith("odradek listening on "):
        proc.kill()
        raise SystemExit(f"broker did not start: {line!r}")
    return proc, line.split()[-1], elapsed


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)


def produce(bootstrap: str, topic: str, size: int, count: int, acks: str) -> tuple[float, float]:
    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": acks,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "enable.idempotence": False,
    })
    payload = os.urandom(size)
    errors: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)

    t0 = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                p.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(120)
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} produce errors, first: {errors[0]}")
    return count / elapsed, count * size / elapsed / 1e6


def consume(bootstrap: str, topic: str, size: int, count: int) -> tuple[float, float]:
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "bench",
        "enable.auto.commit": False,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "queued.max.messages.kbytes": 1_048_576,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    t0 = time.perf_counter()
    while got < count:
        msgs = c.consume(num_messages=10_000, timeout=10)
        if not msgs:
            raise SystemExit(f"consume stalled after {got} records")
        got += len(msgs)
    elapsed = time.perf_counter() - t0
    c.close()
    return got / elapsed, got * size / elapsed / 1e6


def latency(bootstrap: str, topic: str, rate: int, seconds: float) -> tuple[float, float]:
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "bench-latency",
        "fetch.wait.max.ms": 100,
        "fetch.min.bytes": 1,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    c.consume(num_messages=1, timeout=1)  # connect before measuring
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "1"})
    total = int(rate * seconds)
    lat: list[float] = []
    done = threading.Event()

    def reader() -> None:
        deadline = time.perf_counter() + seconds + 30
        while len(lat) < total and time.perf_counter() < deadline:
            m = c.poll(0.1)  # one at a time: a batch call would wait to fill the batch
            if m is not None and m.error() is None and m.value() is not None:
                lat.append(time.perf_counter() - float(m.value()))
        done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.001))
        p.produce(topic, repr(time.perf_counter()).encode())
        p.poll(0)
    p.flush(10)
    done.wait(30)
    c.close()
    lat.sort()
    if not lat:
        raise SystemExit("no latency samples")
    return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records-1k", type=int, default=300_000)
    ap.add_argument("--records-100", type=int, default=1_000_000)
    ap.add_argument("--latency-seconds", type=float, default=10)
    ap.add_argument("--group-members", type=int, default=50)
    ap.add_argument("--compaction-bytes", default="1g", help="log size to clean (k/m/g)")
    ap.add_argument("--compaction-keys", type=int, default=1_000_000)
    ap.add_argument("--scale-topics", type=int, default=100)
    ap.add_argument("--scale-partitions", type=int, default=100, help="per topic")
    ap.add_argument("--idle-connections", type=int, default=10_000)
    ap.add_argument("--registry-subjects", type=int, default=10_000)
    ap.add_argument("--registry-produce-records", type=int, default=200_000)
    ap.add_argument("--only",
                    choices=("all", "log", "groups", "transactions", "compaction", "scale",
                             "connections", "registry", "vsmock", "cluster", "replication",
                             "failover"),
                    default="all")
    ap.add_argument("--rounds", type=int, default=3, help="vsmock: interleaved rounds")
    from vsmock import _consume_arguments

    _consume_arguments(ap)
    ap.add_argument("--baseline-src", metavar="DIR",
                    help="vsmock, replication, failover: also run odradek from this source tree (src/), "
                         "interleaved")
    ap.add_argument("--workloads", metavar="WORDS",
                    help="vsmock: only the workloads whose label contains one of these "
                         "comma-separated words, e.g. 'produce 1 KiB,latency'")
    ap.add_argument("--failover-trials", type=int, default=10,
                    help="failover: trials per session timeout and kind")
    ap.add_argument("--failover-session-ms", action="append", metavar="MS",
                    help="failover: broker.session.timeout.ms to run with ('default' for the "
                         "broker's default); repeatable; default: default and 2000")
    ap.add_argument("--failover-kinds", default="kill,stop",
                    help="failover: comma-separated, of 'kill' (-9) and 'stop' (SIGTERM)")
    ap.add_argument("--failover-debug", action="store_true",
                    help="failover: print librdkafka's debug lines from each kill on")
    args = ap.parse_args()
    if args.only in ("all", "vsmock"):
        from vsmock import bench_vsmock

        bench_vsmock(args)
    if args.only in ("all", "log"):
        bench_log(args)
    if args.only in ("all", "cluster"):
        from cluster import bench_cluster

        bench_cluster(rounds=args.rounds)
    if args.only in ("all", "replication"):
        from replication import bench_replication

        bench_replication(rounds=args.rounds, baseline_src=args.baseline_src)
    if args.only == "failover":  # "replication" runs one trial of each as well
        from replication import bench_failover

        sessions = [None if s == "default" else int(s)
                    for s in (args.failover_session_ms or ["default", "2000"])]
        bench_failover(args.failover_trials, sessions, args.failover_kinds.split(","),
                       debug=args.failover_debug, baseline_src=args.baseline_src)
    if args.only in ("all", "transactions"):
        bench_transactions(args)
    if args.only in ("all", "groups"):
        bench_groups(args)
    if args.only in ("all", "compaction"):
        bench_compaction(args)
    if args.only in ("all", "scale"):
        bench_scale(args)
    if args.only in ("all", "connections"):
        bench_connections(args)
    if args.only in ("all", "registry"):
        bench_registry(args)


def bench_registry(args: argparse.Namespace) -> None:
    from registry import bench_registry as run_registry
    from registry import report

    print(report(run_registry(args.registry_subjects,
                              produce_records=args.registry_produce_records)))


def bench_scale(args: argparse.Namespace) -> None:
    from scale import bench_scale as run_scale
    from scale import report

    print(report(run_scale(args.scale_topics, args.scale_partitions)))


def bench_connections(args: argparse.Namespace) -> None:
    from connections import idle_connections

    with tempfile.TemporaryDirectory(prefix="odradek-bench-") as tmp:
        proc, bootstrap, _ = start_broker(str(Path(tmp) / "data"))
        try:
            m = idle_connections(proc.pid, bootstrap, args.idle_connections)
        finally:
            proc.terminate()
            proc.wait(30)
    mib = 2**20
    print(f"broker RSS, no connections             {m.rss_none / mib:8.0f} MiB")
    print(f"broker RSS, {m.connections:,} connections answered {m.rss_open / mib:8.0f} MiB "
          f"    (opened in {m.open_seconds:.1f} s)")
    print(f"broker RSS, {m.connections:,} idle connections     {m.rss_idle / mib:8.0f} MiB "
          f"    {(m.rss_idle - m.rss_none) / m.connections / 1024:.1f} KiB each "
          f"(target: 10,000 under 300 MiB in total)")
    print(f"broker RSS, after they closed          {m.rss_closed / mib:8.0f} MiB")


def bench_compaction(args: argparse.Namespace) -> None:
    from compaction import _size, bench_clean, produce_while_cleaning

    result = bench_clean(_size(args.compaction_bytes), args.compaction_keys)
    print(f"cleaning {result.log_bytes / 2**20:.0f} MiB, {result.distinct_keys:,} keys     "
          f"{result.clean_mb_per_s:8.1f} MB/s of log ({result.read_mb_per_s:.1f} MB/s read, "
          f"{result.passes} pass(es), {result.clean_seconds:.1f} s)")
    print(f"cleaner peak memory                {result.peak_memory_bytes / 2**20:8.0f} MiB "
          f"    (log.cleaner.dedupe.buffer.size 128 MiB)")
    print(produce_while_cleaning())


def bench_transactions(args: argparse.Namespace) -> None:
    from transactions import producer_rate, transactional_rate

    size, total = 100, 200_000
    with tempfile.TemporaryDirectory(prefix="odradek-bench-") as tmp:
        proc, bootstrap, _ = start_broker(str(Path(tmp) / "data"))
        try:
            run = uuid.uuid4().hex[:6]
            for label, rate in (
                ("plain acks=all", lambda t: producer_rate(bootstrap, t, size, total, False)),
                ("idempotent", lambda t: producer_rate(bootstrap, t, size, total, True)),
                ("transactional, 10,000 per txn",
                 lambda t: transactional_rate(bootstrap, t, size, 10_000, total)),
                ("transactional, 100 per txn",
                 lambda t: transactional_rate(bootstrap, t, size, 100, total // 10)),
            ):
                topic = f"bench-txn-{run}-{label.split()[0].strip(',')}-{uuid.uuid4().hex[:4]}"
                create_topic(bootstrap, topic)
                print(f"produce {size} B {label:<31} {rate(topic):12,.0f} records/s")
        finally:
            proc.terminate()
            proc.wait(30)


def bench_groups(args: argparse.Namespace) -> None:
    from groups import join_storm

    partitions = 100
    with tempfile.TemporaryDirectory(prefix="odradek-bench-") as tmp:
        # Kafka's development setting: no initial delay, so the figure is the protocol's own.
        proc, bootstrap, _ = start_broker(
            str(Path(tmp) / "data"), {"group.initial.rebalance.delay.ms": "0"}
        )
        try:
            topic = f"bench-groups-{uuid.uuid4().hex[:6]}"
            create_topic(bootstrap, topic, partitions)
            for protocol in ("classic", "consumer"):
                storm, leave = join_storm(
                    bootstrap, topic, partitions, args.group_members, protocol
                )
                print(f"group join storm, {args.group_members} members, {protocol:<8} "
                      f"{storm:6.2f} s to stable; one leaves: {leave:6.2f} s to stable again")
        finally:
            proc.terminate()
            proc.wait(30)


def bench_log(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="odradek-bench-") as tmp:
        data_dir = str(Path(tmp) / "data")
        proc, bootstrap, startup = start_broker(data_dir)
        try:
            print(f"broker start-up to serving        {startup * 1000:8.0f} ms     (target <= 500 ms)")
            run = uuid.uuid4().hex[:6]
            # Warm up: the first requests of each API version load their codecs.
            create_topic(bootstrap, f"bench-warmup-{run}")
            produce(bootstrap, f"bench-warmup-{run}", 1024, 50_000, "1")
            consume(bootstrap, f"bench-warmup-{run}", 1024, 50_000)
            for size, count, acks, target in (
                (1024, args.records_1k, "1", "target >= 250 MB/s"),
                (1024, args.records_1k, "all", ""),
                (100, args.records_100, "1", "target >= 400,000 records/s"),
                (100, args.records_100, "all", ""),
            ):
                topic = f"bench-{size}-{acks}-{run}"
                create_topic(bootstrap, topic)
                rps, mbps = produce(bootstrap, topic, size, count, acks)
                print(f"produce {size:>5} B acks={acks:<3}          {mbps:8.1f} MB/s "
                      f"{rps:12,.0f} records/s   {target}")
                if acks == "1":
                    rps, mbps = consume(bootstrap, topic, size, count)
                    tgt = "target >= 400 MB/s" if size == 1024 else ""
                    print(f"consume {size:>5} B from start         {mbps:8.1f} MB/s "
                          f"{rps:12,.0f} records/s   {tgt}")
            topic = f"bench-latency-{run}"
            create_topic(bootstrap, topic)
            p50, p99 = latency(bootstrap, topic, 1000, args.latency_seconds)
            print(f"end-to-end latency at 1,000 rec/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                  "(target p99 <= 10 ms)")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
