"""Kafka frame decoding: 4-byte big-endian size prefix, then the request or response bytes.

Sans-IO, in the style of h11: feed it whatever bytes arrive with :meth:`FrameDecoder.feed` and pull
complete frames with :meth:`FrameDecoder.next_frame`, which returns :data:`NEED_DATA` until a whole
frame is buffered. Owned by one connection; not thread-safe.
"""

from __future__ import annotations

import enum
import struct
from typing import Final, Literal

from odradek.errors import CorruptFrameError, FrameTooLargeError

__all__ = ["NEED_DATA", "NeedData", "FrameDecoder", "encode_frame"]


class NeedData(enum.Enum):
    """Sentinel type: the decoder needs more bytes before it can return a frame."""

    NEED_DATA = enum.auto()


NEED_DATA: Final = NeedData.NEED_DATA

_SIZE = struct.Struct(">i")


class FrameDecoder:
    """Splits a byte stream into size-prefixed frames.

    A negative size is a :class:`CorruptFrameError`; a size over ``max_frame_bytes`` is a
    :class:`FrameTooLargeError` (raised as soon as the prefix is seen, so an oversized frame is
    never buffered).
    """

    __slots__ = ("_buffer", "_pos", "_max")

    def __init__(self, max_frame_bytes: int) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._max = max_frame_bytes

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._pos

    def next_frame(self) -> bytes | Literal[NeedData.NEED_DATA]:
        buf = self._buffer
        pos = self._pos
        available = len(buf) - pos
        if available < 4:
            self._compact()
            return NEED_DATA
        (size,) = _SIZE.unpack_from(buf, pos)
        if size < 0:
            raise CorruptFrameError(f"negative frame size {size}")
        if size > self._max:
            raise FrameTooLargeError(
                f"frame of {size} bytes exceeds socket.request.max.bytes={self._max}"
            )
        if available < 4 + size:
            self._compact()
            return NEED_DATA
        start = pos + 4
        end = start + size
        frame = bytes(buf[start:end])
        self._pos = end
        if end == len(buf):
            buf.clear()
            self._pos = 0
        return frame

    def _compact(self) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0


def encode_frame(payload: bytes | bytearray) -> bytes:
    return _SIZE.pack(len(payload)) + payload
