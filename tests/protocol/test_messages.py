"""Codec tests over golden bytes captured from real clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from odradek.errors import CorruptFrameError, ErrorCode
from odradek.protocol.build import build, error_body, response_module
from odradek.protocol.framing import FrameDecoder
from odradek.protocol.messages import (
    decode_request,
    encode_response,
    peek_preamble,
    request_schema,
    response_schema,
)

GOLDEN = Path(__file__).parent / "golden"


def test_librdkafka_api_versions_request_v3() -> None:
    frame = (GOLDEN / "api_versions_request_v3_librdkafka.bin").read_bytes()
    pre = peek_preamble(frame)
    assert (pre.api_key, pre.api_version) == (18, 3)
    schema = request_schema(18, 3)
    assert schema is not None
    req = decode_request(frame, pre, schema)
    assert req.client_id == "golden"
    assert req.body.client_software_name == "confluent-kafka-python"
    assert req.body.client_software_version


def test_truncated_body_is_corrupt_frame() -> None:
    frame = (GOLDEN / "api_versions_request_v3_librdkafka.bin").read_bytes()
    pre = peek_preamble(frame)
    schema = request_schema(18, 3)
    assert schema is not None
    with pytest.raises(CorruptFrameError):
        decode_request(frame[:-10], pre, schema)


def test_response_frame_uses_header_v0_for_api_versions() -> None:
    body = error_body(response_schema(18, 3), ErrorCode.unsupported_version)
    frame = encode_response(18, 77, body)
    d = FrameDecoder(1 << 20)
    d.feed(frame)
    frame = d.next_frame()
    assert isinstance(frame, memoryview)
    payload = bytes(frame)
    # correlation id, then straight into the body: error code 35 (no tagged-field byte between)
    assert payload[:4] == (77).to_bytes(4, "big")
    assert payload[4:6] == (35).to_bytes(2, "big")


def test_flexible_response_header_has_tag_buffer() -> None:
    mod = response_module(3, 12)
    body = build(mod.MetadataResponse, throttle_time=__import__("datetime").timedelta(0),
                 brokers=(), cluster_id="c", controller_id=1, topics=())
    payload = encode_response(3, 5, body)[4:]
    assert payload[:4] == (5).to_bytes(4, "big")
    assert payload[4] == 0  # empty tagged fields of response header v1


def test_unknown_api_has_no_schema() -> None:
    assert request_schema(9999, 0) is None
    assert request_schema(0, 2) is None  # Produce v2 uses a message format we reject
