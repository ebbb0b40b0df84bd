"""The leader's state of a replicated partition (broker/replication.py) over a real partition log:
Kafka's caught-up time, the high watermark over the maximal ISR and its KIP-966 minimum, ISR
expansion's rule, acks=all waiters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from odradek.broker.replication import UNKNOWN_OFFSET, FollowerState, LeaderPartition
from odradek.clock import ManualClock
from odradek.cluster.model import PartitionState
from odradek.protocol.records import SimpleRecord, encode_batch
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig

LAG = 10_000


@pytest.fixture
def plog(tmp_path: Path) -> Iterator[PartitionLog]:
    log = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(), ManualClock(1_000_000),
                            recover=False)
    yield log
    log.close()


def _append(plog: PartitionLog, n: int, epoch: int = 3) -> None:
    plog.append_as_leader(encode_batch([SimpleRecord(b"v")] * n), leader_epoch=epoch)


def _fetch(lp: LeaderPartition, replica: int, offset: int, now: int, epoch: int = 7) -> None:
    lp.record_follower_fetch(replica, fetch_offset=offset, log_start_offset=0, now_ms=now,
                             leader_end_offset=lp.log.log_end_offset, broker_epoch=epoch)


def test_caught_up_time_as_kafka_computes_it() -> None:
    f = FollowerState(2)
    # At the leader's end: caught up at this fetch.
    f.record_fetch(fetch_offset=10, log_start_offset=0, fetch_time_ms=100, leader_end_offset=10,
                   broker_epoch=5)
    assert (f.last_caught_up_time_ms, f.log_end_offset, f.broker_epoch) == (100, 10, 5)
    # Behind the leader's end now, but at what the leader's end was at the previous fetch:
    # caught up as of the previous fetch.
    f.record_fetch(fetch_offset=10, log_start_offset=0, fetch_time_ms=200, leader_end_offset=15,
                   broker_epoch=-1)
    assert f.last_caught_up_time_ms == 100
    f.record_fetch(fetch_offset=15, log_start_offset=0, fetch_time_ms=300, leader_end_offset=20,
                   broker_epoch=-1)
    assert f.last_caught_up_time_ms == 200
    assert f.broker_epoch == 5  # a fetch without an epoch keeps the known one
    # Behind both: no progress.
    f.record_fetch(fetch_offset=16, log_start_offset=0, fetch_time_ms=400, leader_end_offset=30,
                   broker_epoch=-1)
    assert f.last_caught_up_time_ms == 200
    assert f.is_caught_up(30, 200 + LAG, LAG)
    assert not f.is_caught_up(30, 201 + LAG, LAG)
    assert f.is_caught_up(16, 10**9, LAG)  # at the leader's end, however long ago


def test_a_new_leader_waits_for_every_isr_member(plog: PartitionLog) -> None:
    _append(plog, 5)
    plog.update_high_watermark(2)  # what the checkpoint said
    state = PartitionState((1, 2, 3), (1, 2, 3), 1, leader_epoch=4, partition_epoch=1)
    lp = LeaderPartition("t", 0, 1, state, plog, now_ms=1000)
    assert lp.epoch_start_offset == 5
    assert {r: f.log_end_offset for r, f in lp.followers.items()} == {
        2: UNKNOWN_OFFSET, 3: UNKNOWN_OFFSET
    }
    # ISR members count as caught up from the moment of leadership.
    assert lp.followers[2].last_caught_up_time_ms == 1000
    assert not lp.maybe_advance_high_watermark(1)
    _fetch(lp, 2, 5, 1100)
    assert not lp.maybe_advance_high_watermark(1)  # 3 is still unknown
    _fetch(lp, 3, 4, 1100)
    assert lp.maybe_advance_high_watermark(1)
    assert plog.high_watermark == 4
    _fetch(lp, 3, 3, 1200)  # a follower's position going back never moves the HW back
    assert not lp.maybe_advance_high_watermark(1)
    assert plog.high_watermark == 4
    # Out of sync: 3 has not been at the leader's end since the leadership began; 2 is there.
    assert lp.out_of_sync_replicas(1000 + LAG, LAG) == ()
    assert lp.out_of_sync_replicas(1001 + LAG, LAG) == (3,)


def test_the_high_watermark_needs_min_insync_replicas(plog: PartitionLog) -> None:
    state = PartitionState((1, 2), (1,), 1, leader_epoch=0, partition_epoch=3)
    lp = LeaderPartition("t", 0, 1, state, plog, now_ms=0)
    _append(plog, 3)
    assert not lp.maybe_advance_high_watermark(2)  # KIP-966: a lone leader shows nothing
    assert plog.high_watermark == 0
    assert lp.maybe_advance_high_watermark(1)
    assert plog.high_watermark == 3


def test_a_pending_expansion_holds_the_high_watermark_back(plog: PartitionLog) -> None:
    _append(plog, 4)
    state = PartitionState((1, 2, 3), (1, 2), 1, leader_epoch=0, partition_epoch=3)
    lp = LeaderPartition("t", 0, 1, state, plog, now_ms=0)
    _fetch(lp, 2, 4, 10)
    assert lp.maybe_advance_high_watermark(2)
    _append(plog, 2)
    _fetch(lp, 3, 4, 20)
    # 3 has reached the high watermark and the epoch's start (0): it may join.
    assert lp.may_join_isr(3)
    lp.pending_isr = (1, 2, 3)
    assert lp.maximal_isr == (1, 2, 3)
    assert not lp.may_join_isr(3)
    _fetch(lp, 2, 6, 30)
    assert not lp.maybe_advance_high_watermark(2)  # 3 (at 4) holds it back
    # The store's answer commits the change; an older state is ignored.
    assert not lp.update_state(state, 40)
    assert lp.update_state(PartitionState((1, 2, 3), (1, 2, 3), 1, 0, 4), 40)
    assert lp.pending_isr is None
    _fetch(lp, 3, 6, 50)
    assert lp.maybe_advance_high_watermark(2)
    assert plog.high_watermark == 6


def test_a_follower_joins_only_past_the_epoch_start(plog: PartitionLog) -> None:
    _append(plog, 4, epoch=1)
    state = PartitionState((1, 2), (1,), 1, leader_epoch=2, partition_epoch=5)
    lp = LeaderPartition("t", 0, 1, state, plog, now_ms=0)
    assert lp.maybe_advance_high_watermark(1)
    _fetch(lp, 2, 4, 10)
    assert lp.may_join_isr(2)
    _append(plog, 3, epoch=2)
    assert lp.maybe_advance_high_watermark(1)
    _fetch(lp, 2, 5, 20)  # past the epoch start, behind the high watermark
    assert not lp.may_join_isr(2)
    # A new leader epoch starting at 7: reaching the old high watermark is not enough.
    lp2 = LeaderPartition("t", 0, 1, PartitionState((1, 2), (1,), 1, 3, 6), plog, now_ms=30)
    plog.update_high_watermark(5)
    _fetch(lp2, 2, 6, 40)
    assert not lp2.may_join_isr(2)
    _fetch(lp2, 2, 7, 50)
    assert lp2.may_join_isr(2)


def test_waiters_complete_in_offset_order_or_fail(plog: PartitionLog) -> None:
    async def scenario() -> None:
        state = PartitionState((1, 2), (1, 2), 1, leader_epoch=0, partition_epoch=0)
        lp = LeaderPartition("t", 0, 1, state, plog, now_ms=0)
        _append(plog, 10)
        early, late = lp.wait_for_high_watermark(3), lp.wait_for_high_watermark(10)
        assert early is not None and late is not None
        _fetch(lp, 2, 5, 1)
        assert lp.maybe_advance_high_watermark(2)
        lp.complete_waiters()
        assert early.done() and not late.done()
        assert lp.wait_for_high_watermark(4) is None  # already replicated
        lp.fail_waiters(RuntimeError("ISR shrank"))
        with pytest.raises(RuntimeError):
            await late
        assert not lp.has_waiters

    asyncio.run(scenario())
