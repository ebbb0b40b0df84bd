"""Leadership as clients see it: Metadata, DescribeCluster and DescribeTopicPartitions from the
broker's MetadataView, KIP-320 leader epochs, and NOT_LEADER_OR_FOLLOWER with KIP-951's current
leader.

A single node leads everything, so the multi-broker cases run real brokers in-process whose view
is replaced by a test view (``staticview``) naming other brokers as leaders: the same code paths
a cluster image will drive. The view is swapped by assigning the broker's ``cluster`` attribute
from the test thread (one reference store; the broker reads it afresh on every request).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient
from kio.schema.delete_records.v2 import request as delete_req
from kio.schema.describe_producers.v0 import request as producers_req
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v16 import request as fetch_req
from kio.schema.list_offsets.v8 import request as list_req
from kio.schema.offset_for_leader_epoch.v4 import request as epoch_req
from kio.schema.produce.v9 import request as produce_v9
from kio.schema.produce.v11 import request as produce_req
from rawclient import RawClient

from odradek.broker.runner import BrokerThread, local_config
from odradek.cluster.model import NO_LEADER, PartitionState
from odradek.protocol.records import SimpleRecord, encode_batch
from staticview import StaticView, reassigned, registered

pytestmark = pytest.mark.integration


def _wait_for(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _create(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(15)


def _produce(bootstrap: str, topic: str, partition: int, values: list[bytes],
             **config: Any) -> list[tuple[int, int]]:
    """Produce and wait: the (partition, offset) of every delivery."""
    delivered: list[tuple[int, int]] = []
    errors: list[KafkaError] = []

    def report(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **config})
    for v in values:
        p.produce(topic, value=v, partition=partition, on_delivery=report)
    assert p.flush(30) == 0
    assert errors == []
    return delivered


# --- single node, real clients ----------------------------------------------------------------


def test_metadata_and_describe_cluster_single_node(broker: BrokerThread) -> None:
    bootstrap = broker.bootstrap
    _create(bootstrap, "solo", 3)
    host, port = bootstrap.rsplit(":", 1)
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {1: (host, int(port))}
    assert md.controller_id == 1
    assert md.cluster_id == broker.broker.metadata.cluster_id
    parts = md.topics["solo"].partitions
    assert [(p.id, p.leader, p.replicas, p.isrs) for p in parts.values()] == [
        (i, 1, [1], [1]) for i in range(3)
    ]
    client = AdminClient({"bootstrap.servers": bootstrap})  # alive until the result is in
    described = client.describe_cluster().result(10)
    assert described.controller.id == 1
    assert [(n.id, n.host, n.port, n.rack) for n in described.nodes] == [
        (1, host, int(port), None)
    ]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        cluster = admin.describe_cluster()
        assert cluster["controller_id"] == 1
        assert [(b["broker_id"], b["is_fenced"]) for b in cluster["brokers"]] == [(1, False)]
    finally:
        admin.close()


def test_describe_topic_partitions_pages_with_kafka_python(broker: BrokerThread) -> None:
    bootstrap = broker.bootstrap
    _create(bootstrap, "paged", 7)
    _create(bootstrap, "paged-small", 2)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        seen: list[tuple[str, int]] = []
        cursor = None
        pages = 0
        while True:
            page = admin.describe_topic_partitions(
                ["paged-small", "paged"], response_partition_limit=3, cursor=cursor
            )
            pages += 1
            for t in page["topics"]:
                assert t["error_code"] == 0 and not t["is_internal"]
                assert t["topic_authorized_operations"] > 0
                for p in t["partitions"]:
                    assert (p["leader_id"], p["leader_epoch"], p["replica_nodes"],
                            p["isr_nodes"], p["offline_replicas"]) == (1, 0, [1], [1], [])
                    seen.append((t["name"], p["partition_index"]))
            cursor = page["next_cursor"]
            if cursor is None:
                break
        # 9 partitions, 3 a page, in name order then partition order.
        assert pages == 3
        assert seen == [("paged", i) for i in range(7)] + [("paged-small", 0), ("paged-small", 1)]
        missing = admin.describe_topic_partitions(["no-such-topic"])
        assert missing["topics"][0]["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION
    finally:
        admin.close()


def _epochs(bootstrap: str, topic: str, partition: int, *pairs: tuple[int, int]) -> list[Any]:
    """OffsetForLeaderEpoch for (current leader epoch, leader epoch) pairs."""
    body = epoch_req.OffsetForLeaderEpochRequest(replica_id=-1, topics=(
        epoch_req.OffsetForLeaderTopic(topic=topic, partitions=tuple(
            epoch_req.OffsetForLeaderPartition(
                partition=partition, current_leader_epoch=current, leader_epoch=epoch
            ) for current, epoch in pairs
        )),
    ))
    with RawClient(bootstrap) as c:
        return list(c.request(body).topics[0].partitions)


def _list_latest(bootstrap: str, topic: str, partition: int, current: int) -> Any:
    body = list_req.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=(
        list_req.ListOffsetsTopic(name=topic, partitions=(list_req.ListOffsetsPartition(
            partition_index=partition, current_leader_epoch=current, timestamp=-1),)),
    ))
    with RawClient(bootstrap) as c:
        return c.request(body).topics[0].partitions[0]


def test_leader_epochs_from_the_view_with_confluent(broker: BrokerThread) -> None:
    """KIP-320 with the view's leader epoch: a new epoch starts at the log end offset with its
    first append, a consumer holding the old epoch is fenced, refreshes its metadata and reads
    on, and records carry the epoch they were written in."""
    bootstrap = broker.bootstrap
    _create(bootstrap, "epochs", 1)
    _produce(bootstrap, "epochs", 0, [b"a0", b"a1", b"a2"])
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "epochs", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "topic.metadata.refresh.interval.ms": 600_000,
    })
    try:
        consumer.assign([TopicPartition("epochs", 0, 0)])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got.append((m.value(), m.leader_epoch()))
        assert got == [(b"a0", 0), (b"a1", 0), (b"a2", 0)]

        b = broker.broker
        b.cluster = reassigned(
            b.cluster, {("epochs", 0): PartitionState((1,), (1,), 1, leader_epoch=2,
                                                      partition_epoch=2)}
        )
        # Before any append in epoch 2: epoch 2 (and the unknown 1) end at the log end.
        assert [(r.error_code, r.leader_epoch, r.end_offset) for r in _epochs(
            bootstrap, "epochs", 0, (2, 2), (2, 1), (2, 0), (-1, 3)
        )] == [(ErrorCode.none, 2, 3), (ErrorCode.none, 0, 3), (ErrorCode.none, 0, 3),
               (ErrorCode.none, -1, -1)]
        _produce(bootstrap, "epochs", 0, [b"b3", b"b4"])
        # The consumer's fetches carry epoch 0: fenced until it has the new metadata.
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got.append((m.value(), m.leader_epoch()))
        assert got[3:] == [(b"b3", 2), (b"b4", 2)]
    finally:
        consumer.close()
    stale, future, now = _epochs(bootstrap, "epochs", 0, (1, 0), (3, 0), (2, 0))
    assert stale.error_code == ErrorCode.fenced_leader_epoch
    assert future.error_code == ErrorCode.unknown_leader_epoch
    assert (now.error_code, now.leader_epoch, now.end_offset) == (ErrorCode.none, 0, 3)
    latest = _list_latest(bootstrap, "epochs", 0, 2)
    assert (latest.error_code, latest.offset, latest.leader_epoch) == (ErrorCode.none, 5, 2)
    assert _list_latest(bootstrap, "epochs", 0, 0).error_code == ErrorCode.fenced_leader_epoch
    plog = b.topics.log("epochs", 0)
    assert [(e.epoch, e.start_offset) for e in plog.epoch_cache.entries] == [(0, 0), (2, 3)]


def test_leader_not_available_and_racks_reach_clients(broker: BrokerThread) -> None:
    bootstrap = broker.bootstrap
    _create(bootstrap, "gone", 2)
    host, port = bootstrap.rsplit(":", 1)
    b = broker.broker
    b.cluster = reassigned(
        b.cluster,
        {("gone", 1): PartitionState((3,), (3,), NO_LEADER, leader_epoch=5, partition_epoch=6)},
        # Broker 2 registered at this broker's address: clients that pick it reach one that
        # answers.
        extra_brokers=[registered(2, host, int(port), rack="rack-2")],
        controller_id=2,
    )
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics("gone", timeout=10)
    assert sorted(md.brokers) == [1, 2] and md.controller_id == 2
    p1 = md.topics["gone"].partitions[1]
    assert p1.leader == -1 and p1.replicas == [3]
    assert p1.error is not None and p1.error.code() == KafkaError.LEADER_NOT_AVAILABLE
    client = AdminClient({"bootstrap.servers": bootstrap})  # alive until the result is in
    described = client.describe_cluster().result(10)
    assert described.controller.id == 2
    assert {(n.id, n.rack) for n in described.nodes} == {(1, None), (2, "rack-2")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        page = admin.describe_topic_partitions(["gone"])
        p = page["topics"][0]["partitions"][1]
        assert (p["leader_id"], p["leader_epoch"], p["offline_replicas"]) == (-1, 5, [3])
    finally:
        admin.close()


# --- another broker leads: raw requests and a real client following the leader ---------------


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[tuple[BrokerThread, BrokerThread]]:
    with BrokerThread(local_config(tmp_path / "one", node_id="1")) as one, \
            BrokerThread(local_config(tmp_path / "two", node_id="2")) as two:
        yield one, two


def _share(one: BrokerThread, two: BrokerThread,
           states: dict[tuple[str, int], PartitionState]) -> StaticView:
    """One view for both brokers: broker 1's topics (and ids), both brokers registered,
    ``states`` replacing those partitions' (the rest led by broker 1)."""
    host, port = two.bootstrap.rsplit(":", 1)
    view = reassigned(one.broker.cluster, states,
                      extra_brokers=[registered(2, host, int(port), rack="rack-2")])
    one.broker.cluster = view
    two.broker.cluster = view
    return view


def _batch(value: bytes) -> bytes:
    return encode_batch([SimpleRecord(value)])


def _raw_produce(bootstrap: str, topic: str, partitions: tuple[int, ...],
                 module: Any = produce_req) -> Any:
    body = module.ProduceRequest(
        transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=5),
        topic_data=(module.TopicProduceData(name=topic, partition_data=tuple(
            module.PartitionProduceData(index=p, records=_batch(b"raw")) for p in partitions
        )),),
    )
    with RawClient(bootstrap) as c:
        return c.request(body)


def _raw_fetch(bootstrap: str, topic_id: Any, partitions: tuple[tuple[int, int], ...]) -> Any:
    body = fetch_req.FetchRequest(
        cluster_id=None, max_wait=datetime.timedelta(0), min_bytes=0, topics=(
            fetch_req.FetchTopic(topic_id=topic_id, partitions=tuple(
                fetch_req.FetchPartition(partition=p, current_leader_epoch=epoch,
                                         fetch_offset=0, partition_max_bytes=1 << 20)
                for p, epoch in partitions
            )),
        ), forgotten_topics_data=(),
    )
    with RawClient(bootstrap) as c:
        return c.request(body)


def test_not_leader_answers_with_the_current_leader(
    two_brokers: tuple[BrokerThread, BrokerThread],
) -> None:
    one, two = two_brokers
    for b in (one, two):
        _create(b.bootstrap, "moved", 3)
    moved = PartitionState((2,), (2,), 2, leader_epoch=4, partition_epoch=4)
    gone = PartitionState((1,), (1,), NO_LEADER, leader_epoch=1, partition_epoch=1)
    view = _share(one, two, {("moved", 1): moved, ("moved", 2): gone})
    info = view.topic("moved")
    assert info is not None
    host2, port2 = two.bootstrap.rsplit(":", 1)

    # Produce v11: NOT_LEADER_OR_FOLLOWER with leader 2 in epoch 4, and broker 2's endpoint.
    r = _raw_produce(one.bootstrap, "moved", (0, 1, 2, 7))
    parts = {p.index: p for p in r.responses[0].partition_responses}
    assert parts[0].error_code == ErrorCode.none
    assert parts[1].error_code == ErrorCode.not_leader_or_follower
    assert (parts[1].current_leader.leader_id, parts[1].current_leader.leader_epoch) == (2, 4)
    # Broker 1 holds partition 2, which has no leader: the hint says so.
    assert parts[2].error_code == ErrorCode.not_leader_or_follower
    assert (parts[2].current_leader.leader_id, parts[2].current_leader.leader_epoch) == (-1, 1)
    assert parts[7].error_code == ErrorCode.unknown_topic_or_partition
    assert [(e.node_id, e.host, e.port, e.rack) for e in r.node_endpoints] == [
        (2, host2, int(port2), "rack-2")
    ]
    # Produce v9 has no hint fields, only the error.
    r = _raw_produce(one.bootstrap, "moved", (1,), produce_v9)
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.not_leader_or_follower

    # Fetch v16 (by topic id): the same hint; broker 2 fences a stale epoch with it too.
    r = _raw_fetch(one.bootstrap, info.topic_id, ((0, 0), (1, -1)))
    fetched = {p.partition_index: p for p in r.responses[0].partitions}
    assert fetched[0].error_code == ErrorCode.none
    assert fetched[1].error_code == ErrorCode.not_leader_or_follower
    assert (fetched[1].current_leader.leader_id, fetched[1].current_leader.leader_epoch) == (2, 4)
    assert [(e.node_id, e.port, e.rack) for e in r.node_endpoints] == [(2, int(port2), "rack-2")]
    r = _raw_fetch(two.bootstrap, info.topic_id, ((1, 3), (1, 5), (1, 4)))
    stale, future, current = r.responses[0].partitions
    assert stale.error_code == ErrorCode.fenced_leader_epoch
    assert (stale.current_leader.leader_id, stale.current_leader.leader_epoch) == (2, 4)
    assert future.error_code == ErrorCode.unknown_leader_epoch
    assert current.error_code == ErrorCode.none

    # ListOffsets, OffsetForLeaderEpoch, DeleteRecords: only the leader answers.
    assert _list_latest(one.bootstrap, "moved", 1, -1).error_code == (
        ErrorCode.not_leader_or_follower)
    assert _list_latest(two.bootstrap, "moved", 1, 4).error_code == ErrorCode.none
    assert _list_latest(one.bootstrap, "moved", 9, -1).error_code == (
        ErrorCode.unknown_topic_or_partition)
    assert _epochs(one.bootstrap, "moved", 1, (-1, 0))[0].error_code == (
        ErrorCode.not_leader_or_follower)
    body = delete_req.DeleteRecordsRequest(topics=(delete_req.DeleteRecordsTopic(
        name="moved", partitions=(delete_req.DeleteRecordsPartition(partition_index=1, offset=-1),
                                  delete_req.DeleteRecordsPartition(partition_index=0, offset=-1)),
    ),), timeout=datetime.timedelta(seconds=5))
    with RawClient(one.bootstrap) as c:
        deleted = c.request(body).topics[0].partitions
    assert [d.error_code for d in deleted] == [ErrorCode.not_leader_or_follower, ErrorCode.none]
    body = producers_req.DescribeProducersRequest(topics=(
        producers_req.TopicRequest(name="moved", partition_indexes=(0, 1)),))
    with RawClient(one.bootstrap) as c:
        described = c.request(body).topics[0].partitions
    assert [d.error_code for d in described] == [ErrorCode.none, ErrorCode.not_leader_or_follower]


def test_producer_and_consumer_follow_the_leader(
    two_brokers: tuple[BrokerThread, BrokerThread],
) -> None:
    """confluent-kafka, bootstrapped at broker 1, produces to a partition broker 1 leads; the
    leadership moves to broker 2 (epoch 1); the producer's next batch is refused by broker 1 with
    the new leader (KIP-951) and lands on broker 2, and a consumer reads it there."""
    one, two = two_brokers
    for b in (one, two):
        _create(b.bootstrap, "follow", 2)
    _share(one, two, {})
    delivered: list[tuple[int, int]] = []
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        (errors.append(err) if err is not None else delivered.append((msg.partition(),
                                                                       msg.offset())))

    client_log: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            client_log.append(record.getMessage())

    rdkafka = logging.getLogger("test_leadership.rdkafka")
    rdkafka.addHandler(_Collect())
    rdkafka.setLevel(logging.DEBUG)
    rdkafka.propagate = False
    p = Producer({"bootstrap.servers": one.bootstrap, "linger.ms": 0, "debug": "metadata",
                  "topic.metadata.refresh.interval.ms": 600_000}, logger=rdkafka)
    p.produce("follow", value=b"on-one", partition=1, on_delivery=report)
    assert p.flush(15) == 0 and delivered == [(1, 0)]
    _share(one, two, {("follow", 1): PartitionState((2,), (2,), 2, leader_epoch=1,
                                                    partition_epoch=1)})
    p.produce("follow", value=b"on-two", partition=1, on_delivery=report)
    assert p.flush(30) == 0
    assert errors == []
    # Offset 0 of broker 2's log: the batch went to the new leader, not to broker 1.
    assert delivered == [(1, 0), (1, 0)]
    assert two.broker.topics.log("follow", 1).log_end_offset == 1
    assert one.broker.topics.log("follow", 1).log_end_offset == 1
    # librdkafka learnt leader 2 in epoch 1 (librdkafka 2.16's debug wording). It logs this for
    # a KIP-951 hint and for a Metadata refresh alike; with protocol debugging on, no Metadata
    # request is sent between the refused batch and the retry, so here it is the hint.
    assert any("updated with leader 2 and epoch 1" in line for line in client_log)

    consumer = Consumer({"bootstrap.servers": one.bootstrap, "group.id": "follow",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("follow", 1, 0)])
        m = _wait_for(lambda: _value(consumer.poll(0.5)))
        assert (m.value(), m.leader_epoch()) == (b"on-two", 1)
    finally:
        consumer.close()


def _value(m: Any) -> Any:
    if m is None:
        return None
    if m.error() is not None:
        raise KafkaException(m.error())
    return m
