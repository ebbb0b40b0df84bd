"""Records the fuzz corpus: request frames real clients send, through a recording proxy.

    .venv/bin/python tests/fuzz/capture_corpus.py [tests/fuzz/corpus]

Each client (librdkafka through confluent-kafka, kafka-python, aiokafka) talks to a fresh broker of
its own through :class:`RecordingProxy` and does what applications do: create topics (with
configs), add partitions, describe configs, produce (idempotent and compressed; librdkafka also
transactionally), consume in a group with commits, list and describe groups, delete topics. Every
request frame is kept, except that repeats of one API version with the same bytes after the
correlation id are dropped and at most :data:`PER_VERSION` frames per API version are kept.

The corpus is stored, not captured at test start: capturing takes tens of seconds of three
clients' timing, and a fixed corpus keeps a seeded fuzz run reproducible. Each client's frames go
to ``<client>.frames``: the frames as on the wire (4-byte big-endian size, then the frame).
Regenerate after a client upgrade or when the broker serves new API versions.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from recording_proxy import Exchange, RecordingProxy  # noqa: E402

from odradek.broker.runner import BrokerThread, local_config  # noqa: E402

__all__ = ["capture", "main"]

PER_VERSION = 6
RECORDS = 20


def _librdkafka(bootstrap: str, prefix: str) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import (
        AdminClient,
        ConfigResource,
        NewPartitions,
        NewTopic,
    )

    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "client.id": "fuzz-corpus"}
    admin = AdminClient(conf)
    topic, other = f"{prefix}-a", f"{prefix}-b"
    futures = admin.create_topics([
        NewTopic(topic, 2, 1, config={"cleanup.policy": "delete", "retention.ms": "600000"}),
        NewTopic(other, 1, 1),
    ])
    for f in futures.values():
        f.result(timeout=10)
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(timeout=10)
    for f in admin.describe_configs([ConfigResource("topic", topic)]).values():
        f.result(timeout=10)
    producer = Producer({**conf, "enable.idempotence": True, "compression.type": "zstd",
                         "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(topic, key=f"k{i}".encode(), value=f"value {i}".encode() * 3,
                         headers={"h": b"v"})
    assert producer.flush(10) == 0
    txn = Producer({**conf, "transactional.id": f"{prefix}-txn", "linger.ms": 5})
    txn.init_transactions(10)
    txn.begin_transaction()
    for i in range(3):
        txn.produce(other, value=f"txn {i}".encode())
    txn.commit_transaction(10)
    consumer = Consumer({**conf, "group.id": f"{prefix}-group", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    consumer.subscribe([topic, other])
    got, deadline = 0, time.monotonic() + 20
    while got < RECORDS + 3 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got += 1
    consumer.commit(asynchronous=False)
    # Consume-transform-produce: AddOffsetsToTxn and TxnOffsetCommit.
    txn.begin_transaction()
    txn.produce(other, value=b"derived")
    txn.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                    consumer.consumer_group_metadata(), 10)
    txn.commit_transaction(10)
    consumer.close()
    # A KIP-848 consumer: ConsumerGroupHeartbeat.
    consumer = Consumer({**conf, "group.id": f"{prefix}-848", "group.protocol": "consumer",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            break
    consumer.close()
    admin.list_consumer_groups().result(timeout=10)
    for f in admin.describe_consumer_groups([f"{prefix}-group"]).values():
        f.result(timeout=10)
    for f in admin.delete_topics([other]).values():
        f.result(timeout=10)


def _kafka_python(bootstrap: str, prefix: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions
    from kafka.admin import NewTopic as KNewTopic

    topic, other = f"{prefix}-a", f"{prefix}-b"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="fuzz-corpus")
    admin.create_topics([KNewTopic(topic, 2, 1, topic_configs={"retention.ms": "600000"}),
                         KNewTopic(other, 1, 1)])
    admin.create_partitions({topic: NewPartitions(3)})
    admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="fuzz-corpus",
                             enable_idempotence=True, compression_type="gzip", linger_ms=5)
    for f in [producer.send(topic, key=f"k{i}".encode(), value=f"value {i}".encode())
              for i in range(RECORDS)]:
        f.get(10)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, client_id="fuzz-corpus",
                             group_id=f"{prefix}-group", auto_offset_reset="earliest",
                             enable_auto_commit=False, fetch_max_wait_ms=50)
    got, deadline = 0, time.monotonic() + 20
    while got < RECORDS and time.monotonic() < deadline:
        got += sum(len(v) for v in consumer.poll(timeout_ms=500).values())
    consumer.commit()
    consumer.close()
    group = f"{prefix}-group"
    # More admin APIs; a refusal is as good a frame as a success here.
    for call in (
        admin.list_groups,
        lambda: admin.describe_groups([group]),
        lambda: admin.list_group_offsets(group),
        admin.describe_cluster,
        admin.describe_log_dirs,
        admin.list_transactions,
        lambda: admin.describe_producers([TopicPartition(topic, 0)]),
        lambda: admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                    configs={"retention.ms": "700000"})]),
        lambda: admin.delete_records({TopicPartition(topic, 0): 1}),
        lambda: admin.describe_transactions(["fuzz-librdkafka-txn"]),
        lambda: admin.delete_group_offsets(group, [TopicPartition(topic, 0)]),
        lambda: admin.delete_groups([group]),
        lambda: admin.delete_topics([other]),
    ):
        try:
            call()
        except Exception as e:  # noqa: BLE001
            print(f"  kafka-python admin call failed (frame kept): {e!r}")
    admin.close()


def _aiokafka(bootstrap: str, prefix: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
    from aiokafka.admin import NewTopic as ANewTopic

    topic, other = f"{prefix}-a", f"{prefix}-b"

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="fuzz-corpus")
        await admin.start()
        try:
            await admin.create_topics([ANewTopic(topic, 2, 1), ANewTopic(other, 1, 1)])
            await admin.create_partitions({topic: NewPartitions(3)})
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="fuzz-corpus",
                                    enable_idempotence=True, compression_type="lz4",
                                    linger_ms=5)
        await producer.start()
        try:
            for i in range(RECORDS):
                await producer.send(topic, key=f"k{i}".encode(), value=f"value {i}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, client_id="fuzz-corpus",
                                    group_id=f"{prefix}-group", auto_offset_reset="earliest",
                                    enable_auto_commit=False, fetch_max_wait_ms=50)
        await consumer.start()
        try:
            got, deadline = 0, time.monotonic() + 20
            while got < RECORDS and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                got += sum(len(v) for v in batch.values())
            await consumer.commit()
        finally:
            await consumer.stop()

    asyncio.run(run())


CLIENTS: dict[str, Callable[[str, str], None]] = {
    "librdkafka": _librdkafka,
    "kafka-python": _kafka_python,
    "aiokafka": _aiokafka,
}


def capture(client: str, work: Path) -> list[bytes]:
    """The distinct request frames ``client`` sent to a fresh broker."""
    with RecordingProxy() as proxy:
        config = local_config(work / client,
                              advertised_listeners=f"PLAINTEXT://127.0.0.1:{proxy.port}",
                              group_initial_rebalance_delay_ms="0")
        with BrokerThread(config) as broker:
            proxy.upstream = (broker.broker.host, broker.broker.port)
            CLIENTS[client](f"127.0.0.1:{proxy.port}", f"fuzz-{client}")
        exchanges: list[Exchange] = proxy.snapshot()
    seen: set[bytes] = set()
    per_version: dict[tuple[int, int], int] = {}
    frames = []
    for ex in exchanges:
        key = (ex.api_key, ex.api_version)
        identity = ex.request[:4] + ex.request[8:]  # the correlation id does not count
        if identity in seen or per_version.get(key, 0) >= PER_VERSION:
            continue
        seen.add(identity)
        per_version[key] = per_version.get(key, 0) + 1
        frames.append(ex.request)
    return frames


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for client in CLIENTS:
            frames = capture(client, Path(tmp))
            data = b"".join(struct.pack(">i", len(f)) + f for f in frames)
            (out_dir / f"{client}.frames").write_bytes(data)
            apis = sorted({struct.unpack_from(">h", f)[0] for f in frames})
            print(f"{client}: {len(frames)} frames, API keys {apis}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "corpus")
