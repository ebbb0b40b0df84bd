"""Typed Kafka requests and responses over the ``kio`` codecs (generated from Kafka's specs).

Sans-IO: :func:`decode_request` turns one frame into a :class:`Request` holding the parsed header
and a frozen ``kio`` body; :func:`encode_response` turns a ``kio`` response body back into a
size-prefixed frame. Request header v1 is used for non-flexible versions and v2 for flexible ones;
responses use header v1 when flexible, v0 otherwise, and ApiVersions responses always use v0 (so a
client can parse them before it knows which versions the broker speaks).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from kio.index import UnknownAPIKey, UnknownEntity, load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from odradek.errors import CorruptFrameError
from odradek.protocol.precheck import check_request

__all__ = [
    "reader_for",
    "writer_for",
    "API_VERSIONS_KEY",
    "EncodedBody",
    "Request",
    "RequestPreamble",
    "peek_preamble",
    "decode_request",
    "encode_entity",
    "encode_response",
    "request_schema",
    "response_schema",
]

API_VERSIONS_KEY = 18

_PREAMBLE = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
# The frame size, the correlation id and (header v1) an empty tag buffer.
_HEAD_V0 = struct.Struct(">ii")
_HEAD_V1 = struct.Struct(">iiB")


@dataclass(frozen=True, slots=True)
class RequestPreamble:
    """The first three header fields, readable before the API version is known to be supported."""

    api_key: int
    api_version: int
    correlation_id: int


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded request: header fields plus the ``kio`` body entity."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any
    size: int


def peek_preamble(frame: bytes | memoryview) -> RequestPreamble:
    if len(frame) < _PREAMBLE.size:
        raise CorruptFrameError(f"request frame of {len(frame)} bytes is shorter than its header")
    api_key, api_version, correlation_id = _PREAMBLE.unpack_from(frame, 0)
    return RequestPreamble(api_key, api_version, correlation_id)


@cache
def request_schema(api_key: int, api_version: int) -> type[Any] | None:
    try:
        return load_request_schema(api_key, api_version)
    except (UnknownAPIKey, UnknownEntity):
        return None


@cache
def response_schema(api_key: int, api_version: int) -> type[Any]:
    return load_response_schema(api_key, api_version)


_READERS: dict[type[Any], Any] = {}
_WRITERS: dict[type[Any], Any] = {}


def reader_for(schema: type[Any]) -> Any:
    """kio's reader of ``schema``, made once per schema."""
    reader = _READERS.get(schema)
    if reader is None:
        reader = _READERS[schema] = entity_reader(schema)
    return reader


def writer_for(schema: type[Any]) -> Any:
    """kio's writer of ``schema``, made once per schema."""
    writer = _WRITERS.get(schema)
    if writer is None:
        writer = _WRITERS[schema] = entity_writer(schema)
    return writer


def decode_request(
    frame: bytes | memoryview, preamble: RequestPreamble, schema: type[Any]
) -> Request:
    """Parse header and body; a malformed request is a :class:`CorruptFrameError`.

    The header is read here (its tagged fields skipped, as Kafka does); the body by kio, after
    :func:`check_request` has made sure no length in it overruns the frame, because kio trusts
    declared array lengths with its allocations, and has taken out the tagged fields the
    version does not define, which kio refuses and Kafka ignores (KIP-482).
    """
    if isinstance(frame, memoryview) and not frame.readonly:
        frame = frame.toreadonly()  # kio reads only read-only buffers
    size = len(frame)
    client_id, body_start, frame = check_request(frame, schema)
    try:
        body, _ = reader_for(schema)(frame, body_start)
    except Exception as e:  # any decoding failure of client bytes is that client's problem
        raise CorruptFrameError(
            f"malformed request api_key={preamble.api_key} v{preamble.api_version}: {e!r}"
        ) from e
    return Request(
        api_key=preamble.api_key,
        api_version=preamble.api_version,
        correlation_id=preamble.correlation_id,
        client_id=client_id,
        body=body,
        size=size,
    )


class _Chunks:
    """A write target for kio's writers that keeps large writes (record data) by reference
    instead of copying them into a growing buffer."""

    __slots__ = ("parts", "small", "size")

    def __init__(self) -> None:
        self.parts: list[bytes | bytearray | memoryview] = []
        self.small = bytearray(b"\0\0\0\0")  # the size prefix, filled in at the end
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if n >= 4096:
            if self.small:
                self.parts.append(self.small)
                self.small = bytearray()
            self.parts.append(data)
        else:
            self.small += data
        self.size += n
        return n


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A response body a handler encoded itself (parts of it cached: Metadata for thousands of
    partitions); ``flexible`` is the response schema's ``__flexible__``."""

    data: bytes
    flexible: bool


def encode_entity(entity: Any) -> bytes:
    """The bytes of one ``kio`` entity (a whole body or a nested struct), without a header."""
    out = _Chunks()
    out.small = bytearray()
    writer_for(type(entity))(out, entity)
    if out.small:
        out.parts.append(out.small)
    return b"".join(out.parts)


def encode_response(api_key: int, correlation_id: int, body: Any) -> bytes:
    """Return the size-prefixed response frame for ``body`` (a ``kio`` response entity, or an
    :class:`EncodedBody`).

    Record data is copied once, into the frame; nothing else is large enough to matter. The
    header (the correlation id, and from the flexible versions an empty tag buffer: header v1;
    ApiVersions always answers with header v0) is packed here, not built as a kio struct.
    """
    encoded = isinstance(body, EncodedBody)
    flexible = body.flexible if encoded else body.__flexible__
    tagged = flexible and api_key != API_VERSIONS_KEY
    if encoded:
        if tagged:
            head = _HEAD_V1.pack(len(body.data) + 5, correlation_id, 0)
        else:
            head = _HEAD_V0.pack(len(body.data) + 4, correlation_id)
        return b"".join((head, body.data))
    out = _Chunks()
    out.small += _SIZE.pack(correlation_id)
    if tagged:
        out.small.append(0)
    out.size = len(out.small) - 4
    writer_for(type(body))(out, body)
    if out.small:
        out.parts.append(out.small)
    first = out.parts[0]
    assert isinstance(first, bytearray)
    _SIZE.pack_into(first, 0, out.size)
    if len(out.parts) == 1:
        return bytes(first)
    return b"".join(out.parts)
