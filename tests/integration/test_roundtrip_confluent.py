"""Round trips through librdkafka (confluent-kafka) against a real broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration


def _create(bootstrap: str, name: str, partitions: int = 1, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, partitions, 1, config=config)], operation_timeout=10)
    fs[name].result(timeout=10)


def _consume_all(bootstrap: str, topic: str, partition: int, offset: int, count: int) -> list:
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        out = []
        while len(out) < count:
            msgs = c.consume(num_messages=count - len(out), timeout=10)
            assert msgs, f"timed out after {len(out)} of {count} records"
            for m in msgs:
                if m.error():
                    raise KafkaException(m.error())
                out.append(m)
        return out
    finally:
        c.close()


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_keys_headers_timestamps_survive(bootstrap: str, compression: str) -> None:
    topic = f"rt-{compression}-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic)
    p = Producer(
        {"bootstrap.servers": bootstrap, "compression.type": compression, "linger.ms": 5}
    )
    sent = []
    for i in range(200):
        key = f"k{i % 7}".encode()
        value = f"value-{i}".encode() * (i % 5 + 1)
        headers = [("h", f"{i}".encode()), ("empty", b"")]
        ts = 1_700_000_000_000 + i
        p.produce(topic, key=key, value=value, headers=headers, timestamp=ts)
        sent.append((key, value, headers, ts))
    assert p.flush(10) == 0
    got = _consume_all(bootstrap, topic, 0, 0, len(sent))
    for i, (m, (key, value, headers, ts)) in enumerate(zip(got, sent, strict=True)):
        assert m.offset() == i
        assert m.key() == key
        assert m.value() == value
        assert m.headers() == headers
        assert m.timestamp()[1] == ts


def test_two_consumers_at_different_offsets(bootstrap: str) -> None:
    topic = f"two-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic)
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(50):
        p.produce(topic, value=str(i).encode())
    assert p.flush(10) == 0
    a = _consume_all(bootstrap, topic, 0, 0, 50)
    b = _consume_all(bootstrap, topic, 0, 30, 20)
    assert [m.value() for m in a] == [str(i).encode() for i in range(50)]
    assert [m.offset() for m in b] == list(range(30, 50))


def test_replay_by_timestamp(bootstrap: str) -> None:
    topic = f"ts-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    base = 1_600_000_000_000
    for i in range(30):
        p.produce(topic, value=str(i).encode(), timestamp=base + i * 1000)
        p.flush(10)  # one batch per record, so the lookup must find a record inside the log
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        found = c.offsets_for_times([TopicPartition(topic, 0, base + 12_500)], timeout=10)
        assert found[0].offset == 13
        latest = c.offsets_for_times([TopicPartition(topic, 0, base + 99_000)], timeout=10)
        assert latest[0].offset == -1
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert (low, high) == (0, 30)
    finally:
        c.close()
    got = _consume_all(bootstrap, topic, 0, 13, 17)
    assert [m.value() for m in got] == [str(i).encode() for i in range(13, 30)]


def test_auto_create_on_metadata(bootstrap: str) -> None:
    topic = f"auto-{uuid.uuid4().hex[:6]}"
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, value=b"x")
    assert p.flush(10) == 0
    got = _consume_all(bootstrap, topic, 0, 0, 1)
    assert got[0].value() == b"x"
