from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.protocol.varint import (
    MAX_VARINT32_BYTES,
    VarintError,
    encode_uvarint,
    encode_varint,
    read_uvarint,
    read_varint,
)


@given(st.integers(-(2**63), 2**63 - 1), st.binary(max_size=3))
def test_signed_round_trip(value: int, tail: bytes) -> None:
    data = b"\x07" + encode_varint(value) + tail
    assert read_varint(data, 1) == (value, len(data) - len(tail))


@given(st.integers(0, 2**64 - 1))
def test_unsigned_round_trip(value: int) -> None:
    data = encode_uvarint(value)
    assert read_uvarint(memoryview(data), 0) == (value, len(data))
    assert len(data) <= 10


def test_known_encodings() -> None:
    # Zigzag: 0, -1, 1, -2 -> 0, 1, 2, 3; 300 unsigned is AC 02 (LEB128).
    assert [encode_varint(v) for v in (0, -1, 1, -2)] == [b"\0", b"\1", b"\2", b"\3"]
    assert encode_uvarint(300) == b"\xac\x02"
    assert encode_varint(-(2**63)) == b"\xff" * 9 + b"\x01"


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\x80" * 10 + b"\x00"])
def test_truncated_or_too_long(data: bytes) -> None:
    with pytest.raises(VarintError):
        read_uvarint(data, 0)


def test_32_bit_limit() -> None:
    assert read_uvarint(b"\xff\xff\xff\xff\x0f", 0, MAX_VARINT32_BYTES) == (2**32 - 1, 5)
    with pytest.raises(VarintError):
        read_uvarint(b"\x80\x80\x80\x80\x80\x00", 0, MAX_VARINT32_BYTES)
    with pytest.raises(ValueError):
        encode_uvarint(-1)
