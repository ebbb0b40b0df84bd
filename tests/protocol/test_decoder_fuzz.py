"""Review (session 9): the hand-written decoders of Produce requests and replica Fetch answers
turn any corruption of a valid frame into CorruptFrameError, never another exception or a hang."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_produce_codec import _frame, topics_st
from test_replica_fetch_codec import _body

from odradek.errors import CorruptFrameError
from odradek.protocol.fetch_response import FETCH_KEY
from odradek.protocol.messages import decode_request, encode_response, peek_preamble, request_schema
from odradek.protocol.produce import decode_produce_request
from odradek.protocol.replica_fetch import decode_replica_fetch_response
from odradek.protocol.varint import write_uvarint

_mutation = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "cut"]), st.integers(0, 1 << 20),
              st.integers(0, 255)),
    min_size=1, max_size=4,
)


def _mutate(frame: bytes, ops: list[tuple[str, int, int]], keep: int) -> bytearray:
    out = bytearray(frame)
    for op, where, value in ops:
        if len(out) <= keep:
            break
        i = keep + where % (len(out) - keep)
        if op == "flip":
            out[i] = value
        elif op == "insert":
            out[i:i] = bytes([value])
        elif op == "delete":
            del out[i]
        else:
            del out[i:]
    return out


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 11), topics_st, st.none() | st.text(max_size=5), _mutation)
def test_corrupt_produce_requests_are_corrupt_frames(
    version: int, topics: list[Any], txn: str | None, ops: list[tuple[str, int, int]]
) -> None:
    frame = _frame(version, topics, txn, 1, "client")
    pre = peek_preamble(frame)
    bad = _mutate(frame, ops, keep=8)  # the preamble is read before the decoder
    try:
        decode_produce_request(memoryview(bad), pre)
    except CorruptFrameError:
        pass


_FETCH_FRAMES = {v: encode_response(FETCH_KEY, 1, _body(v))[4:] for v in range(13, 17)}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(13, 16), _mutation)
def test_corrupt_replica_fetch_answers_are_corrupt_frames(
    version: int, ops: list[tuple[str, int, int]]
) -> None:
    bad = _mutate(_FETCH_FRAMES[version], ops, keep=0)
    try:
        decode_replica_fetch_response(memoryview(bad), version)
    except CorruptFrameError:
        pass


# -- unknown tagged fields in a flexible Produce request -------------------------------------------

_tags = st.lists(st.tuples(st.integers(0, 300), st.binary(max_size=200)), max_size=3,
                 unique_by=lambda t: t[0]).map(lambda ts: sorted(ts))


def _tag_buffer(tags: list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    write_uvarint(out, len(tags))
    for tag, data in tags:
        write_uvarint(out, tag)
        write_uvarint(out, len(data))
        out += data
    return bytes(out)


def _compact(data: bytes | None) -> bytes:
    out = bytearray()
    write_uvarint(out, 0 if data is None else len(data) + 1)
    return bytes(out) + (data or b"")


def _flexible_request(version: int, topics: list[Any], txn: str | None,
                      tags: Callable[[], list[tuple[int, bytes]]]) -> bytes:
    out = bytearray(struct.pack(">hhih", 0, version, 7, 6)) + b"client"
    out += _tag_buffer(tags())
    out += _compact(None if txn is None else txn.encode())
    out += struct.pack(">hi", -1, 1234)
    write_uvarint(out, len(topics) + 1)
    for name, parts in topics:
        out += _compact(name.encode())
        write_uvarint(out, len(parts) + 1)
        for index, records in parts:
            out += struct.pack(">i", index) + _compact(records) + _tag_buffer(tags())
        out += _tag_buffer(tags())
    out += _tag_buffer(tags())
    return bytes(out)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(9, 11), topics_st, st.none() | st.text(max_size=5), st.data())
def test_unknown_tagged_fields_are_skipped(
    version: int, topics: list[Any], txn: str | None, data: Any
) -> None:
    """A flexible Produce request written by hand with unknown tagged fields in every tag
    buffer (the header's, each partition's, each topic's, the body's) reads as the same
    request without them, which kio reads alike (kio refuses unknown tags; Kafka skips them)."""
    tagged = _flexible_request(version, topics, txn, lambda: data.draw(_tags))
    plain = _flexible_request(version, topics, txn, list)
    schema = request_schema(0, version)
    assert schema is not None
    theirs = decode_request(plain, peek_preamble(plain), schema)
    for frame in (tagged, plain):
        ours = decode_produce_request(memoryview(bytearray(frame)), peek_preamble(frame))
        assert (ours.client_id, ours.body.transactional_id, ours.body.acks) == (
            theirs.client_id, theirs.body.transactional_id, theirs.body.acks)
        assert [
            (t.name, [(p.index, None if p.records is None else bytes(p.records))
                      for p in t.partition_data])
            for t in ours.body.topic_data
        ] == [
            (t.name, [(p.index, p.records) for p in t.partition_data])
            for t in theirs.body.topic_data
        ]
