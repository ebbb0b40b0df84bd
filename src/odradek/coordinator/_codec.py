"""Kafka protocol primitives for the coordinators' internal records (``__consumer_offsets``,
``__transaction_state``): a writer, and a reader on which every malformed input raises
:class:`~odradek.errors.CorruptRecordError` (never IndexError, struct.error, ...).

Flexible versions use compact strings and arrays (unsigned varint length + 1) and tagged fields.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import TypeVar

from odradek.errors import CorruptRecordError
from odradek.protocol.varint import MAX_VARINT32_BYTES, VarintError, read_uvarint, write_uvarint

__all__ = ["Writer", "Reader"]

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_T = TypeVar("_T")


class Writer:
    """Appends Kafka protocol primitives to a buffer."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def int8(self, v: int) -> None:
        self.buf += _I8.pack(v)

    def int16(self, v: int) -> None:
        self.buf += _I16.pack(v)

    def int32(self, v: int) -> None:
        self.buf += _I32.pack(v)

    def int64(self, v: int) -> None:
        self.buf += _I64.pack(v)

    def uuid(self, v: uuid.UUID) -> None:
        self.buf += v.bytes

    def uvarint(self, v: int) -> None:
        if not 0 <= v <= 0xFFFFFFFF:
            raise ValueError(f"unsigned varint out of range: {v}")
        write_uvarint(self.buf, v)

    def string(self, v: str | None) -> None:
        if v is None:
            self.int16(-1)
            return
        data = v.encode()
        if len(data) > 0x7FFF:
            raise ValueError(f"string of {len(data)} bytes is too long for an int16 length")
        self.int16(len(data))
        self.buf += data

    def compact_string(self, v: str | None) -> None:
        if v is None:
            self.uvarint(0)
            return
        data = v.encode()
        self.uvarint(len(data) + 1)
        self.buf += data

    def bytes_(self, v: bytes) -> None:
        self.int32(len(v))
        self.buf += v

    def array_len(self, n: int) -> None:
        self.int32(n)

    def compact_array_len(self, n: int) -> None:
        self.uvarint(n + 1)

    def no_tagged_fields(self) -> None:
        self.uvarint(0)

    def flex_string(self, v: str, flexible: bool) -> None:
        """A non-null string, compact in flexible versions."""
        if flexible:
            self.compact_string(v)
        else:
            self.string(v)

    def flex_array_len(self, n: int | None, flexible: bool) -> None:
        """An array length (None = null), compact in flexible versions."""
        if flexible:
            self.uvarint(0 if n is None else n + 1)
        else:
            self.int32(-1 if n is None else n)


class Reader:
    """Reads Kafka protocol primitives; every malformed input raises CorruptRecordError."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def corrupt(self, why: str) -> CorruptRecordError:
        return CorruptRecordError(f"{self.what}: {why} at byte {self.pos}")

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise self.corrupt(f"truncated (need {n} bytes)")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def done(self) -> None:
        if self.pos != len(self.data):
            raise self.corrupt(f"{len(self.data) - self.pos} trailing bytes")

    def int8(self) -> int:
        return int(_I8.unpack(self.take(1))[0])

    def int16(self) -> int:
        return int(_I16.unpack(self.take(2))[0])

    def int32(self) -> int:
        return int(_I32.unpack(self.take(4))[0])

    def int64(self) -> int:
        return int(_I64.unpack(self.take(8))[0])

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.take(16))

    def uvarint(self) -> int:
        try:
            value, self.pos = read_uvarint(self.data, self.pos, MAX_VARINT32_BYTES)
        except VarintError as e:
            raise self.corrupt(f"unsigned {e}") from None
        if value > 0xFFFFFFFF:
            raise self.corrupt("unsigned varint overflows 32 bits")
        return value

    def _utf8(self, n: int) -> str:
        raw = self.take(n)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise self.corrupt("invalid UTF-8 in string") from None

    def nullable_string(self) -> str | None:
        n = self.int16()
        if n == -1:
            return None
        if n < 0:
            raise self.corrupt(f"negative string length {n}")
        return self._utf8(n)

    def string(self) -> str:
        s = self.nullable_string()
        if s is None:
            raise self.corrupt("null in a non-nullable string")
        return s

    def nullable_compact_string(self) -> str | None:
        n = self.uvarint()
        return None if n == 0 else self._utf8(n - 1)

    def compact_string(self) -> str:
        s = self.nullable_compact_string()
        if s is None:
            raise self.corrupt("null in a non-nullable string")
        return s

    def bytes_(self) -> bytes:
        n = self.int32()
        if n < 0:
            raise self.corrupt(f"negative or null length {n} for non-nullable bytes")
        return self.take(n)

    def compact_bytes(self) -> bytes:
        n = self.uvarint()
        if n == 0:
            raise self.corrupt("null in non-nullable bytes")
        return self.take(n - 1)

    def _count(self, n: int) -> int:
        # Every element of every array here takes at least one byte: this bounds the count
        # before anything is allocated for it.
        if n > self.remaining():
            raise self.corrupt(f"array of {n} elements is longer than the record")
        return n

    def array(self, item: Callable[[], _T]) -> tuple[_T, ...]:
        n = self.int32()
        if n < 0:
            raise self.corrupt(f"negative or null length {n} for a non-nullable array")
        return tuple(item() for _ in range(self._count(n)))

    def compact_array(self, item: Callable[[], _T]) -> tuple[_T, ...]:
        n = self.uvarint()
        if n == 0:
            raise self.corrupt("null in a non-nullable array")
        return tuple(item() for _ in range(self._count(n - 1)))

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())

    def flex_string(self, flexible: bool) -> str:
        return self.compact_string() if flexible else self.string()

    def flex_array(
        self, item: Callable[[], _T], flexible: bool, nullable: bool
    ) -> tuple[_T, ...]:
        """An array, compact in flexible versions; a null one is () when ``nullable``."""
        n = self.uvarint() - 1 if flexible else self.int32()
        if n == -1 and nullable:
            return ()
        if n < 0:
            raise self.corrupt(f"null or negative length {n} for a non-nullable array")
        return tuple(item() for _ in range(self._count(n)))

    def tagged_fields(self) -> dict[int, bytes]:
        fields: dict[int, bytes] = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            fields[tag] = self.take(self.uvarint())
        return fields
