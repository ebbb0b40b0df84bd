"""Committed offsets and topic deletion: offsets of a deleted topic go with it."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.broker.runner import BrokerThread


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
