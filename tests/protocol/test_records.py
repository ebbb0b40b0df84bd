from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odradek.errors import CorruptRecordError, InvalidRecordError, RecordTooLargeError
from odradek.protocol.records import (
    BATCH_HEADER_SIZE,
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    TIMESTAMP_LOG_APPEND_TIME,
    Record,
    SimpleRecord,
    compute_crc,
    decode_records,
    decompress,
    encode_batch,
    increment_sequence,
    read_batch_header,
    read_batch_size,
    read_producer,
    validate_batches,
)

CODECS = [COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD]

opt_bytes = st.one_of(st.none(), st.binary(max_size=64))
records_st = st.lists(
    st.builds(
        SimpleRecord,
        value=opt_bytes,
        key=opt_bytes,
        headers=st.lists(
            st.tuples(st.text(max_size=8), opt_bytes), max_size=3
        ).map(tuple),
        timestamp=st.integers(min_value=0, max_value=2**42),
    ),
    min_size=1,
    max_size=20,
)


def recrc(batch: bytearray) -> bytearray:
    struct.pack_into(">I", batch, 17, compute_crc(batch))
    return batch


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recs=records_st,
    codec=st.sampled_from(CODECS),
    base_offset=st.integers(min_value=0, max_value=2**40),
)
def test_encode_decode_round_trip(recs: list[SimpleRecord], codec: int, base_offset: int) -> None:
    data = encode_batch(recs, base_offset=base_offset, compression=codec)
    (h,) = validate_batches(data, max_batch_bytes=1 << 20)
    assert h.size == len(data)
    assert h.compression == codec
    assert h.records_count == len(recs)
    assert h.last_offset == base_offset + len(recs) - 1
    assert h.max_timestamp == max(r.timestamp for r in recs)
    out = decode_records(data)
    assert [r.offset for r in out] == list(range(base_offset, base_offset + len(recs)))
    assert [(r.key, r.value, r.headers, r.timestamp) for r in out] == [
        (r.key, r.value, r.headers, r.timestamp) for r in recs
    ]


def test_header_fields_and_properties() -> None:
    data = encode_batch(
        [SimpleRecord(b"a", timestamp=10), SimpleRecord(b"b", timestamp=5)],
        base_offset=100,
        producer_id=7,
        producer_epoch=3,
        base_sequence=2**31 - 1,
        is_transactional=True,
        partition_leader_epoch=9,
    )
    h = read_batch_header(data)
    assert (h.base_offset, h.partition_leader_epoch, h.magic) == (100, 9, 2)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (7, 3, 2**31 - 1)
    assert h.is_transactional and not h.is_control
    assert h.base_timestamp == 10 and h.max_timestamp == 10
    assert h.next_offset == 102 and h.last_offset == 101
    assert h.last_sequence == 0  # wraps
    assert increment_sequence(5, 3) == 8
    assert h.timestamp_type == 0


def test_decode_negative_timestamp_delta() -> None:
    recs = [SimpleRecord(b"a", timestamp=1000), SimpleRecord(b"b", timestamp=10)]
    assert [r.timestamp for r in decode_records(encode_batch(recs))] == [1000, 10]


def test_log_append_time_uses_max_timestamp() -> None:
    data = encode_batch(
        [SimpleRecord(b"a", timestamp=1), SimpleRecord(b"b", timestamp=2)],
        timestamp_type=TIMESTAMP_LOG_APPEND_TIME,
    )
    assert read_batch_header(data).timestamp_type == TIMESTAMP_LOG_APPEND_TIME
    assert [r.timestamp for r in decode_records(data)] == [2, 2]


def test_validate_several_batches() -> None:
    a = encode_batch([SimpleRecord(b"x")] * 3)
    b = encode_batch([SimpleRecord(b"y")], compression=COMPRESSION_GZIP)
    hs = validate_batches(a + b, max_batch_bytes=10_000)
    assert [h.records_count for h in hs] == [3, 1]
    assert validate_batches(b"", max_batch_bytes=10) == []
    # memoryview and bytearray inputs
    assert len(validate_batches(memoryview(bytearray(a + b)), max_batch_bytes=10_000)) == 2


def test_validate_rejects_old_magic() -> None:
    data = bytearray(encode_batch([SimpleRecord(b"x")]))
    data[16] = 1
    with pytest.raises(InvalidRecordError):
        validate_batches(data, max_batch_bytes=10_000)
    # a tiny v0 message set is rejected for its magic, not as corrupt
    v0 = struct.pack(">qiIbb", 0, 14, 0, 0, 0) + struct.pack(">ii", -1, 1) + b"x"
    with pytest.raises(InvalidRecordError):
        validate_batches(v0, max_batch_bytes=10_000)


@pytest.mark.parametrize("cut", [1, 11, 12, 30, 60, 61])
def test_validate_rejects_partial_trailing_batch(cut: int) -> None:
    a = encode_batch([SimpleRecord(b"x" * 10)])
    with pytest.raises(CorruptRecordError):
        validate_batches(a + a[:cut], max_batch_bytes=10_000)
    with pytest.raises(CorruptRecordError):
        validate_batches(a[: len(a) - 1], max_batch_bytes=10_000)


def test_validate_rejects_declared_size_below_header() -> None:
    data = bytearray(encode_batch([SimpleRecord(b"x")]))
    struct.pack_into(">i", data, 8, 20)
    with pytest.raises(CorruptRecordError):
        validate_batches(data, max_batch_bytes=10_000)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_validate_rejects_any_bit_flip_in_crc_range(data: st.DataObject) -> None:
    raw = bytearray(encode_batch([SimpleRecord(b"value", key=b"k")] * 3))
    pos = data.draw(st.integers(min_value=17, max_value=len(raw) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    raw[pos] ^= 1 << bit
    with pytest.raises(CorruptRecordError):
        validate_batches(raw, max_batch_bytes=10_000)


def test_validate_rejects_bad_counts() -> None:
    raw = bytearray(encode_batch([SimpleRecord(b"x")] * 2))
    zero = bytearray(raw)
    struct.pack_into(">i", zero, 57, 0)
    with pytest.raises(InvalidRecordError):
        validate_batches(recrc(zero), max_batch_bytes=10_000)
    mismatch = bytearray(raw)
    struct.pack_into(">i", mismatch, 23, 5)
    with pytest.raises(InvalidRecordError):
        validate_batches(recrc(mismatch), max_batch_bytes=10_000)
    lying = bytearray(raw)
    struct.pack_into(">ii", lying, 23, 999, 0)  # lastOffsetDelta; then baseTimestamp hi word
    struct.pack_into(">i", lying, 57, 1000)
    with pytest.raises(InvalidRecordError):
        validate_batches(recrc(lying), max_batch_bytes=10_000)
    codec = bytearray(raw)
    struct.pack_into(">h", codec, 21, 7)
    with pytest.raises(InvalidRecordError):
        validate_batches(recrc(codec), max_batch_bytes=10_000)


def test_validate_rejects_too_large_batch() -> None:
    data = encode_batch([SimpleRecord(b"x" * 500)])
    with pytest.raises(RecordTooLargeError):
        validate_batches(data, max_batch_bytes=len(data) - 1)
    assert validate_batches(data, max_batch_bytes=len(data))


def test_snappy_raw_and_xerial_both_decode() -> None:
    import cramjam

    payload = b"hello snappy " * 5000
    raw = bytes(cramjam.snappy.compress_raw(payload))
    assert decompress(COMPRESSION_SNAPPY, raw) == payload
    framed = encode_batch([SimpleRecord(payload)], compression=COMPRESSION_SNAPPY)
    assert framed[BATCH_HEADER_SIZE:].startswith(b"\x82SNAPPY\x00")
    assert decode_records(framed)[0].value == payload


def test_kafka_python_snappy_and_lz4_interop() -> None:
    kp = pytest.importorskip("kafka.codec")
    body = b"abc" * 30_000
    if kp.has_snappy():
        assert decompress(COMPRESSION_SNAPPY, kp.snappy_encode(body)) == body
    if kp.has_lz4():
        assert decompress(COMPRESSION_LZ4, kp.lz4_encode(body)) == body


def test_zstd_stream_without_content_size() -> None:
    zstandard = pytest.importorskip("zstandard")
    body = b"zstd " * 10_000
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    stream = cctx.compressobj()
    frame = stream.compress(body) + stream.flush()
    assert decompress(COMPRESSION_ZSTD, frame) == body


def test_garbage_compressed_payload_is_corrupt() -> None:
    for codec in (COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD):
        with pytest.raises(CorruptRecordError):
            decompress(codec, b"\x00not compressed at all")


def test_decode_rejects_malformed_records() -> None:
    raw = bytearray(encode_batch([SimpleRecord(b"abc")]))
    raw[BATCH_HEADER_SIZE] = 0x7E  # record length far too large
    with pytest.raises(CorruptRecordError):
        decode_records(raw)
    assert decode_records(encode_batch([SimpleRecord(None, key=None)]))[0] == Record(
        0, -1, None, None, (), 0
    )


@given(
    st.integers(0, 2**63 - 1), st.integers(-1, 2**15 - 1), st.integers(1, 5), st.binary(max_size=40)
)
def test_batch_size_and_producer_agree_with_the_full_header(
    producer_id: int, epoch: int, count: int, prefix: bytes
) -> None:
    batch = encode_batch(
        [SimpleRecord(b"v%d" % i, b"k") for i in range(count)],
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=0,
    )
    h = read_batch_header(batch)
    assert read_batch_size(batch) == h.size == len(batch)
    assert read_producer(batch) == (h.producer_id, h.producer_epoch) == (producer_id, epoch)
    buf = prefix + batch
    assert read_batch_size(buf, len(prefix)) == len(batch)
    assert read_producer(buf, len(prefix)) == (producer_id, epoch)


def test_batch_size_and_producer_need_their_bytes() -> None:
    batch = encode_batch([SimpleRecord(b"v")], producer_id=7, producer_epoch=1, base_sequence=0)
    assert read_batch_size(batch[:12]) == len(batch)
    with pytest.raises(CorruptRecordError):
        read_batch_size(batch[:11])
    assert read_producer(batch[:53]) == (7, 1)
    with pytest.raises(InvalidRecordError):
        read_producer(batch[:52])
