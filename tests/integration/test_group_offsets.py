"""Committed offsets and topic deletion: offsets of a deleted topic go with it."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.find_coordinator.v3 import request as find_coordinator_v3
from kio.schema.offset_commit.v8 import request as offset_commit_v8
from rawclient import RawClient

from odradek.broker.runner import BrokerThread
from odradek.errors import ErrorCode


def test_offsets_of_a_deleted_topic_are_removed(broker: BrokerThread) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("doomed", 2, 1)])["doomed"].result(timeout=30)
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "g", "enable.auto.commit": False}
    )
    try:
        consumer.commit(
            offsets=[TopicPartition("doomed", 0, 5), TopicPartition("doomed", 1, 7)],
            asynchronous=False,
        )
        before = consumer.committed([TopicPartition("doomed", 0), TopicPartition("doomed", 1)])
        assert [tp.offset for tp in before] == [5, 7]
        admin.delete_topics(["doomed"])["doomed"].result(timeout=30)
        admin.create_topics([NewTopic("doomed", 2, 1)])["doomed"].result(timeout=30)
        after = consumer.committed([TopicPartition("doomed", 0), TopicPartition("doomed", 1)])
        # -1001 is librdkafka's OFFSET_INVALID: nothing committed.
        assert [tp.offset for tp in after] == [-1001, -1001]
    finally:
        consumer.close()


def test_commit_to_a_missing_partition_is_unknown_topic_or_partition(
    broker: BrokerThread,
) -> None:
    """As Kafka: partitions that do not exist are refused one by one; the others commit."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("real", 1, 1)])["real"].result(timeout=30)
    request = offset_commit_v8.OffsetCommitRequest(
        group_id="g2",
        generation_id_or_member_epoch=-1,
        member_id="",
        group_instance_id=None,
        topics=tuple(
            offset_commit_v8.OffsetCommitRequestTopic(
                name=name,
                partitions=tuple(
                    offset_commit_v8.OffsetCommitRequestPartition(
                        partition_index=p, committed_offset=3, committed_leader_epoch=-1,
                        committed_metadata="",
                    )
                    for p in partitions
                ),
            )
            for name, partitions in (("real", (0, 5)), ("missing", (0,)))
        ),
    )
    with RawClient(broker.bootstrap) as c:
        # As every client does first (it creates __consumer_offsets, without which a commit is
        # answered COORDINATOR_NOT_AVAILABLE).
        found = c.request(find_coordinator_v3.FindCoordinatorRequest(key="g2", key_type=0))
        assert found.error_code == ErrorCode.none
        response = c.request(request)
    codes = {
        (t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions
    }
    assert codes == {
        ("real", 0): ErrorCode.none,
        ("real", 5): ErrorCode.unknown_topic_or_partition,
        ("missing", 0): ErrorCode.unknown_topic_or_partition,
    }
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g2"})
    try:
        assert consumer.committed([TopicPartition("real", 0)])[0].offset == 3
    finally:
        consumer.close()


def test_a_commit_before_the_offsets_topic_exists_is_retried_until_it_does(
    broker: BrokerThread,
) -> None:
    """Without a FindCoordinator first, the commit finds no __consumer_offsets: it is answered
    COORDINATOR_NOT_AVAILABLE (retriable) and the topic is created meanwhile, so the client's
    retry commits."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("early", 1, 1)])["early"].result(timeout=30)
    request = offset_commit_v8.OffsetCommitRequest(
        group_id="g3",
        generation_id_or_member_epoch=-1,
        member_id="",
        group_instance_id=None,
        topics=(
            offset_commit_v8.OffsetCommitRequestTopic(
                name="early",
                partitions=(
                    offset_commit_v8.OffsetCommitRequestPartition(
                        partition_index=0, committed_offset=3, committed_leader_epoch=-1,
                        committed_metadata="",
                    ),
                ),
            ),
        ),
    )
    codes = []
    deadline = time.monotonic() + 30
    with RawClient(broker.bootstrap) as c:
        while time.monotonic() < deadline:
            code = c.request(request).topics[0].partitions[0].error_code
            codes.append(code)
            if code == ErrorCode.none:
                break
            time.sleep(0.01)  # a client's retry backoff
    assert codes[0] == ErrorCode.coordinator_not_available
    assert codes[-1] == ErrorCode.none
