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
