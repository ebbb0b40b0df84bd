"""The zero-copy Produce decoder agrees with the generic kio codec on every version."""

from __future__ import annotations

import datetime
import io
import sys
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.serial import entity_writer

from odradek.errors import CorruptFrameError, ErrorCode
from odradek.protocol.build import build, has_field
from odradek.protocol.messages import (
    decode_request,
    encode_response,
    peek_preamble,
    request_schema,
    response_schema,
)
from odradek.protocol.produce import (
    PartitionResult,
    decode_produce_request,
    encode_produce_response,
)


def _frame(version: int, topics: list[tuple[str, list[tuple[int, bytes | None]]]],
           transactional_id: str | None, acks: int, client_id: str | None) -> bytes:
    schema = request_schema(0, version)
    assert schema is not None
    mod = sys.modules[schema.__module__]
    body = schema(
        transactional_id=transactional_id,
        acks=acks,
        timeout=datetime.timedelta(milliseconds=1234),
        topic_data=tuple(
            mod.TopicProduceData(
                name=name,
                partition_data=tuple(
                    mod.PartitionProduceData(index=i, records=r) for i, r in parts
                ),
            )
            for name, parts in topics
        ),
    )
    header_cls = schema.__header_schema__
    header = header_cls(
        request_api_key=0, request_api_version=version, correlation_id=7, client_id=client_id
    )
    buf = io.BytesIO()
    entity_writer(header_cls)(buf, header)
    entity_writer(schema)(buf, body)
    return buf.getvalue()


names = st.text(alphabet="abcdefgh.-_", min_size=1, max_size=20)
topics_st = st.lists(
    st.tuples(names, st.lists(st.tuples(st.integers(0, 1000), st.none() | st.binary(max_size=300)),
                              max_size=4)),
    max_size=4,
)


@settings(max_examples=60)
@given(st.integers(3, 11), topics_st, st.none() | names, st.sampled_from([-1, 0, 1]),
       st.none() | st.text(max_size=10))
def test_agrees_with_kio(version: int, topics: list, txn: str | None, acks: int,
                         client_id: str | None) -> None:
    frame = _frame(version, topics, txn, acks, client_id)
    pre = peek_preamble(frame)
    ours = decode_produce_request(memoryview(bytearray(frame)), pre)
    schema = request_schema(0, version)
    assert schema is not None
    theirs = decode_request(frame, pre, schema)
    assert ours.client_id == theirs.client_id
    assert ours.body.acks == theirs.body.acks
    assert ours.body.timeout == theirs.body.timeout
    assert ours.body.transactional_id == theirs.body.transactional_id
    assert len(ours.body.topic_data) == len(theirs.body.topic_data)
    for a, b in zip(ours.body.topic_data, theirs.body.topic_data, strict=True):
        assert a.name == b.name
        assert [(p.index, None if p.records is None else bytes(p.records))
                for p in a.partition_data] == [(p.index, p.records) for p in b.partition_data]


def test_records_are_views_into_the_frame() -> None:
    frame = bytearray(_frame(9, [("t", [(0, b"x" * 100)])], None, 1, "c"))
    req = decode_produce_request(memoryview(frame), peek_preamble(frame))
    records = req.body.topic_data[0].partition_data[0].records
    records[0:1] = b"y"
    assert b"y" + b"x" * 99 in frame


@pytest.mark.parametrize("version", [3, 9])
def test_truncated_or_padded_frames_are_corrupt(version: int) -> None:
    frame = _frame(version, [("t", [(0, b"x" * 10)])], None, 1, "c")
    pre = peek_preamble(frame)
    for cut in range(8, len(frame)):
        with pytest.raises(CorruptFrameError):
            decode_produce_request(frame[:cut], pre)
    with pytest.raises(CorruptFrameError):
        decode_produce_request(frame + b"\0", pre)


# -- the response encoder ------------------------------------------------------------------------

_partition_st = st.builds(
    PartitionResult,
    partition=st.integers(0, 2**31 - 1),
    error_code=st.sampled_from([0, 1, 2, 6, 10, 19, 87]),
    base_offset=st.integers(-1, 2**63 - 1),
    log_append_time_ms=st.sampled_from([-1, 0, 1_700_000_000_123, 4_102_444_800_000]),
    log_start_offset=st.integers(-1, 2**63 - 1),
    error_message=st.none() | st.text(max_size=30),
    record_errors=st.lists(st.tuples(st.integers(0, 1000), st.none() | st.text(max_size=20)),
                           max_size=3),
    current_leader=st.none() | st.tuples(st.integers(-1, 5), st.integers(-1, 100)),
)
_endpoint_st = st.tuples(st.integers(0, 5), st.text(alphabet="abc.0123", min_size=1, max_size=15),
                         st.integers(1, 65535), st.none() | st.text(max_size=5))


def _kio_response(version: int, correlation_id: int,
                  topics: list[tuple[str, list[PartitionResult]]],
                  endpoints: list[tuple[int, str, int, str | None]]) -> bytes:
    """The same response built from kio's structs and written by its encoder."""
    schema = response_schema(0, version)
    assert schema is not None
    mod = sys.modules[schema.__module__]
    leader_field = has_field(mod.PartitionProduceResponse, "current_leader")

    def partition(p: PartitionResult) -> object:
        extra: dict[str, object] = {}
        if has_field(mod.PartitionProduceResponse, "record_errors"):
            extra["record_errors"] = tuple(
                mod.BatchIndexAndErrorMessage(batch_index=i, batch_index_error_message=m)
                for i, m in p.record_errors
            )
            extra["error_message"] = p.error_message
        if leader_field and p.current_leader is not None:
            extra["current_leader"] = mod.LeaderIdAndEpoch(
                leader_id=p.current_leader[0], leader_epoch=p.current_leader[1]
            )
        if has_field(mod.PartitionProduceResponse, "log_start_offset"):
            extra["log_start_offset"] = p.log_start_offset
        return build(
            mod.PartitionProduceResponse,
            index=p.partition,
            error_code=ErrorCode(p.error_code),
            base_offset=p.base_offset,
            log_append_time=(
                None if p.log_append_time_ms < 0 else
                datetime.datetime.fromtimestamp(p.log_append_time_ms / 1000, datetime.UTC)
            ),
            **extra,
        )

    body = build(
        mod.ProduceResponse,
        responses=tuple(
            mod.TopicProduceResponse(name=name, partition_responses=tuple(map(partition, parts)))
            for name, parts in topics
        ),
        throttle_time=datetime.timedelta(0),
        node_endpoints=tuple(
            mod.NodeEndpoint(node_id=n, host=h, port=p, rack=r) for n, h, p, r in endpoints
        ) if leader_field else (),
    )
    return encode_response(0, correlation_id, body)


@settings(max_examples=150)
@given(st.integers(3, 11), st.integers(-(2**31), 2**31 - 1),
       st.lists(st.tuples(names, st.lists(_partition_st, max_size=3)), max_size=3),
       st.lists(_endpoint_st, max_size=2, unique_by=lambda e: e[0]))
def test_response_matches_kio_byte_for_byte(
    version: int, correlation_id: int, topics: list[tuple[str, list[PartitionResult]]],
    endpoints: list[tuple[int, str, int, str | None]],
) -> None:
    objects = [types.SimpleNamespace(node_id=n, host=h, port=p, rack=r) for n, h, p, r in endpoints]
    ours = encode_produce_response(correlation_id, version, topics, objects)
    assert ours == _kio_response(version, correlation_id, topics, endpoints)


def test_response_versions_outside_the_served_range_are_refused() -> None:
    for version in (2, 12):
        with pytest.raises(ValueError):
            encode_produce_response(1, version, [])


@pytest.mark.parametrize("version", [9, 10, 11])
@pytest.mark.parametrize("leader", [None, (-1, -1), (-1, 0), (2, -1), (3, 7)])
def test_current_leader_tag_matches_kio(version: int, leader: tuple[int, int] | None) -> None:
    """kio leaves a tagged field at its default ((-1, -1)) out; so must the encoder."""
    topics = [("t", [PartitionResult(0, ErrorCode.not_leader_or_follower, current_leader=leader)])]
    ours = encode_produce_response(5, version, topics)
    assert ours == _kio_response(version, 5, topics, [])
    if version >= 10 and leader not in (None, (-1, -1)):  # the tag is there
        without = [("t", [PartitionResult(0, ErrorCode.not_leader_or_follower)])]
        assert len(ours) > len(encode_produce_response(5, version, without))
