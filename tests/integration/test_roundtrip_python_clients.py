"""Round trips through kafka-python and aiokafka against a real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTP
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration

COMPRESSIONS = [None, "gzip", "snappy", "lz4", "zstd"]


def _create(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_kafka_python_round_trip(bootstrap: str, compression: str | None) -> None:
    topic = f"kp-{compression}-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, partitions=2)
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression,
                             linger_ms=5)
    sent = []
    for i in range(100):
        key = f"key-{i % 5}".encode()
        value = f"value-{i}".encode()
        headers = [("n", str(i).encode())]
        ts = 1_700_000_000_000 + i
        md = producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts).get(10)
        sent.append((md.partition, md.offset, key, value, headers, ts))
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=10_000)
    tps = [TopicPartition(topic, p) for p in range(2)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = {}
    while len(got) < len(sent):
        batch = consumer.poll(timeout_ms=10_000)
        assert batch, f"timed out after {len(got)} records"
        for records in batch.values():
            for r in records:
                got[(r.partition, r.offset)] = r
    consumer.close()
    # same key, same partition: order per key holds
    by_key: dict[bytes, set[int]] = {}
    for partition, offset, key, value, headers, ts in sent:
        r = got[(partition, offset)]
        assert (r.key, r.value, list(r.headers), r.timestamp) == (key, value, headers, ts)
        by_key.setdefault(key, set()).add(partition)
    assert all(len(ps) == 1 for ps in by_key.values())


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_aiokafka_round_trip(bootstrap: str, compression: str | None) -> None:
    topic = f"aio-{compression}-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic)

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=compression)
        await producer.start()
        try:
            batch_results = []
            for i in range(100):
                batch_results.append(await producer.send(
                    topic, key=b"k", value=f"v{i}".encode(),
                    headers=[("i", str(i).encode())], timestamp_ms=1_700_000_000_000 + i,
                ))
            for i, fut in enumerate(batch_results):
                md = await fut
                assert md.offset == i
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = AioTP(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, 40)
            got = []
            while len(got) < 60:
                data = await consumer.getmany(tp, timeout_ms=10_000)
                assert data, f"timed out after {len(got)}"
                got.extend(data[tp])
            assert [r.offset for r in got] == list(range(40, 100))
            assert [r.value for r in got] == [f"v{i}".encode() for i in range(40, 100)]
            assert got[0].headers == (("i", b"40"),)
            assert got[0].timestamp == 1_700_000_000_040
        finally:
            await consumer.stop()

    asyncio.run(run())
