"""Two replicas of one partition under random leadership changes: appends on the leader
(plain, idempotent, transactional, markers), partial replication with epoch-based truncation
(KIP-101/279, as a follower does it), follower truncations, leadership moving to a replica that
is behind (so logs diverge), restarts clean and after a crash, and crashes in the middle of a
follower's truncation or catch-up. Once the follower catches up the two logs must hold
byte-identical batches, the same epochs, producer state and aborted transactions -- and so must
a third log built from those batches alone, and both logs again after reopening."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from storage_helpers import START_MS, batch, crash
from test_replication import all_batches, idem, marker, producer_view, split_batches, txn
from test_replication_crash import Crash, CrashAfter, epochs_of

from odradek.clock import ManualClock
from odradek.storage.epoch import EpochEntry
from odradek.storage.log import AppendOrigin, PartitionLog
from odradek.storage.log_config import LogConfig

CONFIG = LogConfig(segment_bytes=500, index_interval_bytes=80)
IDEMPOTENT = (8101, 8102)
TRANSACTIONAL = 8201


def effective(entries: list[EpochEntry], log_end_offset: int) -> list[EpochEntry]:
    """The entries under which the log holds records (a new leader's epoch before its first
    append, or an epoch ended before it wrote anything, holds none)."""
    out = []
    for i, e in enumerate(entries):
        end = entries[i + 1].start_offset if i + 1 < len(entries) else log_end_offset
        if end > e.start_offset:
            out.append(e)
    return out


def truncate_by_epochs(follower: PartitionLog, leader: PartitionLog) -> None:
    """A follower's truncation from OffsetForLeaderEpoch answers (Kafka's
    AbstractFetcherThread), looping while the follower does not know the leader's epoch."""
    while follower.leader_epoch >= 0:
        epoch = follower.leader_epoch
        leader_epoch, leader_end = leader.end_offset_for_epoch(epoch)
        assert leader_epoch >= 0, "the leader knows an epoch at least as new"
        if leader_epoch == epoch:
            _truncate(follower, min(leader_end, follower.log_end_offset))
            return
        own_epoch, own_end = follower.end_offset_for_epoch(leader_epoch)
        if own_epoch == leader_epoch:
            _truncate(follower, min(own_end, leader_end, follower.log_end_offset))
            return
        _truncate(follower, min(own_end, follower.log_end_offset))


def _truncate(follower: PartitionLog, offset: int) -> None:
    if follower.truncate_to(offset):
        event("a diverged follower truncated")


@dataclass
class Pair:
    root: Path
    clock: ManualClock
    logs: list[PartitionLog] = field(default_factory=list)
    leader: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        self.logs = [self._open(i, recover=False) for i in (0, 1)]
        self.logs[0].maybe_assign_epoch_start_offset(0)

    def _open(self, i: int, *, recover: bool) -> PartitionLog:
        return PartitionLog.open(self.root / f"r{i}", "t", 0, CONFIG, self.clock,
                                 recover=recover)

    @property
    def lead(self) -> PartitionLog:
        return self.logs[self.leader]

    @property
    def follow(self) -> PartitionLog:
        return self.logs[1 - self.leader]

    def append(self, kind: str, n: int) -> None:
        plog = self.lead
        origin = AppendOrigin.CLIENT
        if kind == "plain":
            data = batch(n, value=b"e%d" % self.epoch)
        elif kind in ("idem0", "idem1"):
            pid = IDEMPOTENT[int(kind[-1])]
            data = idem(pid, self._next_seq(plog, pid), n)
        elif kind == "txn":
            data = txn(TRANSACTIONAL, self._next_seq(plog, TRANSACTIONAL), n)
        else:
            data = marker(TRANSACTIONAL, commit=kind == "commit")
            origin = AppendOrigin.COORDINATOR
        self.clock.advance(1)
        plog.append_as_leader(data, leader_epoch=self.epoch, origin=origin)

    @staticmethod
    def _next_seq(plog: PartitionLog, pid: int) -> int:
        entry = plog.producer_entry(pid)
        return entry.last_seq + 1 if entry is not None and entry.batches else 0

    def replicate(self, batches: int | None) -> None:
        follower, leader = self.follow, self.lead
        truncate_by_epochs(follower, leader)
        pending = split_batches(all_batches(leader, follower.log_end_offset))
        if batches is not None:
            pending = pending[:batches]
        if pending:
            follower.append_as_follower(b"".join(pending))
        leader.update_high_watermark(min(leader.log_end_offset, follower.log_end_offset))
        follower.update_high_watermark(leader.high_watermark)

    def elect(self) -> None:
        """Leadership moves to the other replica, however far behind it is (unclean)."""
        self.epoch += 1
        self.leader = 1 - self.leader
        self.lead.maybe_assign_epoch_start_offset(self.epoch)

    def reopen(self, i: int, *, crashed: bool) -> None:
        if crashed:
            crash(self.logs[i])
        else:
            self.logs[i].close()
        self.logs[i] = self._open(i, recover=crashed)
        if i == self.leader:  # loading forgets an epoch without records; leading restores it
            self.lead.maybe_assign_epoch_start_offset(self.epoch)

    def crash_during(self, budget: int, action: str, fraction: float) -> None:
        """The follower's truncation or catch-up, killed before its ``budget``-th file
        operation, then restarted with recovery."""
        i = 1 - self.leader
        with pytest.MonkeyPatch.context() as m:
            CrashAfter(m, budget)
            try:
                if action == "truncate":
                    self.follow.truncate_to(int(fraction * self.follow.log_end_offset))
                else:
                    self.replicate(None)
            except Crash:
                event(f"crashed during {action}")
            else:
                return
        self.reopen(i, crashed=True)

    def close(self) -> None:
        for plog in self.logs:
            if not plog.is_closed:
                plog.close()


def state(plog: PartitionLog) -> tuple[object, ...]:
    data = all_batches(plog)
    return (
        data,
        effective(plog.epoch_cache.entries, plog.log_end_offset),
        producer_view(plog),
        plog.collect_aborted_transactions(0, 1 << 30),
    )


APPEND = st.tuples(st.just("append"),
                   st.sampled_from(["plain", "idem0", "idem1", "txn", "commit", "abort"]),
                   st.integers(1, 3))
REPLICATE = st.tuples(st.just("replicate"), st.one_of(st.none(), st.integers(0, 4)))
ELECT = st.tuples(st.just("elect"))
OPS = st.lists(
    st.one_of(
        APPEND, APPEND, APPEND, REPLICATE, REPLICATE, ELECT, ELECT,
        st.tuples(st.just("truncate"), st.floats(0, 1)),
        st.tuples(st.just("restart"), st.integers(0, 1), st.booleans()),
        st.tuples(st.just("refetch")),
        st.tuples(st.just("crash"), st.integers(1, 12), st.sampled_from(["truncate", "fetch"]),
                  st.floats(0, 1)),
    ),
    min_size=8,
    max_size=50,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(OPS)
def test_replicas_converge_byte_for_byte(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(Path(tmp), ManualClock(START_MS))
        try:
            run(pair, ops)
        finally:
            pair.close()


def run(pair: Pair, ops: list[tuple[object, ...]]) -> None:
    for op in ops:
        match op:
            case ("append", str(kind), int(n)):
                pair.append(kind, n)
            case ("replicate", batches):
                pair.replicate(batches if isinstance(batches, int) else None)
            case ("elect",):
                pair.elect()
            case ("truncate", float(fraction)):
                follower = pair.follow
                follower.truncate_to(int(fraction * follower.log_end_offset))
            case ("restart", int(i), bool(crashed)):
                pair.reopen(i, crashed=crashed)
            case ("refetch",):
                pair.follow.truncate_fully_and_start_at(0)
            case ("crash", int(budget), str(action), float(fraction)):
                pair.crash_during(budget, action, fraction)
    pair.replicate(None)
    leader, follower = pair.lead, pair.follow
    expected = state(leader)
    assert state(follower) == expected
    data = expected[0]
    assert isinstance(data, bytes)
    assert expected[1] == epochs_of(data)
    with tempfile.TemporaryDirectory() as other:
        fresh = PartitionLog.open(Path(other) / "t-0", "t", 0, CONFIG, pair.clock,
                                  recover=False)
        if data:
            fresh.append_as_follower(data)
        assert state(fresh) == expected
        fresh.close()
    for i, crashed in ((0, True), (1, False)):
        pair.reopen(i, crashed=crashed)
        assert state(pair.logs[i]) == expected
