"""Real clients against a cluster of three broker processes on a real etcd: topics spread over
every broker, produce and consume through a bootstrap that does not lead, a broker killed and
restarted (its partitions leaderless meanwhile, nothing acknowledged lost), and a broker that
loses etcd refusing writes until it returns."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from test_leadership import _raw_produce

from odradek.cluster.local import LocalCluster
from odradek.errors import ErrorCode

pytestmark = pytest.mark.integration

PARTITIONS = 6


def _wait(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the answer is in
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def _leaders(bootstrap: str, topic: str) -> dict[int, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.id: p.leader for p in md.topics[topic].partitions.values()}


def _produce(bootstrap: str, topic: str, values: list[str]) -> dict[int, list[str]]:
    """Keyed records through ``bootstrap``, acks=all; every delivery by partition, in order."""
    delivered: dict[int, list[str]] = defaultdict(list)
    errors: list[KafkaError] = []

    def report(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.partition()].append(msg.value().decode())

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True})
    for v in values:
        p.produce(topic, key=v.encode(), value=v.encode(), on_delivery=report)
    assert p.flush(30) == 0
    assert errors == []
    return delivered


def _consume_all(bootstrap: str, topic: str, count: int) -> dict[int, list[str]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=20_000,
    )
    consumer.assign([_kp(topic, p) for p in range(PARTITIONS)])
    got: dict[int, list[str]] = defaultdict(list)
    try:
        seen = 0
        for record in consumer:
            got[record.partition].append(record.value.decode())
            seen += 1
            if seen >= count:
                break
    finally:
        consumer.close()
    return got


def _kp(topic: str, partition: int) -> Any:
    from kafka import TopicPartition as KTP

    return KTP(topic, partition)


def test_topics_spread_and_clients_follow_leaders(odradek_cluster: LocalCluster) -> None:
    cluster = odradek_cluster
    one, two = cluster.broker(1).address, cluster.broker(2).address
    topic = f"spread-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)

    # Every broker tells the same story: three live brokers, a controller, and leaders on all.
    for node in (1, 2, 3):
        md = AdminClient({"bootstrap.servers": cluster.broker(node).address}).list_topics(
            topic, timeout=10
        )
        assert sorted(md.brokers) == [1, 2, 3]
        assert md.controller_id in (1, 2, 3)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS else None)(_leaders(two, topic)),
        "every partition's leader",
    )
    assert set(leaders.values()) == {1, 2, 3}

    # Produce through broker 1 only, consume through broker 2 only: both follow the leaders.
    values = [f"v{i}" for i in range(600)]
    delivered = _produce(one, topic, values)
    assert sum(map(len, delivered.values())) == len(values)
    got = _consume_all(two, topic, len(values))
    assert dict(got) == dict(delivered)  # nothing lost or duplicated, order kept per partition


def test_killed_broker_leaves_its_partitions_leaderless_until_it_returns(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=2000)
    one = cluster.broker(1).address
    topic = f"kill-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS else None)(_leaders(one, topic)),
        "every partition's leader",
    )
    delivered = _produce(one, topic, [f"a{i}" for i in range(300)])
    victim = next(n for n in (2, 3) if n in leaders.values())
    cluster.broker(victim).kill()
    orphaned = {p for p, leader in leaders.items() if leader == victim}

    def leaderless() -> bool:
        now = _leaders(one, topic)
        return all(now[p] == -1 for p in orphaned) and all(
            now[p] == leaders[p] for p in set(leaders) - orphaned
        )

    _wait(leaderless, f"broker {victim}'s partitions without a leader")
    # The others' partitions still take writes.
    survivors = [p for p in range(PARTITIONS) if p not in orphaned]
    p = Producer({"bootstrap.servers": one, "acks": "all"})
    for part in survivors:
        p.produce(topic, value=b"meanwhile", partition=part)
    assert p.flush(30) == 0

    cluster.broker(victim).restart()
    _wait(lambda: _leaders(one, topic) == leaders, f"broker {victim} leading again")
    got = _consume_all(one, topic, 300 + len(survivors))
    for part, values in delivered.items():
        assert got[part][: len(values)] == values  # every acknowledged record is back


def test_broker_without_etcd_refuses_writes_until_it_returns(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=1, session_timeout_ms=1000)
    bootstrap = cluster.bootstrap
    topic = f"fence-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, 1)

    def produce_code() -> int:
        r = _raw_produce(bootstrap, topic, (0,))
        return int(r.responses[0].partition_responses[0].error_code)

    assert produce_code() == ErrorCode.none
    assert cluster.etcd is not None
    cluster.etcd.kill()
    # Once its lease could have expired, the broker stops accepting writes.
    _wait(lambda: produce_code() == ErrorCode.not_leader_or_follower, "the broker fenced")
    cluster.etcd.start()
    _wait(lambda: produce_code() == ErrorCode.none, "writes accepted again", timeout=60)
