"""The controller: several brokers' sessions in one process, a controller elected among them,
and the partition states it writes when brokers come and go, topics are left incomplete or
deleted, and controllers fail over. The scenarios that take the `harness` fixture run against
both the in-process store (manual clock) and a real etcd; the rest against the in-process store,
where a store wrapper can depose a controller or lose an answer at an exact moment."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

import pytest
from cluster_harness import Harness

from odradek.cluster.controller import (
    MAX_TXN_OPS,
    UNCLEAN_LEADER_ELECTION,
    Controller,
    ControllerRunner,
    reassess_partition,
    round_robin_placement,
)
from odradek.cluster.etcd import EtcdStore
from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.membership import (
    BrokerInfo,
    BrokerRegistration,
    ClusterKeys,
    ControllerElection,
    NotController,
    Session,
    current_controller,
)
from odradek.cluster.model import NO_LEADER, PartitionState, TopicRecord
from odradek.cluster.store import (
    ClusterStore,
    Compare,
    Delete,
    OutcomeUnknown,
    Put,
    TxnOp,
    TxnResult,
)
from odradek.testing.etcd import EtcdProcess

TTL = 1  # seconds
GRACE_S = 1.0  # the incomplete-topic grace the tests' controllers use

States = dict[int, PartitionState]


# --- helpers ----------------------------------------------------------------------------------


def _keys(harness: Harness) -> ClusterKeys:
    return ClusterKeys(cluster=harness.prefix.strip("/"), prefix="/odradek-ctl-test")


def _inprocess() -> Harness:
    return Harness("inprocess", None)


class _Broker:
    """A broker's membership without the broker: a session and a registration."""

    def __init__(
        self,
        harness: Harness,
        store: ClusterStore,
        keys: ClusterKeys,
        node_id: int,
        rack: str | None = None,
    ):
        self._harness, self._store, self._keys, self.node_id = harness, store, keys, node_id
        self.rack = rack
        self.session: Session | None = None
        self.registration: BrokerRegistration | None = None
        self.epoch = 0

    async def start(self) -> _Broker:
        self.session = await Session.open(
            self._store, TTL, clock=self._harness.session_clock, sleep=self._harness.sleep
        )
        info = BrokerInfo(self.node_id, "127.0.0.1", 9000 + self.node_id, self.rack)
        self.registration = BrokerRegistration(self._store, self._keys, self.session, info)
        self.epoch = await self.registration.register()
        return self

    def crash(self) -> None:
        """Stop renewing: the lease runs out and the registration vanishes, as if killed."""
        assert self.session is not None
        self.session.abandon()

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()


async def _brokers(harness: Harness, store: ClusterStore, keys: ClusterKeys, *ids: int):
    return [await _Broker(harness, store, keys, i).start() for i in ids]


def _runner(harness: Harness, store: ClusterStore, keys: ClusterKeys, node_id: int):
    return ControllerRunner(
        store,
        keys,
        node_id,
        clock=harness.session_clock,
        sleep=harness.sleep,
        incomplete_topic_grace_s=GRACE_S,
    )


async def _start_runner(
    harness: Harness, store: ClusterStore, keys: ClusterKeys, broker: _Broker
) -> tuple[ControllerRunner, asyncio.Task[None]]:
    runner = _runner(harness, store, keys, broker.node_id)
    assert broker.session is not None
    task = asyncio.ensure_future(runner.run(broker.session))
    return runner, task


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _create_topic(
    store: ClusterStore,
    keys: ClusterKeys,
    name: str,
    assignment: Sequence[tuple[int, ...]],
    configs: Mapping[str, str] | None = None,
    *,
    written: Sequence[int] | None = None,
    count: int | None = None,
) -> None:
    """Write a topic as a creator does: its record, then its partitions (only ``written`` ones,
    as a creator that crashed half-way), in transactions of at most 100 puts."""
    record = TopicRecord(uuid.uuid4(), len(assignment) if count is None else count, configs or {})
    await store.put(keys.topic(name), record.encode())
    ops: list[TxnOp] = [
        Put(keys.partition(name, p), PartitionState(r, r, r[0]).encode())
        for p, r in enumerate(assignment)
        if written is None or p in written
    ]
    for i in range(0, len(ops), 100):
        assert (await store.txn([], ops[i : i + 100])).succeeded


async def _states(store: ClusterStore, keys: ClusterKeys, topic: str) -> States:
    result = await store.range(keys.topic_partitions(topic), prefix=True)
    return {int(kv.key.rsplit("/", 1)[1]): PartitionState.decode(kv.value) for kv in result.kvs}


async def _await_states(
    harness: Harness,
    store: ClusterStore,
    keys: ClusterKeys,
    topic: str,
    predicate: Callable[[States], bool],
    max_s: float = 15,
) -> States:
    """The topic's partition states once ``predicate`` holds for them (re-checked on every
    change of them, while store time passes)."""

    async def check() -> States:
        prefix = keys.topic_partitions(topic)
        while True:
            result = await store.range(prefix, prefix=True)
            states = {
                int(kv.key.rsplit("/", 1)[1]): PartitionState.decode(kv.value) for kv in result.kvs
            }
            if predicate(states):
                return states
            watch = store.watch(prefix, prefix=True, start_revision=result.revision + 1)
            async with contextlib.aclosing(watch):
                await anext(watch)

    return await harness.until(check(), max_s)


def _leaders(states: States) -> list[int]:
    return [states[p].leader for p in sorted(states)]


class _Interposed:
    """A store that runs ``before`` ahead of the ``nth`` transaction writing partition keys (a
    controller's), and may lose that transaction's answer after it ran: faults at an exact
    point, on the real in-process store."""

    def __init__(
        self,
        store: ClusterStore,
        keys: ClusterKeys,
        nth: int,
        before: Callable[[], Awaitable[None]] | None = None,
        lose_answer: bool = False,
    ) -> None:
        self._store, self._keys, self._nth = store, keys, nth
        self._before, self._lose_answer = before, lose_answer
        self.partition_txns = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        writes = [op for op in success if isinstance(op, Put | Delete)]
        if writes and all(op.key.startswith(self._keys.partitions) for op in writes):
            self.partition_txns += 1
            if self.partition_txns == self._nth:
                if self._before is not None:
                    await self._before()
                result = await self._store.txn(compare, success, failure)
                if self._lose_answer:
                    raise OutcomeUnknown("the answer was lost (test)")
                return result
        return await self._store.txn(compare, success, failure)


# --- pure rules -------------------------------------------------------------------------------


def _ps(replicas: tuple[int, ...], isr: tuple[int, ...], leader: int, le: int = 0, pe: int = 0):
    return PartitionState(replicas, isr, leader, le, pe)


@pytest.mark.parametrize(
    ("state", "live", "unclean", "expected"),
    [
        # Nothing lost: nothing to do.
        (_ps((1,), (1,), 1), {1: 5}, False, None),
        # The only replica lost: leaderless, the ISR keeps its last member.
        (_ps((1,), (1,), 1, 3, 7), {}, False, _ps((1,), (1,), NO_LEADER, 4, 8)),
        # It returns: it leads again.
        (_ps((1,), (1,), NO_LEADER, 4, 8), {1: 20}, False, _ps((1,), (1,), 1, 5, 9)),
        # It restarted while nobody watched (registered after the state was written): the
        # only replica, so no other copy can diverge from it: nothing to write.
        (_ps((1,), (1,), 1, 3, 7), {1: 20}, False, None),
        # With other replicas, a new incarnation of the leader leads in a new leader epoch.
        (_ps((1, 2), (1,), 1, 3, 7), {1: 20, 2: 1}, False, _ps((1, 2), (1,), 1, 4, 8)),
        # Leader lost: the next ISR member in replica order leads, the ISR shrinks.
        (_ps((1, 2, 3), (3, 1, 2), 1), {2: 1, 3: 1}, False, _ps((1, 2, 3), (3, 2), 2, 1, 1)),
        # A follower lost: only the ISR shrinks.
        (_ps((1, 2, 3), (1, 2, 3), 1), {1: 1, 3: 1}, False, _ps((1, 2, 3), (1, 3), 1, 0, 1)),
        # Every ISR member lost: the leader stays in the ISR, nobody leads.
        (_ps((1, 2), (1, 2), 2), {}, False, _ps((1, 2), (2,), NO_LEADER, 1, 1)),
        # A live replica outside the ISR does not lead...
        (_ps((1, 2), (1,), 1), {2: 1}, False, _ps((1, 2), (1,), NO_LEADER, 1, 1)),
        # ...unless unclean election is enabled: then it does, alone in the ISR.
        (_ps((1, 2), (1,), 1), {2: 1}, True, _ps((1, 2), (2,), 2, 1, 1)),
        # A returning broker not in the ISR changes nothing (preferred leaders: issue 13).
        (_ps((1, 2), (2,), 2, 1, 1), {1: 30, 2: 1}, False, None),
    ],
)
def test_reassess_partition(
    state: PartitionState,
    live: dict[int, int],
    unclean: bool,
    expected: PartitionState | None,
) -> None:
    written_at = 10
    assert reassess_partition(state, written_at, live, unclean=unclean) == expected


def test_round_robin_placement() -> None:
    assert round_robin_placement([0, 1, 2, 3], [1, 2, 3], 1) == {0: (1,), 1: (2,), 2: (3,), 3: (1,)}
    assert round_robin_placement([4], [1, 2, 3], 2) == {4: (2, 3)}


# --- scenarios on both stores -----------------------------------------------------------------


def test_a_lost_broker_leaves_its_partitions_leaderless_until_it_returns(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        one, two = await _brokers(harness, store, keys, 1, 2)
        runner, task = await _start_runner(harness, store, keys, two)
        await _create_topic(store, keys, "t", [(1,), (2,), (1,), (2,)])

        one.crash()
        states = await _await_states(
            harness, store, keys, "t", lambda s: _leaders(s) == [NO_LEADER, 2, NO_LEADER, 2]
        )
        for p in (0, 2):  # led by the lost broker: leaderless, ISR kept, epochs bumped
            assert states[p] == _ps((1,), (1,), NO_LEADER, 1, 1)
        for p in (1, 3):  # the other broker's partitions are untouched
            assert states[p] == _ps((2,), (2,), 2, 0, 0)
        assert runner.controller is not None
        assert await current_controller(store, keys) == (2, runner.controller.epoch)

        await one.start()  # back, under a new session: a new broker epoch
        states = await _await_states(
            harness, store, keys, "t", lambda s: _leaders(s) == [1, 2, 1, 2]
        )
        for p in (0, 2):
            assert states[p] == _ps((1,), (1,), 1, 2, 2)
        assert states[1] == _ps((2,), (2,), 2, 0, 0)

        await _stop(task)
        assert await current_controller(store, keys) is None  # resigned on shutdown
        await one.stop()
        await two.stop()

    harness.run(scenario)


def test_three_replicas_the_next_isr_member_leads(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        one, two, three = await _brokers(harness, store, keys, 1, 2, 3)
        _, task = await _start_runner(harness, store, keys, three)
        await _create_topic(store, keys, "r3", [(1, 2, 3), (2, 3, 1), (3, 1, 2)])

        one.crash()
        states = await _await_states(
            harness, store, keys, "r3", lambda s: all(1 not in st.isr for st in s.values())
        )
        assert states[0] == _ps((1, 2, 3), (2, 3), 2, 1, 1)  # new leader from the ISR
        assert states[1] == _ps((2, 3, 1), (2, 3), 2, 0, 1)  # a follower lost: ISR only
        assert states[2] == _ps((3, 1, 2), (3, 2), 3, 0, 1)

        # Broker 1 returns: it is not in any ISR, so nothing changes until replication adds it.
        await one.start()
        two.crash()
        states = await _await_states(
            harness, store, keys, "r3", lambda s: all(2 not in st.isr for st in s.values())
        )
        assert states[0] == _ps((1, 2, 3), (3,), 3, 2, 2)
        assert states[1] == _ps((2, 3, 1), (3,), 3, 1, 2)
        assert states[2] == _ps((3, 1, 2), (3,), 3, 0, 2)

        await _stop(task)
        for broker in (one, three):
            await broker.stop()

    harness.run(scenario)


def test_controlled_shutdown_moves_leaders_and_shrinks_isrs(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        one, two, three = await _brokers(harness, store, keys, 1, 2, 3)
        _, task = await _start_runner(harness, store, keys, three)
        await _create_topic(store, keys, "r3", [(1, 2, 3), (2, 3, 1), (3, 1, 2)])
        await _create_topic(store, keys, "single", [(1,), (2,)])

        assert one.registration is not None
        assert await one.registration.mark_shutting_down()
        states = await _await_states(
            harness, store, keys, "r3", lambda s: all(1 not in st.isr for st in s.values())
        )
        assert states[0] == _ps((1, 2, 3), (2, 3), 2, 1, 1)  # handed over in a new epoch
        assert states[1] == _ps((2, 3, 1), (2, 3), 2, 0, 1)  # left the ISR only
        assert states[2] == _ps((3, 1, 2), (3, 2), 3, 0, 1)
        # Its only-replica partition: nobody to hand over to, it keeps leading.
        assert await _states(store, keys, "single") == {
            0: _ps((1,), (1,), 1), 1: _ps((2,), (2,), 2)
        }

        # It stops (deregisters) and starts again: not in any ISR of r3, nothing changes there
        # until replication adds it back; its single partition is led by it again.
        await one.stop()
        await _await_states(harness, store, keys, "single", lambda s: s[0].leader == NO_LEADER)
        await one.start()
        states = await _await_states(harness, store, keys, "single", lambda s: s[0].leader == 1)
        assert states == {0: _ps((1,), (1,), 1, 2, 2), 1: _ps((2,), (2,), 2)}
        assert (await _states(store, keys, "r3"))[0] == _ps((1, 2, 3), (2, 3), 2, 1, 1)
        await _stop(task)
        for broker in (one, two, three):
            await broker.stop()

    harness.run(scenario)


def test_a_restart_does_not_bump_epochs_of_single_replica_partitions(harness: Harness) -> None:
    """A broker restarting while no controller watches (a single node's restart) comes back
    to its one-replica partitions without a write: no other copy can diverge from it."""
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        (one,) = await _brokers(harness, store, keys, 1)
        two = await _Broker(harness, store, keys, 2).start()
        await _create_topic(store, keys, "t", [(1,)] * 3)
        await _create_topic(store, keys, "r2", [(1, 2)])
        await store.put(keys.partition("r2", 0), _ps((1, 2), (1,), 1).encode())  # 2 lagging
        await one.stop()
        await one.start()  # a new incarnation, registered after every state was written
        _, task = await _start_runner(harness, store, keys, two)
        states = await _await_states(
            harness, store, keys, "r2", lambda s: s[0].leader_epoch == 1
        )
        # Two replicas: the restarted leader leads in a new epoch (the follower may hold what
        # it lost); it was the first live ISR member.
        assert states[0] == _ps((1, 2), (1,), 1, 1, 1)
        assert await _states(store, keys, "t") == dict.fromkeys(range(3), _ps((1,), (1,), 1))
        await _stop(task)
        await one.stop()
        await two.stop()

    harness.run(scenario)


def test_an_incomplete_topic_is_completed(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        brokers = await _brokers(harness, store, keys, 1, 2, 3)
        # A creator wrote the record and two of five partitions (two replicas each), then died.
        assignment = [(1, 2), (2, 3), (3, 1), (1, 2), (2, 3)]
        await _create_topic(store, keys, "half", assignment, written=[0, 1])
        started = harness.now()
        _, task = await _start_runner(harness, store, keys, brokers[0])
        states = await _await_states(harness, store, keys, "half", lambda s: len(s) == 5)
        assert harness.now() - started >= GRACE_S  # a creator still at work is left to finish
        placed = round_robin_placement([2, 3, 4], [1, 2, 3], 2)
        for p in (2, 3, 4):
            assert states[p] == PartitionState(placed[p], placed[p], placed[p][0])
        assert states[0] == _ps((1, 2), (1, 2), 1)

        # CreatePartitions half-done: the count raised, the new partition never written.
        kv = await store.get(keys.topic("half"))
        assert kv is not None
        record = TopicRecord.decode(kv.value)
        grown = TopicRecord(record.topic_id, 6, record.configs)
        await store.put(keys.topic("half"), grown.encode())
        states = await _await_states(harness, store, keys, "half", lambda s: len(s) == 6)
        assert states[5].replicas == round_robin_placement([5], [1, 2, 3], 2)[5]

        await _stop(task)
        for broker in brokers:
            await broker.stop()

    harness.run(scenario)


def test_a_topic_completed_on_racked_brokers_spreads_replicas_over_racks() -> None:
    harness = _inprocess()
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
        brokers = [await _Broker(harness, store, keys, n, r).start() for n, r in racks.items()]
        await _create_topic(store, keys, "half", [(1, 3, 5)] * 12, written=[0])
        _, task = await _start_runner(harness, store, keys, brokers[0])
        states = await _await_states(harness, store, keys, "half", lambda s: len(s) == 12)
        for state in states.values():
            assert len({racks[r] for r in state.replicas}) == 3, state
        assert {states[p].leader for p in range(1, 12)} == set(racks)  # leaders go round
        await _stop(task)
        for broker in brokers:
            await broker.stop()

    harness.run(scenario)


def test_a_deleted_topics_partitions_are_removed(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        brokers = await _brokers(harness, store, keys, 1, 2)
        _, task = await _start_runner(harness, store, keys, brokers[0])
        await _create_topic(store, keys, "gone", [(1,), (2,), (1,)])
        await _create_topic(store, keys, "kept", [(1,), (2,)])
        # A deleter removed the record and died before the partitions.
        await store.delete(keys.topic("gone"))
        states = await _await_states(harness, store, keys, "gone", lambda s: not s)
        assert states == {}
        assert len(await _states(store, keys, "kept")) == 2

        # A namesake with more partitions left one behind: past the count, it is removed.
        leftover = PartitionState((2,), (2,), 2, 7, 9)
        await store.put(keys.partition("kept", 5), leftover.encode())
        states = await _await_states(harness, store, keys, "kept", lambda s: 5 not in s)
        assert states == {0: _ps((1,), (1,), 1), 1: _ps((2,), (2,), 2)}

        await _stop(task)
        for broker in brokers:
            await broker.stop()

    harness.run(scenario)


def test_a_topic_of_300_partitions_is_written_in_several_transactions(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        one, two = await _brokers(harness, store, keys, 1, 2)
        _, task = await _start_runner(harness, store, keys, two)
        await _create_topic(store, keys, "wide", [(1,)] * 300)
        one.crash()
        await _await_states(
            harness, store, keys, "wide", lambda s: all(st.leader == NO_LEADER for st in s.values())
        )
        result = await store.range(keys.topic_partitions("wide"), prefix=True)
        assert {PartitionState.decode(kv.value).leader_epoch for kv in result.kvs} == {1}
        revisions = {kv.mod_revision for kv in result.kvs}
        assert len(revisions) >= -(-300 // MAX_TXN_OPS)  # one transaction per chunk at least

        await one.start()
        await _await_states(
            harness, store, keys, "wide", lambda s: all(st.leader == 1 for st in s.values())
        )
        await _stop(task)
        await one.stop()
        await two.stop()

    harness.run(scenario)


# --- scenarios on the in-process store --------------------------------------------------------


def test_controller_failover_finishes_a_half_done_change() -> None:
    harness = _inprocess()
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        one, two, three = await _brokers(harness, store, keys, 1, 2, 3)
        await _create_topic(store, keys, "wide", [(1,)] * 250)

        async def end_controller_session() -> None:
            assert two.session is not None
            await store.revoke(two.session.lease_id)

        # Broker 2's controller writes its first transaction; its session ends before the
        # second. Broker 3, campaigning meanwhile, takes over and finishes the change.
        interposed = _Interposed(store, keys, nth=2, before=end_controller_session)
        first = _runner(harness, interposed, keys, 2)  # type: ignore[arg-type]
        assert two.session is not None
        first_task = asyncio.ensure_future(first.run(two.session))
        await harness.until(_controller_is(store, keys, 2), max_s=5)
        second, second_task = await _start_runner(harness, store, keys, three)

        one.crash()
        states = await _await_states(
            harness, store, keys, "wide", lambda s: all(st.leader == NO_LEADER for st in s.values())
        )
        # Every partition bumped exactly once: the first transaction's partitions were not
        # changed again by the new controller.
        assert {(st.leader_epoch, st.partition_epoch) for st in states.values()} == {(1, 1)}
        assert interposed.partition_txns == 2
        await harness.until(first_task, max_s=5)  # its session was lost: the runner ended
        assert not first.is_controller
        assert second.controller is not None and second.controller.stats.transactions >= 2
        controller = await current_controller(store, keys)
        assert controller is not None and controller[0] == 3

        await _stop(second_task)
        await three.stop()

    harness.run(scenario)


async def _controller_is(store: ClusterStore, keys: ClusterKeys, node_id: int) -> None:
    while True:
        controller = await current_controller(store, keys)
        if controller is not None and controller[0] == node_id:
            return
        await asyncio.sleep(0)


def test_a_deposed_controller_writes_nothing() -> None:
    harness = _inprocess()
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        one, two = await _brokers(harness, store, keys, 1, 2)
        await _create_topic(store, keys, "t", [(1,), (2,)])
        old_session = await Session.open(store, TTL, clock=harness.clock, sleep=harness.sleep)
        new_session = await Session.open(store, TTL, clock=harness.clock, sleep=harness.sleep)
        new = ControllerElection(store, keys, new_session, 2)

        async def depose() -> None:
            await store.revoke(old_session.lease_id)
            await new.campaign()

        # The old controller's writes (fenced_txn) go through the interposed store.
        interposed = _Interposed(store, keys, nth=1, before=depose)
        old = ControllerElection(interposed, keys, old_session, 1)  # type: ignore[arg-type]
        await old.campaign()
        controller = Controller(
            interposed,  # type: ignore[arg-type]
            keys,
            old,
            clock=harness.clock,
            sleep=harness.sleep,
        )
        running = asyncio.ensure_future(controller.run())
        await harness.pass_time(0.1)
        before = await store.range(keys.partitions, prefix=True)
        one.crash()  # the controller will want to write; it is deposed just before it does
        await harness.until(running, max_s=5)
        assert interposed.partition_txns == 1 and controller.stats.transactions == 1
        after = await store.range(keys.partitions, prefix=True)
        assert after.kvs == before.kvs  # nothing written
        with pytest.raises(NotController):
            await old.fenced_txn([], [Put(keys.partition("t", 0), b"{}")])

        # The new controller does the change.
        successor = Controller(store, keys, new, clock=harness.clock, sleep=harness.sleep)
        task = asyncio.ensure_future(successor.run())
        states = await _await_states(harness, store, keys, "t", lambda s: s[0].leader == NO_LEADER)
        assert states[0] == _ps((1,), (1,), NO_LEADER, 1, 1)
        await _stop(task)
        await two.stop()
        await new_session.close()

    harness.run(scenario)


def test_a_write_whose_answer_was_lost_is_recognised_not_repeated() -> None:
    harness = _inprocess()
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        one, two = await _brokers(harness, store, keys, 1, 2)
        await _create_topic(store, keys, "t", [(1,)] * 150)
        interposed = _Interposed(store, keys, nth=1, lose_answer=True)
        runner = _runner(harness, interposed, keys, 2)  # type: ignore[arg-type]
        assert two.session is not None
        task = asyncio.ensure_future(runner.run(two.session))
        await harness.until(_controller_is(store, keys, 2), max_s=5)
        one.crash()
        states = await _await_states(
            harness, store, keys, "t", lambda s: all(st.leader == NO_LEADER for st in s.values())
        )
        assert {(st.leader_epoch, st.partition_epoch) for st in states.values()} == {(1, 1)}
        assert runner.controller is not None and runner.controller.stats.recognised == 1
        await _stop(task)
        await two.stop()

    harness.run(scenario)


def test_a_new_controller_repairs_what_changed_while_there_was_none() -> None:
    harness = _inprocess()
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        one, two, three = await _brokers(harness, store, keys, 1, 2, 3)
        await _create_topic(store, keys, "a", [(1,), (2,), (3,)])
        await _create_topic(store, keys, "b", [(2, 1)], {UNCLEAN_LEADER_ELECTION: "true"})
        await store.put(keys.partition("b", 0), _ps((2, 1), (2,), 2).encode())
        await _create_topic(store, keys, "c", [(2, 1)])
        await store.put(keys.partition("c", 0), _ps((2, 1), (2,), 2).encode())
        # With no controller: broker 2 dies, broker 3 restarts (a new epoch).
        two.crash()
        three.crash()
        await harness.pass_time(TTL + 1)
        await three.start()

        _, task = await _start_runner(harness, store, keys, one)
        states = await _await_states(harness, store, keys, "a", lambda s: s[1].leader == NO_LEADER)
        assert states[0] == _ps((1,), (1,), 1)
        assert states[1] == _ps((2,), (2,), NO_LEADER, 1, 1)
        # A new incarnation of the only replica: no other copy to diverge, epochs kept.
        assert states[2] == _ps((3,), (3,), 3)
        # Unclean election allowed: the out-of-sync replica leads; not allowed: nobody does.
        assert (await _states(store, keys, "b"))[0] == _ps((2, 1), (1,), 1, 1, 1)
        assert (await _states(store, keys, "c"))[0] == _ps((2, 1), (2,), NO_LEADER, 1, 1)
        # Enabling unclean election on the topic elects at once (as Kafka does).
        kv = await store.get(keys.topic("c"))
        assert kv is not None
        record = TopicRecord.decode(kv.value)
        unclean = TopicRecord(record.topic_id, 1, {UNCLEAN_LEADER_ELECTION: "true"})
        await store.put(keys.topic("c"), unclean.encode())
        states = await _await_states(harness, store, keys, "c", lambda s: s[0].leader == 1)
        assert states[0] == _ps((2, 1), (1,), 1, 2, 2)
        await _stop(task)
        await one.stop()
        await three.stop()

    harness.run(scenario)


def test_a_runner_hands_over_on_shutdown() -> None:
    harness = _inprocess()
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        one, two = await _brokers(harness, store, keys, 1, 2)
        first, first_task = await _start_runner(harness, store, keys, one)
        await harness.until(_controller_is(store, keys, 1), max_s=5)
        second, second_task = await _start_runner(harness, store, keys, two)
        await harness.pass_time(TTL * 2)
        assert first.is_controller and not second.is_controller
        await _stop(first_task)  # a clean shutdown resigns: no session timeout to wait for
        await _controller_is(store, keys, 2)
        assert not first.is_controller
        await _stop(second_task)
        await one.stop()
        await two.stop()

    harness.run(scenario)


def test_the_controller_carries_on_after_etcd_restarts(etcd: EtcdProcess) -> None:
    keys = ClusterKeys("restart")

    async def scenario() -> None:
        store = EtcdStore([etcd.endpoint], request_timeout_s=2)
        # Long sessions: they outlast the outage (etcd keeps leases across a restart).
        sessions = [await Session.open(store, 30) for _ in range(3)]
        try:
            for node_id, session in ((1, sessions[0]), (2, sessions[1])):
                info = BrokerInfo(node_id, "127.0.0.1", 9000 + node_id)
                await BrokerRegistration(store, keys, session, info).register()
            await _create_topic(store, keys, "t", [(1,), (2,)])
            runner = ControllerRunner(store, keys, 2)
            task = asyncio.ensure_future(runner.run(sessions[2]))
            async with asyncio.timeout(10):
                await _controller_is(store, keys, 2)
                while runner.controller is None or not runner.controller.stats.resyncs:
                    await asyncio.sleep(0)
            controller = runner.controller
            await asyncio.to_thread(etcd.kill)
            await asyncio.to_thread(etcd.start)
            await store.revoke(sessions[0].lease_id)  # broker 1 goes, after the outage
            states = await _await_states(
                Harness("etcd", etcd), store, keys, "t", lambda s: s[0].leader == NO_LEADER
            )
            assert states[0] == _ps((1,), (1,), NO_LEADER, 1, 1)
            assert runner.controller is controller  # the same controller, carrying on
            await _stop(task)
        finally:
            for session in sessions[1:]:
                await session.close()
            await store.close()

    asyncio.run(scenario())


def test_a_runner_ends_when_the_store_closes() -> None:
    harness = _inprocess()
    keys = _keys(harness)

    async def main() -> None:
        store = InProcessStore(harness.clock)
        (one,) = await _brokers(harness, store, keys, 1)
        runner, task = await _start_runner(harness, store, keys, one)
        async with asyncio.timeout(5):
            while runner.controller is None or not runner.controller.stats.resyncs:
                await asyncio.sleep(0)
            await store.close()  # the broker shutting its store: the controller stops
            await task
        assert not runner.is_controller

    asyncio.run(main())
