"""odradek measured side by side with librdkafka's mock broker (`bench/run.py --only vsmock`).

Absolute figures on a shared machine drift by tens of percent from one run to the next, so this
bench reports ratios: every workload runs against an odradek broker and against librdkafka's
built-in mock broker (C, in memory, no disk) one right after the other, the order swapped each
round, for several rounds; it prints the median of each and the ratio odradek / mock.

Processes:
- odradek: ``odradek serve`` in its own process (port 0, a temporary data dir).
- the mock: a process of its own that creates a confluent-kafka client with
  ``test.mock.num.brokers=1`` and does nothing else; librdkafka then runs the mock cluster on
  its own C threads there, and the address clients use is the broker address that cluster
  reports in its metadata (``list_topics().brokers``). Running it in this process would make
  the mock's threads share the load generator's process (and its interpreter's lock on every
  callback), which is not what a broker sees.
- the load generator: confluent-kafka (librdkafka) in this process, the same code and settings
  for both; one partition (partition 0, named explicitly: the mock creates topics on first use
  with four partitions, odradek's are created with one).
- before each run the bench calls ``sync()`` (outside the clock), so that no run is slowed
  by the kernel writing back what the run before it left in the page cache.
- the end-to-end latency consumer: a separate process (this file with ``--latency-consumer``)
  with librdkafka's default ``fetch.wait.max.ms`` (500) and ``fetch.min.bytes`` (1); records
  carry ``time.monotonic_ns()`` at produce time, which is the same clock in both processes.

When odradek's process was started with its request timings on (``odradek serve`` prints the
line ``odradek listening on ...`` and answers SIGUSR1 with a JSON line of its request-latency
histograms, see :mod:`odradek.broker.timings`), the bench takes a dump after each odradek
workload and prints the broker-side share: time from a request's arrival to its response
being sent, per API, and the produce and fetch breakdowns.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["bench_vsmock", "main"]

_MOCK_SERVER = """
import sys
from confluent_kafka import Producer
# log_level 3: the mock's notice about replacing bootstrap.servers is not an error.
p = Producer({"test.mock.num.brokers": 1, "log_level": 3})
b = next(iter(p.list_topics(timeout=30).brokers.values()))
print(f"{b.host}:{b.port}", flush=True)
sys.stdin.read()  # serve until the bench closes our stdin
"""


@dataclass
class Target:
    """One broker under test: its name, its address and how to make a one-partition topic."""

    name: str
    bootstrap: str
    proc: subprocess.Popen[str]
    creates_topics: bool  # False: topics appear on first use (the mock)
    has_timings: bool = False  # answers SIGUSR1 with its request timings

    def topic(self, label: str) -> str:
        name = f"vsmock-{label}-{uuid.uuid4().hex[:8]}"
        if self.creates_topics:
            admin = AdminClient({"bootstrap.servers": self.bootstrap})
            admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)
        return name

    def dump_timings(self) -> dict[str, object] | None:
        """The broker's request timings since the last dump (odradek only), or None."""
        if not self.has_timings or self.proc.stdout is None:
            return None
        self.proc.send_signal(signal.SIGUSR1)
        line = self.proc.stdout.readline()
        if not line.startswith("{"):
            return None
        result: dict[str, object] = json.loads(line)
        return result

    def cpu_seconds(self) -> float:
        """User + system CPU time the broker's process has used (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_mock() -> Target:
    proc = subprocess.Popen(
        [sys.executable, "-c", _MOCK_SERVER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise SystemExit("the mock broker did not start")
    return Target("mock", line, proc, creates_topics=False)


def start_odradek(data_dir: str, name: str = "odradek", src: str | None = None) -> Target:
    """``odradek serve`` from this environment, or from the source tree ``src`` (another
    checkout's ``src`` directory, put first on the broker's PYTHONPATH)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", data_dir, "--log-level", "WARNING"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("odradek listening on "):
        proc.kill()
        raise SystemExit(f"{name} did not start: {line!r}")
    root = Path(src) if src is not None else Path(__file__).resolve().parents[1] / "src"
    has_timings = (root / "odradek" / "broker" / "timings.py").exists()
    return Target(name, line.split()[-1], proc, creates_topics=True, has_timings=has_timings)


# -- workloads ---------------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, size: int, count: int, acks: str) -> float:
    """Records per second, from the first produce() to the last delivery report."""
    return produce_timed(bootstrap, topic, size, count, acks)[0]


def produce_timed(bootstrap: str, topic: str, size: int, count: int,
                  acks: str) -> tuple[float, float]:
    """(records per second, drain seconds): the drain is the time from the last produce() call
    to the last delivery report, the part of a run the broker can lengthen beyond what the
    client's own produce() loop takes."""
    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": acks,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "enable.idempotence": False,
    })
    # Metadata and the connection first: the clock measures records, not the handshake.
    p.list_topics(topic, timeout=30)
    payload = os.urandom(size)
    errors: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)

    t0 = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                p.produce(topic, payload, partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
    t1 = time.perf_counter()
    remaining = p.flush(120)
    t2 = time.perf_counter()
    if errors or remaining:
        raise SystemExit(f"{len(errors)} produce errors ({remaining} undelivered): {errors[:1]}")
    return count / (t2 - t0), t2 - t1


def consume(bootstrap: str, topic: str, count: int, passes: int) -> float:
    """Records per second reading offsets 0 to ``count`` - 1 of partition 0, ``passes`` times
    over, with librdkafka's default fetch settings. Each pass is a new consumer, connected
    before its clock starts: one consumer assigned again at offset 0 would first wait out the
    long poll its fetcher left waiting at the end of the previous pass."""
    elapsed = sum(one_pass(bootstrap, topic, count) for _ in range(passes))
    return count * passes / elapsed


def one_pass(bootstrap: str, topic: str, count: int) -> float:
    """Seconds for a new consumer to read offsets 0 to ``count`` - 1 of partition 0, from
    ``assign`` to the last record, librdkafka's default fetch settings."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"vsmock-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False,
    })
    try:
        c.list_topics(topic, timeout=30)
        t0 = time.perf_counter()
        c.assign([TopicPartition(topic, 0, 0)])
        left = count
        while left:
            # No more than the pass has left: a batch call waits to fill its batch.
            msgs = c.consume(num_messages=min(left, 10_000), timeout=10)
            if not msgs:
                raise SystemExit(f"a pass stalled with {left} records to go")
            last = msgs[-1].offset()
            assert last is not None
            left = count - 1 - last
        return time.perf_counter() - t0
    finally:
        c.close()


def fill(target: Target, label: str, size: int, count: int) -> str:
    """A new topic holding ``count`` records of ``size`` bytes in partition 0, all of them still
    there (the mock keeps only the last few MB of a partition)."""
    topic = target.topic(label)
    produce(target.bootstrap, topic, size, count, "1")
    c = Consumer({"bootstrap.servers": target.bootstrap, "group.id": "vsmock-fill"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    finally:
        c.close()
    if (low, high) != (0, count):
        raise SystemExit(f"{target.name} keeps offsets {low}-{high} of {topic}, not 0-{count}: "
                         "use a smaller --consume-window-mb")
    return topic


def latency(bootstrap: str, topic: str, rate: int, seconds: float) -> tuple[float, float]:
    """(p50, p99) in ms from produce() to the consumer process's poll() returning the record."""
    total = int(rate * seconds)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "1"})
    p.list_topics(topic, timeout=30)
    consumer = subprocess.Popen(
        [sys.executable, __file__, "--latency-consumer", bootstrap, topic, str(total)],
        stdout=subprocess.PIPE, text=True,
    )
    assert consumer.stdout is not None
    try:
        # Warm-up records until the consumer has one: it is connected and fetching.
        ready = False
        os.set_blocking(consumer.stdout.fileno(), False)
        deadline = time.monotonic() + 60
        while not ready and time.monotonic() < deadline:
            p.produce(topic, b"w", partition=0)
            p.flush(10)
            time.sleep(0.05)
            line = consumer.stdout.readline()
            ready = line.strip() == "ready"
        os.set_blocking(consumer.stdout.fileno(), True)
        if not ready:
            raise SystemExit("latency consumer never became ready")
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.001))
            p.produce(topic, b"t%d" % time.monotonic_ns(), partition=0)
            p.poll(0)
        p.flush(10)
        out, _ = consumer.communicate(timeout=seconds + 60)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    result = json.loads(out.strip().splitlines()[-1])
    if not result["n"]:
        raise SystemExit("no latency samples")
    return result["p50"], result["p99"]


def _latency_consumer(bootstrap: str, topic: str, total: int) -> None:
    """The consumer side of :func:`latency`, run as its own process."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"vsmock-latency-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False,
    })
    c.assign([TopicPartition(topic, 0, OFFSET_END)])
    lat: list[int] = []
    ready = False
    deadline = time.monotonic() + 120
    while len(lat) < total and time.monotonic() < deadline:
        m = c.poll(0.1)  # one at a time: a batch call would wait to fill its batch
        if m is None or m.error() is not None:
            continue
        now = time.monotonic_ns()
        value = m.value() or b""
        if value.startswith(b"t"):
            lat.append(now - int(value[1:]))
        elif not ready:
            ready = True
            print("ready", flush=True)
    c.close()
    lat.sort()
    n = len(lat)
    print(json.dumps({
        "n": n,
        "p50": lat[n // 2] / 1e6 if n else 0.0,
        "p99": lat[min(n - 1, int(n * 0.99))] / 1e6 if n else 0.0,
    }), flush=True)


# -- the comparison ----------------------------------------------------------------------------


@dataclass
class Workload:
    label: str
    unit: str
    run: Callable[[Target, dict[str, str]], float]
    scale: float = 1.0  # shown value = measured * scale


def _workloads(args: argparse.Namespace) -> list[Workload]:
    n1k, n100 = args.records_1k, args.records_100

    def prod(size: int, count: int, acks: str, key: str) -> Callable[[Target, dict[str, str]], float]:
        def run(t: Target, topics: dict[str, str]) -> float:
            topics[key] = t.topic(key)
            rate, drain = produce_timed(t.bootstrap, topics[key], size, count, acks)
            topics["_drain"] = str(drain)  # read (and removed) by the round loop
            return rate
        return run

    def cons(count: int, key: str) -> Callable[[Target, dict[str, str]], float]:
        passes = max(1, round(args.consume_records[key] / count))

        def run(t: Target, topics: dict[str, str]) -> float:
            return consume(t.bootstrap, topics[key], count, passes)
        return run

    def lat(which: int) -> Callable[[Target, dict[str, str]], float]:
        def run(t: Target, topics: dict[str, str]) -> float:
            if which == 0:
                result = latency(t.bootstrap, t.topic("lat"), 1000, args.latency_seconds)
                topics["_p99"] = str(result[1])
                return result[0]
            return float(topics["_p99"])
        return run

    return [
        Workload("produce 100 B, acks=1", "rec/s", prod(100, n100, "1", "p100-1")),
        Workload("produce 100 B, acks=all", "rec/s", prod(100, n100, "all", "p100-all")),
        Workload("produce 1 KiB, acks=1", "MB/s", prod(1024, n1k, "1", "p1k-1"), 1024 / 1e6),
        Workload("produce 1 KiB, acks=all", "MB/s", prod(1024, n1k, "all", "p1k-all"),
                 1024 / 1e6),
        Workload("consume 1 KiB from start", "MB/s", cons(args.window_1k, "c1k"), 1024 / 1e6),
        Workload("consume 100 B from start", "rec/s", cons(args.window_100, "c100")),
        Workload("latency p50, 1,000 rec/s", "ms", lat(0)),
        Workload("latency p99, 1,000 rec/s", "ms", lat(1)),
    ]


def _consume_arguments(ap: argparse.ArgumentParser) -> None:
    # librdkafka's mock keeps about the last 5 MB of a partition, so "from the start" reads a
    # window of that size, as many times over as makes the records asked for.
    ap.add_argument("--window-1k", type=int, default=4_000, help="records of 1 KiB to re-read")
    ap.add_argument("--window-100", type=int, default=36_000, help="records of 100 B to re-read")
    ap.add_argument("--consume-1k", type=int, default=200_000, help="1 KiB records read in all")
    ap.add_argument("--consume-100", type=int, default=1_000_000, help="100 B records read in all")


def bench_vsmock(args: argparse.Namespace) -> None:
    args.consume_records = {"c1k": args.consume_1k, "c100": args.consume_100}
    workloads = _workloads(args)
    if args.workloads:
        # A label matches when it contains any of the words given ("produce", "1 KiB", ...);
        # the p99 row is read from the p50 run, so either brings both.
        wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
        keep = {w.label for w in workloads if any(x in w.label for x in wanted)}
        if any(label.startswith("latency") for label in keep):
            keep |= {w.label for w in workloads if w.label.startswith("latency")}
        workloads = [w for w in workloads if w.label in keep]
    timings: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="odradek-vsmock-") as tmp:
        targets = [start_odradek(str(Path(tmp) / "data"))]
        if args.baseline_src:
            targets.append(start_odradek(str(Path(tmp) / "base"), "baseline", args.baseline_src))
        targets.append(start_mock())
        names = [t.name for t in targets]
        fill_topics: dict[str, dict[str, str]] = {}
        results: dict[str, dict[str, list[float]]] = {
            w.label: {n: [] for n in names} for w in workloads
        }
        cpu: dict[str, dict[str, list[float]]] = {
            w.label: {n: [] for n in names} for w in workloads
        }
        drains: dict[str, dict[str, list[float]]] = {}
        try:
            # Warm every broker up (codecs load on first use, the mock makes its first topic).
            for t in targets:
                name = t.topic("warmup")
                produce(t.bootstrap, name, 1024, 20_000, "1")
                fill_topics[t.name] = {
                    "c1k": fill(t, "c1k", 1024, args.window_1k),
                    "c100": fill(t, "c100", 100, args.window_100),
                }
                consume(t.bootstrap, fill_topics[t.name]["c1k"], args.window_1k, 2)
                t.dump_timings()  # forget the warm-up
            for r in range(args.rounds):
                # Rotate the order each round, so that no broker always runs first.
                order = targets[r % len(targets):] + targets[: r % len(targets)]
                topics = {n: dict(fill_topics[n]) for n in names}
                for w in workloads:
                    line = [f"round {r + 1}  {w.label:<26}"]
                    for t in order:
                        # Write back what earlier runs left dirty (untimed): otherwise a run
                        # pays for its predecessor's writeback, the mock's turn for nothing.
                        os.sync()
                        cpu0 = t.cpu_seconds()
                        value = w.run(t, topics[t.name]) * w.scale
                        cpu[w.label][t.name].append(t.cpu_seconds() - cpu0)
                        results[w.label][t.name].append(value)
                        drain = topics[t.name].pop("_drain", None)
                        if drain is not None:
                            drains.setdefault(w.label, {n: [] for n in names})[t.name].append(
                                float(drain))
                        line.append(f"{t.name} {value:12,.2f}")
                        if t.has_timings and not w.label.startswith("latency p99"):
                            dump = t.dump_timings()
                            if dump is not None:
                                dump["workload"] = w.label.removesuffix(", 1,000 rec/s")
                                timings.setdefault(t.name, []).append(dump)
                    print("  ".join(line), file=sys.stderr, flush=True)
        finally:
            for t in targets:
                t.stop()
    print(f"\nodradek vs librdkafka {_libversion()} mock broker: medians of {args.rounds} "
          "interleaved rounds, one partition")
    print("| workload | " + " | ".join(names) + " | "
          + " | ".join(f"{n} / mock" for n in names[:-1])
          + (" | odradek / baseline" if "baseline" in names else "")
          + " | odradek / mock per round, lowest-highest |")
    print("|---" * (len(names) * 2 + (1 if "baseline" in names else 0) + 1) + "|")
    for w in workloads:
        med = {n: statistics.median(results[w.label][n]) for n in names}
        fmt = "{:,.0f}" if w.unit == "rec/s" else "{:,.1f}" if w.unit == "MB/s" else "{:.2f}"
        cells = [f"{fmt.format(med[n])} {w.unit}" for n in names]
        cells += [_ratio(med[n], med["mock"]) for n in names[:-1]]
        if "baseline" in names:
            cells.append(_ratio(med["odradek"], med["baseline"]))
        cells.append(_round_ratios(results[w.label]["odradek"], results[w.label]["mock"]))
        print(f"| {w.label} | " + " | ".join(cells) + " |")
    if drains:
        print("\nproduce drain: seconds from the last produce() call to the last delivery report "
              "(medians; the rest of a run is the client's own produce() loop)")
        print("| workload | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for label, per in drains.items():
            print(f"| {label} | "
                  + " | ".join(f"{statistics.median(per[n]):.3f}" for n in names) + " |")
    print("\nbroker process CPU seconds per run (user + system, medians; a run's work is the "
          "same for every broker, so the ratio is CPU per unit of work)")
    print("| workload | " + " | ".join(names) + " | "
          + " | ".join(f"{n} / mock" for n in names[:-1]) + " |")
    print("|---" * (2 * len(names)) + "|")
    for w in workloads:
        if w.label.startswith("latency p99"):
            continue
        med = {n: statistics.median(cpu[w.label][n]) for n in names}
        print(f"| {w.label.removesuffix(' p50, 1,000 rec/s')} | "
              + " | ".join(f"{med[n]:.3f}" for n in names) + " | "
              + " | ".join(_ratio(med[n], med["mock"]) for n in names[:-1]) + " |")
    print("(the mock answers a fetch that finds no data only when fetch.wait.max.ms has passed, "
          "records produced meanwhile or not, so its latency is that wait, not a best case)")
    if timings:
        from timings_report import report

        for name, dumps in timings.items():
            print()
            print(report(dumps, name))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def _round_ratios(ours: list[float], mock: list[float]) -> str:
    """The lowest and highest odradek / mock ratio of single rounds (each round runs the two
    one right after the other): how far one round's verdict can stray from the median's."""
    ratios = [a / b for a, b in zip(ours, mock, strict=True) if b]
    return f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"


def _libversion() -> str:
    from confluent_kafka import libversion

    return str(libversion()[0])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--latency-consumer":
        _latency_consumer(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    bench_vsmock(ap.parse_args())


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records-1k", type=int, default=300_000)
    ap.add_argument("--records-100", type=int, default=1_000_000)
    ap.add_argument("--latency-seconds", type=float, default=10)
    _consume_arguments(ap)
    ap.add_argument("--workloads", metavar="WORDS",
                    help="run only the workloads whose label contains one of these "
                         "comma-separated words, e.g. 'produce 1 KiB,latency'")
    ap.add_argument("--baseline-src", metavar="DIR",
                    help="also run an odradek broker from this source tree (another checkout's "
                         "src/), interleaved with the other two")


if __name__ == "__main__":
    main()
