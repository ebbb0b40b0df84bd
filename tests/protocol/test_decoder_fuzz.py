"""Review (session 9): the hand-written decoders of Produce requests and replica Fetch answers
turn any corruption of a valid frame into CorruptFrameError, never another exception or a hang."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_produce_codec import _frame, topics_st
from test_replica_fetch import _body

from odradek.errors import CorruptFrameError
from odradek.protocol.fetch_response import FETCH_KEY
from odradek.protocol.messages import encode_response, peek_preamble
from odradek.protocol.produce import decode_produce_request
from odradek.protocol.replica_fetch import decode_replica_fetch_response

_mutation = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "cut"]), st.integers(0, 1 << 20),
              st.integers(0, 255)),
    min_size=1, max_size=4,
)


def _mutate(frame: bytes, ops: list[tuple[str, int, int]], keep: int) -> bytearray:
    out = bytearray(frame)
    for op, where, value in ops:
        if len(out) <= keep:
            break
        i = keep + where % (len(out) - keep)
        if op == "flip":
            out[i] = value
        elif op == "insert":
            out[i:i] = bytes([value])
        elif op == "delete":
            del out[i]
        else:
            del out[i:]
    return out


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 11), topics_st, st.none() | st.text(max_size=5), _mutation)
def test_corrupt_produce_requests_are_corrupt_frames(
    version: int, topics: list[Any], txn: str | None, ops: list[tuple[str, int, int]]
) -> None:
    frame = _frame(version, topics, txn, 1, "client")
    pre = peek_preamble(frame)
    bad = _mutate(frame, ops, keep=8)  # the preamble is read before the decoder
    try:
        decode_produce_request(memoryview(bad), pre)
    except CorruptFrameError:
        pass


_FETCH_FRAMES = {v: encode_response(FETCH_KEY, 1, _body(v))[4:] for v in range(13, 17)}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(13, 16), _mutation)
def test_corrupt_replica_fetch_answers_are_corrupt_frames(
    version: int, ops: list[tuple[str, int, int]]
) -> None:
    bad = _mutate(_FETCH_FRAMES[version], ops, keep=0)
    try:
        decode_replica_fetch_response(memoryview(bad), version)
    except CorruptFrameError:
        pass
