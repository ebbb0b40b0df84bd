"""Kafka frame decoding: 4-byte big-endian size prefix, then the request or response bytes.

Sans-IO, in the style of h11, with a zero-copy receive path: the transport asks
:meth:`FrameDecoder.get_buffer` where to put incoming bytes and reports how many arrived with
:meth:`FrameDecoder.buffer_updated` (or hands over bytes with :meth:`FrameDecoder.feed`);
:meth:`FrameDecoder.next_frame` returns a complete frame or :data:`NEED_DATA`.

Small frames are cut out of one reused receive buffer (one copy). A frame too large for that
buffer gets a buffer of its own, exactly its size, into which the socket writes directly; it is
handed out without any copy, as a writable view (the produce path writes offsets into it). Owned by one connection;
not thread-safe.
"""

from __future__ import annotations

import enum
import struct
from typing import Final, Literal

from odradek.errors import CorruptFrameError, FrameTooLargeError

__all__ = ["NEED_DATA", "NeedData", "FrameDecoder", "encode_frame", "Frame"]


class NeedData(enum.Enum):
    """Sentinel type: the decoder needs more bytes before it can return a frame."""

    NEED_DATA = enum.auto()


NEED_DATA: Final = NeedData.NEED_DATA

Frame = bytes | memoryview

_SIZE = struct.Struct(">i")
RECEIVE_BUFFER_BYTES = 256 * 1024
_MIN_FREE = 16 * 1024


class FrameDecoder:
    """Splits a byte stream into size-prefixed frames.

    A negative size is a :class:`CorruptFrameError`; a size over ``max_frame_bytes`` is a
    :class:`FrameTooLargeError`, raised as soon as the prefix is seen, so an oversized frame is
    never buffered.
    """

    __slots__ = ("_max", "_buf", "_start", "_end", "_big", "_big_filled")

    def __init__(self, max_frame_bytes: int, buffer_bytes: int = RECEIVE_BUFFER_BYTES) -> None:
        self._max = max_frame_bytes
        self._buf = bytearray(buffer_bytes)
        self._start = 0  # first unconsumed byte in _buf
        self._end = 0  # end of received bytes in _buf
        self._big: bytearray | None = None  # body of a frame too large for _buf
        self._big_filled = 0

    @property
    def buffered(self) -> int:
        return self._end - self._start + (self._big_filled if self._big is not None else 0)

    # -- receiving ------------------------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Writable space for the next bytes from the transport (never empty)."""
        if self._big is None:
            try:
                self._maybe_go_big()
            except CorruptFrameError:
                pass  # raised again by next_frame, where the caller expects it
        if self._big is not None:
            return memoryview(self._big)[self._big_filled :]
        min_free = min(_MIN_FREE, len(self._buf) // 4)
        if len(self._buf) - self._end < min_free:
            self._compact()
            if len(self._buf) - self._end < min_free:
                # Complete frames are waiting to be taken: grow rather than stall.
                grown = bytearray(len(self._buf) * 2)
                grown[: self._end] = self._buf[: self._end]
                self._buf = grown
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._big is not None:
            self._big_filled += nbytes
        else:
            self._end += nbytes

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in (for transports that hand over bytes); check frames as you go."""
        view = memoryview(data).cast("B")
        while view:
            target = self.get_buffer()
            n = min(len(target), len(view))
            target[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    # -- frames ---------------------------------------------------------------------------------

    def next_frame(self) -> Frame | Literal[NeedData.NEED_DATA]:
        big = self._big
        if big is not None:
            if self._big_filled < len(big):
                return NEED_DATA
            self._big = None
            self._big_filled = 0
            return memoryview(big)
        start = self._start
        available = self._end - start
        if available < 4:
            if available == 0:
                self._start = self._end = 0
            return NEED_DATA
        size = self._frame_size(start)
        if available < 4 + size:
            return NEED_DATA
        begin = start + 4
        self._start = begin + size
        if self._start == self._end:
            self._start = self._end = 0
        return bytes(memoryview(self._buf)[begin : begin + size])

    def _frame_size(self, pos: int) -> int:
        (size,) = _SIZE.unpack_from(self._buf, pos)
        if size < 0:
            raise CorruptFrameError(f"negative frame size {size}")
        if size > self._max:
            raise FrameTooLargeError(
                f"frame of {size} bytes exceeds socket.request.max.bytes={self._max}"
            )
        return size

    def _maybe_go_big(self) -> None:
        """If the frame at the start does not fit in the receive buffer, give it its own."""
        start = self._start
        available = self._end - start
        if available < 4:
            return
        size = self._frame_size(start)
        if 4 + size <= len(self._buf) - start or available >= 4 + size:
            return
        if 4 + size <= len(self._buf):
            self._compact()
            return
        big = bytearray(size)
        have = available - 4
        big[:have] = self._buf[start + 4 : self._end]
        self._big = big
        self._big_filled = have
        self._start = self._end = 0

    def _compact(self) -> None:
        start, end = self._start, self._end
        if start:
            n = end - start
            self._buf[:n] = self._buf[start:end]
            self._start, self._end = 0, n


def encode_frame(payload: bytes | bytearray) -> bytes:
    return _SIZE.pack(len(payload)) + payload
