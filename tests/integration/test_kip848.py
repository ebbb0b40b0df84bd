"""KIP-848 consumer groups (``group.protocol=consumer``) with librdkafka (confluent-kafka)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.broker.runner import BrokerThread, local_config

pytestmark = pytest.mark.integration

PARTITIONS = 6
DEADLINE_S = 60


@pytest.fixture
def kip848_bootstrap(tmp_path: Path) -> Iterator[str]:
    # A short heartbeat interval so that rebalances take a few hundred milliseconds.
    config = local_config(
        tmp_path / "data",
        group_consumer_heartbeat_interval_ms="300",
        group_consumer_min_heartbeat_interval_ms="300",
    )
    with BrokerThread(config) as b:
        yield b.bootstrap


def _create(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)
    fs[name].result(timeout=10)


def _produce(bootstrap: str, topic: str, values: Sequence[str]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, v in enumerate(values):
        p.produce(topic, value=v.encode(), partition=i % PARTITIONS)
    assert p.flush(10) == 0


def _consumer(bootstrap: str, group: str, topic: str) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    return c


def _assigned(c: Consumer) -> set[int]:
    return {tp.partition for tp in c.assignment()}


def _poll_until(
    consumers: Sequence[Consumer],
    done: Callable[[], bool],
    seen: dict[str, list[tuple[int, int, str]]] | None = None,
    names: Sequence[str] = (),
) -> None:
    """Poll every consumer in turn until ``done()``, recording (partition, offset, value) of
    each record and committing it synchronously; fails after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, "timed out"
        for i, c in enumerate(consumers):
            msg = c.poll(0.05)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            if seen is not None:
                seen[names[i]].append((msg.partition(), msg.offset(), msg.value().decode()))
            c.commit(message=msg, asynchronous=False)


def _settled(consumers: Sequence[Consumer]) -> bool:
    """Every partition held by exactly one consumer, and evenly spread (the uniform target;
    intermediate states of a rebalance can be disjoint and complete but uneven)."""
    parts = [_assigned(c) for c in consumers]
    union = set().union(*parts)
    even = PARTITIONS // len(consumers)
    return (
        union == set(range(PARTITIONS))
        and sum(len(p) for p in parts) == PARTITIONS
        and all(len(p) == even for p in parts)
    )


def test_three_consumers_share_then_two_take_over(kip848_bootstrap: str) -> None:
    bootstrap = kip848_bootstrap
    topic = f"kip848-{uuid.uuid4().hex[:6]}"
    group = f"g-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, PARTITIONS)
    names = ["a", "b", "c"]
    consumers = [_consumer(bootstrap, group, topic) for _ in names]
    try:
        # 1. All three end up with a share of the six partitions, no partition twice.
        _poll_until(consumers, lambda: _settled(consumers))
        shares = {n: _assigned(c) for n, c in zip(names, consumers, strict=True)}

        first = [f"one-{i}" for i in range(300)]
        _produce(bootstrap, topic, first)
        seen: dict[str, list[tuple[int, int, str]]] = {n: [] for n in names}
        _poll_until(
            consumers, lambda: sum(len(v) for v in seen.values()) >= len(first), seen, names
        )
        for n in names:  # each read only its own partitions
            assert {p for p, _, _ in seen[n]} <= shares[n]
        values = [v for recs in seen.values() for _, _, v in recs]
        assert sorted(values) == sorted(first)

        # ConsumerGroupDescribe as the admin client sees it.
        admin = AdminClient({"bootstrap.servers": bootstrap})
        desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
        assert str(desc.state).endswith("STABLE")
        assert len(desc.members) == 3
        described = sorted(
            tp.partition for m in desc.members for tp in m.assignment.topic_partitions
        )
        assert described == list(range(PARTITIONS))

        # 2. One leaves (after committing everything it read); the other two take its
        # partitions over and resume from its commits: nothing lost, nothing read twice.
        leaver = consumers.pop(2)
        names.pop(2)
        leaver.close()
        _poll_until(consumers, lambda: _settled(consumers))
        second = [f"two-{i}" for i in range(300)]
        _produce(bootstrap, topic, second)
        seen2: dict[str, list[tuple[int, int, str]]] = {n: [] for n in names}
        _poll_until(
            consumers, lambda: sum(len(v) for v in seen2.values()) >= len(second), seen2, names
        )
        values2 = [v for recs in seen2.values() for _, _, v in recs]
        assert sorted(values2) == sorted(second)

        committed = consumers[0].committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10
        )
        assert sum(tp.offset for tp in committed) == len(first) + len(second)
    finally:
        for c in consumers:
            c.close()


def test_consumer_group_describe_unknown_group(kip848_bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": kip848_bootstrap})
    desc = admin.describe_consumer_groups(["no-such-group"])["no-such-group"]
    try:
        result = desc.result(timeout=10)
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND
    else:  # older fallbacks describe an unknown group as Dead
        assert str(result.state).endswith(("DEAD", "UNKNOWN"))
