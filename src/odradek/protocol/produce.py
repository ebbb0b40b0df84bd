"""A zero-copy decoder for Produce requests (v3–v11), the broker's hottest path, and a
``struct`` encoder for their responses.

The generic ``kio`` codecs copy every records blob into a new ``bytes`` object. This decoder
walks the same wire format (Kafka's ProduceRequest schema, header v1 for v3–v8 and the flexible
header v2 with tagged fields for v9+) and returns the records of each partition as a slice of
the request frame itself. The connection hands frames over as writable views of the bytes the
socket wrote (see :mod:`odradek.protocol.framing`), so the storage engine writes the broker
assigned offsets straight into those slices and a record batch is never copied in user space
between the socket and the segment file.

The decoded objects use the ``kio`` field names (``topic_data``, ``partition_data``, ``index``,
``records``, ``acks``, ``timeout``, ``transactional_id``) so handlers can treat both the same.

:func:`encode_produce_response` writes the response frame (v3–v11) byte for byte as kio writes
it, from plain tuples (:class:`PartitionResult`) instead of kio structs: building and encoding
those cost more than the rest of answering a produce of one batch (a test compares the two
encoders on every version).
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from odradek.errors import CorruptFrameError
from odradek.protocol.fetch_response import append_node_endpoints_tag
from odradek.protocol.messages import Request, RequestPreamble
from odradek.protocol.varint import (
    MAX_VARINT32_BYTES,
    VarintError,
    read_uvarint,
    write_uvarint,
)

__all__ = [
    "PartitionProduceData",
    "TopicProduceData",
    "ProduceRequestData",
    "decode_produce_request",
    "PartitionResult",
    "encode_produce_response",
]

FIRST_FLEXIBLE_VERSION = 9

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_ACKS_TIMEOUT = struct.Struct(">hi")
_HEAD = struct.Struct(">ii")  # frame size, correlation id
_PARTITION_V3 = struct.Struct(">ihqq")  # index, error code, base offset, log append time
_PARTITION_V5 = struct.Struct(">ihqqq")  # ... and the log start offset
_LEADER = struct.Struct(">ii")  # leader id, leader epoch
_FIRST_RESPONSE_VERSION = 3
_LAST_RESPONSE_VERSION = 11
_FIRST_LOG_START_VERSION = 5
_FIRST_RECORD_ERRORS_VERSION = 8  # record_errors and error_message (KIP-467)
_FIRST_LEADER_VERSION = 10  # current_leader and node_endpoints, tagged (KIP-951)
_CURRENT_LEADER_TAG = 0


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


def decode_produce_request(frame: bytes | memoryview, preamble: RequestPreamble) -> Request:
    """Decode a Produce request; records are views into ``frame``. Malformed input raises
    :class:`CorruptFrameError` (the connection is closed, as for any unparseable request)."""
    flexible = preamble.api_version >= FIRST_FLEXIBLE_VERSION
    buf = memoryview(frame)
    end = len(buf)
    # One pass with the position in a local: this runs once per Produce request, and method
    # calls per field cost more than the rest of it. Reads past the end raise struct.error or
    # IndexError (turned into CorruptFrameError below); slices are checked against ``end``.
    try:
        pos = 8  # api key, api version, correlation id
        (n,) = _I16.unpack_from(buf, pos)  # the header's client id is never compact
        pos += 2
        client_id, pos = _read_string(buf, pos, n, end)
        if flexible:
            pos = _skip_tagged_fields(buf, pos)
            n, pos = _uvarint(buf, pos)
            transactional_id, pos = _read_string(buf, pos, n - 1, end)
        else:
            (n,) = _I16.unpack_from(buf, pos)
            transactional_id, pos = _read_string(buf, pos + 2, n, end)
        acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(buf, pos)
        pos += _ACKS_TIMEOUT.size
        n_topics, pos = _read_count(buf, pos, flexible)
        topics = []
        for _ in range(n_topics):
            name, pos = _read_name(buf, pos, flexible, end)
            n_partitions, pos = _read_count(buf, pos, flexible)
            partitions = []
            for _ in range(n_partitions):
                (index,) = _I32.unpack_from(buf, pos)
                pos += 4
                if flexible:
                    size, pos = _uvarint(buf, pos)
                    size -= 1
                else:
                    (size,) = _I32.unpack_from(buf, pos)
                    pos += 4
                records = None
                if size >= 0:
                    if pos + size > end:
                        raise CorruptFrameError("produce request ends early")
                    records = buf[pos : pos + size]
                    pos += size
                if flexible:
                    pos = _skip_tagged_fields(buf, pos)
                partitions.append(PartitionProduceData(index, records))
            if flexible:
                pos = _skip_tagged_fields(buf, pos)
            topics.append(TopicProduceData(name, tuple(partitions)))
        if flexible:
            pos = _skip_tagged_fields(buf, pos)
    except (struct.error, IndexError):
        raise CorruptFrameError("produce request ends early") from None
    except VarintError as e:
        raise CorruptFrameError(f"{e} in produce request") from None
    if pos != end:
        raise CorruptFrameError(f"{end - pos} unexpected bytes after produce request")
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
        size=end,
    )


def _uvarint(buf: memoryview, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:  # nearly every length in a request
        return b, pos + 1
    return read_uvarint(buf, pos, MAX_VARINT32_BYTES)


def _read_string(buf: memoryview, pos: int, n: int, end: int) -> tuple[str | None, int]:
    """The ``n`` bytes at ``pos`` as text (None when ``n`` is negative: null)."""
    if n < 0:
        return None, pos
    stop = pos + n
    if stop > end:
        raise CorruptFrameError("produce request ends early")
    try:
        return str(buf[pos:stop], "utf-8"), stop
    except UnicodeDecodeError as e:
        raise CorruptFrameError(f"invalid UTF-8 in produce request: {e}") from None


def _read_name(buf: memoryview, pos: int, flexible: bool, end: int) -> tuple[str, int]:
    """A non-null string (compact when ``flexible``)."""
    if flexible:
        n, pos = _uvarint(buf, pos)
        n -= 1
    else:
        (n,) = _I16.unpack_from(buf, pos)
        pos += 2
    if n < 0:
        raise CorruptFrameError("null string where one is required in produce request")
    name, pos = _read_string(buf, pos, n, end)
    assert name is not None
    return name, pos


def _read_count(buf: memoryview, pos: int, flexible: bool) -> tuple[int, int]:
    if flexible:
        n, pos = _uvarint(buf, pos)
        n -= 1
    else:
        (n,) = _I32.unpack_from(buf, pos)
        pos += 4
    if n < 0:
        raise CorruptFrameError("null array in produce request")
    return n, pos


def _skip_tagged_fields(buf: memoryview, pos: int) -> int:
    if buf[pos] == 0:  # none: the usual case
        return pos + 1
    count, pos = _uvarint(buf, pos)
    for _ in range(count):
        _, pos = _uvarint(buf, pos)  # tag
        size, pos = _uvarint(buf, pos)
        if pos + size > len(buf):
            raise CorruptFrameError("produce request ends early")
        pos += size
    return pos


class PartitionResult(NamedTuple):
    """One partition's answer to a Produce, as the response carries it (-1: none)."""

    partition: int
    error_code: int
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    #: KIP-467 (v8+): (batch index, message) of the records that made the batch invalid.
    record_errors: Sequence[tuple[int, str | None]] = ()
    #: KIP-951 (v10+): (leader id, leader epoch) for NOT_LEADER_OR_FOLLOWER; None: not given.
    current_leader: tuple[int, int] | None = None


def encode_produce_response(
    correlation_id: int,
    version: int,
    topics: Sequence[tuple[str, Sequence[PartitionResult]]],
    node_endpoints: Sequence[Any] = (),
    throttle_time_ms: int = 0,
) -> bytes:
    """The size-prefixed Produce response frame (header included) for ``version`` (3–11).

    ``node_endpoints`` (v10+) are objects with ``node_id``, ``host``, ``port`` and ``rack``;
    fields a version does not have are left out, as kio leaves them out."""
    if not _FIRST_RESPONSE_VERSION <= version <= _LAST_RESPONSE_VERSION:
        raise ValueError(f"Produce response v{version} is not served")
    flexible = version >= FIRST_FLEXIBLE_VERSION
    with_log_start = version >= _FIRST_LOG_START_VERSION
    with_record_errors = version >= _FIRST_RECORD_ERRORS_VERSION
    with_leader = version >= _FIRST_LEADER_VERSION
    out = bytearray(_HEAD.size)
    if flexible:
        out.append(0)  # the response header's tagged fields
    _length(out, len(topics), flexible)
    for name, partitions in topics:
        _string(out, name, flexible)
        _length(out, len(partitions), flexible)
        for p in partitions:
            if with_log_start:
                out += _PARTITION_V5.pack(
                    p.partition, p.error_code, p.base_offset, p.log_append_time_ms,
                    p.log_start_offset,
                )
            else:
                out += _PARTITION_V3.pack(
                    p.partition, p.error_code, p.base_offset, p.log_append_time_ms
                )
            if with_record_errors:
                _length(out, len(p.record_errors), flexible)
                for batch_index, message in p.record_errors:
                    out += _I32.pack(batch_index)
                    _string(out, message, flexible)
                    if flexible:
                        out.append(0)
                _string(out, p.error_message, flexible)
            if flexible:
                leader = p.current_leader if with_leader else None
                if leader is None or leader == (-1, -1):  # kio leaves a default tag out
                    out.append(0)
                else:
                    out += bytes((1, _CURRENT_LEADER_TAG, _LEADER.size + 1))
                    out += _LEADER.pack(*leader)
                    out.append(0)
        if flexible:
            out.append(0)
    out += _I32.pack(throttle_time_ms)
    if flexible:
        append_node_endpoints_tag(out, node_endpoints if with_leader else None)
    _HEAD.pack_into(out, 0, len(out) - 4, correlation_id)
    return bytes(out)


def _length(out: bytearray, n: int, flexible: bool) -> None:
    if flexible:
        write_uvarint(out, n + 1)
    else:
        out += _I32.pack(n)


def _string(out: bytearray, value: str | None, flexible: bool) -> None:
    """A (nullable) string: compact in flexible versions."""
    if value is None:
        if flexible:
            out.append(0)
        else:
            out += _I16.pack(-1)
        return
    data = value.encode()
    if flexible:
        write_uvarint(out, len(data) + 1)
    else:
        out += _I16.pack(len(data))
    out += data
