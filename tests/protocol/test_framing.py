import ctypes
import mmap
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.errors import CorruptFrameError, FrameTooLargeError
from odradek.protocol.framing import NEED_DATA, FrameDecoder, encode_frame


def test_partial_frames_need_data() -> None:
    d = FrameDecoder(1024)
    wire = encode_frame(b"hello")
    d.feed(wire[:3])
    assert d.next_frame() is NEED_DATA
    d.feed(wire[3:6])
    assert d.next_frame() is NEED_DATA
    d.feed(wire[6:])
    assert d.next_frame() == b"hello"
    assert d.next_frame() is NEED_DATA
    assert d.buffered == 0


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=1, max_value=64))
def test_any_split_yields_the_same_frames(payloads: list[bytes], chunk: int) -> None:
    wire = b"".join(encode_frame(p) for p in payloads)
    d = FrameDecoder(1024)
    out = []
    for i in range(0, len(wire), chunk):
        d.feed(wire[i : i + chunk])
        while (frame := d.next_frame()) is not NEED_DATA:
            out.append(frame)
    assert out == payloads


def test_oversized_frame_rejected_before_buffering() -> None:
    d = FrameDecoder(100)
    d.feed(struct.pack(">i", 101))
    with pytest.raises(FrameTooLargeError):
        d.next_frame()


def test_negative_size_is_corrupt() -> None:
    d = FrameDecoder(100)
    d.feed(struct.pack(">i", -5))
    with pytest.raises(CorruptFrameError):
        d.next_frame()


@given(
    st.lists(st.binary(max_size=3000), max_size=12),
    st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=50),
)
def test_buffer_protocol_path_with_small_receive_buffer(
    payloads: list[bytes], reads: list[int]
) -> None:
    """Frames larger than the receive buffer get their own buffer; reads of any size work."""
    wire = b"".join(encode_frame(p) for p in payloads)
    d = FrameDecoder(1 << 20, buffer_bytes=1024)
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(wire):
        target = d.get_buffer()
        assert len(target) > 0
        n = min(len(target), reads[i % len(reads)], len(wire) - pos)
        target[:n] = wire[pos : pos + n]
        d.buffer_updated(n)
        pos += n
        i += 1
        while (frame := d.next_frame()) is not NEED_DATA:
            out.append(bytes(frame))
    assert out == payloads


def test_undrained_frames_never_leave_an_empty_buffer() -> None:
    d = FrameDecoder(1 << 20, buffer_bytes=64)
    for _ in range(100):
        d.feed(encode_frame(b"x" * 10))
    frames = []
    while (frame := d.next_frame()) is not NEED_DATA:
        frames.append(bytes(frame))
    assert frames == [b"x" * 10] * 100


# -- zero copy ------------------------------------------------------------------------------------


def _address(view: memoryview) -> int:
    """Where a (writable, non-empty) view's first byte lives."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class _Socket:
    """Plays the transport's part: ``recv_into`` the decoder's buffer, at most ``read`` bytes a
    time, remembering where every byte of the stream was written."""

    def __init__(self, decoder: FrameDecoder, read: int) -> None:
        self.decoder = decoder
        self.read = read
        self.placed: list[tuple[int, int, int]] = []  # (stream position, bytes, address)

    def deliver(self, wire: bytes, stream_pos: int = 0) -> list[memoryview]:
        frames: list[memoryview] = []
        pos = 0
        while pos < len(wire):
            target = self.decoder.get_buffer()
            n = min(len(target), self.read, len(wire) - pos)
            target[:n] = wire[pos : pos + n]
            self.placed.append((stream_pos + pos, n, _address(target)))
            self.decoder.buffer_updated(n)
            pos += n
            while (frame := self.decoder.next_frame()) is not NEED_DATA:
                assert isinstance(frame, memoryview)
                frames.append(frame)
        return frames

    def moved(self, frame: memoryview, stream_pos: int) -> int:
        """How many bytes of ``frame`` (which starts at ``stream_pos`` of the stream) are not
        where the socket wrote them, i.e. were copied after the read."""
        base = _address(frame)
        in_place = 0
        for pos, n, address in self.placed:
            lo, hi = max(pos, stream_pos), min(pos + n, stream_pos + len(frame))
            if lo < hi and address + (lo - pos) == base + (lo - stream_pos):
                in_place += hi - lo
        return len(frame) - in_place


def test_small_frames_are_views_of_the_bytes_the_socket_wrote() -> None:
    d = FrameDecoder(1 << 20, buffer_bytes=4096)
    payloads = [bytes([i]) * (100 + 7 * i) for i in range(60)]
    wire = b"".join(encode_frame(p) for p in payloads)
    sock = _Socket(d, read=1000)
    frames = sock.deliver(wire)
    assert [bytes(f) for f in frames] == payloads
    pos = 0
    moved = []
    for f in frames:
        assert not f.readonly
        moved.append(sock.moved(f, pos + 4))
        pos += 4 + len(f)
    # Only a frame that would not fit in the rest of its chunk is moved to the next chunk, and
    # only the part of it received by then.
    chunks = len({id(f.obj) for f in frames})
    assert chunks > 1
    assert sum(1 for m in moved if m) <= chunks - 1
    assert sum(moved) < len(wire) // 10


def test_a_whole_read_of_small_frames_is_carved_without_a_copy() -> None:
    d = FrameDecoder(1 << 20)
    payloads = [b"a" * 10, b"b" * 5000, b"c" * 3]
    wire = b"".join(encode_frame(p) for p in payloads)
    sock = _Socket(d, read=len(wire))
    frames = sock.deliver(wire)
    assert [bytes(f) for f in frames] == payloads
    assert frames[0].obj is frames[1].obj is frames[2].obj  # one receive chunk
    assert [sock.moved(f, p) for f, p in zip(frames, (4, 18, 5022), strict=True)] == [0, 0, 0]


def test_large_frames_are_read_into_their_own_buffer() -> None:
    d = FrameDecoder(1 << 22, buffer_bytes=64 * 1024)
    first, second = os.urandom(300_000), os.urandom(500_000)
    sock = _Socket(d, read=16 * 1024)
    (a,) = sock.deliver(encode_frame(first))
    (b,) = sock.deliver(encode_frame(second), stream_pos=4 + len(first))
    assert (bytes(a), bytes(b)) == (first, second)
    assert isinstance(a.obj, mmap.mmap) and isinstance(b.obj, mmap.mmap)
    assert a.obj is not b.obj  # the first frame is still held: its memory is not reused
    # The first large frame's start came with its size prefix, into the receive chunk, and was
    # moved once; after a large frame the next prefix is read alone, so nothing is moved.
    assert 0 < sock.moved(a, 4) < 16 * 1024
    assert sock.moved(b, 8 + len(first)) == 0


@given(
    st.lists(st.binary(min_size=1, max_size=3000), max_size=12),
    st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=50),
)
def test_frames_handed_out_stay_intact_and_writable(
    payloads: list[bytes], reads: list[int]
) -> None:
    """A frame owns its bytes: later reads never land in them, and writing into one frame (as
    the produce path writes offsets) changes no other."""
    wire = b"".join(encode_frame(p) for p in payloads)
    d = FrameDecoder(1 << 20, buffer_bytes=1024)
    frames: list[memoryview] = []
    pos = 0
    i = 0
    while pos < len(wire):
        target = d.get_buffer()
        n = min(len(target), reads[i % len(reads)], len(wire) - pos)
        target[:n] = wire[pos : pos + n]
        d.buffer_updated(n)
        pos += n
        i += 1
        while (frame := d.next_frame()) is not NEED_DATA:
            assert isinstance(frame, memoryview) and not frame.readonly
            frames.append(frame)
            frame[0] ^= 0xFF
    assert [bytes([f[0] ^ 0xFF]) + bytes(f[1:]) for f in frames] == payloads


# -- memory follows the bytes received ------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_claimed_frame_costs_memory_only_as_its_bytes_arrive() -> None:
    size = 100 << 20
    d = FrameDecoder(size)
    d.feed(struct.pack(">i", size) + b"\x00\x12\x00\x03\x00\x00\x00\x01\x00\x02ab")
    assert d.next_frame() is NEED_DATA
    assert d.pending_claim() == 4 + size
    before = _rss()
    target = d.get_buffer()
    assert len(target) == size - 12  # the rest of the frame goes straight into its own buffer
    assert _rss() - before < 8 << 20
    # ... and the memory is there once the client has actually sent the bytes.
    chunk = b"\x5a" * (1 << 20)
    filled = 0
    while filled < len(target):
        n = min(len(chunk), len(target) - filled)
        target[filled : filled + n] = chunk[:n]
        filled += n
    d.buffer_updated(filled)
    del target
    assert _rss() - before > 90 << 20
    frame = d.next_frame()
    assert isinstance(frame, memoryview) and len(frame) == size
    assert frame[-1] == 0x5A and bytes(frame[:12]) == b"\x00\x12\x00\x03\x00\x00\x00\x01\x00\x02ab"


def test_receive_chunk_is_lazy_starts_small_grows_when_busy_and_can_be_released() -> None:
    d = FrameDecoder(1 << 20, buffer_bytes=64 * 1024, initial_buffer_bytes=4096)
    assert d.release_buffer() == 0  # nothing allocated before the first read
    first = d.get_buffer()
    assert len(first) == 4096
    del first
    sizes = []
    payload = encode_frame(b"p" * 96)  # 100 bytes a frame
    wire = payload * 6000
    pos = 0
    for _ in range(8):  # reads that fill the buffer they were given: the chunks double
        target = d.get_buffer()
        sizes.append(len(target.obj))  # type: ignore[arg-type]
        target[:] = wire[pos : pos + len(target)]
        d.buffer_updated(len(target))
        pos += len(target)
        del target
        while (frame := d.next_frame()) is not NEED_DATA:
            assert bytes(frame) == b"p" * 96
    assert sizes[0] == 4096 and sizes[-1] == 64 * 1024
    assert sorted(sizes) == sizes
    # Finish the partial frame, then the idle connection gives its chunk back.
    assert d.release_buffer() == 0  # part of a frame is waiting
    d.feed(wire[pos : pos + 100 - pos % 100])
    assert bytes(d.next_frame()) == b"p" * 96
    assert d.release_buffer() == 64 * 1024
    assert len(d.get_buffer()) == 4096
    d.feed(payload)
    assert bytes(d.next_frame()) == b"p" * 96


def test_a_run_of_large_frames_reuses_one_buffer_once_each_is_let_go() -> None:
    d = FrameDecoder(1 << 22, buffer_bytes=64 * 1024)
    sock = _Socket(d, read=16 * 1024)
    payloads = [os.urandom(n) for n in (300_000, 500_000, 200_000)]
    pos = 0
    maps = []
    for p in payloads:
        (frame,) = sock.deliver(encode_frame(p), stream_pos=pos)
        assert bytes(frame) == p and len(frame) == len(p)
        maps.append(frame.obj)
        del frame  # the request is done with it
        pos += 4 + len(p)
    assert maps[0] is maps[1] is maps[2]
