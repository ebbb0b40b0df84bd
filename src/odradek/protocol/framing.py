"""Kafka frame decoding: 4-byte big-endian size prefix, then the request or response bytes.

Sans-IO, in the style of h11, with a zero-copy receive path: the transport asks
:meth:`FrameDecoder.get_buffer` where to put incoming bytes and reports how many arrived with
:meth:`FrameDecoder.buffer_updated` (or hands over bytes with :meth:`FrameDecoder.feed`);
:meth:`FrameDecoder.next_frame` returns a complete frame or :data:`NEED_DATA`.

Every frame is handed out as a writable :class:`memoryview` of memory that belongs to that frame
alone from then on, so the produce path writes offsets into it and passes it to ``os.write``
without copying it:

- Frames that fit in a receive chunk are *carved* out of it: the view covers the bytes where the
  socket put them, and the decoder never writes into a chunk before its last received byte, so
  a carved frame stays valid for as long as anyone holds it (and keeps its chunk alive that
  long). A chunk that runs out of room is replaced by a new one rather than compacted.
- A frame too large for the largest chunk gets a buffer of its own, exactly its size, and the
  socket reads the rest of it straight into that buffer. After such a frame the next size prefix
  is read on its own, so a run of large frames (a producer's batches) is received with no copy.

Memory follows the bytes received, not the sizes clients claim. The receive chunk is allocated
at the first read, starts small (:data:`INITIAL_RECEIVE_BUFFER_BYTES`), doubles each time a read
fills it, up to ``buffer_bytes``, and :meth:`FrameDecoder.release_buffer` lets an idle
connection give it back. A large frame's own buffer is an anonymous private memory map, sized
up to a power of two: the kernel commits its pages only as the socket writes into them, so a
claimed but unsent frame costs address space only, and nothing is moved or zero-filled as it
arrives. Fresh pages cost a page fault each, so the decoder keeps its last map (up to
:data:`SPARE_BUFFER_BYTES`) and reuses it for the next large frame once no view of the old one
is left: a producer's run of large requests is received into the same, already committed
memory. (How many claimed bytes
may be in flight at once is the broker's business: see ``broker/memory_pool.py``.)

Bytes are copied once, and only bytes no frame has been handed out of yet: the received start of
a frame whose end would not fit in its chunk is moved to a new chunk (or to its own buffer).

Owned by one connection; not thread-safe.
"""

from __future__ import annotations

import enum
import mmap
import struct
from typing import Final, Literal

from odradek.errors import CorruptFrameError, FrameTooLargeError

__all__ = [
    "NEED_DATA",
    "NeedData",
    "FrameDecoder",
    "encode_frame",
    "Frame",
    "RECEIVE_BUFFER_BYTES",
    "INITIAL_RECEIVE_BUFFER_BYTES",
    "SPARE_BUFFER_BYTES",
    "allocate",
    "unshared",
]


class NeedData(enum.Enum):
    """Sentinel type: the decoder needs more bytes before it can return a frame."""

    NEED_DATA = enum.auto()


NEED_DATA: Final = NeedData.NEED_DATA

Frame = bytes | memoryview

_SIZE = struct.Struct(">i")
#: The largest receive chunk; larger frames get a buffer of their own.
RECEIVE_BUFFER_BYTES = 256 * 1024
#: The first receive chunk of a connection (and again after it released an idle one).
INITIAL_RECEIVE_BUFFER_BYTES = 16 * 1024
#: The largest map of a large frame that is kept for the next one.
SPARE_BUFFER_BYTES = 4 * 1024 * 1024
_MIN_FREE = 16 * 1024
_NO_BUFFER = bytearray()  # stands for "no receive chunk yet": no room, nothing received


class FrameDecoder:
    """Splits a byte stream into size-prefixed frames (see the module docs for buffering).

    A negative size is a :class:`CorruptFrameError`; a size over ``max_frame_bytes`` is a
    :class:`FrameTooLargeError`, raised as soon as the prefix is seen, so an oversized frame is
    never buffered.
    """

    __slots__ = (
        "_max", "_max_chunk", "_initial_chunk", "_chunk_bytes", "_buf", "_start", "_end",
        "_carved", "_big", "_big_size", "_big_filled", "_spare", "_prefix_first",
    )

    def __init__(
        self,
        max_frame_bytes: int,
        buffer_bytes: int = RECEIVE_BUFFER_BYTES,
        initial_buffer_bytes: int = INITIAL_RECEIVE_BUFFER_BYTES,
    ) -> None:
        self._max = max_frame_bytes
        self._max_chunk = buffer_bytes
        self._initial_chunk = min(initial_buffer_bytes, buffer_bytes)
        self._chunk_bytes = self._initial_chunk  # size of the next chunk
        self._buf = _NO_BUFFER  # the receive chunk, allocated by the first read
        self._start = 0  # first byte in _buf not yet part of a returned frame
        self._end = 0  # end of received bytes in _buf
        # Frames have been carved out of _buf: its bytes before _start are theirs, not ours.
        self._carved = False
        self._big: mmap.mmap | None = None  # holds the body of a frame too large for a chunk
        self._big_size = 0  # ... which is this long
        self._big_filled = 0
        self._spare: mmap.mmap | None = None  # the last one, for the next large frame
        # The last frame was too large for a chunk: read the next size prefix alone, so that a
        # large next frame can be read into its own buffer from its first byte.
        self._prefix_first = False

    @property
    def buffered(self) -> int:
        return self._end - self._start + (self._big_filled if self._big is not None else 0)

    # -- receiving ------------------------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Writable space for the next bytes from the transport (never empty)."""
        if self._big is None:
            self._make_room()
        big = self._big
        if big is not None:
            return memoryview(big)[self._big_filled : self._big_size]
        end = self._end
        if self._prefix_first:
            pending = end - self._start
            if pending < 4:
                return memoryview(self._buf)[end : end + 4 - pending]
        return memoryview(self._buf)[end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._big is not None:
            self._big_filled += nbytes
        else:
            end = self._end = self._end + nbytes
            # A read that filled the chunk left more waiting in the socket: the next chunk of
            # this (busy) connection is twice as large.
            if end == len(self._buf) and self._chunk_bytes < self._max_chunk:
                self._chunk_bytes = min(2 * self._chunk_bytes, self._max_chunk)

    def pending_claim(self) -> int:
        """Size (with its prefix) of the frame being received, 0 if none has begun or its prefix
        is incomplete. Call after :meth:`next_frame` returned :data:`NEED_DATA`."""
        if self._big is not None:
            return 4 + self._big_size
        start = self._start
        if self._end - start < 4:
            return 0
        (size,) = _SIZE.unpack_from(self._buf, start)
        return 4 + size if size >= 0 else 0

    def release_buffer(self) -> int:
        """Give back the receive chunk (and a spare large-frame map) if no received byte is
        waiting (an idle connection); the next read allocates a small chunk again. Frames taken
        from them keep them alive for as long as they are held. Returns the bytes of the receive
        chunk let go (a spare map's pages go back to the system by themselves)."""
        if self._big is not None or self._end != self._start:
            return 0
        released = len(self._buf)
        self._spare = None
        self._buf = _NO_BUFFER
        self._start = self._end = 0
        self._carved = False
        self._chunk_bytes = self._initial_chunk
        return released

    def close(self) -> int:
        """Let go of every buffer (the connection is gone; frames still held keep theirs);
        returns the bytes of the receive chunk let go."""
        released = len(self._buf)
        self._buf = _NO_BUFFER
        self._big = self._spare = None
        self._start = self._end = self._big_filled = self._big_size = 0
        return released

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
            size = self._big_size
            if self._big_filled < size:
                return NEED_DATA
            self._big = None
            self._big_filled = 0
            self._prefix_first = True
            if len(big) <= SPARE_BUFFER_BYTES:
                self._spare = big
            return memoryview(big)[:size]
        start = self._start
        available = self._end - start
        if available < 4:
            return NEED_DATA
        size = self._frame_size(start)
        if available < 4 + size:
            return NEED_DATA
        begin = start + 4
        self._start = begin + size
        self._carved = True
        self._prefix_first = False
        return memoryview(self._buf)[begin : begin + size]

    def _frame_size(self, pos: int) -> int:
        (size,) = _SIZE.unpack_from(self._buf, pos)
        if size < 0:
            raise CorruptFrameError(f"negative frame size {size}")
        if size > self._max:
            raise FrameTooLargeError(
                f"frame of {size} bytes exceeds socket.request.max.bytes={self._max}"
            )
        return size

    def _make_room(self) -> None:
        """Arrange for the next read to land where the frame being received can stay."""
        start, end = self._start, self._end
        pending = end - start
        if pending >= 4:
            try:
                need = 4 + self._frame_size(start)
            except CorruptFrameError:
                need = 0  # raised again by next_frame, where the caller expects it
            if pending < need:  # a frame is partly here
                if start + need <= len(self._buf):
                    return  # it ends inside this chunk
                if need > self._max_chunk:
                    self._go_big(need - 4)
                else:
                    self._move_pending(max(self._chunk_bytes, need))
                return
        # At a frame boundary, or with whole frames not yet taken: keep a useful tail free.
        if len(self._buf) - end >= min(_MIN_FREE, self._chunk_bytes // 4):
            return
        if pending == 0 and not self._carved and self._buf is not _NO_BUFFER:
            self._start = self._end = 0
        else:
            # Complete frames waiting to be taken may need more than a chunk: grow, not stall.
            self._move_pending(max(self._chunk_bytes, 2 * pending))

    def _move_pending(self, chunk_bytes: int) -> None:
        """Continue in a new chunk, moving the bytes no frame has been taken from yet."""
        pending = memoryview(self._buf)[self._start : self._end]
        n = len(pending)
        buf = bytearray(chunk_bytes)
        buf[:n] = pending
        pending.release()
        self._buf = buf
        self._start, self._end = 0, n
        self._carved = False

    def _go_big(self, size: int) -> None:
        """Give the frame at the start its own buffer; the socket fills in the rest."""
        start, end = self._start, self._end
        spare = self._spare
        self._spare = None
        if spare is not None and len(spare) >= size and unshared(spare):
            big = spare
        else:
            big = allocate(size)
        have = end - start - 4
        if have:
            big[:have] = memoryview(self._buf)[start + 4 : end]
        self._big = big
        self._big_size = size
        self._big_filled = have
        if self._carved:
            self._start = end
        else:
            self._start = self._end = 0


def allocate(nbytes: int) -> mmap.mmap:
    """A large frame's own memory: an anonymous private map, whose pages the kernel commits (and
    zeroes) as they are first written and takes back when the last view of it goes. Rounded up
    to a power of two (address space, not memory) so that it can serve later frames too."""
    return mmap.mmap(
        -1, 1 << (nbytes - 1).bit_length(), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    )


def unshared(buf: mmap.mmap) -> bool:
    """No view of ``buf`` is left (a map cannot be resized while any exists)."""
    try:
        buf.resize(len(buf))
    except BufferError:
        return False
    return True


def encode_frame(payload: bytes | bytearray) -> bytes:
    return _SIZE.pack(len(payload)) + payload
