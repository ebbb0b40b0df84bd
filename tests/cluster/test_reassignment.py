"""Reassignments (KIP-455) and leader elections (ElectLeaders, automatic preferred leaders): the
pure rules over partition states, then the controller completing reassignments and restoring
preferred leaders over a real store, with the ISR changes a leader would make written by the
test (a compare-and-swap of the partition key)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import pytest
from cluster_harness import Harness

from odradek.cluster.controller import ControllerRunner
from odradek.cluster.image import MetadataImage
from odradek.cluster.membership import BrokerInfo, BrokerRegistration, ClusterKeys, Session
from odradek.cluster.model import NO_LEADER, PartitionState, TopicRecord
from odradek.cluster.partition_changes import PartitionChanges
from odradek.cluster.preferred import (
    ElectionType,
    RebalanceSettings,
    elect_leader,
    imbalanced_partitions,
)
from odradek.cluster.reassignment import (
    advance_reassignment,
    cancel_reassignment,
    start_reassignment,
)
from odradek.cluster.store import ClusterStore, Put, mod_revision_is
from odradek.errors import (
    ElectionNotNeededError,
    EligibleLeadersNotAvailableError,
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
    NoReassignmentInProgressError,
    PreferredLeaderNotAvailableError,
    UnknownTopicOrPartitionError,
)

TTL = 1


def _ps(
    replicas: tuple[int, ...],
    isr: tuple[int, ...],
    leader: int,
    le: int = 0,
    pe: int = 0,
    adding: tuple[int, ...] = (),
    removing: tuple[int, ...] = (),
) -> PartitionState:
    return PartitionState(replicas, isr, leader, le, pe, adding, removing)


# --- the record -------------------------------------------------------------------------------


def test_adding_and_removing_are_encoded_only_when_a_reassignment_runs() -> None:
    plain = _ps((1, 2), (1, 2), 1, 3, 4)
    assert set(json.loads(plain.encode())) == {
        "replicas", "isr", "leader", "leader_epoch", "partition_epoch"
    }
    moving = _ps((3, 1), (1,), 1, 3, 5, adding=(3,), removing=(1,))
    raw = json.loads(moving.encode())
    assert (raw["adding_replicas"], raw["removing_replicas"]) == ([3], [1])
    assert PartitionState.decode(moving.encode()) == moving
    assert moving.reassigning and moving.target_replicas == (3,)
    # A record written before the fields existed reads as not reassigning.
    old = b'{"isr": [1], "leader": 1, "leader_epoch": 2, "partition_epoch": 2, "replicas": [1]}'
    assert PartitionState.decode(old) == _ps((1,), (1,), 1, 2, 2)
    assert not PartitionState.decode(old).reassigning


# --- reassignment rules -----------------------------------------------------------------------

LIVE = {1, 2, 3, 4, 5, 6}


def test_a_reassignment_adds_the_target_first_and_keeps_isr_and_leader() -> None:
    state = _ps((1, 2, 3), (1, 2, 3), 1, 5, 9)
    started = start_reassignment(state, (4, 5, 6), LIVE)
    assert started == _ps(
        (4, 5, 6, 1, 2, 3), (1, 2, 3), 1, 5, 10, adding=(4, 5, 6), removing=(1, 2, 3)
    )
    # Not done while a target replica is out of the ISR.
    assert advance_reassignment(replace(started, isr=(1, 2, 3, 4, 5)), LIVE) is None
    # Once all are in: the target alone, the ISR trimmed, the removed leader replaced, both
    # epochs bumped (the removed replicas' fetches are fenced).
    done = advance_reassignment(replace(started, isr=(1, 2, 3, 6, 5, 4), partition_epoch=11), LIVE)
    assert done == _ps((4, 5, 6), (6, 5, 4), 4, 6, 12)


def test_a_reassignment_already_in_sync_completes_at_once() -> None:
    state = _ps((1, 2, 3), (1, 2, 3), 1, 5, 9)
    assert start_reassignment(state, (1, 2, 3), LIVE) is state  # no change at all
    # A reordering: nothing removed, the leader stays (a preferred election moves it later).
    assert start_reassignment(state, (3, 2, 1), LIVE) == _ps((3, 2, 1), (1, 2, 3), 1, 5, 10)
    # A removal of the leader: the next target replica in the ISR leads, in a new epoch.
    assert start_reassignment(state, (2, 3), LIVE) == _ps((2, 3), (2, 3), 2, 6, 10)
    # A removal of a follower: a new leader epoch too (the replica set shrank).
    assert start_reassignment(state, (1, 2), LIVE) == _ps((1, 2), (1, 2), 1, 6, 10)


def test_the_leader_after_a_reassignment_is_a_live_target_replica() -> None:
    state = _ps((4, 5, 1), (1, 4, 5), 1, 0, 3, adding=(4, 5), removing=(1,))
    assert advance_reassignment(state, {1, 5}) == _ps((4, 5), (4, 5), 5, 1, 4)
    assert advance_reassignment(state, {1}) == _ps((4, 5), (4, 5), NO_LEADER, 1, 4)


def test_a_removed_leader_is_replaced_by_a_replica_that_may_lead() -> None:
    # Broker 2 is in controlled shutdown: registered, but not to be elected.
    state = _ps((1, 2, 3), (1, 2, 3), 1, 5, 9)
    assert start_reassignment(state, (2, 3), LIVE, can_lead={1, 3}) == _ps(
        (2, 3), (2, 3), 3, 6, 10
    )


def test_a_new_target_during_a_reassignment_starts_from_the_replica_set_as_it_is() -> None:
    started = start_reassignment(_ps((1, 2), (1, 2), 1), (3, 4), LIVE)
    assert started == _ps((3, 4, 1, 2), (1, 2), 1, 0, 1, adding=(3, 4), removing=(1, 2))
    # 3 caught up meanwhile; the new target drops 4, which is now being removed.
    again = start_reassignment(replace(started, isr=(1, 2, 3)), (3, 5), LIVE)
    assert again == _ps((3, 5, 4, 1, 2), (1, 2, 3), 1, 0, 2, adding=(5,), removing=(4, 1, 2))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ((), "empty replica list"),
        ((1, 1), "broker 1 more than once"),
        ((1, 9), "broker 9, but no such broker is registered"),
    ],
)
def test_invalid_targets(target: tuple[int, ...], message: str) -> None:
    with pytest.raises(InvalidReplicaAssignmentError, match=message):
        start_reassignment(_ps((1,), (1,), 1), target, LIVE)


def test_a_replication_factor_change_may_be_refused() -> None:
    state = _ps((3, 1, 2), (1, 2), 1, adding=(3,), removing=(2,))  # from (1, 2) to (3, 1)
    with pytest.raises(InvalidReplicationFactorError, match="from 2 to 3"):
        start_reassignment(state, (1, 2, 3), LIVE, allow_replication_factor_change=False)
    start_reassignment(state, (2, 3), LIVE, allow_replication_factor_change=False)
    start_reassignment(state, (1, 2, 3), LIVE)


def test_cancelling_drops_the_replicas_being_added() -> None:
    with pytest.raises(NoReassignmentInProgressError):
        cancel_reassignment(_ps((1, 2), (1, 2), 1), LIVE)
    started = _ps((3, 4, 1, 2), (1, 2, 3), 1, 2, 7, adding=(3, 4), removing=(1, 2))
    assert cancel_reassignment(started, LIVE) == _ps((1, 2), (1, 2), 1, 3, 8)
    # Every ISR member was being added: only an unclean election can revert it.
    led_by_new = _ps((3, 1), (3,), 3, 2, 7, adding=(3,), removing=(1,))
    with pytest.raises(InvalidReplicaAssignmentError, match="unclean"):
        cancel_reassignment(led_by_new, LIVE)
    assert cancel_reassignment(led_by_new, LIVE, unclean=True) == _ps((1,), (1,), 1, 3, 8)
    # Only removing (a target that is a subset not yet completed): nothing leaves the set.
    removing_only = _ps((1, 2), (1,), 1, 2, 7, removing=(2,))
    assert cancel_reassignment(removing_only, LIVE) == _ps((1, 2), (1,), 1, 2, 8)


# --- elections --------------------------------------------------------------------------------


def test_preferred_election() -> None:
    state = _ps((1, 2, 3), (2, 3, 1), 2, 4, 6)
    assert elect_leader(state, ElectionType.PREFERRED, {1, 2, 3}) == _ps(
        (1, 2, 3), (2, 3, 1), 1, 5, 7
    )
    with pytest.raises(ElectionNotNeededError):
        elect_leader(_ps((1, 2), (1, 2), 1), ElectionType.PREFERRED, {1, 2})
    with pytest.raises(PreferredLeaderNotAvailableError):  # not in the ISR
        elect_leader(_ps((1, 2), (2,), 2), ElectionType.PREFERRED, {1, 2})
    with pytest.raises(PreferredLeaderNotAvailableError):  # not live
        elect_leader(state, ElectionType.PREFERRED, {2, 3})


def test_unclean_election() -> None:
    with pytest.raises(ElectionNotNeededError):
        elect_leader(_ps((1, 2), (1,), 1), ElectionType.UNCLEAN, {1, 2})
    leaderless = _ps((1, 2, 3), (1,), NO_LEADER, 4, 6)
    # A live ISR member would lead cleanly; else the first live replica, alone in the ISR.
    assert elect_leader(leaderless, ElectionType.UNCLEAN, {1, 3}) == _ps(
        (1, 2, 3), (1,), 1, 5, 7
    )
    assert elect_leader(leaderless, ElectionType.UNCLEAN, {3, 2}) == _ps((1, 2, 3), (2,), 2, 5, 7)
    with pytest.raises(EligibleLeadersNotAvailableError):
        elect_leader(leaderless, ElectionType.UNCLEAN, {9})


def test_imbalance_is_counted_per_broker() -> None:
    # Broker 1 is preferred for 4 partitions and leads 3 of them (25 % not led); broker 2 is
    # preferred for 2 and leads both.
    states = {
        0: _ps((1, 2), (1, 2), 1), 1: _ps((1, 2), (1, 2), 1), 2: _ps((1, 2), (1, 2), 1),
        3: _ps((1, 2), (1, 2), 2), 4: _ps((2, 1), (1, 2), 2), 5: _ps((2, 1), (1, 2), 2),
    }
    always: Callable[[int, int], bool] = lambda key, broker: True  # noqa: E731
    assert imbalanced_partitions(states.items(), always, 10) == [3]
    assert imbalanced_partitions(states.items(), always, 25) == []  # not above 25 %
    assert imbalanced_partitions(states.items(), lambda k, b: False, 10) == []  # not eligible
    states[3] = _ps((1, 2), (2,), 2)  # preferred out of the ISR
    assert imbalanced_partitions(states.items(), always, 10) == []
    states[3] = _ps((1, 2, 3), (1, 2), 2, adding=(3,))  # being reassigned
    assert imbalanced_partitions(states.items(), always, 10) == []


# --- over a store, with a controller ----------------------------------------------------------


def _keys(harness: Harness) -> ClusterKeys:
    return ClusterKeys(cluster=harness.prefix.strip("/"), prefix="/odradek-reassign-test")


async def _register(harness: Harness, store: ClusterStore, keys: ClusterKeys, *ids: int):
    sessions = []
    for node in ids:
        session = await Session.open(
            store, TTL, clock=harness.session_clock, sleep=harness.sleep
        )
        info = BrokerInfo(node, "127.0.0.1", 9000 + node)
        await BrokerRegistration(store, keys, session, info).register()
        sessions.append(session)
    return sessions


async def _create_topic(
    store: ClusterStore,
    keys: ClusterKeys,
    name: str,
    states: Sequence[PartitionState],
    configs: Mapping[str, str] | None = None,
) -> None:
    record = TopicRecord(uuid.uuid4(), len(states), configs or {})
    ops = [Put(keys.topic(name), record.encode())]
    ops += [Put(keys.partition(name, p), s.encode()) for p, s in enumerate(states)]
    assert (await store.txn([], ops)).succeeded


async def _state(store: ClusterStore, keys: ClusterKeys, name: str, p: int) -> PartitionState:
    kv = await store.get(keys.partition(name, p))
    assert kv is not None
    return PartitionState.decode(kv.value)


async def _as_leader_sets_isr(
    store: ClusterStore, keys: ClusterKeys, name: str, p: int, isr: tuple[int, ...]
) -> None:
    """An ISR change as the partition's leader makes it (AlterPartition): compare-and-swap."""
    kv = await store.get(keys.partition(name, p))
    assert kv is not None
    state = PartitionState.decode(kv.value)
    new = replace(state, isr=isr, partition_epoch=state.partition_epoch + 1)
    result = await store.txn([mod_revision_is(kv.key, kv.mod_revision)], [Put(kv.key, new.encode())])
    assert result.succeeded


async def _until_state(
    harness: Harness,
    store: ClusterStore,
    keys: ClusterKeys,
    name: str,
    p: int,
    predicate: Callable[[PartitionState], bool],
) -> PartitionState:
    async def check() -> PartitionState:
        while True:
            state = await _state(store, keys, name, p)
            if predicate(state):
                return state
            await _pause(harness)

    return await harness.until(check(), 15)


@contextlib.asynccontextmanager
async def _controller(
    harness: Harness,
    store: ClusterStore,
    keys: ClusterKeys,
    session: Session,
    rebalance: RebalanceSettings | None = None,
):
    runner = ControllerRunner(
        store, keys, 1, clock=harness.session_clock, sleep=harness.sleep,
        rebalance=rebalance or RebalanceSettings(enabled=False),
    )
    task = asyncio.ensure_future(runner.run(session))
    try:
        await harness.until(_wait(harness, lambda: runner.controller is not None), 10)
        yield runner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wait(harness: Harness, check: Callable[[], bool]) -> None:
    while not check():
        await _pause(harness)


async def _pause(harness: Harness) -> None:
    """Between polls: one turn of the loop on the manual clock (the harness passes its time in
    steps a real sleep here would outlast); a real pause against etcd."""
    await asyncio.sleep(0.01 if harness.kind == "etcd" else 0)


@contextlib.asynccontextmanager
async def _changes(store: ClusterStore, keys: ClusterKeys):
    image = MetadataImage(store, keys)
    await image.start()
    try:
        yield image, PartitionChanges(store, keys, image)
    finally:
        await image.close()


def test_a_reassignment_runs_to_completion(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        sessions = await _register(harness, store, keys, 1, 2, 3)
        await _create_topic(store, keys, "t", [_ps((1, 2), (1, 2), 1), _ps((2, 1), (2, 1), 2)])
        async with _controller(harness, store, keys, sessions[0]), \
                _changes(store, keys) as (image, changes):
            await harness.until(_wait(harness, lambda: image.topic("t") is not None), 10)
            results = await changes.alter_reassignments(
                {("t", 0): (2, 3), ("t", 1): (1, 2, 9), ("t", 7): (1,), ("u", 0): (1,)}
            )
            assert results[("t", 0)] is None
            assert isinstance(results[("t", 1)], InvalidReplicaAssignmentError)
            assert isinstance(results[("t", 7)], UnknownTopicOrPartitionError)
            assert isinstance(results[("u", 0)], UnknownTopicOrPartitionError)
            started = image.partition("t", 0)  # shown once answered
            assert started == _ps((2, 3, 1), (1, 2), 1, 0, 1, adding=(3,), removing=(1,))

            # The controller waits for broker 3 to join the ISR, then completes.
            await harness.pass_time(1)
            assert await _state(store, keys, "t", 0) == started
            await _as_leader_sets_isr(store, keys, "t", 0, (1, 2, 3))
            done = await _until_state(
                harness, store, keys, "t", 0, lambda s: not s.reassigning
            )
            assert done == _ps((2, 3), (2, 3), 2, 1, 3)

            # Cancelling when nothing runs.
            results = await changes.alter_reassignments({("t", 0): None})
            assert isinstance(results[("t", 0)], NoReassignmentInProgressError)
        for session in sessions:
            await session.close()

    harness.run(scenario)


def test_a_cancelled_reassignment_reverts() -> None:
    harness = Harness("inprocess", None)
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        sessions = await _register(harness, store, keys, 1, 2, 3)
        await _create_topic(store, keys, "t", [_ps((1,), (1,), 1)])
        async with _controller(harness, store, keys, sessions[0]), \
                _changes(store, keys) as (image, changes):
            await harness.until(_wait(harness, lambda: image.topic("t") is not None), 10)
            assert await changes.alter_reassignments({("t", 0): (2, 3)}) == {("t", 0): None}
            await _as_leader_sets_isr(store, keys, "t", 0, (1, 2))  # 2 caught up, 3 did not
            assert await changes.alter_reassignments({("t", 0): None}) == {("t", 0): None}
            assert await _state(store, keys, "t", 0) == _ps((1,), (1,), 1, 1, 3)
        for session in sessions:
            await session.close()

    harness.run(scenario)


def test_elections_on_request_over_the_store() -> None:
    harness = Harness("inprocess", None)
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        sessions = await _register(harness, store, keys, 1, 2)
        await _create_topic(store, keys, "t", [
            _ps((1, 2), (1, 2), 2, 3, 3),  # preferred 1 may take over
            _ps((1, 2), (1, 2), 1),  # already preferred
            _ps((2, 1), (1,), 1),  # preferred out of the ISR
        ])
        async with _changes(store, keys) as (image, changes):
            await harness.until(_wait(harness, lambda: image.topic("t") is not None), 10)
            results = await changes.elect_leaders(
                ElectionType.PREFERRED, [("t", 0), ("t", 1), ("t", 2), ("t", 3)]
            )
            assert results[("t", 0)] is None
            assert isinstance(results[("t", 1)], ElectionNotNeededError)
            assert isinstance(results[("t", 2)], PreferredLeaderNotAvailableError)
            assert isinstance(results[("t", 3)], UnknownTopicOrPartitionError)
            assert image.partition("t", 0) == _ps((1, 2), (1, 2), 1, 4, 4)
            # Every partition: those that need no election are left out.
            results = await changes.elect_leaders(ElectionType.PREFERRED, None)
            assert set(results) == {("t", 2)}

            # Broker 1 gone without a controller to notice: its leadership is reassessed first,
            # so an unclean election of partition 2 (ISR: only 1) elects 2 out of sync.
            sessions[0].abandon()
            await harness.pass_time(3)
            results = await changes.elect_leaders(ElectionType.UNCLEAN, [("t", 2)])
            assert results == {("t", 2): None}
            assert await _state(store, keys, "t", 2) == _ps((2, 1), (2,), 2, 1, 1)
        await sessions[1].close()

    harness.run(scenario)


def test_the_controller_restores_preferred_leaders() -> None:
    harness = Harness("inprocess", None)
    keys = _keys(harness)
    rebalance = RebalanceSettings(check_interval_s=5, per_broker_percentage=10)

    async def scenario(store: ClusterStore) -> None:
        sessions = await _register(harness, store, keys, 1, 2)
        # After a failover: broker 2 leads partitions broker 1 prefers.
        await _create_topic(store, keys, "t", [
            _ps((1, 2), (1, 2), 2, 1, 1), _ps((1, 2), (1, 2), 1),
            _ps((2, 1), (1, 2), 2), _ps((1, 2), (2,), 2, 1, 1),
        ])
        async with _controller(harness, store, keys, sessions[1], rebalance):
            await harness.pass_time(4)
            assert (await _state(store, keys, "t", 0)).leader == 2  # not before the interval
            state = await _until_state(harness, store, keys, "t", 0, lambda s: s.leader == 1)
            assert state == _ps((1, 2), (1, 2), 1, 2, 2)
            # Out of the ISR: stays; once back in sync, the next check moves it.
            assert (await _state(store, keys, "t", 3)).leader == 2
            await _as_leader_sets_isr(store, keys, "t", 3, (2, 1))
            await harness.pass_time(2)
            assert (await _state(store, keys, "t", 3)).leader == 2
            state = await _until_state(harness, store, keys, "t", 3, lambda s: s.leader == 1)
            assert state == _ps((1, 2), (2, 1), 1, 2, 3)
            assert (await _state(store, keys, "t", 2)).leader == 2  # its preferred leader
        for session in sessions:
            await session.close()

    harness.run(scenario)
