"""Variable-length integers as Kafka encodes them, sans-IO: the one definition in the project.

An *unsigned varint* is LEB128: seven bits per byte, least significant group first, the high
bit set on every byte but the last. Kafka uses it unsigned for the lengths of compact strings,
arrays and tagged fields (at most 5 bytes, 32 bits), and zigzag-encoded (``0 -> 0, -1 -> 1,
1 -> 2, -2 -> 3 ...``) for the fields of a record (varint and varlong, at most 10 bytes).

Readers take a buffer and a position and return ``(value, position after it)``. A truncated
or over-long varint raises :class:`VarintError`; each caller turns that into its own error
(a corrupt record, a corrupt request frame, ...).
"""

from __future__ import annotations

__all__ = [
    "MAX_VARINT32_BYTES",
    "MAX_VARINT64_BYTES",
    "VarintError",
    "encode_uvarint",
    "encode_varint",
    "read_uvarint",
    "read_varint",
    "write_uvarint",
    "write_varint",
    "zigzag_decode",
    "zigzag_encode",
]

MAX_VARINT32_BYTES = 5
MAX_VARINT64_BYTES = 10
_UINT64_MASK = 0xFFFFFFFFFFFFFFFF

Buffer = bytes | bytearray | memoryview


class VarintError(ValueError):
    """A varint runs past the end of its buffer or is longer than allowed."""


def read_uvarint(buf: Buffer, pos: int, max_bytes: int = MAX_VARINT64_BYTES) -> tuple[int, int]:
    """The unsigned varint at ``pos`` -> (value, position after it); at most ``max_bytes``."""
    try:
        b = buf[pos]
        if b < 0x80:  # most varints are one byte
            return b, pos + 1
        result = b & 0x7F
        shift = 7
        end = pos + max_bytes
        pos += 1
        while pos < end:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, pos
            shift += 7
    except IndexError:
        raise VarintError("truncated varint") from None
    raise VarintError(f"varint longer than {max_bytes} bytes")


def read_varint(buf: Buffer, pos: int) -> tuple[int, int]:
    """The zigzag-encoded (signed) varint at ``pos`` -> (value, position after it)."""
    v, pos = read_uvarint(buf, pos)
    return (v >> 1) ^ -(v & 1), pos


def zigzag_decode(v: int) -> int:
    return (v >> 1) ^ -(v & 1)


def zigzag_encode(value: int) -> int:
    """The unsigned form of a signed 64-bit ``value``."""
    return ((value << 1) ^ (value >> 63)) & _UINT64_MASK


def write_uvarint(out: bytearray, v: int) -> None:
    """Append the unsigned varint ``v`` (>= 0) to ``out``."""
    if v < 0:
        raise ValueError(f"unsigned varint cannot hold {v}")
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def write_varint(out: bytearray, value: int) -> None:
    """Append the signed ``value`` zigzag-encoded."""
    write_uvarint(out, zigzag_encode(value))


def encode_uvarint(v: int) -> bytes:
    out = bytearray()
    write_uvarint(out, v)
    return bytes(out)


def encode_varint(value: int) -> bytes:
    out = bytearray()
    write_varint(out, value)
    return bytes(out)
