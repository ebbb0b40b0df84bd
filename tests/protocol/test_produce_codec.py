"""The zero-copy Produce decoder agrees with the generic kio codec on every version."""

from __future__ import annotations

import datetime
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.serial import entity_writer

from odradek.errors import CorruptFrameError
from odradek.protocol.messages import decode_request, peek_preamble, request_schema
from odradek.protocol.produce import decode_produce_request


def _frame(version: int, topics: list[tuple[str, list[tuple[int, bytes | None]]]],
           transactional_id: str | None, acks: int, client_id: str | None) -> bytes:
    schema = request_schema(0, version)
    assert schema is not None
    import sys

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
