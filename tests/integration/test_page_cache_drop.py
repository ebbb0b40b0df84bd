"""A broker that drops old segment bytes from the page cache (log.page.cache.retain.bytes)
serves them back intact to a real client, and one set to -1 runs no trimmer."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.broker.runner import BrokerThread, local_config

pytestmark = pytest.mark.integration

VALUE_BYTES = 10_000
RECORDS = 2_000  # 20 MB: past the retained MiB and one 16 MiB step


def _value(i: int) -> bytes:
    return hashlib.sha256(b"%d" % i).digest() * (VALUE_BYTES // 32) + b"%08d" % i


def test_dropped_bytes_are_read_back_intact(tmp_path: Path) -> None:
    config = local_config(tmp_path / "data", log_page_cache_retain_bytes=str(1 << 20))
    with BrokerThread(config) as b:
        topic = f"drop-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5,
                      "batch.size": 1_000_000, "enable.idempotence": False})
        for i in range(RECORDS):
            while True:
                try:
                    p.produce(topic, _value(i), partition=0)
                    break
                except BufferError:
                    p.poll(0.05)
        assert p.flush(60) == 0
        trimmer = b.broker.logs.cache_trimmer
        assert trimmer is not None
        assert trimmer.queued >= 1
        assert trimmer.wait_done(timeout=60)

        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "drop",
                      "enable.auto.commit": False})
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            got: list[bytes] = []
            while len(got) < RECORDS:
                msgs = c.consume(num_messages=500, timeout=10)
                assert msgs, f"stalled after {len(got)} records"
                for m in msgs:
                    assert m.error() is None, m.error()
                    got.append(m.value())
        finally:
            c.close()
        assert got == [_value(i) for i in range(RECORDS)]


def test_minus_one_leaves_the_page_cache_alone(tmp_path: Path) -> None:
    with BrokerThread(local_config(tmp_path / "data", log_page_cache_retain_bytes="-1")) as b:
        assert b.broker.logs.cache_trimmer is None
