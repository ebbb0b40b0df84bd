"""aiokafka against three broker processes: produce through a bootstrap that does not lead the
partitions, and consume in a group whose coordinator is another broker than the bootstrap,
committed offsets resumed by the next member."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from test_cluster_clients import (
    _INTERNAL,
    _create,
    _heartbeat_code,
    _key_coordinated_elsewhere,
    _leaders,
    _wait,
)

from odradek.cluster.local import LocalCluster
from odradek.errors import ErrorCode

pytestmark = pytest.mark.integration

PARTITIONS = 6


async def _produce(bootstrap: str, topic: str, values: list[str]) -> dict[int, list[str]]:
    """Keyed records, idempotent, acks=all; what each partition acknowledged, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, key=v.encode(), value=v.encode()) for v in values
        ]
        delivered: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for value, future in zip(values, sent, strict=True):
            md = await future
            delivered[md.partition].append((md.offset, value))
    finally:
        await producer.stop()
    return {p: [v for _, v in sorted(rows)] for p, rows in delivered.items()}


async def _group_read(bootstrap: str, topic: str, group: str, count: int) -> dict[int, list[str]]:
    """``count`` records through one group member, then its offsets committed."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: dict[int, list[str]] = defaultdict(list)
    try:
        async with asyncio.timeout(60):
            while sum(map(len, got.values())) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    got[tp.partition].extend(r.value.decode() for r in records)
        await consumer.commit()
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
        assert sum(c or 0 for c in committed) >= count
    finally:
        await consumer.stop()
    return got


def test_aiokafka_produces_through_a_non_leader_and_consumes_in_a_group_coordinated_elsewhere(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3, **_INTERNAL)
    one = cluster.broker(1).address
    topic = f"aio-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS and -1 not in ls.values() else None)(
            _leaders(one, topic)
        ),
        "every partition's leader",
    )
    assert set(leaders.values()) == {1, 2, 3}  # broker 1 does not lead most of them

    values = [f"a{i}" for i in range(300)]
    delivered = asyncio.run(_produce(one, topic, values))
    assert sum(map(len, delivered.values())) == len(values)
    assert {leaders[p] for p in delivered} == {1, 2, 3}

    group, coordinator = _key_coordinated_elsewhere(one, f"aiogrp-{topic}", 0, avoid=1)
    assert _heartbeat_code(one, group) == ErrorCode.not_coordinator
    got = asyncio.run(_group_read(one, topic, group, len(values)))
    assert dict(got) == delivered  # nothing lost or duplicated, order kept per partition

    # The next member of the group resumes from the committed offsets: only the new records.
    more = [f"b{i}" for i in range(60)]
    delivered_more = asyncio.run(_produce(cluster.broker(coordinator).address, topic, more))
    resumed = asyncio.run(_group_read(one, topic, group, len(more)))
    assert dict(resumed) == delivered_more
