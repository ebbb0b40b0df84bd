"""A leader's ISR change (AlterPartition, KIP-497/KIP-903) as a compare-and-swap, on both stores:
made only from the state as stored, never to an empty ISR, new members only under the broker
epoch they fetched with."""

from __future__ import annotations

import asyncio

import pytest
from cluster_harness import Harness

from odradek.cluster.alter_partition import (
    IneligibleReplica,
    StalePartitionState,
    alter_partition,
)
from odradek.cluster.election import Brokers, reassess
from odradek.cluster.membership import BrokerInfo, ClusterKeys
from odradek.cluster.model import PartitionState
from odradek.cluster.store import ClusterStore, Put


def _keys(harness: Harness) -> ClusterKeys:
    return ClusterKeys(cluster=harness.prefix.strip("/"), prefix="/odradek-test")


async def _setup(store: ClusterStore, keys: ClusterKeys) -> tuple[PartitionState, dict[int, int]]:
    """Brokers 1-3 registered (epochs = their keys' create revisions) and partition t-0 on
    them, led by 1 with ISR [1, 2]."""
    epochs = {}
    for node in (1, 2, 3):
        result = await store.put(keys.broker(node), BrokerInfo(node, "h", 9000 + node).encode())
        epochs[node] = result.revision
    state = PartitionState((1, 2, 3), (1, 2), 1, leader_epoch=4, partition_epoch=9)
    await store.put(keys.partition("t", 0), state.encode())
    return state, epochs


async def _stored(store: ClusterStore, keys: ClusterKeys) -> PartitionState:
    kv = await store.get(keys.partition("t", 0))
    assert kv is not None
    return PartitionState.decode(kv.value)


def test_shrink_and_expand_bump_the_partition_epoch(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        state, epochs = await _setup(store, keys)
        shrunk = await alter_partition(
            store, keys, "t", 0, expected=state, new_isr=(1,), member_epochs={}
        )
        assert shrunk == PartitionState((1, 2, 3), (1,), 1, 4, 10)
        assert await _stored(store, keys) == shrunk
        grown = await alter_partition(
            store, keys, "t", 0, expected=shrunk, new_isr=(1, 3, 2),
            member_epochs={2: epochs[2], 3: epochs[3]},
        )
        assert grown == PartitionState((1, 2, 3), (1, 3, 2), 1, 4, 11)
        assert await _stored(store, keys) == grown

    harness.run(scenario)


def test_a_change_from_a_stale_state_is_refused_with_the_current_one(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        state, _ = await _setup(store, keys)
        # The controller moved leadership meanwhile.
        moved = PartitionState((1, 2, 3), (2,), 2, leader_epoch=5, partition_epoch=10)
        await store.put(keys.partition("t", 0), moved.encode())
        with pytest.raises(StalePartitionState) as refused:
            await alter_partition(
                store, keys, "t", 0, expected=state, new_isr=(1,), member_epochs={}
            )
        assert refused.value.current == moved
        assert await _stored(store, keys) == moved
        # Of two concurrent proposals from one state exactly one is made.
        results = await asyncio.gather(
            alter_partition(store, keys, "t", 0, expected=moved, new_isr=(2, 1),
                            member_epochs={}),
            alter_partition(store, keys, "t", 0, expected=moved, new_isr=(2, 3),
                            member_epochs={}),
            return_exceptions=True,
        )
        made = [r for r in results if isinstance(r, PartitionState)]
        assert len(made) == 1
        assert isinstance(next(r for r in results if r not in made), StalePartitionState)
        assert await _stored(store, keys) == made[0]

    harness.run(scenario)


def test_a_member_is_added_only_under_its_current_broker_epoch(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        state, epochs = await _setup(store, keys)
        # Broker 3 restarted: its registration is newer than the epoch it fetched with.
        await store.delete(keys.broker(3))
        await store.put(keys.broker(3), BrokerInfo(3, "h", 9003).encode())
        with pytest.raises(IneligibleReplica):
            await alter_partition(
                store, keys, "t", 0, expected=state, new_isr=(1, 2, 3),
                member_epochs={3: epochs[3]},
            )
        assert await _stored(store, keys) == state
        # A member already in the ISR is not checked; a shrink needs no epochs at all.
        await store.delete(keys.broker(2))
        assert (await alter_partition(
            store, keys, "t", 0, expected=state, new_isr=(1, 2), member_epochs={}
        )) == PartitionState((1, 2, 3), (1, 2), 1, 4, 10)
        kv = await store.get(keys.broker(3))
        assert kv is not None
        grown = await alter_partition(
            store, keys, "t", 0, expected=await _stored(store, keys), new_isr=(1, 2, 3),
            member_epochs={3: kv.create_revision},
        )
        assert grown.isr == (1, 2, 3)
        # An unregistered broker cannot join even without an epoch to compare.
        shrunk = await alter_partition(
            store, keys, "t", 0, expected=grown, new_isr=(1, 3), member_epochs={}
        )
        with pytest.raises(IneligibleReplica):
            await alter_partition(
                store, keys, "t", 0, expected=shrunk, new_isr=(1, 3, 2), member_epochs={}
            )

    harness.run(scenario)


def test_an_empty_isr_or_a_stranger_is_refused_before_writing(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        state, _ = await _setup(store, keys)
        for bad in ((), (1, 4), (1, 1)):
            with pytest.raises(ValueError):
                await alter_partition(
                    store, keys, "t", 0, expected=state, new_isr=bad, member_epochs={}
                )
        assert await _stored(store, keys) == state
        await store.put(keys.partition("t", 1), b"unused")  # another key moves the revision
        with pytest.raises(StalePartitionState) as refused:
            await alter_partition(
                store, keys, "t", 5, expected=state, new_isr=(1,), member_epochs={}
            )
        assert refused.value.current is None

    harness.run(scenario)


def test_a_lost_answer_is_recognised_by_its_value(harness: Harness) -> None:
    """The write happened but its answer was lost (etcd failed over): the re-read finds the
    state it proposed and reports it as made."""
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        state, _ = await _setup(store, keys)
        target = PartitionState((1, 2, 3), (1,), 1, 4, 10)
        await store.txn([], [Put(keys.partition("t", 0), target.encode())])
        assert (await alter_partition(
            store, keys, "t", 0, expected=state, new_isr=(1,), member_epochs={}
        )) == target

    harness.run(scenario)


def test_a_change_never_keeps_a_member_that_restarted_since_the_state_was_written(
    harness: Harness,
) -> None:
    """The controller knows a restarted ISR member only as a registration newer than the
    partition state (election.Brokers.lost). A leader's change that kept such a member would
    write a state newer than its registration and pass it off as the member it was: refused
    (Kafka's INELIGIBLE_REPLICA for a member not under its current registration), and the
    controller still takes it out."""
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        state, epochs = await _setup(store, keys)
        wide = PartitionState((1, 2, 3), (1, 2, 3), 1, leader_epoch=4, partition_epoch=9)
        await store.put(keys.partition("t", 1), wide.encode())
        # Broker 2 (an ISR member) restarted before the controller reassessed the partitions.
        await store.delete(keys.broker(2))
        await store.put(keys.broker(2), BrokerInfo(2, "h", 9002).encode())
        registered = {}
        for node in (1, 2, 3):
            broker_kv = await store.get(keys.broker(node))
            assert broker_kv is not None
            registered[node] = broker_kv.create_revision
        # The leader, not knowing, adds broker 3 to t-0 (keeping 2), or takes 3 out of t-1's.
        for partition, expected, new_isr, member_epochs in (
            (0, state, (1, 2, 3), {3: epochs[3]}),
            (1, wide, (1, 2), {}),
        ):
            with pytest.raises(IneligibleReplica):
                await alter_partition(
                    store, keys, "t", partition, expected=expected, new_isr=new_isr,
                    member_epochs=member_epochs,
                )
            kv = await store.get(keys.partition("t", partition))
            assert kv is not None
            after = reassess(
                PartitionState.decode(kv.value), kv.mod_revision, Brokers(registered)
            )
            assert after is not None and 2 not in after.isr
        # A member not registered at all is the controller's to remove (it is lost however new
        # the state is): a change keeping it is still made.
        await store.delete(keys.broker(2))
        grown = await alter_partition(
            store, keys, "t", 0, expected=state, new_isr=(1, 2, 3),
            member_epochs={3: epochs[3]},
        )
        assert grown.isr == (1, 2, 3)

    harness.run(scenario)
