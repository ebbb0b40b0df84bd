"""Large appends reserve their blocks first (storage/preallocate.py, LogSegment.append)."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest
from storage_helpers import OpenLog, batch

from odradek.errors import KafkaStorageError
from odradek.protocol.records import decode_records
from odradek.storage import preallocate, segment
from odradek.storage.preallocate import PREALLOCATE_MIN_BYTES

MIB = 1024 * 1024


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record (offset, length) of every reservation a segment asks for, then make it."""
    calls: list[tuple[int, int]] = []
    real = segment.reserve

    def recording(fd: int, offset: int, length: int) -> bool:
        calls.append((offset, length))
        return real(fd, offset, length)

    monkeypatch.setattr(segment, "reserve", recording)
    return calls


def _failing(monkeypatch: pytest.MonkeyPatch, err: int) -> list[int]:
    """Make the process's fallocate fail with ``err``; returns the list of its calls."""
    calls: list[int] = []

    def fake(fd: int, mode: int, offset: int, length: int) -> int:
        calls.append(fd)
        ctypes.set_errno(err)
        return -1

    monkeypatch.setattr(preallocate, "_fallocate", fake)
    return calls


def test_reserve_allocates_blocks_and_keeps_the_size(tmp_path: Path) -> None:
    if not preallocate.supported():
        pytest.skip("no fallocate here")
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"x" * 100)
        if not preallocate.reserve(fd, 100, MIB):
            pytest.skip(f"fallocate unsupported on {tmp_path}")
        st = os.fstat(fd)
        assert st.st_size == 100
        assert st.st_blocks * 512 >= MIB
        # Truncating to the same size gives the blocks past the end back (what the segment's
        # failed-write path relies on).
        os.ftruncate(fd, 100)
        assert os.fstat(fd).st_blocks * 512 < MIB
    finally:
        os.close(fd)


def test_a_large_append_reserves_exactly_its_own_range(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _recording(monkeypatch)
    plog = open_log()
    small = batch(3)
    large = batch(70, value=b"v" * 4096)
    assert len(small) < PREALLOCATE_MIN_BYTES <= len(large)
    plog.append_as_leader(small, leader_epoch=0)
    plog.append_as_leader(large, leader_epoch=0)
    plog.append_as_leader(large, leader_epoch=0)
    assert calls == [(len(small), len(large)), (len(small) + len(large), len(large))]
    path = plog.active_segment.log_path
    assert path.stat().st_size == len(small) + 2 * len(large) == plog.size_in_bytes
    records = decode_records(plog.read(3, max_bytes=MIB).records)
    assert records[0].offset == 3 and records[0].value == b"v" * 4096 + b"-0"


def test_an_unsupported_filesystem_turns_reservations_off(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _failing(monkeypatch, errno.EOPNOTSUPP)
    plog = open_log()
    large = batch(70, value=b"v" * 4096)
    plog.append_as_leader(large, leader_epoch=0)
    plog.append_as_leader(large, leader_epoch=0)
    assert len(calls) == 1  # tried once, then never again
    assert not preallocate.supported()
    assert plog.log_end_offset == 140
    assert plog.active_segment.log_path.stat().st_size == 2 * len(large)


def test_a_failed_reservation_leaves_the_append_to_the_write(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _failing(monkeypatch, errno.ENOSPC)
    plog = open_log()
    large = batch(70, value=b"v" * 4096)
    plog.append_as_leader(large, leader_epoch=0)
    plog.append_as_leader(large, leader_epoch=0)
    assert len(calls) == 2  # ENOSPC is no reason to stop trying
    assert preallocate.supported()
    assert plog.log_end_offset == 140


def test_a_failed_write_gives_the_reserved_range_back(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    plog = open_log()
    small = batch(3)
    plog.append_as_leader(small, leader_epoch=0)
    path = plog.active_segment.log_path
    blocks_before = path.stat().st_blocks
    reserved: list[bool] = []
    real = segment.reserve

    def recording(fd: int, offset: int, length: int) -> bool:
        reserved.append(real(fd, offset, length))
        return reserved[-1]

    monkeypatch.setattr(segment, "reserve", recording)

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment.os, "write", full)
    with pytest.raises(KafkaStorageError):
        plog.append_as_leader(batch(70, value=b"v" * 4096), leader_epoch=0)
    monkeypatch.undo()
    assert len(reserved) == 1
    assert path.stat().st_size == len(small)
    assert plog.log_end_offset == 3
    if reserved[0]:
        # The truncation back to the old end released the range reserved past it.
        assert path.stat().st_blocks <= blocks_before + 8  # a block of 4 KiB at most
