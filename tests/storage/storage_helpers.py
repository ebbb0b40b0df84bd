"""Helpers shared by the storage tests."""

from __future__ import annotations

from collections.abc import Callable

from odradek.protocol.records import SimpleRecord, encode_batch
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
