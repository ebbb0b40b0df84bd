"""Tagged fields a version does not define are ignored, as Kafka's readers ignore them (KIP-482;
the message specs' README: tagged fields "can appear at the root level of messages, or within any
structure in the message", and "older servers will ignore new tagged fields which they do not
understand"). kio refuses them, so the decoders take them out first (``protocol/precheck.py``).

Every request the broker decodes with kio is checked in every flexible version it serves, with an
unknown tag in every tag section at once; then known and unknown tags mixed, unknown tags inside
a known tagged struct, responses (what one broker decodes from another), and malformed tags.
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
import types
import typing
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kio.schema.fetch.v12 import response as fetch_v12_response
from kio.schema.fetch.v15 import request as fetch_v15
from kio.schema.metadata.v12 import response as metadata_v12_response

from odradek.broker.registry import handlers
from odradek.errors import CorruptFrameError, ErrorCode
from odradek.protocol.client import decode_response
from odradek.protocol.messages import decode_request, encode_entity, peek_preamble, request_schema
from odradek.protocol.precheck import check_request
from odradek.protocol.varint import encode_uvarint

#: One tagged field no version of any API defines: tag 9999, three bytes.
UNKNOWN_FIELD = encode_uvarint(9999) + encode_uvarint(3) + b"new"
NO_TAGS = b"\x00"
ONE_UNKNOWN = b"\x01" + UNKNOWN_FIELD
_FIXED = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4,
          "uint64": 8, "float64": 8, "bool": 1, "uuid": 16, "error_code": 2, "timedelta_i32": 4,
          "timedelta_i64": 8, "datetime_i64": 8}


def _header(api_key: int, version: int) -> bytes:
    return struct.pack(">hhih", api_key, version, 7, 4) + b"tags" + NO_TAGS


def _primitive(kafka_type: str) -> bytes:
    if kafka_type in _FIXED:
        return bytes(_FIXED[kafka_type])
    if kafka_type == "string":
        return b"\x02a"
    return b"\x02z"  # bytes


def minimal_body(cls: type[Any], section: bytes) -> bytes:
    """A flexible-version body of ``cls`` with one element in every array (so every nested
    struct is there) and ``section`` as every struct's tag section."""
    out = b""
    for f in dataclasses.fields(cls):
        if f.name.startswith("__") or "tag" in f.metadata:
            continue
        tp = f.type
        nullable = False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
            nullable = True
        kafka_type = f.metadata.get("kafka_type")
        if typing.get_origin(tp) is tuple:
            element = typing.get_args(tp)[0]
            out += b"\x02" + (
                _primitive(kafka_type) if kafka_type else minimal_body(element, section)
            )
        elif kafka_type is None:
            out += (b"\x01" if nullable else b"") + minimal_body(tp, section)
        else:
            out += _primitive(kafka_type)
    return out + section


def kio_decoded_flexible_versions() -> Iterator[tuple[int, int]]:
    for api_key, api in sorted(handlers().items()):
        if api.decode is not None:  # a decoder of its own (Produce), tested with it
            continue
        for version in api.versions():
            schema = request_schema(api_key, version)
            if api.accepts(version) and schema is not None and schema.__flexible__:
                yield api_key, version


def _decode(frame: bytes) -> Any:
    return decode_request(frame, peek_preamble(frame), _schema(frame)).body


def _schema(frame: bytes) -> type[Any]:
    preamble = peek_preamble(frame)
    schema = request_schema(preamble.api_key, preamble.api_version)
    assert schema is not None
    return schema


def test_every_kio_decoded_request_ignores_unknown_tags_in_every_struct() -> None:
    checked = []
    for api_key, version in kio_decoded_flexible_versions():
        schema = request_schema(api_key, version)
        assert schema is not None
        plain = _header(api_key, version) + minimal_body(schema, NO_TAGS)
        tagged = _header(api_key, version) + minimal_body(schema, ONE_UNKNOWN)
        assert _decode(tagged) == _decode(plain), (api_key, version)
        assert check_request(plain, schema)[2] is plain  # no copy without unknown tags
        checked.append((api_key, version))
    apis = {k for k, _ in checked}
    assert {1, 3, 10, 11, 18, 19, 68}.issubset(apis), apis
    assert len(checked) > 75


def _fetch_v15() -> Any:
    return fetch_v15.FetchRequest(
        max_wait=datetime.timedelta(0), min_bytes=1, forgotten_topics_data=(),
        topics=(fetch_v15.FetchTopic(topic_id=uuid.UUID(int=5), partitions=(
            fetch_v15.FetchPartition(partition=2, fetch_offset=10, partition_max_bytes=100),
        )),),
    )


def _tag(tag: int, value: bytes) -> bytes:
    return encode_uvarint(tag) + encode_uvarint(len(value)) + value


def test_known_and_unknown_tags_mixed_and_unknown_tags_inside_a_known_tagged_struct() -> None:
    """Fetch v15's tag section with the known ClusterId (tag 0) and ReplicaState (tag 1, a
    struct with a tag section of its own, here holding two unknown tags), and unknown tags
    before, between and after them."""
    request = dataclasses.replace(
        _fetch_v15(), cluster_id="cluster",
        replica_state=fetch_v15.ReplicaState(replica_id=3, replica_epoch=77),
    )
    plain = encode_entity(dataclasses.replace(_fetch_v15(), cluster_id=None))
    assert plain[-1] == 0
    replica_state = encode_entity(request.replica_state)
    replica_state = replica_state[:-1] + b"\x02" + _tag(40, b"") + _tag(300, b"x" * 200)
    section = (
        encode_uvarint(5) + _tag(0, b"\x08cluster")
        + _tag(1, replica_state) + _tag(2, b"?") + _tag(7, b"") + _tag(9999, b"new")
    )
    frame = _header(1, 15) + plain[:-1] + section
    assert _decode(frame) == request


def _response_frame(body: Any, header_section: bytes = NO_TAGS) -> bytes:
    return struct.pack(">i", 41) + header_section + encode_entity(body)


def _insert(encoded: bytes, inner: Any, section: bytes) -> bytes:
    """``encoded`` with the tag section of the struct ``inner`` (found once by its encoding, no
    tagged field set) replaced by ``section``."""
    mine = encode_entity(inner)
    assert encoded.count(mine) == 1
    end = encoded.index(mine) + len(mine) - 1
    assert encoded[end] == 0
    return encoded[:end] + section + encoded[end + 1 :]


def test_responses_from_other_brokers_ignore_unknown_tags() -> None:
    """Header, top level and a nested struct of a Metadata v12 answer."""
    broker = metadata_v12_response.MetadataResponseBroker(
        node_id=1, host="h", port=9092, rack=None
    )
    body = metadata_v12_response.MetadataResponse(
        throttle_time=datetime.timedelta(0), brokers=(broker,), cluster_id="c", controller_id=1,
        topics=(),
    )
    frame = _response_frame(body, ONE_UNKNOWN)
    frame = _insert(frame, broker, ONE_UNKNOWN)
    frame = frame[:-1] + ONE_UNKNOWN
    assert decode_response(frame, 3, 12) == (41, body)


def test_responses_ignore_unknown_tags_inside_a_known_tagged_struct() -> None:
    """Fetch v12's partition answer with its CurrentLeader (tag 1), which holds an unknown tag."""
    leader = fetch_v12_response.LeaderIdAndEpoch(leader_id=2, leader_epoch=9)
    partition = fetch_v12_response.PartitionData(
        partition_index=0, error_code=ErrorCode.not_leader_or_follower, high_watermark=-1,
        last_stable_offset=-1, log_start_offset=-1, aborted_transactions=None,
        preferred_read_replica=-1, records=None,
    )
    body = fetch_v12_response.FetchResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, session_id=0,
        responses=(fetch_v12_response.FetchableTopicResponse(topic="t", partitions=(partition,)),),
    )
    frame = _response_frame(body)
    inner = encode_entity(leader)[:-1] + ONE_UNKNOWN
    frame = _insert(frame, partition, b"\x02" + _tag(1, inner) + UNKNOWN_FIELD)
    want = dataclasses.replace(body, responses=(dataclasses.replace(
        body.responses[0], partitions=(dataclasses.replace(partition, current_leader=leader),),
    ),))
    assert decode_response(frame, 1, 12) == (41, want)


@pytest.mark.parametrize("section, message", [
    (b"\x01" + encode_uvarint(9999) + encode_uvarint(50) + b"abc", "overruns"),
    (b"\x01" + _tag(0, b"\x08cluster" + b"extra"), "declares 13 bytes but its value takes 8"),
    (b"\x01" + encode_uvarint(0) + encode_uvarint(3) + b"\x08cl", "overruns"),
])
def test_malformed_tags_are_corrupt_frames(section: bytes, message: str) -> None:
    plain = encode_entity(_fetch_v15())
    frame = _header(1, 15) + plain[:-1] + section
    with pytest.raises(CorruptFrameError, match=message):
        _decode(frame)
