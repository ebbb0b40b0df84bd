"""Kafka record batches, message format v2 (magic 2), sans-IO.

Byte layout of one batch (all integers big endian)::

    @0   baseOffset            int64
    @8   batchLength           int32   bytes after this field (so the batch is batchLength + 12)
    @12  partitionLeaderEpoch  int32
    @16  magic                 int8    always 2 here
    @17  crc                   uint32  CRC32C of every byte from @21 to the end of the batch
    @21  attributes            int16   bits 0-2 compression (0 none, 1 gzip, 2 snappy, 3 lz4,
                                       4 zstd), bit 3 timestamp type (1 = LogAppendTime),
                                       bit 4 transactional, bit 5 control, bit 6 delete horizon
    @23  lastOffsetDelta       int32
    @27  baseTimestamp         int64
    @35  maxTimestamp          int64
    @43  producerId            int64
    @51  producerEpoch         int16
    @53  baseSequence          int32
    @57  recordsCount          int32
    @61  records               (compressed as a whole when the codec is not 0)

Each record: length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
keyLength varint + key, valueLength varint + value, header count varint, then per header
keyLength varint + key (UTF-8), valueLength varint + value. Varints are zigzag-encoded; a length
of -1 means null.

``baseOffset`` and ``partitionLeaderEpoch`` lie outside the CRC, so a broker may patch them in
place without recomputing it. Snappy payloads are accepted both raw and in the xerial framing that
the Java client and kafka-python write (librdkafka writes raw snappy); this module writes xerial.
LZ4 is the LZ4 frame format, zstd a zstd frame, gzip a gzip member.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import crc32c as _crc32c

from odradek.errors import CorruptRecordError, InvalidRecordError, RecordTooLargeError
from odradek.protocol.varint import VarintError, read_varint, write_varint

__all__ = [
    "BATCH_HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC",
    "NO_TIMESTAMP",
    "COMPRESSION_NONE",
    "COMPRESSION_GZIP",
    "COMPRESSION_SNAPPY",
    "COMPRESSION_LZ4",
    "COMPRESSION_ZSTD",
    "TIMESTAMP_CREATE_TIME",
    "TIMESTAMP_LOG_APPEND_TIME",
    "ATTR_COMPRESSION_MASK",
    "ATTR_TIMESTAMP_TYPE",
    "ATTR_TRANSACTIONAL",
    "ATTR_CONTROL",
    "ATTR_DELETE_HORIZON",
    "BatchHeader",
    "Record",
    "RecordLike",
    "SimpleRecord",
    "read_batch_header",
    "read_batch_size",
    "read_producer",
    "next_offset_after",
    "assign_offset_and_epoch",
    "set_log_append_time",
    "pack_batch",
    "rebuild_batch",
    "validate_batches",
    "decode_records",
    "encode_batch",
    "compute_crc",
    "batch_crc_ok",
    "increment_sequence",
    "compress",
    "decompress",
    "CONTROL_ABORT",
    "CONTROL_COMMIT",
    "encode_control_batch",
    "control_type",
]

#: Control record types (the int16 after the version in a control record's key).
CONTROL_ABORT = 0
CONTROL_COMMIT = 1
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")

BATCH_HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength
MAGIC = 2
NO_TIMESTAMP = -1

COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_SNAPPY = 2
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4

TIMESTAMP_CREATE_TIME = 0
TIMESTAMP_LOG_APPEND_TIME = 1

ATTR_COMPRESSION_MASK = 0x07
ATTR_TIMESTAMP_TYPE = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
ATTR_DELETE_HORIZON = 0x40

# Field positions inside a batch, for the few writes and reads that do not parse the header.
_LENGTH_AT = 8
_EPOCH_AT = 12
_MAGIC_AT = 16
_CRC_AT = 17
_CRC_START = 21  # the CRC covers from the attributes to the end of the batch
_PRODUCER_AT = 43
_HEADER = struct.Struct(">qiibIhiqqqhii")
_LENGTH = struct.Struct(">i")
_OFFSET = struct.Struct(">q")
_EPOCH = struct.Struct(">i")
_CRC = struct.Struct(">I")
_TIMESTAMPS = struct.Struct(">hiqq")  # attributes, lastOffsetDelta, baseTimestamp, maxTimestamp
_PRODUCER = struct.Struct(">qh")
_I32 = struct.Struct(">i")
_MIN_RECORD_SIZE = 7  # 1-byte length + attributes + 5 one-byte varints
_INT32_MAX = 2**31 - 1

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024

crc32c = _crc32c.crc32c


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fixed 61-byte header of a v2 record batch."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch including the offset and length fields."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & ATTR_COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        return TIMESTAMP_LOG_APPEND_TIME if self.attributes & ATTR_TIMESTAMP_TYPE else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last record (wraps at int32 max), -1 without a sequence."""
        if self.base_sequence < 0:
            return -1
        return increment_sequence(self.base_sequence, self.last_offset_delta)


def increment_sequence(sequence: int, increment: int) -> int:
    """``sequence + increment`` wrapping from 2**31-1 to 0, as Kafka's producers do."""
    return (sequence + increment) % (_INT32_MAX + 1)


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record with its absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    attributes: int = 0


@dataclass(frozen=True, slots=True)
class SimpleRecord:
    """A record to encode; the offset is given by its position in the batch."""

    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int = NO_TIMESTAMP


class RecordLike(Protocol):
    """Anything ``encode_batch`` can encode (``Record`` and ``SimpleRecord`` both qualify)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> tuple[tuple[str, bytes | None], ...]: ...

    @property
    def timestamp(self) -> int: ...


Buffer = bytes | bytearray | memoryview


def read_batch_header(buf: Buffer, pos: int = 0) -> BatchHeader:
    """Parse the 61-byte header at ``pos`` (no validation; ``struct.error`` if too short)."""
    return BatchHeader(*_HEADER.unpack_from(buf, pos))


def read_batch_size(buf: Buffer, pos: int = 0) -> int:
    """Total bytes of the batch at ``pos`` as its ``batchLength`` declares them (offset and length
    fields included), read from its first 12 bytes; ``CorruptRecordError`` if fewer are there."""
    if len(buf) - pos < LOG_OVERHEAD:
        raise CorruptRecordError(f"partial batch: {len(buf) - pos} bytes at {pos}")
    (batch_length,) = _LENGTH.unpack_from(buf, pos + _LENGTH_AT)
    return int(batch_length) + LOG_OVERHEAD


def read_producer(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    """(producerId, producerEpoch) of the batch at ``pos`` without parsing the rest of its
    header; ``InvalidRecordError`` if the header is not all there."""
    if len(buf) - pos < _PRODUCER_AT + _PRODUCER.size:
        raise InvalidRecordError("record batch too short")
    producer_id, epoch = _PRODUCER.unpack_from(buf, pos + _PRODUCER_AT)
    return int(producer_id), int(epoch)


def next_offset_after(buf: Buffer) -> int:
    """The offset after the last whole batch of ``buf`` (back-to-back batches from its start,
    as a log read returns them); -1 when it holds none."""
    next_offset = -1
    pos = 0
    n = len(buf)
    while pos + BATCH_HEADER_SIZE <= n:
        header = read_batch_header(buf, pos)
        if pos + header.size > n:
            break
        next_offset = header.next_offset
        pos += header.size
    return next_offset


def compute_crc(batch: Buffer) -> int:
    """CRC32C of a whole batch's checksummed region (bytes 21 to the end)."""
    return crc32c(memoryview(batch)[_CRC_START:])


def batch_crc_ok(buf: Buffer, pos: int, header: BatchHeader) -> bool:
    return crc32c(memoryview(buf)[pos + _CRC_START : pos + header.size]) == header.crc


def assign_offset_and_epoch(
    buf: bytearray | memoryview, pos: int, base_offset: int, partition_leader_epoch: int
) -> None:
    """Write the base offset and partition leader epoch of the batch at ``pos`` in place;
    both lie outside the CRC, which stays valid."""
    _OFFSET.pack_into(buf, pos, base_offset)
    _EPOCH.pack_into(buf, pos + _EPOCH_AT, partition_leader_epoch)


def set_log_append_time(
    buf: bytearray | memoryview, pos: int, header: BatchHeader, timestamp: int
) -> int:
    """Mark the batch at ``pos`` (whose header is ``header``) LogAppendTime with base and max
    timestamp ``timestamp``, in place, and recompute its CRC; returns the new CRC."""
    _TIMESTAMPS.pack_into(
        buf, pos + _CRC_START, header.attributes | ATTR_TIMESTAMP_TYPE,
        header.last_offset_delta, timestamp, timestamp,
    )
    return _seal(buf, pos, header.size)


def pack_batch(header: BatchHeader, payload: Buffer) -> bytes:
    """A whole batch: ``header``'s fields followed by the (already compressed) records
    section ``payload``; ``batch_length`` and ``crc`` are computed, the header's own ignored."""
    return rebuild_batch(
        header, payload, header.attributes, header.base_timestamp, header.max_timestamp,
        header.records_count,
    )


def rebuild_batch(
    header: BatchHeader,
    payload: Buffer,
    attributes: int,
    base_timestamp: int,
    max_timestamp: int,
    records_count: int,
) -> bytes:
    """:func:`pack_batch` of ``header`` with these attributes, timestamps and record count (the
    log cleaner rewrites batches so; it skips building a header per batch)."""
    out = bytearray(BATCH_HEADER_SIZE + len(payload))
    _HEADER.pack_into(
        out, 0, header.base_offset, len(out) - LOG_OVERHEAD, header.partition_leader_epoch,
        header.magic, 0, attributes, header.last_offset_delta, base_timestamp, max_timestamp,
        header.producer_id, header.producer_epoch, header.base_sequence, records_count,
    )
    out[BATCH_HEADER_SIZE:] = payload
    _CRC.pack_into(out, _CRC_AT, crc32c(memoryview(out)[_CRC_START:]))
    return bytes(out)


def _seal(buf: bytearray | memoryview, pos: int, size: int) -> int:
    """Compute and write the CRC of the ``size``-byte batch at ``pos``; returns it."""
    with memoryview(buf) as mv:
        crc = crc32c(mv[pos + _CRC_START : pos + size])
    _CRC.pack_into(buf, pos + _CRC_AT, crc)
    return crc


def validate_batches(buf: Buffer, *, max_batch_bytes: int) -> list[BatchHeader]:
    """Validate a producer's records blob and return the header of each batch, in order.

    Checks, per batch: a whole batch is present (``CorruptRecordError``), magic is 2
    (``InvalidRecordError``), the batch is no larger than ``max_batch_bytes``
    (``RecordTooLargeError``), the CRC32C matches (``CorruptRecordError``), the record count is
    positive and agrees with ``lastOffsetDelta`` (and, uncompressed, with the bytes present)
    (``InvalidRecordError``) and the compression codec is known (``InvalidRecordError``).
    Records themselves are not parsed. An empty blob yields an empty list.
    """
    mv = memoryview(buf)
    n = len(mv)
    pos = 0
    headers: list[BatchHeader] = []
    unpack_header = _HEADER.unpack_from
    while pos < n:
        remaining = n - pos
        if remaining < LOG_OVERHEAD:
            raise CorruptRecordError(f"partial batch: {remaining} trailing bytes at {pos}")
        if remaining > _MAGIC_AT and mv[pos + _MAGIC_AT] != MAGIC:
            raise InvalidRecordError(
                f"record batch magic {mv[pos + _MAGIC_AT]} is not supported; only magic 2 is "
                f"accepted"
            )
        (batch_length,) = _LENGTH.unpack_from(mv, pos + _LENGTH_AT)
        size = batch_length + LOG_OVERHEAD
        if size < BATCH_HEADER_SIZE:
            raise CorruptRecordError(f"batch at {pos} declares size {size}, below the header size")
        if size > remaining:
            raise CorruptRecordError(
                f"partial batch at {pos}: declares {size} bytes, only {remaining} present"
            )
        if size > max_batch_bytes:
            raise RecordTooLargeError(
                f"batch of {size} bytes exceeds the maximum of {max_batch_bytes} bytes"
            )
        h = BatchHeader(*unpack_header(mv, pos))
        if crc32c(mv[pos + _CRC_START : pos + size]) != h.crc:
            raise CorruptRecordError(f"batch at {pos} fails its CRC32C check")
        count = h.records_count
        if count < 1:
            raise InvalidRecordError(f"batch at {pos} has {count} records")
        if h.last_offset_delta != count - 1:
            raise InvalidRecordError(
                f"batch at {pos}: lastOffsetDelta {h.last_offset_delta} does not match "
                f"{count} records"
            )
        codec = h.attributes & ATTR_COMPRESSION_MASK
        if codec > COMPRESSION_ZSTD:
            raise InvalidRecordError(f"batch at {pos}: unknown compression codec {codec}")
        if codec == COMPRESSION_NONE and count * _MIN_RECORD_SIZE > size - BATCH_HEADER_SIZE:
            raise InvalidRecordError(
                f"batch at {pos}: {count} records cannot fit in {size - BATCH_HEADER_SIZE} bytes"
            )
        headers.append(h)
        pos += size
    return headers


# -- compression ----------------------------------------------------------------------------------


def compress(codec: int, data: bytes) -> bytes:
    """Compress a records section with ``codec`` (snappy is written xerial-framed)."""
    if codec == COMPRESSION_NONE:
        return data
    import cramjam

    if codec == COMPRESSION_GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == COMPRESSION_SNAPPY:
        out = bytearray(_XERIAL_HEADER)
        for i in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[i : i + _XERIAL_BLOCK]))
            out += _I32.pack(len(block))
            out += block
        return bytes(out)
    if codec == COMPRESSION_LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == COMPRESSION_ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise InvalidRecordError(f"unknown compression codec {codec}")


def decompress(codec: int, data: Buffer) -> bytes:
    """Decompress a records section; errors surface as ``CorruptRecordError``."""
    if codec == COMPRESSION_NONE:
        return bytes(data)
    import cramjam

    raw = bytes(data)
    try:
        if codec == COMPRESSION_GZIP:
            return bytes(cramjam.gzip.decompress(raw))
        if codec == COMPRESSION_SNAPPY:
            if raw.startswith(_XERIAL_MAGIC):
                return _xerial_decompress(raw)
            return bytes(cramjam.snappy.decompress_raw(raw))
        if codec == COMPRESSION_LZ4:
            return bytes(cramjam.lz4.decompress(raw))
        if codec == COMPRESSION_ZSTD:
            return bytes(cramjam.zstd.decompress(raw))
    except CorruptRecordError:
        raise
    except Exception as e:
        raise CorruptRecordError(f"cannot decompress records (codec {codec}): {e}") from e
    raise InvalidRecordError(f"unknown compression codec {codec}")


def _xerial_decompress(raw: bytes) -> bytes:
    import cramjam

    pos = len(_XERIAL_HEADER)
    out = bytearray()
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise CorruptRecordError("truncated xerial snappy block length")
        (length,) = _I32.unpack_from(raw, pos)
        pos += 4
        if length < 0 or pos + length > len(raw):
            raise CorruptRecordError("truncated xerial snappy block")
        out += bytes(cramjam.snappy.decompress_raw(raw[pos : pos + length]))
        pos += length
    return bytes(out)


# -- decode / encode ------------------------------------------------------------------------------


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = read_varint(buf, pos)
    if length < 0:
        return None, pos
    end = pos + length
    if end > len(buf):
        raise CorruptRecordError("record field runs past the end of its record")
    return buf[pos:end], end


def decode_records(batch: Buffer) -> list[Record]:
    """Decode every record of one whole batch (decompressing as needed)."""
    mv = memoryview(batch)
    if len(mv) < BATCH_HEADER_SIZE:
        raise CorruptRecordError("batch shorter than its header")
    h = read_batch_header(mv)
    if h.magic != MAGIC:
        raise InvalidRecordError(f"unsupported magic {h.magic}")
    if h.size > len(mv):
        raise CorruptRecordError("partial batch")
    body = decompress(h.compression, mv[BATCH_HEADER_SIZE : h.size])
    try:
        return _decode_body(h, body)
    except VarintError as e:
        raise CorruptRecordError(f"{e} in record") from e


def _decode_body(h: BatchHeader, body: bytes) -> list[Record]:
    log_append = h.timestamp_type == TIMESTAMP_LOG_APPEND_TIME
    records: list[Record] = []
    pos = 0
    for _ in range(h.records_count):
        length, pos = read_varint(body, pos)
        end = pos + length
        if length < 0 or end > len(body):
            raise CorruptRecordError("record length runs past the end of the batch")
        if end - pos < 1:
            raise CorruptRecordError("empty record")
        attributes = body[pos]
        p = pos + 1
        ts_delta, p = read_varint(body, p)
        offset_delta, p = read_varint(body, p)
        key, p = _read_bytes(body, p)
        value, p = _read_bytes(body, p)
        n_headers, p = read_varint(body, p)
        if n_headers < 0:
            raise CorruptRecordError("negative header count")
        hdrs: list[tuple[str, bytes | None]] = []
        for _h in range(n_headers):
            hkey, p = _read_bytes(body, p)
            if hkey is None:
                raise CorruptRecordError("null header key")
            hval, p = _read_bytes(body, p)
            try:
                hkey_str = hkey.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorruptRecordError("header key is not UTF-8") from e
            hdrs.append((hkey_str, hval))
        if p != end:
            raise CorruptRecordError("record length does not match its contents")
        timestamp = h.max_timestamp if log_append else h.base_timestamp + ts_delta
        records.append(
            Record(h.base_offset + offset_delta, timestamp, key, value, tuple(hdrs), attributes)
        )
        pos = end
    if pos != len(body):
        raise CorruptRecordError("trailing bytes after the last record")
    return records


def _encode_record(
    out: bytearray, offset_delta: int, timestamp_delta: int, r: RecordLike
) -> None:
    body = bytearray(b"\x00")  # attributes
    write_varint(body, timestamp_delta)
    write_varint(body, offset_delta)
    for field in (r.key, r.value):
        if field is None:
            write_varint(body, -1)
        else:
            write_varint(body, len(field))
            body += field
    write_varint(body, len(r.headers))
    for hkey, hval in r.headers:
        kb = hkey.encode("utf-8")
        write_varint(body, len(kb))
        body += kb
        if hval is None:
            write_varint(body, -1)
        else:
            write_varint(body, len(hval))
            body += hval
    write_varint(out, len(body))
    out += body


def encode_batch(
    records: Iterable[RecordLike] | Sequence[RecordLike],
    *,
    base_offset: int = 0,
    compression: int = COMPRESSION_NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
    is_control: bool = False,
    timestamp_type: int = TIMESTAMP_CREATE_TIME,
    partition_leader_epoch: int = -1,
) -> bytes:
    """Encode ``records`` as one v2 batch; record i gets offset delta i."""
    recs = list(records)
    if not recs:
        raise InvalidRecordError("a record batch needs at least one record")
    base_ts = recs[0].timestamp
    max_ts = max(r.timestamp for r in recs)
    body = bytearray()
    for i, r in enumerate(recs):
        _encode_record(body, i, r.timestamp - base_ts, r)
    payload = compress(compression, bytes(body))
    attributes = compression & ATTR_COMPRESSION_MASK
    if timestamp_type == TIMESTAMP_LOG_APPEND_TIME:
        attributes |= ATTR_TIMESTAMP_TYPE
    if is_transactional:
        attributes |= ATTR_TRANSACTIONAL
    if is_control:
        attributes |= ATTR_CONTROL
    header = BatchHeader(
        base_offset, 0, partition_leader_epoch, MAGIC, 0, attributes, len(recs) - 1, base_ts,
        max_ts, producer_id, producer_epoch, base_sequence, len(recs),
    )
    return pack_batch(header, payload)


def encode_control_batch(
    producer_id: int,
    producer_epoch: int,
    *,
    commit: bool,
    coordinator_epoch: int,
    timestamp: int,
) -> bytes:
    """A transaction marker: one control record (key: version 0 + type; value: version 0 +
    coordinator epoch) in a transactional control batch of the producer."""
    record = SimpleRecord(
        _CONTROL_VALUE.pack(0, coordinator_epoch),
        _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT),
        timestamp=timestamp,
    )
    return encode_batch(
        [record],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        is_transactional=True,
        is_control=True,
    )


def control_type(key: bytes | None) -> int:
    """The type of a control record from its key (-1 when it is not a valid control key)."""
    if key is None or len(key) < _CONTROL_KEY.size:
        return -1
    return int(_CONTROL_KEY.unpack_from(key)[1])
