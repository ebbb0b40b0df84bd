"""Group benchmarks: a join storm of N consumers, then one member leaving, for the classic and
the KIP-848 (``group.protocol=consumer``) protocols, with librdkafka consumers.

"Stable" is observed from the clients: every partition of the topic is assigned to exactly one
member and every member holds at least one. Each consumer polls on its own thread (librdkafka
releases the GIL while it waits), and the main thread checks the union of their assignments.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

__all__ = ["join_storm"]


@dataclass
class Member:
    consumer: Consumer
    assigned: set[int] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


def _member(bootstrap: str, group: str, topic: str, protocol: str) -> Member:
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    if protocol == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config.update({"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1000,
                       "partition.assignment.strategy": "cooperative-sticky"})
    consumer = Consumer(config)
    m = Member(consumer)
    lock = threading.Lock()

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        with lock:
            m.assigned.update(p.partition for p in partitions)
        c.incremental_assign(partitions)

    def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
        with lock:
            m.assigned.difference_update(p.partition for p in partitions)
        c.incremental_unassign(partitions)

    def on_lost(c: Consumer, partitions: list[TopicPartition]) -> None:
        on_revoke(c, partitions)

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)

    def run() -> None:
        while not m.stop.is_set():
            consumer.poll(0.05)

    m.thread = threading.Thread(target=run, daemon=True)
    m.thread.start()
    return m


def _balanced(members: list[Member], partitions: int) -> bool:
    seen: list[int] = []
    for m in members:
        owned = list(m.assigned)
        if not owned:
            return False
        seen.extend(owned)
    return len(seen) == partitions and set(seen) == set(range(partitions))


def _wait_balanced(members: list[Member], partitions: int, timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if _balanced(members, partitions):
            return time.perf_counter() - t0
        time.sleep(0.005)
    raise SystemExit(f"group did not balance within {timeout:.0f} s")


def join_storm(
    bootstrap: str, topic: str, partitions: int, members: int, protocol: str
) -> tuple[float, float]:
    """Seconds until ``members`` consumers subscribing at once are balanced, and seconds until
    the rest are balanced again after one of them closes."""
    group = f"bench-storm-{protocol}-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    crowd = [_member(bootstrap, group, topic, protocol) for _ in range(members)]
    try:
        _wait_balanced(crowd, partitions, 120)
        storm = time.perf_counter() - t0
        leaving = crowd.pop()
        leaving.stop.set()
        assert leaving.thread is not None
        leaving.thread.join()
        t1 = time.perf_counter()
        leaving.consumer.close()
        _wait_balanced(crowd, partitions, 120)
        leave = time.perf_counter() - t1
    finally:
        for m in crowd:
            m.stop.set()
        for m in crowd:
            assert m.thread is not None
            m.thread.join()
            m.consumer.close()
    return storm, leave
