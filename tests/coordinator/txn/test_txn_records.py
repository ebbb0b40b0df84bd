"""``__transaction_state`` record codecs: Kafka's byte layouts (v0 and flexible v1), skipping of
unknown keys, and strict rejection of corrupt bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.coordinator.txn.records import (
    TxnKey,
    TxnPartitions,
    TxnValue,
    decode,
    encode_key,
    encode_value,
    partition_for,
)
from odradek.coordinator.txn.state import TransactionState
from odradek.errors import CorruptRecordError
from odradek.topic_names import TRANSACTION_STATE_TOPIC

S = TransactionState

# -- hand-built primitives (independent of the module under test) ----------------------------


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def s(v: str) -> bytes:
    return i16(len(v.encode())) + v.encode()


def cs(v: str) -> bytes:
    """Compact string; lengths here stay below 127 so the varint is one byte."""
    return bytes([len(v.encode()) + 1]) + v.encode()


ONGOING = TxnValue(
    producer_id=4001,
    producer_epoch=7,
    transaction_timeout_ms=60_000,
    state=S.ONGOING,
    partitions=(TxnPartitions("audit", (0,)), TxnPartitions("orders", (1, 3))),
    last_update_timestamp_ms=1_700_000_000_500,
    start_timestamp_ms=1_700_000_000_000,
)

# TransactionLogValue v0 of ONGOING, field by field from the spec.
ONGOING_V0 = (
    i16(0)
    + i64(4001)
    + i16(7)
    + i32(60_000)
    + i8(1)
    + i32(2)
    + s("audit") + i32(1) + i32(0)
    + s("orders") + i32(2) + i32(1) + i32(3)
    + i64(1_700_000_000_500)
    + i64(1_700_000_000_000)
)


def test_key_golden_bytes() -> None:
    assert encode_key(TxnKey("tx-1")) == i16(0) + s("tx-1")
    assert decode(i16(0) + s("tx-1"), None) == (TxnKey("tx-1"), None)


def test_value_v0_golden_bytes() -> None:
    assert encode_value(ONGOING) == ONGOING_V0
    assert decode(encode_key(TxnKey("t")), ONGOING_V0) == (TxnKey("t"), ONGOING)


def test_empty_state_writes_a_null_partition_array() -> None:
    value = TxnValue(9, 0, 1000, S.EMPTY, (), 5, -1)
    raw = encode_value(value)
    assert raw == i16(0) + i64(9) + i16(0) + i32(1000) + i8(0) + i32(-1) + i64(5) + i64(-1)
    assert decode(encode_key(TxnKey("t")), raw) == (TxnKey("t"), value)


def test_partitions_of_an_empty_state_are_ignored_on_read() -> None:
    raw = (
        i16(0) + i64(9) + i16(0) + i32(1000) + i8(0)
        + i32(1) + s("a") + i32(1) + i32(0)
        + i64(5) + i64(-1)
    )
    decoded = decode(encode_key(TxnKey("t")), raw)
    assert decoded is not None and decoded[1] is not None
    assert decoded[1].partitions == ()


def test_value_v1_golden_bytes_with_tagged_fields() -> None:
    value = TxnValue(
        4001, 7, 60_000, S.PREPARE_COMMIT, (TxnPartitions("orders", (2,)),), 20, 10,
        previous_producer_id=4000, client_transaction_version=2,
    )
    expected = (
        i16(1)
        + i64(4001) + i16(7) + i32(60_000) + i8(2)
        + bytes([2]) + cs("orders") + bytes([2]) + i32(2) + b"\x00"
        + i64(20) + i64(10)
        + bytes([2])  # two tagged fields, in tag order
        + bytes([0, 8]) + i64(4000)
        + bytes([2, 2]) + i16(2)
    )
    assert encode_value(value, version=1) == expected
    assert decode(encode_key(TxnKey("t")), expected) == (TxnKey("t"), value)


def test_v1_unknown_tags_are_skipped_and_null_array_read_as_empty() -> None:
    raw = (
        i16(1) + i64(1) + i16(0) + i32(10) + i8(0)
        + b"\x00"  # null compact array
        + i64(3) + i64(-1)
        + bytes([1]) + bytes([9, 3]) + b"xyz"  # unknown tag 9
    )
    assert decode(encode_key(TxnKey("t")), raw) == (
        TxnKey("t"), TxnValue(1, 0, 10, S.EMPTY, (), 3, -1)
    )


def test_unknown_key_versions_are_skipped() -> None:
    assert decode(i16(1) + s("whatever"), b"\x00") is None
    assert decode(i16(-1), None) is None


def test_encode_refuses_what_the_format_cannot_hold() -> None:
    with pytest.raises(ValueError):
        encode_value(TxnValue(1, 0, 10, S.EMPTY, (TxnPartitions("a", (0,)),), 0, -1))
    with pytest.raises(ValueError):
        encode_value(TxnValue(1, 0, 10, S.ONGOING, (), 0, 0, next_producer_id=5))
    with pytest.raises(ValueError):
        encode_value(ONGOING, version=2)
    assert encode_value(None) is None


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (ONGOING_V0[:-1], "truncated"),
        (ONGOING_V0 + b"\x00", "trailing"),
        (i16(2) + ONGOING_V0[2:], "unknown transaction log value version"),
        (ONGOING_V0[:16] + i8(8) + ONGOING_V0[17:], "unknown transaction state"),
        (ONGOING_V0[:17] + i32(1_000_000) + ONGOING_V0[21:], "longer than the record"),
        (ONGOING_V0[:21] + i16(-1) + ONGOING_V0[28:], "non-nullable string"),
        (ONGOING_V0[:21] + i16(5) + b"\xff\xfe\xfd\xfc\xfb" + ONGOING_V0[28:], "UTF-8"),
    ],
)
def test_corrupt_values_raise(raw: bytes, why: str) -> None:
    with pytest.raises(CorruptRecordError, match=why):
        decode(encode_key(TxnKey("t")), raw)


def test_tagged_field_of_the_wrong_size_is_corrupt() -> None:
    raw = (
        i16(1) + i64(1) + i16(0) + i32(10) + i8(0) + b"\x00" + i64(3) + i64(-1)
        + bytes([1]) + bytes([0, 2]) + b"ab"
    )
    with pytest.raises(CorruptRecordError, match="tagged field"):
        decode(encode_key(TxnKey("t")), raw)


def test_corrupt_keys_raise() -> None:
    with pytest.raises(CorruptRecordError):
        decode(b"\x00", None)
    with pytest.raises(CorruptRecordError):
        decode(i16(0) + s("abc") + b"!", None)
    with pytest.raises(CorruptRecordError):
        decode(i16(0) + i16(-1), None)


def test_partition_for_follows_kafka() -> None:
    # Java: "hello".hashCode() == 99162322
    assert partition_for("hello", 50) == 99162322 % 50
    assert TRANSACTION_STATE_TOPIC == "__transaction_state"


# -- properties --------------------------------------------------------------------------------

_names = st.text(min_size=0, max_size=20)
_partitions = st.lists(
    st.builds(
        TxnPartitions,
        _names,
        st.lists(st.integers(0, 2**31 - 1), max_size=5).map(tuple),
    ),
    max_size=4,
).map(tuple)
_i64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def values(draw: st.DrawFn, flexible: bool) -> TxnValue:
    state = draw(st.sampled_from(list(S)))
    return TxnValue(
        producer_id=draw(_i64),
        producer_epoch=draw(st.integers(-(2**15), 2**15 - 1)),
        transaction_timeout_ms=draw(st.integers(-(2**31), 2**31 - 1)),
        state=state,
        partitions=() if state is S.EMPTY else draw(_partitions),
        last_update_timestamp_ms=draw(_i64),
        start_timestamp_ms=draw(_i64),
        previous_producer_id=draw(_i64) if flexible else -1,
        next_producer_id=draw(_i64) if flexible else -1,
        client_transaction_version=draw(st.integers(-(2**15), 2**15 - 1)) if flexible else 0,
    )


@given(_names, values(flexible=False))
def test_v0_round_trip(txn_id: str, value: TxnValue) -> None:
    raw = encode_value(value)
    assert raw is not None and raw[:2] == i16(0)
    assert decode(encode_key(TxnKey(txn_id)), raw) == (TxnKey(txn_id), value)


@given(_names, values(flexible=True))
def test_v1_round_trip(txn_id: str, value: TxnValue) -> None:
    raw = encode_value(value, version=1)
    assert decode(encode_key(TxnKey(txn_id)), raw) == (TxnKey(txn_id), value)


@given(st.binary(max_size=80), st.one_of(st.none(), st.binary(max_size=120)))
def test_arbitrary_bytes_decode_or_raise_corrupt(key: bytes, value: bytes | None) -> None:
    try:
        decode(key, value)
    except CorruptRecordError:
        pass


@given(values(flexible=False), st.data())
def test_every_truncation_of_a_value_is_corrupt(value: TxnValue, data: st.DataObject) -> None:
    raw = encode_value(value)
    assert raw is not None
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(CorruptRecordError):
        decode(encode_key(TxnKey("t")), raw[:cut])
