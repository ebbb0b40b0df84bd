"""``__consumer_offsets``: created by the first FindCoordinator for a group, compacted, listed
as internal, and closed to producers (INVALID_TOPIC_EXCEPTION, as Kafka)."""

from __future__ import annotations

import datetime

from kio.schema.find_coordinator.v3 import request as find_coordinator_v3
from kio.schema.metadata.v12 import request as metadata_v12
from kio.schema.produce.v9 import request as produce_v9
from rawclient import RawClient

from odradek.broker.runner import BrokerThread
from odradek.errors import ErrorCode
from odradek.protocol.records import SimpleRecord, encode_batch


def test_find_coordinator_creates_the_offsets_topic(broker: BrokerThread) -> None:
    with RawClient(broker.bootstrap) as c:
        response = c.request(
            find_coordinator_v3.FindCoordinatorRequest(key="some-group", key_type=0)
        )
        assert response.error_code == ErrorCode.none
        host, port = broker.bootstrap.rsplit(":", 1)
        assert (response.node_id, response.host, response.port) == (1, host, int(port))
        metadata = c.request(
            metadata_v12.MetadataRequest(
                topics=(
                    metadata_v12.MetadataRequestTopic(topic_id=None, name="__consumer_offsets"),
                ),
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            )
        )
    (topic,) = metadata.topics
    assert topic.error_code == ErrorCode.none and topic.is_internal
    assert len(topic.partitions) == 50
    configs = broker.broker.topics.topic("__consumer_offsets")
    assert configs is not None and configs.configs["cleanup.policy"] == "compact"


def test_unknown_coordinator_key_type_is_invalid_request(broker: BrokerThread) -> None:
    with RawClient(broker.bootstrap) as c:
        response = c.request(find_coordinator_v3.FindCoordinatorRequest(key="x", key_type=7))
    assert response.error_code == ErrorCode.invalid_request


def test_producing_to_the_offsets_topic_is_refused(broker: BrokerThread) -> None:
    with RawClient(broker.bootstrap) as c:
        c.request(find_coordinator_v3.FindCoordinatorRequest(key="g", key_type=0))
        batch = encode_batch([SimpleRecord(b"forged", b"key", timestamp=0)])
        response = c.request(
            produce_v9.ProduceRequest(
                transactional_id=None,
                acks=-1,
                timeout=datetime.timedelta(seconds=5),
                topic_data=(
                    produce_v9.TopicProduceData(
                        name="__consumer_offsets",
                        partition_data=(produce_v9.PartitionProduceData(index=0, records=batch),),
                    ),
                ),
            )
        )
    (partition,) = response.responses[0].partition_responses
    assert partition.error_code == ErrorCode.invalid_topic_exception
    log = broker.broker.topics.log("__consumer_offsets", 0)
    assert log.log_end_offset == 0
