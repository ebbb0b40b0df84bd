"""KIP-392, fetch from the closest replica, on three broker processes in racks r1, r2, r3 with
``replica.selector.class`` set: a confluent-kafka consumer with ``client.rack=r2`` is sent to
broker 2 by the leader (``preferred_read_replica``) and reads everything from it; a follower
serves consumers up to its own high watermark (OFFSET_NOT_AVAILABLE past it, Kafka's answers
past its log end)."""

from __future__ import annotations

import datetime
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_v12
from kio.schema.produce.v11 import request as produce_req
from rawclient import RawClient

from odradek.cluster.etcd_process import etcd_binary
from odradek.cluster.local import LocalCluster
from odradek.config import RACK_AWARE_REPLICA_SELECTOR
from odradek.protocol.records import SimpleRecord, encode_batch, read_batch_header
from waiting import wait as _wait

pytestmark = pytest.mark.integration


@pytest.fixture
def racked(tmp_path: Path) -> Iterator[LocalCluster]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed")
    cluster = LocalCluster(
        tmp_path / "cluster", 3,
        broker_properties={"broker.session.timeout.ms": "60000",
                           "replica.selector.class": RACK_AWARE_REPLICA_SELECTOR,
                           "offsets.topic.replication.factor": "1",
                           "replica.lag.time.max.ms": "2000"},
        racks={1: "r1", 2: "r2", 3: "r3"},
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _fetch(address: str, topic: str, offset: int, *, rack: str = "",
           leader_epoch: int = -1) -> Any:
    body = fetch_v12.FetchRequest(
        replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=1, max_bytes=1 << 20,
        isolation_level=0, session_id=0, session_epoch=-1,
        topics=(fetch_v12.FetchTopic(topic=topic, partitions=(fetch_v12.FetchPartition(
            partition=0, current_leader_epoch=leader_epoch, fetch_offset=offset,
            last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=1 << 20,
        ),)),),
        forgotten_topics_data=(), rack_id=rack,
    )
    with RawClient(address) as c:
        return c.request(body).responses[0].partitions[0]


def _offsets(records: bytes | None) -> list[int]:
    out: list[int] = []
    data = records or b""
    pos = 0
    while pos < len(data):
        header = read_batch_header(data, pos)
        out.extend(range(header.base_offset, header.last_offset + 1))
        pos += header.size
    return out


def test_a_consumer_reads_from_the_replica_in_its_rack(racked: LocalCluster) -> None:
    cluster = racked
    leader = cluster.broker(1).address
    topic = f"kip392-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": leader})
    admin.create_topics([NewTopic(
        topic, 1, replica_assignment=[[1, 2, 3]], config={"min.insync.replicas": "3"},
    )])[topic].result(30)
    producer = Producer({"bootstrap.servers": leader, "acks": "all", "linger.ms": 0})
    for i in range(20):
        producer.produce(topic, f"v{i}".encode(), partition=0)
    assert producer.flush(30) == 0

    # The leader names the replica in the client's rack once it holds the offset; a client
    # in the leader's rack, or in none, or without a rack, reads from the leader.
    pointed = _wait(lambda: (p := _fetch(leader, topic, 0, rack="r2")).preferred_read_replica
                    == 2 and p, "the leader to name broker 2")
    assert (pointed.error_code, _offsets(pointed.records), pointed.high_watermark) == (
        ErrorCode.none, [], 20)
    for rack in ("r1", "r9", ""):
        served = _fetch(leader, topic, 0, rack=rack)
        assert served.preferred_read_replica == -1 and _offsets(served.records)[:1] == [0]
    # A follower serves consumers (Fetch v11+) up to its high watermark.
    follower = cluster.broker(2).address
    got = _wait(lambda: (p := _fetch(follower, topic, 0)).high_watermark == 20 and p,
                "broker 2 to learn the high watermark")
    assert _offsets(got.records)[0] == 0 and got.error_code == ErrorCode.none

    # confluent-kafka with client.rack=r2 is sent to broker 2 and reads everything there.
    stats: list[dict[str, Any]] = []
    consumer = Consumer({
        "bootstrap.servers": leader, "group.id": f"g-{uuid.uuid4().hex[:6]}",
        "client.rack": "r2", "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "statistics.interval.ms": 200, "stats_cb": lambda s: stats.append(json.loads(s)),
    })
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values = []
        deadline = time.monotonic() + 30
        while len(values) < 20 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                values.append(msg.value().decode())
        assert values == [f"v{i}" for i in range(20)]

        def fetching_from() -> int | None:
            for s in reversed(stats):
                part = s.get("topics", {}).get(topic, {}).get("partitions", {}).get("0")
                if part is not None:
                    return int(part["broker"])
            return None

        _wait(lambda: (consumer.poll(0.2), fetching_from() == 2)[1],
              "the consumer to fetch from broker 2")
        # New records reach it through the follower too (its long poll woken by the follower's
        # high watermark).
        producer.produce(topic, b"late", partition=0)
        assert producer.flush(30) == 0
        late = _wait(lambda: (m := consumer.poll(0.5)) is not None and m.error() is None and m,
                     "the late record")
        assert late.value() == b"late" and late.offset() == 20
        assert fetching_from() == 2
    finally:
        consumer.close()


def test_a_lagging_follower_answers_as_kafka(racked: LocalCluster) -> None:
    """Broker 3 holds a record its high watermark does not cover yet (broker 2 is paused and
    the topic needs all three): a fetch past its high watermark is OFFSET_NOT_AVAILABLE; past its log end,
    OFFSET_OUT_OF_RANGE for a client that gave its leader epoch and an empty answer for one
    that did not."""
    cluster = racked
    leader = cluster.broker(1).address
    topic = f"lag-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": leader})
    admin.create_topics([NewTopic(
        topic, 1, replica_assignment=[[1, 2, 3]], config={"min.insync.replicas": "3"},
    )])[topic].result(30)
    follower = cluster.broker(3).address

    def produce(acks: int) -> Any:
        body = produce_req.ProduceRequest(
            transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=10),
            topic_data=(produce_req.TopicProduceData(name=topic, partition_data=(
                produce_req.PartitionProduceData(index=0, records=encode_batch(
                    [SimpleRecord(b"x")])),
            )),),
        )
        with RawClient(leader) as c:
            return c.request(body).responses[0].partition_responses[0]

    for _ in range(3):
        assert produce(-1).error_code == ErrorCode.none
    _wait(lambda: _fetch(follower, topic, 0).high_watermark == 3, "broker 3's high watermark")
    cluster.broker(2).pause()
    try:
        for _ in range(2):  # offsets 3 and 4: not replicated to broker 2
            assert produce(1).error_code == ErrorCode.none
        _wait(
            lambda: (p := _fetch(follower, topic, 4, leader_epoch=0)).error_code
            == ErrorCode.offset_not_available and p,
            "broker 3 to hold offset 4 without its high watermark covering it",
        )
        # At the high watermark: the tail, an empty answer (the consumer waits there).
        tail = _fetch(follower, topic, 3)
        assert (tail.error_code, _offsets(tail.records)) == (ErrorCode.none, [])
        below = _fetch(follower, topic, 0)
        assert (below.error_code, _offsets(below.records), below.high_watermark) == (
            ErrorCode.none, [0, 1, 2], 3)
        assert _fetch(follower, topic, 9, leader_epoch=0).error_code == \
            ErrorCode.offset_out_of_range
        blind = _fetch(follower, topic, 9)
        assert (blind.error_code, _offsets(blind.records)) == (ErrorCode.none, [])
    finally:
        cluster.broker(2).resume()
