"""The replica fetcher's codecs: its Fetch requests are the bytes kio writes, and its zero-copy
response decoder reads what kio writes, as kio reads it."""

from __future__ import annotations

import datetime
import os
import uuid
from typing import Any

import pytest
from kio.schema.fetch.v16 import request as fetch_req
from kio.schema.types import BrokerId
from kio.static.primitive import i8, i32, i32Timedelta, i64

from odradek.errors import CorruptFrameError, ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.client import decode_response, encode_request
from odradek.protocol.fetch_response import FETCH_KEY
from odradek.protocol.messages import encode_response
from odradek.protocol.replica_fetch import (
    FetchPartitionRequest,
    ReplicaFetchRequest,
    decode_replica_fetch_response,
)


def _body(version: int) -> Any:
    mod = response_module(FETCH_KEY, version)
    partitions = []
    records: list[bytes | None] = [os.urandom(3000), None, b"", os.urandom(70_000), b"x"]
    for i, r in enumerate(records):
        extra: dict[str, Any] = {}
        if i == 1:
            extra["diverging_epoch"] = mod.EpochEndOffset(epoch=7, end_offset=12_345)
        if i == 2:
            extra["current_leader"] = mod.LeaderIdAndEpoch(leader_id=3, leader_epoch=9)
        if i == 3:
            extra["snapshot_id"] = mod.SnapshotId(end_offset=99, epoch=4)
        aborted = (
            tuple(build(mod.AbortedTransaction, producer_id=1000 + k, first_offset=7 * k)
                  for k in range(3))
            if i == 4 else None
        )
        partitions.append(build(
            mod.PartitionData, **extra, partition_index=i, error_code=ErrorCode(i % 4),
            high_watermark=10_000 + i, last_stable_offset=9_000 + i, log_start_offset=100 + i,
            aborted_transactions=aborted, preferred_read_replica=i - 1, records=r,
        ))
    topics = (
        build(mod.FetchableTopicResponse, topic_id=uuid.uuid4(), partitions=tuple(partitions[:3])),
        build(mod.FetchableTopicResponse, topic_id=uuid.uuid4(), partitions=tuple(partitions[3:])),
        build(mod.FetchableTopicResponse, topic_id=uuid.uuid4(), partitions=()),
    )
    extra = {}
    if version >= 16:
        extra["node_endpoints"] = (
            mod.NodeEndpoint(node_id=3, host="broker-3.example", port=9092, rack="r1"),
            mod.NodeEndpoint(node_id=4, host="b4", port=9093, rack=None),
        )
    return build(mod.FetchResponse, **extra, throttle_time=datetime.timedelta(milliseconds=5),
                 error_code=ErrorCode.none, session_id=0, responses=topics)


@pytest.mark.parametrize("version", range(13, 17))
def test_reads_what_kio_reads(version: int) -> None:
    body = _body(version)
    frame = encode_response(FETCH_KEY, 4242, body)[4:]
    want_corr, want = decode_response(frame, FETCH_KEY, version)
    got_corr, got = decode_replica_fetch_response(bytearray(frame), version)
    assert got_corr == want_corr == 4242
    assert got.error_code == want.error_code
    assert [t.topic_id for t in got.responses] == [t.topic_id for t in want.responses]
    for gt, wt in zip(got.responses, want.responses, strict=True):
        assert len(gt.partitions) == len(wt.partitions)
        for g, w in zip(gt.partitions, wt.partitions, strict=True):
            assert (g.partition_index, g.error_code, g.high_watermark, g.log_start_offset) == (
                w.partition_index, w.error_code, w.high_watermark, w.log_start_offset)
            assert (g.diverging_epoch.epoch, g.diverging_epoch.end_offset) == (
                w.diverging_epoch.epoch, w.diverging_epoch.end_offset)
            if w.records is None:
                assert g.records is None
            else:
                assert g.records is not None and bytes(g.records) == bytes(w.records)


def test_records_are_views_of_the_frame() -> None:
    frame = bytearray(encode_response(FETCH_KEY, 1, _body(16))[4:])
    _, got = decode_replica_fetch_response(frame, 16)
    records = got.responses[1].partitions[0].records
    assert isinstance(records, memoryview) and len(records) == 70_000
    start = bytes(frame).index(bytes(records))
    frame[start] ^= 0xFF  # the view sees the frame's bytes: nothing was copied
    assert records[0] == frame[start]


def test_truncated_or_padded_frames_are_corrupt() -> None:
    frame = encode_response(FETCH_KEY, 1, _body(16))[4:]
    for cut in (3, 10, 40, len(frame) // 2, len(frame) - 1):
        with pytest.raises(CorruptFrameError):
            decode_replica_fetch_response(frame[:cut], 16)
    with pytest.raises(CorruptFrameError):
        decode_replica_fetch_response(frame + b"\0", 16)


@pytest.mark.parametrize("epoch", [-1, 0, 5, 1 << 40])
@pytest.mark.parametrize("client_id", ["odradek-broker-2", "", None])
def test_requests_are_the_bytes_kio_writes(epoch: int, client_id: str | None) -> None:
    topics = {
        uuid.uuid4(): [(0, 3, 123_456, 2, 7, 1 << 20), (5, 3, 0, -1, 0, 1 << 20)],
        uuid.uuid4(): [(1, 0, 99, 0, 0, 1_048_576)],
        uuid.uuid4(): [],
    }
    want = fetch_req.FetchRequest(
        replica_state=fetch_req.ReplicaState(replica_id=BrokerId(2), replica_epoch=i64(epoch)),
        max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=500)),
        min_bytes=i32(1), max_bytes=i32(10 << 20), isolation_level=i8(0),
        session_id=i32(0), session_epoch=i32(-1),
        topics=tuple(
            fetch_req.FetchTopic(topic_id=t, partitions=tuple(
                fetch_req.FetchPartition(
                    partition=i32(a), current_leader_epoch=i32(b), fetch_offset=i64(c),
                    last_fetched_epoch=i32(d), log_start_offset=i64(e),
                    partition_max_bytes=i32(f),
                ) for a, b, c, d, e, f in parts))
            for t, parts in topics.items()
        ),
        forgotten_topics_data=(),
    )
    got = ReplicaFetchRequest(
        replica_id=2, replica_epoch=epoch, max_wait_ms=500, min_bytes=1, max_bytes=10 << 20,
        topics=tuple(
            (t, tuple(FetchPartitionRequest(*p) for p in parts)) for t, parts in topics.items()
        ),
    )
    assert got.encode(77, client_id) == encode_request(want, 77, client_id)
