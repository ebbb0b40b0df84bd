"""The lease reaper (the controller's, for brokers; the candidates', for the controller): a lease
that ran out ends at once rather than at the store's sweep, and no lease is ended while it
could still be renewed. In-process store whose leases, like
etcd's, go 500 ms after their deadline (and cannot be renewed past it), on a manual clock."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from cluster_harness import Harness

from odradek.cluster.lease_reaper import LeaseReaper
from odradek.cluster.membership import ClusterKeys, ControllerElection, Session, current_controller
from odradek.cluster.store import ClusterStore, LeaseNotFound

SWEEP_MS = 500
KEY = "/reaper-test/brokers/1"


def _harness() -> Harness:
    return Harness("inprocess", None, sweep_delay_ms=SWEEP_MS)


async def _gone_at(harness: Harness, store: ClusterStore, limit_s: float) -> float | None:
    """Pass time in 100 ms steps until the key is gone; when (None: still there at the limit)."""
    start = harness.now()
    while harness.now() - start < limit_s:
        await harness.pass_time(0.1)
        if await store.get(KEY) is None:
            return harness.now()
    return None


async def _with_reaper(harness: Harness, store: ClusterStore, lease: int) -> tuple[LeaseReaper, asyncio.Task[None]]:
    reaper = LeaseReaper(store, lambda: {1: lease}, harness.clock, harness.sleep)
    return reaper, asyncio.ensure_future(reaper.run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_a_lease_that_ran_out_ends_before_the_sweep() -> None:
    harness = _harness()

    async def scenario(store: ClusterStore) -> None:
        lease = await store.grant(2)
        granted = harness.now()
        await store.put(KEY, b"{}", lease=lease.id)
        reaper, task = await _with_reaper(harness, store, lease.id)
        try:
            gone = await _gone_at(harness, store, 5)
        finally:
            await _stop(task)
        assert gone is not None
        # Not before the TTL; without the reaper it would be 500 ms after it.
        assert 2.0 <= gone - granted <= 2.0 + 0.3
        assert reaper.revoked == 1

    harness.run(scenario)


@pytest.mark.parametrize("pause_s", [1.1, 1.5, 1.9])
def test_a_late_renewal_is_never_cut_short(pause_s: float) -> None:
    """A broker that renews late, but before its deadline (its answers were 0 meanwhile), keeps
    its lease; once it stops for good, the lease ends a TTL after its last renewal."""
    harness = _harness()

    async def scenario(store: ClusterStore) -> None:
        lease = await store.grant(2)
        await store.put(KEY, b"{}", lease=lease.id)
        reaper, task = await _with_reaper(harness, store, lease.id)
        try:
            await harness.pass_time(pause_s)
            assert (await store.time_to_live(lease.id)).ttl == 0
            assert await store.keep_alive(lease.id) == 2
            for _ in range(6):  # then renewed every third of the TTL, as a Session does
                await harness.pass_time(0.6)
                assert await store.keep_alive(lease.id) == 2
            last_renewal = harness.now()
            await harness.pass_time(1.9)
            assert await store.get(KEY) is not None
            assert reaper.revoked == 0
            gone = await _gone_at(harness, store, 3)
        finally:
            await _stop(task)
        assert gone is not None and 2.0 <= gone - last_renewal <= 2.3
        assert reaper.revoked == 1

    harness.run(scenario)


def test_a_one_second_lease_is_left_to_the_store() -> None:
    """With a 1 s TTL an answer is 0 even right after a renewal: nothing proves such a lease
    ran out, so the store's sweep ends it."""
    harness = _harness()

    async def scenario(store: ClusterStore) -> None:
        lease = await store.grant(1)
        granted = harness.now()
        await store.put(KEY, b"{}", lease=lease.id)
        reaper, task = await _with_reaper(harness, store, lease.id)
        try:
            for _ in range(4):
                await harness.pass_time(0.3)
                await store.keep_alive(lease.id)
            renewed = harness.now()
            assert reaper.revoked == 0
            gone = await _gone_at(harness, store, 3)
        finally:
            await _stop(task)
        assert gone is not None and gone - renewed >= 1.0 + SWEEP_MS / 1000 - 0.01
        assert reaper.revoked == 0
        with pytest.raises(LeaseNotFound):
            await store.time_to_live(lease.id)
        assert gone > granted

    harness.run(scenario)


def test_a_dead_controllers_successor_is_elected_before_the_sweep() -> None:
    """Nobody's controller reaps the controller's own lease: the candidates waiting for its key
    do, so the next controller is elected at the dead one's session timeout."""
    harness = _harness()
    keys = ClusterKeys(cluster="reaper", prefix="/reaper-test")

    async def scenario(store: ClusterStore) -> None:
        s1 = await Session.open(store, 2, clock=harness.clock, sleep=harness.sleep)
        s2 = await Session.open(store, 2, clock=harness.clock, sleep=harness.sleep)
        first = ControllerElection(store, keys, s1, 1)
        await first.campaign()
        waiting = asyncio.ensure_future(ControllerElection(store, keys, s2, 2).campaign())
        await harness.pass_time(1.0)
        assert not waiting.done()
        # Broker 1 dies just after a renewal: its lease runs out 2 s later.
        await store.keep_alive(s1.lease_id)
        s1.abandon()
        died = harness.now()
        epoch = await harness.until(waiting, max_s=5)
        elected_after = harness.now() - died
        assert epoch > first.epoch
        assert await current_controller(store, keys) == (2, epoch)
        assert 2.0 <= elected_after <= 2.0 + 0.3  # the sweep alone: 2.5
        await s2.close()

    harness.run(scenario)
