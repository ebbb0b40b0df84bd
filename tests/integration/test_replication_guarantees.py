"""Three broker processes on etcd, a topic with three replicas: DeleteRecords waits for every
replica's log start (Kafka's DelayedDeleteRecords), and an idempotent producer's retry of a
batch the old leader acknowledged is recognised by the new leader as a duplicate."""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.delete_records.v2 import request as delete_req
from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4 import request as init_req
from kio.schema.list_offsets.v8 import request as list_req
from kio.schema.produce.v11 import request as produce_req
from rawclient import RawClient

from odradek.cluster.local import LocalCluster
from odradek.protocol.records import SimpleRecord, encode_batch
from waiting import wait as _wait

pytestmark = pytest.mark.integration


def _create(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(
        topic, 1, replica_assignment=[[1, 2, 3]], config={"min.insync.replicas": "2"},
    )])[topic].result(30)


def _produce(bootstrap: str, topic: str, batch: bytes) -> Any:
    body = produce_req.ProduceRequest(
        transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10),
        topic_data=(produce_req.TopicProduceData(name=topic, partition_data=(
            produce_req.PartitionProduceData(index=0, records=batch),
        )),),
    )
    with RawClient(bootstrap) as c:
        return c.request(body).responses[0].partition_responses[0]


def _list_offset(bootstrap: str, topic: str, timestamp: int) -> Any:
    body = list_req.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=(
        list_req.ListOffsetsTopic(name=topic, partitions=(list_req.ListOffsetsPartition(
            partition_index=0, current_leader_epoch=-1, timestamp=timestamp),)),
    ))
    with RawClient(bootstrap) as c:
        return c.request(body).topics[0].partitions[0]


def _delete_records(bootstrap: str, topic: str, offset: int, timeout_ms: int) -> Any:
    body = delete_req.DeleteRecordsRequest(topics=(delete_req.DeleteRecordsTopic(
        name=topic, partitions=(delete_req.DeleteRecordsPartition(partition_index=0,
                                                                  offset=offset),),
    ),), timeout=datetime.timedelta(milliseconds=timeout_ms))
    with RawClient(bootstrap) as c:
        return c.request(body).topics[0].partitions[0]


def _leader(bootstrap: str, topic: str) -> int:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return md.topics[topic].partitions[0].leader


def test_delete_records_waits_for_every_replicas_log_start(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    """The answer comes once every replica on a registered broker has moved its log start to
    the requested offset (the low watermark); a paused follower keeps it back until the
    request's timeout (REQUEST_TIMED_OUT), and once resumed it learns the leader's log start
    from its fetches and the same request succeeds."""
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=60_000,
                                      offsets_topic_replication_factor="1")
    leader = cluster.broker(1).address
    topic = f"dr-{uuid.uuid4().hex[:6]}"
    _create(leader, topic)
    for _ in range(10):
        assert _produce(leader, topic, encode_batch([SimpleRecord(b"v")])).error_code == \
            ErrorCode.none
    cluster.broker(3).pause()
    try:
        t0 = time.monotonic()
        late = _delete_records(leader, topic, 6, timeout_ms=1500)
        assert late.error_code == ErrorCode.request_timed_out
        assert time.monotonic() - t0 >= 1.4
        # The leader itself has deleted: consumers start at 6 already.
        assert _list_offset(leader, topic, -2).offset == 6
    finally:
        cluster.broker(3).resume()
    done = _delete_records(leader, topic, 6, timeout_ms=15_000)
    assert (done.error_code, done.low_watermark) == (ErrorCode.none, 6)
    # Nothing held back: a later delete with every follower fetching is answered promptly.
    t0 = time.monotonic()
    more = _delete_records(leader, topic, 8, timeout_ms=15_000)
    assert (more.error_code, more.low_watermark) == (ErrorCode.none, 8)
    assert time.monotonic() - t0 < 5
    # Every replica moved its log start: whichever becomes leader starts at 8.
    cluster.broker(1).stop()  # controlled shutdown: leadership moves at once
    new = _wait(lambda: (n := _leader(cluster.broker(2).address, topic)) in (2, 3) and n,
                "a new leader")
    address = cluster.broker(new).address
    earliest = _wait(lambda: (r := _list_offset(address, topic, -2)).error_code ==
                     ErrorCode.none and r, "the new leader to answer")
    assert earliest.offset == 8


def test_a_retry_after_a_leader_change_is_a_duplicate(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    """A batch acknowledged by the old leader (acks=all, so the followers have it and its
    producer state) and retried -- same producer id, epoch and sequence -- to the new leader
    after the old one is killed: the answer is the original offset, and the log holds it once."""
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=4000,
                                      offsets_topic_replication_factor="1")
    leader = cluster.broker(1).address
    topic = f"idem-{uuid.uuid4().hex[:6]}"
    _create(leader, topic)
    with RawClient(leader) as c:
        init = c.request(init_req.InitProducerIdRequest(
            transactional_id=None, transaction_timeout=datetime.timedelta(seconds=60),
        ))
    assert init.error_code == ErrorCode.none
    pid, epoch = init.producer_id, init.producer_epoch

    def batch(seq: int, n: int) -> bytes:
        return encode_batch([SimpleRecord(f"s{seq + i}".encode()) for i in range(n)],
                            producer_id=pid, producer_epoch=epoch, base_sequence=seq)

    first = _produce(leader, topic, batch(0, 3))
    assert (first.error_code, first.base_offset) == (ErrorCode.none, 0)
    second = batch(3, 2)
    acked = _produce(leader, topic, second)
    assert (acked.error_code, acked.base_offset) == (ErrorCode.none, 3)
    cluster.broker(1).kill()
    new = _wait(lambda: (n := _leader(cluster.broker(2).address, topic)) in (2, 3) and n,
                "a new leader")
    address = cluster.broker(new).address
    retried = _wait(
        lambda: (r := _produce(address, topic, second)).error_code == ErrorCode.none and r,
        "the new leader to take the retry",
    )
    assert retried.base_offset == 3  # recognised: the offset it got the first time
    following = _produce(address, topic, batch(5, 1))
    assert (following.error_code, following.base_offset) == (ErrorCode.none, 5)
    # A sequence gap is still refused by the new leader (its producer state is the old one's).
    gap = _produce(address, topic, batch(9, 1))
    assert gap.error_code == ErrorCode.out_of_order_sequence_number

    consumer = Consumer({"bootstrap.servers": address, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 30
        while len(values) < 6 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append((msg.offset(), msg.value()))
        assert values == [(i, f"s{i}".encode()) for i in range(6)]
    finally:
        consumer.close()


def _java_hash_partition(key: str, partitions: int = 50) -> int:
    """The coordinator partition of ``key``: Java's ``String.hashCode``, non-negative, modulo
    the partition count (``transaction.state.log.num.partitions``, 50)."""
    h = 0
    for ch in key:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("coordinator", ["leader", "another broker"])
def test_a_transactional_produce_to_a_replicated_partition(
    odradek_cluster_factory: Callable[..., LocalCluster], coordinator: str,
) -> None:
    """A transactional produce to a partition with three replicas (it waits for replication),
    whose transaction is coordinated by the partition's leader (verified in-process, KIP-890)
    or by another broker (verified by asking it first): the produce is answered and the
    transaction commits. With the coordinator elsewhere the broker once encoded the wrapper of
    the replication wait as the answer and closed the connection, so every retry failed
    alike."""
    from confluent_kafka import Producer

    cluster = odradek_cluster_factory(brokers=3)
    bootstrap = cluster.bootstrap
    probe = Producer({"bootstrap.servers": bootstrap, "transactional.id": "probe"})
    probe.init_transactions(30)  # creates __transaction_state
    admin = AdminClient({"bootstrap.servers": bootstrap})
    leaders = {p.id: p.leader for p in
               admin.list_topics(timeout=10).topics["__transaction_state"].partitions.values()}
    txn_id = next(t for t in (f"txn-{i}" for i in range(1000))
                  if (leaders[_java_hash_partition(t)] == 1) == (coordinator == "leader"))
    topic = f"txn-local-{uuid.uuid4().hex[:8]}"
    _create(bootstrap, topic)  # replicas [1, 2, 3]: broker 1 leads
    _wait(lambda: _leader(bootstrap, topic) == 1, "broker 1 leading the topic")
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                         "message.timeout.ms": 20000})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, value=f"v{i}".encode(), partition=0)
    producer.commit_transaction(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < 10 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            values.append(m.value())
    consumer.close()
    assert values == [f"v{i}".encode() for i in range(10)]
    # librdkafka's retry of a produce whose connection was closed is a duplicate, answered at
    # once: only the broker's log shows the failure.
    for broker in cluster.brokers.values():
        assert "request failed" not in broker.output(), broker.log_tail()
