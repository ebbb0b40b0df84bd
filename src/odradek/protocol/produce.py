"""A zero-copy decoder for Produce requests (v3–v11), the broker's hottest path.

The generic ``kio`` codecs copy every records blob into a new ``bytes`` object. This decoder
walks the same wire format (Kafka's ProduceRequest schema, header v1 for v3–v8 and the flexible
header v2 with tagged fields for v9+) and returns the records of each partition as a slice of
the request frame itself. The connection hands frames over as writable views of the bytes the
socket wrote (see :mod:`odradek.protocol.framing`), so the storage engine writes the broker
assigned offsets straight into those slices and a record batch is never copied in user space
between the socket and the segment file.

The decoded objects use the ``kio`` field names (``topic_data``, ``partition_data``, ``index``,
``records``, ``acks``, ``timeout``, ``transactional_id``) so handlers can treat both the same.
"""

from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass

from odradek.errors import CorruptFrameError
from odradek.protocol.messages import Request, RequestPreamble
from odradek.protocol.varint import MAX_VARINT32_BYTES, VarintError, read_uvarint

__all__ = [
    "PartitionProduceData",
    "TopicProduceData",
    "ProduceRequestData",
    "decode_produce_request",
]

FIRST_FLEXIBLE_VERSION = 9

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class PartitionProduceData:
    index: int
    records: memoryview | None


@dataclass(frozen=True, slots=True)
class TopicProduceData:
    name: str
    partition_data: tuple[PartitionProduceData, ...]


@dataclass(frozen=True, slots=True)
class ProduceRequestData:
    transactional_id: str | None
    acks: int
    timeout: datetime.timedelta
    topic_data: tuple[TopicProduceData, ...]


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise CorruptFrameError("produce request ends early")

    def int16(self) -> int:
        self.need(2)
        (v,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def int32(self) -> int:
        self.need(4)
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def uvarint(self) -> int:
        try:
            value, self.pos = read_uvarint(self.buf, self.pos, MAX_VARINT32_BYTES)
        except VarintError as e:
            raise CorruptFrameError(f"{e} in produce request") from None
        return value

    def take(self, n: int) -> memoryview:
        self.need(n)
        start = self.pos
        self.pos += n
        return self.buf[start : self.pos]

    def string(self, flexible: bool, *, nullable: bool) -> str | None:
        n = self.uvarint() - 1 if flexible else self.int16()
        if n < 0:
            if nullable:
                return None
            raise CorruptFrameError("null string where one is required in produce request")
        try:
            return str(self.take(n), "utf-8")
        except UnicodeDecodeError as e:
            raise CorruptFrameError(f"invalid UTF-8 in produce request: {e}") from None

    def array_length(self, flexible: bool) -> int:
        n = self.uvarint() - 1 if flexible else self.int32()
        if n < 0:
            raise CorruptFrameError("null array in produce request")
        return n

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())


def decode_produce_request(frame: bytes | memoryview, preamble: RequestPreamble) -> Request:
    """Decode a Produce request; records are views into ``frame``. Malformed input raises
    :class:`CorruptFrameError` (the connection is closed, as for any unparseable request)."""
    flexible = preamble.api_version >= FIRST_FLEXIBLE_VERSION
    r = _Reader(memoryview(frame))
    r.pos = 8  # api key, api version, correlation id
    client_id = r.string(False, nullable=True)  # the header's client id is never compact
    if flexible:
        r.skip_tagged_fields()
    transactional_id = r.string(flexible, nullable=True)
    acks = r.int16()
    timeout_ms = r.int32()
    topics = []
    for _ in range(r.array_length(flexible)):
        name = r.string(flexible, nullable=False)
        assert name is not None
        partitions = []
        for _ in range(r.array_length(flexible)):
            index = r.int32()
            size = r.uvarint() - 1 if flexible else r.int32()
            records = r.take(size) if size >= 0 else None
            if flexible:
                r.skip_tagged_fields()
            partitions.append(PartitionProduceData(index, records))
        if flexible:
            r.skip_tagged_fields()
        topics.append(TopicProduceData(name, tuple(partitions)))
    if flexible:
        r.skip_tagged_fields()
    if r.pos != len(r.buf):
        raise CorruptFrameError(f"{len(r.buf) - r.pos} unexpected bytes after produce request")
    body = ProduceRequestData(
        transactional_id=transactional_id,
        acks=acks,
        timeout=datetime.timedelta(milliseconds=timeout_ms),
        topic_data=tuple(topics),
    )
    return Request(
        api_key=preamble.api_key,
        api_version=preamble.api_version,
        correlation_id=preamble.correlation_id,
        client_id=client_id,
        body=body,
        size=len(frame),
    )
