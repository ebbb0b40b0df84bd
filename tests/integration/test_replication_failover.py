"""Replication end to end: three broker processes on a real etcd, a topic with three replicas and
``min.insync.replicas=2``, real clients (confluent-kafka, idempotent, acks=all).

Records acknowledged are byte-identical in the three brokers' segment files once the followers
have caught up; the leader killed with -9, the controller elects another in-sync replica,
producing and consuming go on and no acknowledged record is lost; the killed broker restarts as
a follower, truncates what it alone held (if anything) and catches up until the three logs are
identical again."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cluster.local import LocalCluster
from waiting import wait

_wait = functools.partial(wait, timeout=60.0)


pytestmark = pytest.mark.integration


def _log_bytes(data_dir: Path, topic: str, partition: int) -> bytes:
    """The partition's record batches as the broker stored them (its segments in order)."""
    directory = data_dir / f"{topic}-{partition}"
    return b"".join(p.read_bytes() for p in sorted(directory.glob("*.log")))


def _identical(cluster: LocalCluster, topic: str, partition: int) -> bytes | None:
    logs = {n: _log_bytes(b.data_dir, topic, partition) for n, b in cluster.brokers.items()}
    first = next(iter(logs.values()))
    return first if first and all(v == first for v in logs.values()) else None


def _leader(bootstrap: str, topic: str, partition: int) -> tuple[int, list[int]]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    p = md.topics[topic].partitions[partition]
    return p.leader, list(p.isrs)


def _produce(bootstrap: str, topic: str, values: list[bytes], acks: str = "all") -> set[bytes]:
    """Produce ``values`` (acks=all: with idempotence); the values acknowledged."""
    acked: set[bytes] = set()
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is None:
            acked.add(msg.value())
        else:
            errors.append(err)

    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": acks, "enable.idempotence": acks == "all",
        "linger.ms": 5, "message.timeout.ms": 60000,
    })
    for v in values:
        while True:
            try:
                producer.produce(topic, v, partition=0, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(90) == 0
    assert not errors, errors[:3]
    return acked


def _consume_all(bootstrap: str, topic: str) -> list[tuple[int, bytes]]:
    """Every record below the high watermark, with its offset."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
    })
    out: list[tuple[int, bytes]] = []
    try:
        _low, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        while (not out or out[-1][0] < end - 1) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append((msg.offset(), msg.value()))
    finally:
        consumer.close()
    return out


def test_acked_records_survive_the_leader_killed(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(
        brokers=3, session_timeout_ms=3000, min_insync_replicas="2",
    )
    bootstrap = cluster.bootstrap
    topic = f"repl-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(30)
    _wait(lambda: _leader(bootstrap, topic, 0)[0] >= 0, "a leader")

    first = _produce(bootstrap, topic, [f"a-{i}".encode() * 20 for i in range(2000)])
    assert len(first) == 2000
    # Every replica holds the leader's batches byte for byte.
    _wait(lambda: _identical(cluster, topic, 0), "three identical logs")

    leader, isr = _leader(bootstrap, topic, 0)
    assert sorted(isr) == [1, 2, 3]
    survivors = [n for n in cluster.brokers if n != leader]
    # A tail only the leader holds: written with acks=1 while the followers are stopped
    # (SIGSTOP, well within their session), then the leader killed. A follower's fetch that the
    # leader was holding may still bring it some of the tail (acks=1 may keep or lose records).
    for n in survivors:
        cluster.broker(n).pause()
    try:
        tail = _produce(cluster.broker(leader).address, topic,
                        [f"t-{i}".encode() for i in range(50)], acks="1")
    finally:
        cluster.broker(leader).kill()
        for n in survivors:
            cluster.broker(n).resume()
    assert len(tail) == 50
    alive = ",".join(cluster.broker(n).address for n in survivors)
    new_leader = _wait(
        lambda: (lambda lead: lead if lead in survivors else None)(_leader(alive, topic, 0)[0]),
        "a new leader", timeout=60,
    )
    assert new_leader != leader

    second = _produce(alive, topic, [f"b-{i}".encode() * 20 for i in range(1000)])
    assert len(second) == 1000
    records = _consume_all(alive, topic)
    offsets = [o for o, _ in records]
    assert offsets == sorted(set(offsets)), "offsets repeat or go backwards"
    values = [v for _, v in records]
    assert (first | second) <= set(values), "an acknowledged record is missing"
    assert len(values) == len(set(values)), "a record twice under idempotence"
    kept = tail & set(values)

    # The killed broker comes back as a follower and catches up to the same bytes.
    cluster.broker(leader).restart()
    _wait(lambda: _identical(cluster, topic, 0), "the restarted broker to catch up", timeout=90)
    if len(kept) < len(tail):
        # It cut what the new leader does not have, at the end of the epoch both held (KIP-279).
        assert f"diverges from the leader at epoch 0 (ends at {2000 + len(kept)} there): " \
            f"truncating {2000 + len(kept)}..2050" in cluster.broker(leader).output()
    _wait(lambda: sorted(_leader(bootstrap, topic, 0)[1]) == [1, 2, 3], "the ISR to expand",
          timeout=60)
