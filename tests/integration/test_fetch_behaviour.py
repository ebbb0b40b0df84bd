"""Fetch semantics that clients depend on: long polls woken by appends, size limits that never
stall a consumer."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

pytestmark = pytest.mark.integration


def test_waiting_fetch_is_woken_by_an_append(bootstrap: str) -> None:
    topic = f"wake-{uuid.uuid4().hex[:6]}"
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    p.produce(topic, value=b"first")
    assert p.flush(10) == 0
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "unused",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 20_000,  # a broker that ignores appends would answer after 20 s
        "fetch.min.bytes": 1,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    first = c.poll(10)
    assert first is not None and first.value() == b"first"
    ready = threading.Event()
    got: list[tuple[bytes | None, float]] = []

    def reader() -> None:
        ready.set()
        m = c.poll(15)
        got.append((None if m is None else m.value(), time.monotonic()))

    t = threading.Thread(target=reader)
    t.start()
    ready.wait(5)
    sent_at = time.monotonic()
    p.produce(topic, value=b"second")
    assert p.flush(10) == 0
    t.join(20)
    c.close()
    assert got and got[0][0] == b"second"
    assert got[0][1] - sent_at < 10, "the long poll was not woken by the append"


def test_batches_larger_than_fetch_limits_still_flow(bootstrap: str) -> None:
    topic = f"big-{uuid.uuid4().hex[:6]}"
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 200_000})
    for i in range(40):
        p.produce(topic, value=bytes([i]) * 5000)
    assert p.flush(10) == 0
    # Limits far below one batch: the broker must still return a whole batch each time.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,
        fetch_max_bytes=1024,
        consumer_timeout_ms=10_000,
    )
    tp = KpTopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    values = []
    while len(values) < 40:
        batch = consumer.poll(timeout_ms=10_000)
        assert batch, f"stalled after {len(values)} records"
        for records in batch.values():
            values.extend(r.value for r in records)
    consumer.close()
    assert values == [bytes([i]) * 5000 for i in range(40)]
