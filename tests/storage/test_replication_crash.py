"""A truncation killed after any file operation leaves a log that loads consistently: a prefix
of the old log (never a hole), or the truncated one, with indexes, epoch cache, producer state
and transaction index agreeing with its batches."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from storage_helpers import batch, crash
from test_replication import (
    P1,
    P2,
    all_batches,
    idem,
    marker,
    producer_view,
    split_batches,
    txn,
)

from odradek.clock import ManualClock
from odradek.protocol.records import read_batch_header
from odradek.storage.epoch import EpochEntry
from odradek.storage.log import AppendOrigin, PartitionLog
from odradek.storage.log_config import LogConfig

CONFIG = LogConfig(segment_bytes=450, index_interval_bytes=90)

#: Every call that changes files; a crash is injected before the n-th of them.
_FILE_OPS = ("write", "replace", "rename", "ftruncate", "truncate", "unlink", "fsync")


class Crash(Exception):
    pass


class CrashAfter:
    """Patches the file operations of ``os`` to raise :class:`Crash` before the call numbered
    ``budget`` (1-based); counts the calls made."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
        self.calls = 0
        self.budget = budget
        for name in _FILE_OPS:
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def op(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls >= self.budget:
                raise Crash(f"crashed before call {self.calls} ({real.__name__})")
            return real(*args, **kwargs)

        return op


def build_leader(path: Path, clock: ManualClock) -> PartitionLog:
    leader = PartitionLog.open(path, "t", 0, CONFIG, clock, recover=False)
    leader.append_as_leader(batch(3), leader_epoch=0)
    leader.append_as_leader(idem(P1, 0, 2), leader_epoch=0)
    leader.append_as_leader(txn(P2, 0, 2), leader_epoch=0)
    leader.append_as_leader(marker(P2, commit=False), leader_epoch=2,
                            origin=AppendOrigin.COORDINATOR)
    for i in range(4):
        leader.append_as_leader(batch(2, value=b"a%d" % i), leader_epoch=2)
    leader.append_as_leader(txn(P2, 2, 2), leader_epoch=5)
    leader.append_as_leader(idem(P1, 2, 3), leader_epoch=5)
    leader.append_as_leader(marker(P2, commit=True), leader_epoch=5,
                            origin=AppendOrigin.COORDINATOR)
    for i in range(4):
        leader.append_as_leader(batch(2, value=b"b%d" % i), leader_epoch=5)
    assert len(leader.segments) >= 4
    return leader


@pytest.fixture
def leader_data(tmp_path: Path, clock: ManualClock) -> Iterator[bytes]:
    leader = build_leader(tmp_path / "leader", clock)
    yield all_batches(leader)
    leader.close()


def epochs_of(data: bytes) -> list[EpochEntry]:
    out: list[EpochEntry] = []
    for b in split_batches(data):
        h = read_batch_header(b)
        if not out or h.partition_leader_epoch > out[-1].epoch:
            out.append(EpochEntry(h.partition_leader_epoch, h.base_offset))
    return out


def follower_from(path: Path, clock: ManualClock, data: bytes) -> PartitionLog:
    plog = PartitionLog.open(path, "t", 0, CONFIG, clock, recover=False)
    if data:
        plog.append_as_follower(data)
    return plog


def assert_consistent(plog: PartitionLog, reference_dir: Path, clock: ManualClock) -> bytes:
    """The log's derived state equals that of a fresh log given the same batches."""
    data = all_batches(plog)
    assert plog.log_end_offset == (read_batch_header(split_batches(data)[-1]).next_offset
                                   if data else plog.log_start_offset)
    assert plog.recovery_point <= plog.log_end_offset
    assert plog.epoch_cache.entries == epochs_of(data)
    ref = follower_from(reference_dir, clock, data)
    try:
        assert producer_view(plog) == producer_view(ref)
        assert plog.collect_aborted_transactions(0, 1 << 30) == \
            ref.collect_aborted_transactions(0, 1 << 30)
    finally:
        ref.delete()
    # Every batch is found from its own offset (offset indexes and tail caches agree).
    for b in split_batches(data):
        h = read_batch_header(b)
        got = plog.read(h.base_offset, max_bytes=len(b)).records
        assert isinstance(got, bytes) and got[: len(b)] == b
    for seg in plog.log_segments:
        seg.sanity_check()
    return data


def run_until_done(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, leader_data: bytes,
    action: Callable[[PartitionLog], None], check: Callable[[PartitionLog, bytes], None],
) -> int:
    """Run ``action`` on a fresh copy of the leader's log with a crash before the 1st, 2nd,
    ... file operation until it completes; after each crash reload with recovery and call
    ``check(log, its batches)``. Returns the number of crash points tried."""
    budget = 1
    while True:
        d = tmp_path / f"f{budget}"
        plog = follower_from(d, clock, leader_data)
        with monkeypatch.context() as m:
            injector = CrashAfter(m, budget)
            try:
                action(plog)
            except Crash:
                crashed = True
            else:
                crashed = False
        if not crashed:
            plog.close()
            assert injector.calls < budget
            return budget - 1
        crash(plog)
        reopened = PartitionLog.open(d, "t", 0, CONFIG, clock, recover=True)
        data = assert_consistent(reopened, tmp_path / f"ref{budget}", clock)
        check(reopened, data)
        reopened.close()
        budget += 1


@pytest.mark.parametrize("target", [1, 4, 7, 9, 12, 16, 21, 26, 28])
def test_truncate_to_survives_a_crash_anywhere(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, leader_data: bytes,
    target: int,
) -> None:
    batches = split_batches(leader_data)
    kept = b"".join(b for b in batches if read_batch_header(b).last_offset < target)
    expected_end = read_batch_header(split_batches(kept)[-1]).next_offset if kept else 0

    def check(plog: PartitionLog, data: bytes) -> None:
        # A prefix of the old log at least as long as the truncated one.
        assert leader_data.startswith(data) and plog.log_end_offset >= expected_end
        # Finishing the job and fetching again gives the leader's log back.
        plog.truncate_to(target)
        assert all_batches(plog) == kept
        plog.append_as_follower(all_batches_after(leader_data, plog.log_end_offset))
        assert all_batches(plog) == leader_data

    tried = run_until_done(tmp_path, clock, monkeypatch, leader_data,
                           lambda plog: plog.truncate_to(target), check)
    assert tried >= 3


@pytest.mark.parametrize("start", [0, 10, 23, 40, 500])
def test_truncate_fully_survives_a_crash_anywhere(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, leader_data: bytes,
    start: int,
) -> None:
    def check(plog: PartitionLog, data: bytes) -> None:
        done = (plog.log_start_offset, plog.log_end_offset) == (start, start) and not data
        assert done or (leader_data.startswith(data) and plog.log_start_offset == 0)
        plog.truncate_fully_and_start_at(start)
        assert (plog.log_start_offset, plog.log_end_offset, plog.epoch_cache.entries) == (
            start, start, [])

    tried = run_until_done(tmp_path, clock, monkeypatch, leader_data,
                           lambda plog: plog.truncate_fully_and_start_at(start), check)
    assert tried >= 3


def test_follower_append_survives_a_crash_anywhere(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, leader_data: bytes,
) -> None:
    batches = split_batches(leader_data)
    head = b"".join(batches[:3])
    tail = b"".join(batches[3:])

    def check(plog: PartitionLog, data: bytes) -> None:
        assert leader_data.startswith(data) and len(data) >= len(head)
        plog.append_as_follower(all_batches_after(leader_data, plog.log_end_offset))
        assert all_batches(plog) == leader_data

    budget = 1
    while True:
        d = tmp_path / f"a{budget}"
        plog = follower_from(d, clock, head)
        with monkeypatch.context() as m:
            CrashAfter(m, budget)
            try:
                plog.append_as_follower(tail)
            except Crash:
                crashed = True
            else:
                crashed = False
        if not crashed:
            plog.close()
            break
        crash(plog)
        reopened = PartitionLog.open(d, "t", 0, CONFIG, clock, recover=True)
        check(reopened, assert_consistent(reopened, tmp_path / f"r{budget}", clock))
        reopened.close()
        budget += 1
    assert budget > 3


def all_batches_after(data: bytes, offset: int) -> bytes:
    return b"".join(b for b in split_batches(data) if read_batch_header(b).base_offset >= offset)


def test_the_history_spans_epochs_and_segments(leader_data: bytes) -> None:
    assert epochs_of(leader_data) == [EpochEntry(0, 0), EpochEntry(2, 7), EpochEntry(5, 16)]
