"""A replica fetcher's Fetch requests (v16) and a zero-copy decoder of their answers (v13–v16).

The generic ``kio`` decoder copies every records blob into a new ``bytes`` object: for a
follower that is one more pass over every replicated byte (and, for answers of a megabyte, fresh
memory each time), between the socket and the segment file. This decoder walks the same wire
format (Kafka's FetchResponse schema, flexible versions with topic ids: header v1, tagged
fields) and returns each partition's records as a slice of the response frame itself, which the
follower appends as it is (``PartitionLog.append_as_follower`` checks each batch's structure
and CRC there). The frame's memory stays in use while any slice of it is held.

Only what a follower reads is kept: the top-level error code and, per partition, its index,
error code, high watermark, log start offset, records and diverging epoch (tag 0); the other
fields (last stable offset, aborted transactions, preferred read replica, the current leader
and snapshot id tags, node endpoints) are read past. The objects use the ``kio`` field names,
so the fetcher can treat both the same.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from odradek.errors import CorruptFrameError
from odradek.protocol.varint import (
    MAX_VARINT32_BYTES,
    VarintError,
    read_uvarint,
    write_uvarint,
)

__all__ = [
    "EpochEndOffset",
    "FetchPartitionRequest",
    "FetchResponseView",
    "PartitionView",
    "ReplicaFetchRequest",
    "TopicView",
    "decode_replica_fetch_response",
]

FIRST_VERSION = 13  # flexible (v12+) with topic ids (v13+)
LAST_VERSION = 16

_I32 = struct.Struct(">i")
_THROTTLE_ERROR_SESSION = struct.Struct(">ihi")
_PARTITION = struct.Struct(">ihqqq")  # index, error, high watermark, last stable, log start
_EPOCH_END = struct.Struct(">iq")
_ABORTED_BYTES = 16  # producer id int64, first offset int64 (then its tag buffer)
_DIVERGING_EPOCH_TAG = 0


@dataclass(frozen=True, slots=True)
class EpochEndOffset:
    epoch: int = -1
    end_offset: int = -1


_NO_DIVERGENCE = EpochEndOffset()


@dataclass(frozen=True, slots=True)
class PartitionView:
    partition_index: int
    error_code: int
    high_watermark: int
    log_start_offset: int
    records: memoryview | None
    diverging_epoch: EpochEndOffset


@dataclass(frozen=True, slots=True)
class TopicView:
    topic_id: uuid.UUID
    partitions: tuple[PartitionView, ...]


@dataclass(frozen=True, slots=True)
class FetchResponseView:
    error_code: int
    responses: tuple[TopicView, ...]


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise CorruptFrameError("fetch response ends early")

    def unpack(self, s: struct.Struct) -> tuple[int, ...]:
        self.need(s.size)
        v = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return v

    def uvarint(self) -> int:
        try:
            value, self.pos = read_uvarint(self.buf, self.pos, MAX_VARINT32_BYTES)
        except VarintError as e:
            raise CorruptFrameError(f"{e} in fetch response") from None
        return value

    def take(self, n: int) -> memoryview:
        self.need(n)
        start = self.pos
        self.pos += n
        return self.buf[start : self.pos]

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n

    def length(self) -> int:
        """A compact array's or bytes' length; -1 for null."""
        return self.uvarint() - 1

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.skip(self.uvarint())


def decode_replica_fetch_response(
    frame: bytes | bytearray | memoryview, api_version: int
) -> tuple[int, FetchResponseView]:
    """(correlation id, response) of a Fetch response frame (without its size prefix) of
    ``api_version`` (13–16); records are views into ``frame``. Malformed input raises
    :class:`CorruptFrameError`."""
    if not FIRST_VERSION <= api_version <= LAST_VERSION:
        raise ValueError(f"Fetch v{api_version} is not decoded here")
    r = _Reader(memoryview(frame))
    (correlation_id,) = r.unpack(_I32)
    r.skip_tagged_fields()  # the header's
    _throttle, error_code, _session = r.unpack(_THROTTLE_ERROR_SESSION)
    n_topics = r.length()
    topics = []
    for _ in range(max(n_topics, 0)):
        topic_id = uuid.UUID(bytes=bytes(r.take(16)))
        n_partitions = r.length()
        partitions = []
        for _ in range(max(n_partitions, 0)):
            index, code, high_watermark, _lso, log_start = r.unpack(_PARTITION)
            n_aborted = r.length()
            for _ in range(max(n_aborted, 0)):
                r.skip(_ABORTED_BYTES)
                r.skip_tagged_fields()
            r.skip(4)  # preferred read replica
            size = r.length()
            records = r.take(size) if size >= 0 else None
            diverging = _NO_DIVERGENCE
            for _ in range(r.uvarint()):
                tag = r.uvarint()
                tag_size = r.uvarint()
                if tag == _DIVERGING_EPOCH_TAG:
                    end = r.pos + tag_size
                    epoch, end_offset = r.unpack(_EPOCH_END)
                    r.skip_tagged_fields()
                    if r.pos != end:
                        raise CorruptFrameError("malformed diverging epoch in fetch response")
                    diverging = EpochEndOffset(epoch, end_offset)
                else:
                    r.skip(tag_size)
            partitions.append(PartitionView(index, code, high_watermark, log_start, records,
                                            diverging))
        r.skip_tagged_fields()
        topics.append(TopicView(topic_id, tuple(partitions)))
    r.skip_tagged_fields()  # node endpoints (v16) and any others
    if r.pos != len(r.buf):
        raise CorruptFrameError(f"{len(r.buf) - r.pos} unexpected bytes after fetch response")
    return correlation_id, FetchResponseView(error_code, tuple(topics))


# -- the request ---------------------------------------------------------------------------------

_REQUEST_HEADER = struct.Struct(">hhih")  # api key, version, correlation id, client id length
_REQUEST_TOP = struct.Struct(">iiibii")  # max wait, min bytes, max bytes, isolation, session
_REQUEST_PARTITION = struct.Struct(">iiqiqi")
_REPLICA_STATE = struct.Struct(">iq")
_REPLICA_STATE_TAG = 1


@dataclass(frozen=True, slots=True)
class FetchPartitionRequest:
    partition: int
    current_leader_epoch: int
    fetch_offset: int
    last_fetched_epoch: int
    log_start_offset: int
    partition_max_bytes: int


@dataclass(frozen=True, slots=True)
class ReplicaFetchRequest:
    """A follower's Fetch v16 (no fetch session, no rack, no forgotten topics), encoded by
    :meth:`encode` to the bytes ``kio`` writes for the same request, without building ``kio``
    entities (a fetcher sends one per answer). ``InterBrokerClient.send`` takes it as a
    request body."""

    __api_key__ = 1
    __version__ = 16

    replica_id: int
    replica_epoch: int
    max_wait_ms: int
    min_bytes: int
    max_bytes: int
    topics: tuple[tuple[uuid.UUID, tuple[FetchPartitionRequest, ...]], ...]

    def encode(self, correlation_id: int, client_id: str | None) -> bytes:
        """The size-prefixed frame (request header v2, then the body)."""
        out = bytearray(b"\0\0\0\0")
        cid = client_id.encode() if client_id is not None else b""
        out += _REQUEST_HEADER.pack(
            self.__api_key__, self.__version__, correlation_id,
            len(cid) if client_id is not None else -1,
        )
        out += cid
        out.append(0)  # the header's tagged fields
        out += _REQUEST_TOP.pack(self.max_wait_ms, self.min_bytes, self.max_bytes, 0, 0, -1)
        write_uvarint(out, len(self.topics) + 1)
        for topic_id, partitions in self.topics:
            out += topic_id.bytes
            write_uvarint(out, len(partitions) + 1)
            for p in partitions:
                out += _REQUEST_PARTITION.pack(
                    p.partition, p.current_leader_epoch, p.fetch_offset, p.last_fetched_epoch,
                    p.log_start_offset, p.partition_max_bytes,
                )
                out.append(0)  # the partition's tagged fields
            out.append(0)  # the topic's
        out.append(1)  # no forgotten topics (an empty compact array)
        out.append(1)  # rack id "" (a compact string of length 0)
        # The body's tagged fields: the replica state alone (tag 1), with its own empty tags.
        out.append(1)
        out.append(_REPLICA_STATE_TAG)
        out.append(_REPLICA_STATE.size + 1)
        out += _REPLICA_STATE.pack(self.replica_id, self.replica_epoch)
        out.append(0)
        _I32.pack_into(out, 0, len(out) - 4)
        return bytes(out)
