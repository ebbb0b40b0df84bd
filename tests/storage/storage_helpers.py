"""Helpers shared by the storage tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from odradek.protocol.records import SimpleRecord, encode_batch, read_batch_header
from odradek.storage.log import PartitionLog

START_MS = 1_700_000_000_000

OpenLog = Callable[..., PartitionLog]


def batch(
    n: int = 1,
    *,
    ts: int = START_MS,
    value: bytes = b"v",
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    compression: int = 0,
    **kw: object,
) -> bytes:
    recs = [SimpleRecord(value + b"-%d" % i, key=b"k%d" % i, timestamp=ts + i) for i in range(n)]
    return encode_batch(
        recs,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        compression=compression,
        **kw,  # type: ignore[arg-type]
    )


def crash(plog: PartitionLog) -> None:
    """Simulate a killed process: drop file handles, write nothing more."""
    plog._close_handles()
    plog._closed = True


def batch_positions(log_file: Path) -> dict[int, tuple[int, int]]:
    """base offset -> (position, size) of every batch in a .log file."""
    data = log_file.read_bytes()
    out = {}
    pos = 0
    while pos < len(data):
        h = read_batch_header(data, pos)
        out[h.base_offset] = (pos, h.size)
        pos += h.size
    return out


def flip(path: Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        b = f.read(1)
        f.seek(position)
        f.write(bytes([b[0] ^ 0xFF]))
