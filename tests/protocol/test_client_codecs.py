"""The client side of the codecs against the server side: a request a broker sends another
broker decodes as the server reads it, and a response the server encodes decodes back."""

from __future__ import annotations

import pytest
from kio.schema.types import ProducerId, TopicName
from kio.schema.write_txn_markers.v1 import request as markers_v1
from kio.schema.write_txn_markers.v1 import response as markers_v1_response
from kio.static.primitive import i16, i32

from odradek.errors import CorruptFrameError, ErrorCode
from odradek.protocol.build import error_body
from odradek.protocol.client import decode_response, encode_request
from odradek.protocol.messages import (
    decode_request,
    encode_response,
    peek_preamble,
    request_schema,
    response_schema,
)


def test_a_request_encoded_by_the_client_decodes_on_the_server() -> None:
    body = markers_v1.WriteTxnMarkersRequest(markers=(markers_v1.WritableTxnMarker(
        producer_id=ProducerId(1000), producer_epoch=i16(3), transaction_result=True,
        topics=(markers_v1.WritableTxnMarkerTopic(
            name=TopicName("t"), partition_indexes=(i32(0), i32(4))
        ),),
        coordinator_epoch=i32(0),
    ),))
    frame = encode_request(body, 42, "odradek-broker-1")
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    preamble = peek_preamble(frame[4:])
    assert (preamble.api_key, preamble.api_version, preamble.correlation_id) == (27, 1, 42)
    schema = request_schema(27, 1)
    assert schema is not None
    request = decode_request(frame[4:], preamble, schema)
    assert request.client_id == "odradek-broker-1"
    assert request.body == body


@pytest.mark.parametrize(("api_key", "version"), [(27, 1), (18, 3), (10, 0)])
def test_a_response_encoded_by_the_server_decodes_on_the_client(api_key: int, version: int) -> None:
    body = error_body(response_schema(api_key, version), ErrorCode.not_coordinator)
    frame = encode_response(api_key, 7, body)
    correlation, decoded = decode_response(frame[4:], api_key, version)
    assert correlation == 7
    assert decoded == body


def test_a_truncated_response_is_refused() -> None:
    body = markers_v1_response.WriteTxnMarkersResponse(markers=())
    frame = encode_response(27, 7, body)
    with pytest.raises(CorruptFrameError):
        decode_response(frame[4:6], 27, 1)
