"""Replication benchmark (issue 13): replication factor 3 next to one broker, in one run.

- throughput: 1 KiB and 100 B records to a one-partition topic with replication factor 3,
  ``acks=all`` and ``min.insync.replicas=2`` on a three-broker cluster, next to the same
  workload with ``acks=1`` on a one-broker cluster; rounds interleaved so load on the machine
  hits both alike. Target on 2 cores: the ratio at least 1/3;
- end-to-end latency at 1,000 records/s with ``acks=all`` (producer send → consumer receives,
  consumer in another process): p50 / p99, target p99 <= 20 ms;
- failover: the partition's leader killed with -9 (or stopped with SIGTERM, a controlled
  shutdown) → the first produce acknowledged by the new leader, with the default
  ``broker.session.timeout.ms`` and with 2 s.

With ``baseline_src`` (``bench/run.py --baseline-src DIR``: another checkout's ``src``) a second
three-broker cluster runs that code, and its replicated figures are measured in the same rounds,
interleaved with this code's (the order alternating), each as a ratio to the same one-broker
figure; the failover figures are this code's only.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cluster.local import LocalCluster

__all__ = ["bench_replication", "bench_failover"]

_CONSUMER = r"""
import sys, time
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "lat", "fetch.wait.max.ms": 500,
              "enable.auto.commit": False})
c.assign([TopicPartition(sys.argv[2], 0, 0)])
want = int(sys.argv[3])
print("ready", flush=True)
lat = []
deadline = time.time() + 120
while len(lat) < want and time.time() < deadline:
    m = c.poll(0.1)
    if m is not None and m.error() is None:
        lat.append(time.time() - float(m.value()))
c.close()
lat.sort()
print(" ".join(f"{x:.6f}" for x in lat), flush=True)
"""


@contextlib.contextmanager
def _python_path(src: str | None) -> Iterator[None]:
    """Brokers launched inside run ``src`` (put first on their PYTHONPATH) when it is given."""
    if src is None:
        yield
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, before]))
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _wait(condition: Callable[[], bool], timeout: float = 60.0) -> float:
    t0 = time.perf_counter()
    while not condition():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit("replication bench: timed out")
        time.sleep(0.005)
    return time.perf_counter() - t0


def _create(bootstrap: str, name: str, rf: int, configs: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, rf, config=configs or {})])[name].result(60)


def _partition(bootstrap: str | AdminClient, topic: str) -> tuple[int, tuple[int, ...]]:
    """(leader, isr) of partition 0 as Metadata says."""
    admin = AdminClient({"bootstrap.servers": bootstrap}) if isinstance(bootstrap, str) else bootstrap
    md = admin.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None or 0 not in t.partitions:
        return -1, ()
    p = t.partitions[0]
    return p.leader, tuple(p.isrs)


def _produce(bootstrap: str, topic: str, size: int, count: int, acks: str) -> float:
    """MB/s of ``count`` records of ``size`` bytes, every one acknowledged. The producer
    is connected first (one record sent and acknowledged before the clock starts), as the
    latency test does: an idempotent librdkafka producer waits for its producer id on a
    500 ms timer (no broker it learnt of is connected when it first asks), which is client
    start-up, not throughput, and would be charged to the replicated side alone."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000,
                  "queue.buffering.max.kbytes": 1_048_576, "enable.idempotence": acks == "all"})
    value = b"x" * size
    errors: list[object] = []

    def done(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    p.produce(topic, value, on_delivery=done)  # connect (and get a producer id) first
    if p.flush(30) != 0 or errors:
        raise SystemExit(f"replication bench: warm-up produce failed ({errors})")
    t0 = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                p.produce(topic, value, on_delivery=done)
                break
            except BufferError:
                p.poll(0.01)
    if p.flush(180) != 0 or errors:
        raise SystemExit(f"replication bench: produce failed ({len(errors)} errors)")
    return count * size / (time.perf_counter() - t0) / 1e6


def _latency(bootstrap: str, topic: str, rate: int, seconds: float) -> tuple[float, float]:
    total = int(rate * seconds)
    reader = subprocess.Popen([sys.executable, "-c", _CONSUMER, bootstrap, topic, str(total)],
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None
    reader.stdout.readline()
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                  "enable.idempotence": True})
    p.produce(topic, repr(time.time()).encode())  # connect before measuring
    p.flush(30)
    start = time.perf_counter()
    for i in range(total - 1):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.001))
        p.produce(topic, repr(time.time()).encode())
        p.poll(0)
    p.flush(30)
    out, _ = reader.communicate(timeout=180)
    lat = sorted(float(x) for x in out.split())
    if not lat:
        raise SystemExit("replication bench: no latency samples")
    return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


def _acknowledged(bootstrap: str, topic: str) -> bool:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 2000,
                  "enable.idempotence": True, "retry.backoff.ms": 20})
    result: list[object] = []
    p.produce(topic, b"probe", on_delivery=lambda err, _m: result.append(err))
    p.flush(5)
    return bool(result) and result[0] is None


class _EtcdWatch:
    """The cluster's keys as etcd's watch delivers them, each stamped with the wall-clock time
    it arrived here (the phases of a failover are told apart by these stamps, the brokers' log
    lines and the client's)."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        raw = prefix.encode()
        end = raw[:-1] + bytes([raw[-1] + 1])
        body = json.dumps({"create_request": {
            "key": base64.b64encode(raw).decode(), "range_end": base64.b64encode(end).decode()}})
        self.events: list[tuple[float, str, str, bytes]] = []  # (time, PUT/DELETE, key, value)
        self._response = urllib.request.urlopen(urllib.request.Request(  # noqa: S310
            endpoint + "/v3/watch", data=body.encode(), method="POST"), timeout=3600)
        self._response.readline()  # the "created" answer: from here on nothing is missed
        threading.Thread(target=self._read, daemon=True, name="etcd watch").start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for line in self._response:
                at = time.time()
                for e in json.loads(line).get("result", {}).get("events", ()):
                    kv = e["kv"]
                    self.events.append((at, e.get("type", "PUT"),
                                        base64.b64decode(kv["key"]).decode(),
                                        base64.b64decode(kv.get("value", ""))))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._response.close()

    def first(self, since: float, kind: str, key_end: str,
              value: Callable[[bytes], bool] = lambda _v: True) -> float | None:
        for at, k, key, v in list(self.events):
            if at >= since and k == kind and key.endswith(key_end) and value(v):
                return at
        return None


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_time(path: Path, since: float, needle: str) -> float | None:
    """When a broker first logged a line containing ``needle`` at or after ``since``."""
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if needle not in line:
                continue
            m = _LOG_TIME.match(line)
            if m is None:
                continue
            at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at >= since - 0.001:
                return at
    return None


class _ClientLog(logging.Handler):
    """librdkafka's debug lines (forwarded from poll, so stamped within a poll's 10 ms)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.time(), record.getMessage()))


@dataclasses.dataclass
class _Trial:
    acked: float  # kill → the later acknowledgement (seconds)
    seen: float  # kill → the survivors' Metadata first named the new leader
    leader: int
    new_leader: int
    was_controller: bool
    phases: dict[str, float | None]  # phase → seconds after the kill


#: The phases of a failover, in order, as the trial's timeline prints them.
_PHASES = (
    ("lease", "registration gone in etcd"),
    ("controller", "controller saw it (or, the leader being controller, a new one elected)"),
    ("written", "new leader written"),
    ("applied", "new leader's broker applied it"),
    ("client", "client's Metadata named it"),
    ("acked", "first ack"),
)


def _failover_trial(cluster: LocalCluster, watch: _EtcdWatch, topic: str,
                    controlled: bool, debug: bool, phase: float) -> _Trial:
    """Seconds from the leader's kill (or SIGTERM) to the first record acknowledged by the new
    leader, as a producer that was writing to the old one sees it: one idempotent acks=all
    producer, warmed up on the old leader, sends a record at the kill (librdkafka retries it)
    and another once the surviving brokers name a new leader (a controlled shutdown may still
    acknowledge the first itself); the time is that of the later acknowledgement. (A fresh
    client per probe would measure its own start-up and timeouts instead.) Also when the
    survivors first named the new leader, and each phase in between."""
    _wait(lambda: len(_partition(cluster.bootstrap, topic)[1]) == 3)
    _wait(lambda: _acknowledged(cluster.bootstrap, topic))
    leader = _partition(cluster.bootstrap, topic)[0]
    status = cluster.status().controller
    was_controller = status is not None and status[0] == leader
    others = ",".join(b.address for n, b in cluster.brokers.items() if n != leader)
    client_log = _ClientLog()
    logger = logging.getLogger(f"failover-client-{uuid.uuid4().hex[:6]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(client_log)
    # librdkafka's log level 2 unless debugging: the refused connections to the stopped broker
    # are expected.
    config: dict[str, object] = {
        "bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": 0, "retry.backoff.ms": 20, "retry.backoff.max.ms": 100,
        "message.timeout.ms": 120_000, "logger": logger,
        "debug": "metadata,topic" + (",broker,msg,protocol" if debug else ""),
    }
    p = Producer(config)
    survivors = AdminClient({"bootstrap.servers": others, "log_level": 2})
    acked: list[tuple[object, float]] = []

    def done(err: object, _msg: object) -> None:
        acked.append((err, time.perf_counter()))

    p.produce(topic, b"warm-up", on_delivery=done)
    if p.flush(30) != 0 or acked[0][0] is not None:
        raise SystemExit(f"replication bench: warm-up produce failed: {acked}")
    acked.clear()
    # librdkafka re-queries the leader of a partition whose broker is down on a 1 s timer that
    # started with the client: a kill at a fixed time after the client's start would always
    # meet that timer at the same phase (about 0.5 s before each tick), so the trial waits a
    # different fraction of a second first (the same fractions in every run, by ``phase``).
    pause_until = time.perf_counter() + phase
    while time.perf_counter() < pause_until:
        p.poll(0.005)
    # From here a thread of its own serves the producer's callbacks (acknowledgements, the
    # debug lines), so that their times are not those of the end of the survivors' Metadata
    # calls below (which block for a few to 100+ ms on a loaded machine).
    stop_polling = threading.Event()

    def serve() -> None:
        while not stop_polling.is_set():
            p.poll(0.002)

    poller = threading.Thread(target=serve, name="failover producer poll", daemon=True)
    poller.start()
    try:
        wall0 = time.time()
        t0 = time.perf_counter()
        if controlled:
            cluster.broker(leader).terminate()
        else:
            cluster.broker(leader).kill()
        p.produce(topic, b"at the kill", on_delivery=done)
        new_leader = -1
        while (new_leader := _partition(survivors, topic)[0]) in (leader, -1):
            time.sleep(0.01)
            if time.perf_counter() - t0 > 120:
                raise SystemExit("replication bench: no new leader within 120 s")
        seen = time.perf_counter()
        p.produce(topic, b"on the new leader", on_delivery=done)
        while len(acked) < 2:
            time.sleep(0.005)
            if time.perf_counter() - t0 > 120:
                raise SystemExit("replication bench: nothing acknowledged within 120 s")
    finally:
        stop_polling.set()
        poller.join()
    p.flush(5)
    if [err for err, _ in acked] != [None, None]:
        raise SystemExit(f"replication bench: a produce across the failover failed: {acked}")
    first_ack = min(at for _, at in acked) - t0

    def rel(at: float | None) -> float | None:
        return None if at is None else at - wall0

    def led_by(value: bytes) -> bool:
        with contextlib.suppress(ValueError, KeyError):
            return int(json.loads(value)["leader"]) == new_leader
        return False

    logs = {n: cluster.broker(n).log_path for n in cluster.brokers if n != leader}
    controller_saw = [_log_time(path, wall0, f"broker {leader}'s registration ended")
                      for path in logs.values()]
    # librdkafka's "metadata" debug context logs each partition of each Metadata answer.
    client_at = next((at for at, line in client_log.lines
                      if at >= wall0 and f"Topic {topic} [0] Leader {new_leader} " in line), None)
    phases = {
        "lease": rel(watch.first(wall0, "DELETE", f"/brokers/{leader}")),
        # The dead leader was the controller: its key went with its registration, and the
        # phase is the next controller's election instead.
        "controller": rel(watch.first(wall0, "PUT", "/controller") if was_controller else
                          min((t for t in controller_saw if t is not None), default=None)),
        "written": rel(watch.first(wall0, "PUT", f"/partitions/{topic}/0", led_by)),
        "applied": rel(_log_time(logs[new_leader], wall0, f"{topic}-0: leader in epoch")),
        "client": rel(client_at),
        "acked": first_ack,
    }
    if debug:
        for at, line in client_log.lines:
            if at >= wall0 - 0.05:
                print(f"    client {at - wall0:+.3f} {line}")
    return _Trial(max(at for _, at in acked) - t0, seen - t0, leader, new_leader,
                  was_controller, phases)


def _failover(tmp: Path, session_ms: int | None, controlled: bool) -> tuple[float, float]:
    """One trial on a fresh cluster: (kill → later ack, kill → survivors named the leader)."""
    trials = failover_trials(tmp, session_ms, controlled, 1, quiet=True)[""]
    return trials[0].acked, trials[0].seen


def _print_trial(label: str, i: int, trial: _Trial) -> None:
    timeline = " → ".join(
        f"{name} {'?' if trial.phases[name] is None else f'{trial.phases[name]:.3f}'}"
        for name, _ in _PHASES)
    print(f"  {label}trial {i + 1}: {trial.acked:.3f} s (named after {trial.seen:.3f} s; "
          f"leader {trial.leader}{' (controller)' if trial.was_controller else ''} "
          f"→ {trial.new_leader}): {timeline}", flush=True)


def failover_trials(tmp: Path, session_ms: int | None, controlled: bool, count: int,
                    *, quiet: bool = False, debug: bool = False,
                    baseline_src: str | None = None) -> dict[str, list[_Trial]]:
    """``count`` failovers on one three-broker cluster (and, with ``baseline_src``, as many on
    a second one running that code, interleaved, the order alternating, each pair with the
    same pause before the kill): after each, the stopped broker is started again and the next
    trial waits for the full ISR before it stops the leader. By label: "" and "baseline "."""
    props = {} if session_ms is None else {"broker.session.timeout.ms": str(session_ms)}
    sides: dict[str, tuple[LocalCluster, _EtcdWatch]] = {}
    topic = "failover"
    try:
        # One after the other: a cluster picks free ports when it is made.
        for label, src in (("", None), ("baseline ", baseline_src)):
            if label and src is None:
                continue
            with _python_path(src):
                cluster = LocalCluster(tmp / f"fo-{uuid.uuid4().hex[:6]}", 3,
                                       broker_properties=props)
                cluster.start()
            assert cluster.etcd_endpoints
            sides[label] = (cluster, _EtcdWatch(cluster.etcd_endpoints[0],
                                                cluster.prefix.rstrip("/") + "/"))
            _create(cluster.bootstrap, topic, 3, {"min.insync.replicas": "2"})
        trials: dict[str, list[_Trial]] = {label: [] for label in sides}
        for i in range(count):
            phase = random.Random(i).random()  # seeded: the same pauses in every run
            order = list(sides.items())
            for label, (cluster, watch) in order if i % 2 == 0 else order[::-1]:
                trial = _failover_trial(cluster, watch, topic, controlled, debug, phase)
                trials[label].append(trial)
                if not quiet:
                    _print_trial(label, i, trial)
                _wait(lambda c=cluster, n=trial.leader: not c.broker(n).running)  # type: ignore[misc]
                src = baseline_src if label else None
                with _python_path(src):
                    cluster.broker(trial.leader).start()
        return trials
    finally:
        for cluster, watch in sides.values():
            cluster.stop()  # first: etcd going ends the watch's read, which a close waits for
            watch.close()


def bench_failover(trials: int, sessions: list[int | None], kinds: list[str],
                   debug: bool = False, baseline_src: str | None = None) -> None:
    """Failover alone: ``trials`` per session timeout and kind ("kill", "stop"), each trial
    printed with its phases (seconds after the kill), then median and max (of this code and,
    with ``baseline_src``, of that code, interleaved)."""
    with tempfile.TemporaryDirectory(prefix="odradek-failover-bench-") as name:
        for session_ms in sessions:
            label = "default" if session_ms is None else f"{session_ms} ms"
            target = (9000 if session_ms is None else session_ms) / 1000 + 1
            for kind in kinds:
                what = "leader killed -9" if kind == "kill" else "controlled shutdown (SIGTERM)"
                print(f"failover, broker.session.timeout.ms {label}, {what}; phases: "
                      f"{'; '.join(f'{k}: {v}' for k, v in _PHASES)}", flush=True)
                done = failover_trials(Path(name), session_ms, kind == "stop", trials,
                                       debug=debug, baseline_src=baseline_src)
                for side, results in done.items():
                    acked = sorted(t.acked for t in results)
                    medians = " ".join(
                        f"{k} {statistics.median(v):.3f}/{max(v):.3f}"
                        for k, _ in _PHASES
                        if (v := [t.phases[k] for t in results if t.phases[k] is not None]))
                    print(f"{side}failover, broker.session.timeout.ms {label}, {what}: kill → "
                          f"first acknowledged produce on the new leader: median "
                          f"{statistics.median(acked):.3f} s, max {max(acked):.3f} s over "
                          f"{len(acked)} trials (target <= {target:.1f} s; "
                          f"{sum(a <= target for a in acked)} within); sorted: "
                          f"{' '.join(f'{a:.2f}' for a in acked)}; phases median/max: {medians}",
                          flush=True)


def bench_replication(rounds: int = 3, records_1k: int = 100_000,
                      records_100: int = 300_000, baseline_src: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="odradek-repl-bench-") as name:
        tmp = Path(name)
        # One after the other: a cluster picks free ports when it is made, so two made before
        # either binds may pick the same one.
        started: list[LocalCluster] = []
        try:
            single = LocalCluster(tmp / "one", 1)
            single.start()
            started.append(single)
            three = LocalCluster(tmp / "three", 3)
            three.start()
            started.append(three)
            replicated = {"": three}
            if baseline_src is not None:
                with _python_path(baseline_src):
                    base = LocalCluster(tmp / "base", 3)
                    base.start()
                started.append(base)
                replicated["baseline "] = base
            figures: dict[str, list[float]] = {}
            for size, count in ((1024, records_1k), (100, records_100)):
                for r in range(rounds):  # fresh topics each round: the same log sizes for both
                    one, rep = f"one-{size}-{r}", f"rep-{size}-{r}"
                    _create(single.bootstrap, one, 1)
                    for cluster in replicated.values():
                        _create(cluster.bootstrap, rep, 3, {"min.insync.replicas": "2"})
                        _wait(lambda c=cluster, t=rep: len(_partition(c.bootstrap, t)[1]) == 3)  # type: ignore[misc]
                    figures.setdefault(f"one-{size}", []).append(
                        _produce(single.bootstrap, one, size, count, "1"))
                    order = list(replicated.items())
                    for label, cluster in order if r % 2 == 0 else order[::-1]:
                        figures.setdefault(f"{label}rep-{size}", []).append(
                            _produce(cluster.bootstrap, rep, size, count, "all"))
                one_mb = statistics.median(figures[f"one-{size}"])
                for label in replicated:
                    rep_mb = statistics.median(figures[f"{label}rep-{size}"])
                    ratios = [rep / one for rep, one in zip(
                        figures[f"{label}rep-{size}"], figures[f"one-{size}"], strict=True)]
                    size_label = "1 KiB" if size == 1024 else "100 B"
                    print(f"{label}replication produce {size_label}: rf=3 acks=all "
                          f"min.insync.replicas=2 {rep_mb:.1f} MB/s, 1 broker acks=1 "
                          f"{one_mb:.1f} MB/s, ratio {rep_mb / one_mb:.2f} (target >= 0.33; "
                          f"medians of {rounds}; per round "
                          f"{' '.join(f'{x:.2f}' for x in ratios)})")
            for label, cluster in replicated.items():
                _create(cluster.bootstrap, "latency", 3, {"min.insync.replicas": "2"})
                _wait(lambda c=cluster: len(_partition(c.bootstrap, "latency")[1]) == 3)  # type: ignore[misc]
                p50, p99 = _latency(cluster.bootstrap, "latency", 1000, 10)
                print(f"{label}replication end-to-end latency, rf=3 acks=all, 1,000 rec/s, "
                      f"consumer in another process: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                      f"(target p99 <= 20 ms)")
        finally:
            for cluster in reversed(started):
                cluster.stop()
        for session_ms, label in ((None, "default"), (2000, "2 s")):
            killed, killed_seen = _failover(tmp, session_ms, controlled=False)
            stopped, stopped_seen = _failover(tmp, session_ms, controlled=True)
            print(f"replication failover, broker.session.timeout.ms {label}: leader killed -9 → "
                  f"first acks=all produce acknowledged by the new leader in {killed:.2f} s "
                  f"(named leader after {killed_seen:.2f} s); controlled shutdown (SIGTERM) → "
                  f"{stopped:.2f} s (named after {stopped_seen:.2f} s)")
