"""Cluster benchmark: three broker processes on a local etcd next to one broker, in one run.

- produce and consume throughput (librdkafka, 1 KiB records, acks=1) to a topic whose
  partitions are spread over the three brokers, and to the same topic on a single-broker
  cluster; the ratio says how much the second core is used;
- metadata propagation: a topic created through broker 1, until broker 3's Metadata lists it
  (median of several);
- controller failover: the controller's process killed with -9, until a topic can be created
  through another broker (includes the session timeout, which sets the detection time);
- broker restart: a broker killed with -9 and started again, until every partition it leads is
  led again (Metadata through another broker).

Every cluster runs in its own temporary directory with ``broker.session.timeout.ms`` of 2 s.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cluster.local import LocalCluster

__all__ = ["bench_cluster"]

PARTITIONS = 6
SESSION_MS = 2000


def _wait(condition: Callable[[], bool], timeout: float = 60.0) -> float:
    t0 = time.perf_counter()
    while not condition():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit("cluster bench: timed out")
        time.sleep(0.005)
    return time.perf_counter() - t0


def _create(bootstrap: str, name: str, partitions: int = PARTITIONS, timeout: float = 60) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout)


def _leaders(bootstrap: str, topic: str) -> dict[int, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return {}
    return {p.id: p.leader for p in t.partitions.values()}


def _listed(admin: AdminClient, name: str) -> bool:
    topic = admin.list_topics(name, timeout=5).topics.get(name)
    return topic is not None and topic.error is None


def _throughput(bootstrap: str, topic: str, count: int) -> tuple[float, float]:
    """(produce MB/s, consume MB/s) of ``count`` 1 KiB records over every partition."""
    value = b"x" * 1024
    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000})
    t0 = time.perf_counter()
    for i in range(count):
        while True:
            try:
                p.produce(topic, value=value, partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.01)
    if p.flush(120) != 0:
        raise SystemExit("cluster bench: produce did not finish")
    produce_s = time.perf_counter() - t0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"b-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  # librdkafka stops fetching for 1 s (its default) whenever its queue is full,
                  # which three brokers filling it at once hit all the time: measure the
                  # brokers, not that pause.
                  "fetch.queue.backoff.ms": 10})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = 0
    t0 = time.perf_counter()
    while got < count:
        # Never ask for more than is left: consume() would wait out its timeout for the rest.
        for m in c.consume(min(10_000, count - got), 1.0):
            if m.error() is None:
                got += 1
        if time.perf_counter() - t0 > 120:
            raise SystemExit("cluster bench: consume did not finish")
    consume_s = time.perf_counter() - t0
    c.close()
    mb = count * 1024 / 1e6
    return mb / produce_s, mb / consume_s


def bench_cluster(records: int = 200_000, rounds: int = 3) -> None:
    with tempfile.TemporaryDirectory(prefix="odradek-cluster-bench-") as tmp:
        props = {"broker.session.timeout.ms": str(SESSION_MS)}
        single = LocalCluster(Path(tmp) / "one", 1, broker_properties=props)
        three = LocalCluster(Path(tmp) / "three", 3, broker_properties=props)
        single.start()
        three.start()
        try:
            _create(single.bootstrap, "tput")
            _create(three.bootstrap, "tput")
            _wait(lambda: len(set(_leaders(three.bootstrap, "tput").values())) == 3)
            figures: dict[str, list[tuple[float, float]]] = {"one": [], "three": []}
            for _ in range(rounds):  # interleaved, so load on the machine hits both alike
                figures["one"].append(_throughput(single.bootstrap, "tput", records))
                figures["three"].append(_throughput(three.bootstrap, "tput", records))
            for what, index in (("produce", 0), ("consume", 1)):
                one = statistics.median(f[index] for f in figures["one"])
                many = statistics.median(f[index] for f in figures["three"])
                print(f"cluster {what} 1 KiB, {PARTITIONS} partitions: 3 brokers {many:.0f} MB/s, "
                      f"1 broker {one:.0f} MB/s, ratio {many / one:.2f} (medians of {rounds})")

            one_addr, three_addr = three.broker(1).address, three.broker(3).address
            spans = []
            for i in range(10):
                name = f"prop-{i}-{uuid.uuid4().hex[:6]}"
                admin = AdminClient({"bootstrap.servers": one_addr})
                watcher = AdminClient({"bootstrap.servers": three_addr})
                t0 = time.perf_counter()
                admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
                created = time.perf_counter() - t0
                seen = _wait(lambda n=name, w=watcher: _listed(w, n))  # type: ignore[misc]
                spans.append((created, seen))
            print(f"cluster metadata: CreateTopics answered in "
                  f"{statistics.median(s[0] for s in spans) * 1000:.1f} ms, then seen on another "
                  f"broker {statistics.median(s[1] for s in spans) * 1000:.1f} ms later (medians "
                  f"of {len(spans)}; goal < 100 ms)")

            controller = three.status().controller
            assert controller is not None
            victim = controller[0]
            other = next(n for n in (1, 2, 3) if n != victim)
            t0 = time.perf_counter()
            three.broker(victim).kill()

            def can_create() -> bool:
                try:
                    # librdkafka sends CreateTopics to the controller it knows: a short
                    # timeout, then a new client that asks for the current one.
                    _create(three.broker(other).address, f"after-{uuid.uuid4().hex[:6]}", 1, 1.0)
                    return True
                except Exception:
                    return False

            _wait(can_create)
            # A topic can be created as soon as the other brokers' images drop the dead broker;
            # the new controller's election is bounded by the same session timeout.
            print(f"cluster controller failover (kill -9 → a topic created through broker "
                  f"{other}): {time.perf_counter() - t0:.2f} s with broker.session.timeout.ms="
                  f"{SESSION_MS}")
            three.broker(victim).start()
            _wait(lambda: len(set(_leaders(three.bootstrap, "tput").values())) == 3)

            before = _leaders(one_addr, "tput")
            victim = 3
            t0 = time.perf_counter()
            three.broker(victim).kill()
            three.broker(victim).start()
            _wait(lambda: _leaders(one_addr, "tput") == before and -1 not in before.values())
            print(f"cluster broker restart (kill -9 → its partitions led again): "
                  f"{time.perf_counter() - t0:.2f} s")
        finally:
            three.stop()
            single.stop()
