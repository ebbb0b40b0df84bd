from __future__ import annotations

import pytest
from confluent_kafka import Producer
from kio.schema.errors import ErrorCode
from kio.schema.offset_for_leader_epoch.v4 import request as req
from rawclient import RawClient

pytestmark = pytest.mark.integration


def test_end_offsets_for_epochs(bootstrap: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(5):
        p.produce("epochs", value=str(i).encode())
    assert p.flush(10) == 0
    body = req.OffsetForLeaderEpochRequest(
        replica_id=-1,
        topics=(
            req.OffsetForLeaderTopic(topic="epochs", partitions=(
                req.OffsetForLeaderPartition(partition=0, current_leader_epoch=0, leader_epoch=0),
                req.OffsetForLeaderPartition(partition=0, current_leader_epoch=7, leader_epoch=0),
                req.OffsetForLeaderPartition(partition=3, current_leader_epoch=-1, leader_epoch=0),
            )),
        ),
    )
    with RawClient(bootstrap) as c:
        resp = c.request(body)
    results = resp.topics[0].partitions
    assert (results[0].error_code, results[0].leader_epoch, results[0].end_offset) == (
        ErrorCode.none, 0, 5
    )
    assert results[1].error_code == ErrorCode.unknown_leader_epoch
    assert results[2].error_code == ErrorCode.unknown_topic_or_partition
