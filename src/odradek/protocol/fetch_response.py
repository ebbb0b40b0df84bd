"""Fetch responses (API key 1, versions 4–16) encoded as parts, so record data need not be in memory.

Sans-IO. :func:`encode_fetch_response` writes the same bytes as the generic ``kio`` encoder
(:func:`odradek.protocol.messages.encode_response`) for a ``kio`` ``FetchResponse`` body (or
anything with its field names: the Fetch handler answers with plain named tuples), except
that a partition's ``records`` may be a :class:`FileRegion` -- anything that only knows its
``size``, such as a slice of a segment file -- instead of bytes. The result is a
:class:`ResponseParts`: byte strings and the regions in frame order, with every length prefix
(the frame's int32 size, each records field's int32 length, or for flexible versions v12+ its
unsigned varint length + 1) already counting the regions' sizes. Whoever sends it writes the
bytes and copies each region from its file (``sendfile``). Of the tagged fields only those a
leader sets are written (a partition's ``DivergingEpoch``, tag 0, for a follower whose log
diverged (KIP-279); its ``CurrentLeader``, tag 1, and the response's ``NodeEndpoints``, tag 0,
v16 (KIP-951)); the snapshot id (KRaft's own fetches) must be unset.

Field order (Kafka's FetchResponse.json): header (correlation id; v12+ an empty tag buffer),
throttle_time_ms int32, error_code int16 and session_id int32 (v7+), then the topics: name
(v4–12) or topic id (v13+), and for each partition: index int32, error_code int16,
high_watermark, last_stable_offset, log_start_offset (v5+) int64, aborted transactions
(nullable array of producer id int64, first offset int64), preferred_read_replica int32 (v11+),
records (nullable), the partition's tagged fields (v12+); after the topics the response's tagged
fields (v12+).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Protocol

from odradek.protocol.varint import write_uvarint

__all__ = [
    "FETCH_KEY",
    "FileRegion",
    "ResponseParts",
    "encode_fetch_response",
    "node_endpoints_bytes",
]

FETCH_KEY = 1
_FIRST_VERSION = 4
_LAST_VERSION = 16
_FIRST_FLEXIBLE = 12
_FIRST_TOPIC_ID = 13
_INT32_MAX = 2**31 - 1

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_ABORTED = struct.Struct(">qq")
_PARTITION_V4 = struct.Struct(">ihqq")  # index, error, high watermark, last stable offset
_PARTITION_V5 = struct.Struct(">ihqqq")  # ... and the log start offset
_TOP_V7 = struct.Struct(">ihi")  # throttle time, error code, session id
_LEADER = struct.Struct(">ii")  # leader id, leader epoch
_CURRENT_LEADER_TAG = 1
_EPOCH_END = struct.Struct(">iq")  # epoch, end offset
_DIVERGING_EPOCH_TAG = 0
_NODE_ENDPOINTS_TAG = 0
_INLINE = (bytes, bytearray, memoryview)


class FileRegion(Protocol):
    """Record bytes that stay where they are until sent: only their size is known here."""

    @property
    def size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ResponseParts:
    """A response frame in order: bytes to write and regions to copy from their files. The
    first part starts with the int32 frame size; ``size`` is the whole frame's length with it.
    Owned by whoever sends it, who must also release the regions."""

    parts: tuple[bytes | FileRegion, ...]
    size: int

    @property
    def regions(self) -> tuple[FileRegion, ...]:
        return tuple(p for p in self.parts if not isinstance(p, bytes))


def encode_fetch_response(correlation_id: int, version: int, body: Any) -> ResponseParts:
    """Encode ``body`` (a ``kio`` FetchResponse of ``version``) as parts; see the module
    docstring. Raises ValueError for a version outside 4–16, a tagged field set, or a frame
    larger than an int32 can say."""
    if not _FIRST_VERSION <= version <= _LAST_VERSION:
        raise ValueError(f"Fetch v{version} is not encoded here")
    flexible = version >= _FIRST_FLEXIBLE
    endpoints = getattr(body, "node_endpoints", None)
    parts: list[bytes | FileRegion] = []
    out = bytearray(b"\0\0\0\0")  # the frame size, filled in at the end
    size = 0
    out += _I32.pack(correlation_id)
    if flexible:
        out.append(0)
    throttle_ms = round(body.throttle_time.total_seconds() * 1000)
    if version >= 7:
        out += _TOP_V7.pack(throttle_ms, body.error_code, body.session_id)
    else:
        out += _I32.pack(throttle_ms)
    topics = body.responses
    _array_length(out, len(topics), flexible)
    for t in topics:
        if version >= _FIRST_TOPIC_ID:
            out += t.topic_id.bytes if t.topic_id is not None else bytes(16)
        else:
            name = t.topic.encode()
            if flexible:
                write_uvarint(out, len(name) + 1)
            else:
                out += _I16.pack(len(name))
            out += name
        partitions = t.partitions
        _array_length(out, len(partitions), flexible)
        for p in partitions:
            if flexible and _has_snapshot_id(p):
                raise ValueError("a fetch partition's snapshot id is not written")
            if version >= 5:
                out += _PARTITION_V5.pack(p.partition_index, p.error_code, p.high_watermark,
                                          p.last_stable_offset, p.log_start_offset)
            else:
                out += _PARTITION_V4.pack(p.partition_index, p.error_code, p.high_watermark,
                                          p.last_stable_offset)
            aborted = p.aborted_transactions
            if aborted is None:
                _array_length(out, -1, flexible)
            else:
                _array_length(out, len(aborted), flexible)
                for a in aborted:
                    out += _ABORTED.pack(a.producer_id, a.first_offset)
                    if flexible:
                        out.append(0)
            if version >= 11:
                out += _I32.pack(p.preferred_read_replica)
            records = p.records
            if records is None:
                _array_length(out, -1, flexible)
            else:
                inline = isinstance(records, _INLINE)  # cheaper than a Protocol check
                n = len(records) if inline else records.size
                _array_length(out, n, flexible)
                if inline:
                    out += records
                else:
                    size += len(out)
                    parts.append(bytes(out))
                    parts.append(records)
                    size += n
                    out = bytearray()
            if flexible:
                leader = p.current_leader
                diverging = p.diverging_epoch
                has_leader = (leader.leader_id, leader.leader_epoch) != (-1, -1)
                has_diverging = (diverging.epoch, diverging.end_offset) != (-1, -1)
                # The tagged fields in tag order, each: its tag, its size, the struct and its
                # own (empty) tag buffer.
                out.append(has_leader + has_diverging)
                if has_diverging:
                    out += bytes((_DIVERGING_EPOCH_TAG, _EPOCH_END.size + 1))
                    out += _EPOCH_END.pack(diverging.epoch, diverging.end_offset)
                    out.append(0)
                if has_leader:
                    out += bytes((_CURRENT_LEADER_TAG, _LEADER.size + 1))
                    out += _LEADER.pack(leader.leader_id, leader.leader_epoch)
                    out.append(0)
        if flexible:
            out.append(0)
    if flexible:
        append_node_endpoints_tag(out, endpoints)
    size += len(out)
    if size - 4 > _INT32_MAX:
        raise ValueError(f"a fetch response of {size} bytes does not fit in one frame")
    if not parts:
        _I32.pack_into(out, 0, size - 4)
        return ResponseParts((bytes(out),), size)
    parts.append(bytes(out))
    head = parts[0]
    assert isinstance(head, bytes)  # a region always follows the bytes of its own length
    parts[0] = _I32.pack(size - 4) + head[4:]
    return ResponseParts(tuple(parts), size)


def _array_length(out: bytearray, n: int, flexible: bool) -> None:
    """The length of an array or of bytes; -1 is null (written 0 in the compact form)."""
    if flexible:
        write_uvarint(out, n + 1)
    else:
        out += _I32.pack(n)


def _has_snapshot_id(p: Any) -> bool:
    s = p.snapshot_id
    return (s.end_offset, s.epoch) != (-1, -1)


def append_node_endpoints_tag(out: bytearray, endpoints: Any) -> None:
    """A response body's tagged fields (Fetch v12+, Produce v9+): the NodeEndpoints tag when
    ``endpoints`` are given, else none."""
    if not endpoints:
        out.append(0)
        return
    tagged = node_endpoints_bytes(endpoints)
    out.append(1)
    write_uvarint(out, _NODE_ENDPOINTS_TAG)
    write_uvarint(out, len(tagged))
    out += tagged


def node_endpoints_bytes(endpoints: Any) -> bytearray:
    """NodeEndpoints (Fetch v16, Produce v10): a compact array of node id int32, host compact string, port int32,
    rack compact nullable string, each with an empty tag buffer."""
    out = bytearray()
    write_uvarint(out, len(endpoints) + 1)
    for e in endpoints:
        out += _I32.pack(e.node_id)
        host = e.host.encode()
        write_uvarint(out, len(host) + 1)
        out += host
        out += _I32.pack(e.port)
        if e.rack is None:
            out.append(0)
        else:
            rack = e.rack.encode()
            write_uvarint(out, len(rack) + 1)
            out += rack
        out.append(0)
    return out
