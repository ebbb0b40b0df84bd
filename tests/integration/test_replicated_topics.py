"""Replicated topics on a cluster of three broker processes on a real etcd, through real
clients: CreateTopics and CreatePartitions place replicas on several brokers (every replica in
the ISR, the first one leading), more replicas than live brokers is INVALID_REPLICATION_FACTOR,
auto-created and internal topics take their replication factors from the broker settings, a
broker stopped with SIGTERM hands its leaderships over before it exits (controlled shutdown) and
goes on answering a client still talking to it with the new leader, and (once the follower side
of replication is in) a rolling restart under acks=all loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kio.schema.produce.v11 import request as produce_req
from rawclient import RawClient

from odradek.cluster.etcd import EtcdStore
from odradek.cluster.local import LocalCluster
from odradek.cluster.membership import ClusterKeys
from odradek.cluster.model import PartitionState
from odradek.cluster.store import EventType
from odradek.errors import ErrorCode
from odradek.protocol.records import SimpleRecord, encode_batch
from waiting import wait as _wait

pytestmark = pytest.mark.integration


def _partitions(bootstrap: str, topic: str) -> dict[int, Any]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return dict(md.topics[topic].partitions)


def test_create_topics_with_three_replicas(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(
        brokers=3, default_replication_factor="2", offsets_topic_num_partitions="3"
    )
    bootstrap = cluster.broker(1).address
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"rf3-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(topic, 6, 3)])[topic].result(30)

    for node in (1, 2, 3):  # every broker shows the same replicas, ISR and leader
        parts = _partitions(cluster.broker(node).address, topic)
        assert sorted(parts) == list(range(6))
        for p in parts.values():
            assert sorted(p.replicas) == [1, 2, 3]
            assert sorted(p.isrs) == [1, 2, 3]
            assert p.leader == p.replicas[0]
    # Leaders go round the brokers.
    assert {p.leader for p in _partitions(bootstrap, topic).values()} == {1, 2, 3}

    # More replicas than live brokers: refused, nothing created.
    too_many = f"rf4-{uuid.uuid4().hex[:6]}"
    with pytest.raises(KafkaException) as info:
        admin.create_topics([NewTopic(too_many, 1, 4)])[too_many].result(30)
    assert info.value.args[0].code() == ErrorCode.invalid_replication_factor
    assert too_many not in admin.list_topics(timeout=10).topics

    # New partitions get the topic's replication factor.
    admin.create_partitions([NewPartitions(topic, 8)])[topic].result(30)
    parts = _wait(
        lambda: (lambda ps: ps if len(ps) == 8 else None)(_partitions(bootstrap, topic)),
        "eight partitions",
    )
    assert all(len(p.replicas) == 3 and len(p.isrs) == 3 for p in parts.values())

    # Explicit assignments are kept as given, leader first.
    assigned = f"assigned-{uuid.uuid4().hex[:6]}"
    admin.create_topics(
        [NewTopic(assigned, 2, replica_assignment=[[3, 1], [2, 3]])]
    )[assigned].result(30)
    parts = _partitions(bootstrap, assigned)
    assert [parts[0].replicas, parts[1].replicas] == [[3, 1], [2, 3]]
    assert [parts[0].leader, parts[1].leader] == [3, 2]

    # A topic created by the default (-1) takes default.replication.factor.
    default = f"default-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(default, 3)])[default].result(30)
    assert all(len(p.replicas) == 2 for p in _partitions(bootstrap, default).values())

    # __consumer_offsets, created by the first group: min(3, live brokers) replicas.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g"})
    try:
        consumer.list_topics(timeout=10)
        _wait(
            lambda: (consumer.committed([]) is not None)
            and "__consumer_offsets" in admin.list_topics(timeout=10).topics,
            "__consumer_offsets",
        )
    finally:
        consumer.close()
    parts = _partitions(bootstrap, "__consumer_offsets")
    assert len(parts) == 3
    assert all(sorted(p.replicas) == [1, 2, 3] for p in parts.values())


def _history_until_deregistered(
    cluster: LocalCluster, node_id: int, since: int
) -> list[tuple[int, str, PartitionState | None]]:
    """Every change of a partition state after revision ``since``, as (revision, key, state),
    up to the deletion of broker ``node_id``'s registration (etcd keeps the history)."""
    keys = ClusterKeys(prefix=cluster.prefix)

    async def read() -> list[tuple[int, str, PartitionState | None]]:
        store = EtcdStore(cluster.etcd_endpoints, request_timeout_s=5)
        changes: list[tuple[int, str, PartitionState | None]] = []
        try:
            watch = store.watch(keys.root, prefix=True, start_revision=since + 1)
            async with asyncio.timeout(30), contextlib.aclosing(watch):
                async for event in watch:
                    key = event.kv.key
                    if key == keys.broker(node_id) and event.type is EventType.DELETE:
                        return changes
                    if key.startswith(keys.partitions):
                        state = (
                            PartitionState.decode(event.kv.value)
                            if event.type is EventType.PUT else None
                        )
                        changes.append((event.revision, key, state))
        finally:
            await store.close()
        raise AssertionError("the watch ended")

    return asyncio.run(read())


def _revision(cluster: LocalCluster) -> int:
    async def read() -> int:
        store = EtcdStore(cluster.etcd_endpoints, request_timeout_s=5)
        try:
            return (await store.range(ClusterKeys(prefix=cluster.prefix).cluster_id)).revision
        finally:
            await store.close()

    return asyncio.run(read())


def test_sigterm_hands_leaderships_over_before_the_broker_exits(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3)
    bootstrap = cluster.broker(1).address
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"handover-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(topic, 6, 3)])[topic].result(30)
    before = _partitions(bootstrap, topic)
    victim = 2
    led = {p for p, part in before.items() if part.leader == victim}
    assert led  # leaders go round the brokers

    since = _revision(cluster)
    process = cluster.broker(victim)
    process.terminate()
    history = _history_until_deregistered(cluster, victim, since)
    process.stop()
    assert "controlled shutdown: partitions handed over" in process.output()

    # While its registration still stood, every partition it led got another leader in a new
    # epoch, and it left every ISR.
    last: dict[int, PartitionState] = {}
    for _, key, state in history:
        if key.startswith(ClusterKeys(prefix=cluster.prefix).topic_partitions(topic)):
            assert state is not None
            last[int(key.rsplit("/", 1)[1])] = state
    assert set(last) == set(range(6))  # every partition had it as leader or follower
    for state in last.values():
        assert state.leader not in (victim, -1)
        assert victim not in state.isr and len(state.isr) == 2
    # What clients see from the survivors: the same; `odradek cluster status` counts them
    # under-replicated.
    after = _partitions(bootstrap, topic)
    assert all(part.leader != victim and victim not in part.isrs for part in after.values())
    status = cluster.status()
    assert [b.info.node_id for b in status.brokers] == [1, 3]
    assert {(t, p) for t, p in status.under_replicated if t == topic} == {
        (topic, p) for p in range(6)
    }


def test_after_the_handover_a_client_still_talking_is_told_the_new_leader(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    """A broker stopped with SIGTERM goes on answering for a moment after its partitions were
    handed over, while a client still talks to it: a produce that meets it then is
    NOT_LEADER_OR_FOLLOWER naming the new leader and its epoch (KIP-951), not a closed
    connection (librdkafka then waited for its 1 s leader re-query, and dropped the departed
    broker at the next Metadata: 0.5-1.9 s to the first record on the new leader)."""
    cluster = odradek_cluster_factory(brokers=3)
    bootstrap = cluster.broker(1).address
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"drain-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(30)
    leader = _wait(lambda: _partitions(bootstrap, topic)[0].leader, "a leader")

    def produce(client: RawClient) -> Any:
        body = produce_req.ProduceRequest(
            transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=10),
            topic_data=(produce_req.TopicProduceData(name=topic, partition_data=(
                produce_req.PartitionProduceData(
                    index=0, records=encode_batch([SimpleRecord(b"v")])
                ),
            )),),
        )
        return client.request(body).responses[0].partition_responses[0]

    with RawClient(cluster.broker(leader).address) as client:
        assert produce(client).error_code == ErrorCode.none
        cluster.broker(leader).terminate()
        deadline = time.monotonic() + 30
        while (answer := produce(client)).error_code == ErrorCode.none:
            assert time.monotonic() < deadline, "still the leader after 30 s"
            time.sleep(0.02)  # a client producing on: the broker sees it active
    assert answer.error_code == ErrorCode.not_leader_or_follower
    assert answer.current_leader.leader_id in {1, 2, 3} - {leader}
    assert answer.current_leader.leader_epoch == 1
    cluster.broker(leader).stop()


def test_a_rolling_restart_under_acks_all_loses_nothing_and_raises_nothing(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    """Every broker in turn stopped with SIGTERM and started again while an idempotent
    producer (acks=all, min.insync.replicas=2) keeps producing: the producer sees no error
    (only retriable ones, retried), and every acknowledged record is there once, in order."""
    pytest.importorskip("odradek.broker.replica_fetcher")  # replication's follower side
    cluster = odradek_cluster_factory(brokers=3)
    bootstrap = cluster.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"rolling-{uuid.uuid4().hex[:6]}"
    admin.create_topics(
        [NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})]
    )[topic].result(30)

    delivered: dict[int, list[str]] = {0: [], 1: [], 2: []}
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.partition()].append(msg.value().decode())

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    sent = 0

    def produce_for(seconds: float) -> None:
        nonlocal sent
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            producer.produce(topic, value=f"v{sent}".encode(), partition=sent % 3,
                             on_delivery=report)
            sent += 1
            producer.poll(0.002)

    produce_for(1.0)
    for node in (1, 2, 3):
        process = cluster.broker(node)
        process.terminate()
        while process.running:
            produce_for(0.05)
        assert "controlled shutdown: partitions handed over" in process.output()
        process.restart()
        # As an operator rolls: the next broker only once this one is back in every ISR.
        deadline = time.monotonic() + 30
        while any(t == topic for t, _ in cluster.status().under_replicated):
            assert time.monotonic() < deadline, f"broker {node} did not rejoin the ISRs"
            produce_for(0.1)
    assert producer.flush(60) == 0
    assert errors == []
    assert sum(map(len, delivered.values())) == sent

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                         "enable.auto.commit": False})
    got: dict[int, list[str]] = {0: [], 1: [], 2: []}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < sent and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got[msg.partition()].append(msg.value().decode())
    finally:
        consumer.close()
    assert got == delivered  # nothing lost, nothing twice, order kept per partition


def test_megabyte_batches_reach_the_followers_byte_for_byte(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    """Batches of up to 1 MB (the replica fetchers' answers of several MiB, read straight into
    one buffer each): every record acknowledged with acks=all by an ISR of three is on both
    followers, whole, so once the leader is stopped the new leader serves them all in order."""
    cluster = odradek_cluster_factory(brokers=3)
    bootstrap = cluster.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"big-{uuid.uuid4().hex[:6]}"
    admin.create_topics(
        [NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})]
    )[topic].result(30)
    _wait(lambda: len(_partitions(bootstrap, topic)[0].isrs) == 3, "an ISR of three")
    values = [uuid.uuid4().bytes * 64 for _ in range(6000)]  # 1 KiB each, all different
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 20, "batch.size": 1_000_000})
    failed: list[Any] = []
    for v in values:
        producer.produce(topic, v, on_delivery=lambda err, _m: err and failed.append(err))
    assert producer.flush(60) == 0 and not failed
    leader = _partitions(bootstrap, topic)[0].leader
    cluster.broker(leader).terminate()
    cluster.broker(leader).stop()
    survivor = next(b.address for n, b in cluster.brokers.items() if n != leader)
    _wait(lambda: _partitions(survivor, topic)[0].leader not in (leader, -1), "a new leader")
    consumer = Consumer({"bootstrap.servers": survivor, "group.id": f"g-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < len(values) and time.monotonic() < deadline:
        for m in consumer.consume(1000, 1.0):
            assert m.error() is None, m.error()
            got.append(m.value())
    consumer.close()
    assert got == values
