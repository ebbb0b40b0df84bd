"""Topics, partitions and producer ids in the cluster store, seen by several brokers' images.

Each scenario runs against the in-process store (manual clock) and a real etcd: brokers are
registered by hand, each broker has its own store handle, image and admin, and what one broker
writes must show in every broker's image.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable

import pytest
from cluster_harness import Harness

from odradek.cluster.image import MetadataImage, TopicsChange
from odradek.cluster.membership import BrokerInfo, ClusterKeys
from odradek.cluster.model import PartitionState, TopicRecord
from odradek.cluster.producer_ids import ProducerIdManager, allocate_block
from odradek.cluster.store import ClusterStore, Delete, Put
from odradek.cluster.topic_admin import (
    MAX_TXN_OPS,
    TopicAdmin,
    assign_replicas,
    rack_alternating,
)
from odradek.errors import (
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

WAIT_S = 10


def _keys(harness: Harness) -> ClusterKeys:
    return ClusterKeys(cluster=harness.prefix.strip("/"), prefix="/odradek-test")


class Node:
    """One broker's view of the cluster: its own store handle, image and admin."""

    def __init__(self, store: ClusterStore, keys: ClusterKeys, seed: int) -> None:
        self.store = store
        self.image = MetadataImage(store, keys)
        self.admin = TopicAdmin(store, keys, self.image, rng=random.Random(seed))
        self.changes: list[TopicsChange] = []
        self.image.add_topics_listener(self.changes.append)

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                await asyncio.sleep(0.005)


def _run(
    harness: Harness,
    brokers: list[BrokerInfo],
    nodes: int,
    scenario: Callable[[list[Node]], Awaitable[None]],
) -> None:
    keys = _keys(harness)

    async def main(first: ClusterStore) -> None:
        for b in brokers:
            await first.put(keys.broker(b.node_id), b.encode())
        await first.put(keys.controller, b'{"node_id": 1}')
        await first.put(keys.cluster_id, b"test-cluster")
        stores = [first, *(harness.open() for _ in range(nodes - 1))]
        group = [Node(s, keys, seed) for seed, s in enumerate(stores)]
        try:
            for n in group:
                await n.image.start()
            await scenario(group)
        finally:
            for n in group:
                await n.image.close()
            for s in stores[1:]:
                await s.close()

    harness.run(main)


THREE = [BrokerInfo(i, "127.0.0.1", 9090 + i) for i in (1, 2, 3)]


def test_a_topic_created_on_one_broker_shows_on_every_broker(harness: Harness) -> None:
    async def scenario(nodes: list[Node]) -> None:
        a, b, c = nodes
        assert a.image.cluster_id == "test-cluster" and a.image.controller_id == 1
        assert [r.info for r in b.image.live_brokers()] == THREE
        info = await a.admin.create_topic("orders", partitions=6, replication_factor=2,
                                          configs={"retention.ms": "1000"})
        # The creator's image shows it when create returns; the others follow the watch.
        assert a.image.topic("orders") is info
        await b.until(lambda: b.image.topic("orders") is not None)
        await c.until(lambda: c.image.topic("orders") is not None)
        seen = b.image.topic("orders")
        assert seen is not None and seen == info and seen.configs == {"retention.ms": "1000"}
        assert b.image.topic_by_id(info.topic_id) is seen
        assert len(seen.partitions) == 6
        for p in seen.partitions:
            assert len(p.replicas) == 2 and len(set(p.replicas)) == 2
            assert p.leader == p.replicas[0] and p.isr == p.replicas
            assert (p.leader_epoch, p.partition_epoch) == (0, 0)
        # Round robin: the leaders are spread over all three brokers.
        assert {p.leader for p in seen.partitions} == {1, 2, 3}
        assert [ch.added for ch in b.changes if ch.added] == [(seen,)]

        with pytest.raises(TopicAlreadyExistsError):
            await b.admin.create_topic("orders", partitions=1, replication_factor=1)
        with pytest.raises(InvalidReplicationFactorError):
            await b.admin.create_topic("wide", partitions=1, replication_factor=4)
        checked = await b.admin.create_topic("dry", partitions=2, replication_factor=1,
                                             validate_only=True)
        assert len(checked.partitions) == 2 and a.image.topic("dry") is None

    _run(harness, THREE, 3, scenario)


def test_no_replica_is_placed_on_a_broker_in_controlled_shutdown(harness: Harness) -> None:
    leaving = [*THREE[:2], BrokerInfo(3, "127.0.0.1", 9093, shutting_down=True)]

    async def scenario(nodes: list[Node]) -> None:
        (a,) = nodes
        assert a.image.broker(3) is not None and a.image.broker(3).info.shutting_down  # type: ignore[union-attr]
        info = await a.admin.create_topic("t", partitions=6, replication_factor=2)
        assert {r for p in info.partitions for r in p.replicas} == {1, 2}
        with pytest.raises(InvalidReplicationFactorError):
            await a.admin.create_topic("wide", partitions=1, replication_factor=3)

    _run(harness, leaving, 1, scenario)


def test_delete_create_partitions_and_alter_configs(harness: Harness) -> None:
    async def scenario(nodes: list[Node]) -> None:
        a, b = nodes
        info = await a.admin.create_topic("t", partitions=2, replication_factor=1)
        await b.until(lambda: b.image.topic("t") is not None)

        await b.admin.create_partitions("t", 5)
        grown = b.image.topic("t")
        assert grown is not None and len(grown.partitions) == 5
        assert grown.topic_id == info.topic_id and grown.partitions[:2] == info.partitions
        await a.until(lambda: (t := a.image.topic("t")) is not None and len(t.partitions) == 5)
        with pytest.raises(InvalidPartitionsError):
            await a.admin.create_partitions("t", 5)
        with pytest.raises(InvalidPartitionsError):
            await a.admin.create_partitions("t", 3)
        with pytest.raises(InvalidReplicaAssignmentError):
            await a.admin.create_partitions("t", 6, assignments=[[9]])
        await a.admin.create_partitions("t", 6, assignments=[[2]])
        assert a.image.partition("t", 5) == PartitionState((2,), (2,), 2)

        await a.admin.alter_configs("t", {"cleanup.policy": "compact"})
        await b.until(lambda: (t := b.image.topic("t")) is not None and bool(t.configs))
        altered = b.image.topic("t")
        assert altered is not None and altered.configs == {"cleanup.policy": "compact"}
        assert altered is not grown  # a new value on every change

        await b.admin.delete_topic("t")
        assert b.image.topic("t") is None and b.image.topic_by_id(info.topic_id) is None
        await a.until(lambda: a.image.topic("t") is None)
        assert [removed.name for ch in a.changes for removed in ch.removed] == ["t"]
        with pytest.raises(UnknownTopicOrPartitionError):
            await a.admin.delete_topic("t")
        with pytest.raises(UnknownTopicOrPartitionError):
            await a.admin.create_partitions("t", 9)
        keys = _keys(harness)
        assert not (await a.store.range(keys.topic_partitions("t"), prefix=True)).kvs

        # A new topic of the same name starts afresh.
        again = await b.admin.create_topic("t", partitions=1, replication_factor=1)
        assert again.topic_id != info.topic_id and len(again.partitions) == 1

    _run(harness, THREE, 2, scenario)


def test_concurrent_creators_of_one_name_exactly_one_wins(harness: Harness) -> None:
    async def scenario(nodes: list[Node]) -> None:
        results = await asyncio.gather(
            *(n.admin.create_topic("race", partitions=3, replication_factor=1) for n in nodes),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and all(isinstance(e, TopicAlreadyExistsError) for e in lost)
        for n in nodes:
            await n.until(lambda n=n: n.image.topic("race") is not None)  # type: ignore[misc]
            shown = n.image.topic("race")
            assert shown is not None and shown.topic_id == won[0].topic_id

    _run(harness, THREE, 3, scenario)


def test_an_incomplete_topic_is_not_shown(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(nodes: list[Node]) -> None:
        (a,) = nodes
        record = TopicRecord(uuid.uuid4(), 3, {})
        state = PartitionState((1,), (1,), 1)
        await a.store.put(keys.topic("half"), record.encode())
        await a.store.put(keys.partition("half", 0), state.encode())
        await a.store.put(keys.partition("half", 2), state.encode())
        # Another topic written after: once it shows, the image has seen "half" too.
        await a.admin.create_topic("whole", partitions=1, replication_factor=1)
        assert a.image.topic("half") is None
        assert [t.name for t in a.image.topics()] == ["whole"]
        result = await a.store.put(keys.partition("half", 1), state.encode())
        await a.image.wait_for_revision(result.revision)
        half = a.image.topic("half")
        assert half is not None and half.topic_id == record.topic_id
        assert [t.name for t in a.image.topics()] == ["half", "whole"]

        # Partition keys left without a record are replaced by a new topic's own.
        await a.store.put(keys.partition("ghost", 0), PartitionState((3,), (3,), 3, 7).encode())
        await a.store.put(keys.partition("ghost", 1), state.encode())
        ghost = await a.admin.create_topic("ghost", assignments=[[2]])
        assert ghost.partitions == (PartitionState((2,), (2,), 2),)
        assert len((await a.store.range(keys.topic_partitions("ghost"), prefix=True)).kvs) == 1

    _run(harness, THREE, 1, scenario)


def test_a_topic_larger_than_one_transaction(harness: Harness) -> None:
    partitions = 2 * MAX_TXN_OPS + 7

    async def scenario(nodes: list[Node]) -> None:
        a, b = nodes
        info = await a.admin.create_topic("big", partitions=partitions, replication_factor=3)
        assert len(info.partitions) == partitions
        await b.until(lambda: b.image.topic("big") is not None)
        # b never saw the topic half-written: its first sight of it was the whole.
        added = [t for ch in b.changes for t in ch.added if t.name == "big"]
        assert len(added) == 1 and len(added[0].partitions) == partitions
        await a.admin.create_partitions("big", partitions + MAX_TXN_OPS + 1)
        await b.until(lambda: len(b.image.topic("big").partitions) > partitions)  # type: ignore[union-attr]
        grown = b.image.topic("big")
        assert grown is not None and len(grown.partitions) == partitions + MAX_TXN_OPS + 1
        await a.admin.delete_topic("big")
        await b.until(lambda: b.image.topic("big") is None)

    _run(harness, THREE, 2, scenario)


def test_producer_id_blocks_are_unique_across_brokers(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(first: ClusterStore) -> None:
        stores = [first, harness.open(), harness.open()]
        try:
            blocks = await asyncio.gather(
                *(allocate_block(s, keys, 10) for s in stores for _ in range(4))
            )
            ids = [i for b in blocks for i in b]
            assert len(ids) == len(set(ids)) == 120
            assert sorted(ids) == list(range(120))

            managers = [ProducerIdManager(s, keys, block_size=10) for s in stores]
            for m in managers:
                await m.start()
            handed: list[int] = []
            for _ in range(25):
                for m in managers:
                    while True:
                        try:
                            handed.append(m.allocate())
                            break
                        except Exception:
                            await asyncio.sleep(0.01)  # the next block is on its way
            assert len(handed) == len(set(handed)) == 75 and min(handed) >= 120
            for m in managers:
                await m.close()
        finally:
            for s in stores[1:]:
                await s.close()

    harness.run(scenario)


def test_placement() -> None:
    brokers = [BrokerInfo(i, "h", 1) for i in (1, 2, 3, 4)]
    replicas = assign_replicas(brokers, 8, 3, start=0, shift=0)
    assert [r[0] for r in replicas] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert all(len(set(r)) == 3 for r in replicas)
    # The second round's followers differ from the first's.
    assert replicas[0] != replicas[4]
    with pytest.raises(InvalidReplicationFactorError):
        assign_replicas(brokers, 1, 5, start=0, shift=0)

    racked = [BrokerInfo(1, "h", 1, "a"), BrokerInfo(2, "h", 1, "a"),
              BrokerInfo(3, "h", 1, "b"), BrokerInfo(4, "h", 1, "b"), BrokerInfo(5, "h", 1, "c")]
    order = rack_alternating(racked)
    assert [b.node_id for b in order] == [1, 3, 5, 2, 4]
    rack_of = {b.node_id: b.rack for b in racked}
    for start in range(5):
        for shift in range(5):
            for r in assign_replicas(order, 10, 3, start=start, shift=shift):
                assert len({rack_of[n] for n in r}) == 3, r
    for r in assign_replicas(order, 10, 2, start=1, shift=2):
        assert len({rack_of[n] for n in r}) == 2


def test_an_image_that_fell_behind_a_compaction_reads_again(harness: Harness) -> None:
    keys = _keys(harness)

    async def scenario(store: ClusterStore) -> None:
        await store.put(keys.broker(1), THREE[0].encode())
        image = MetadataImage(store, keys)
        await image.start()
        admin = TopicAdmin(store, keys, image)
        try:
            await admin.create_topic("before", partitions=1, replication_factor=1)
            # Stop following (as a watch cut off would), write and compact past the image.
            assert image._task is not None
            image._task.cancel()
            await asyncio.gather(image._task, return_exceptions=True)
            await store.delete(keys.topic("before"), prefix=False)
            await store.put(keys.topic("x"), TopicRecord(uuid.uuid4(), 1).encode())
            put = await store.put(keys.partition("x", 0), PartitionState((1,), (1,), 1).encode())
            await store.compact(put.revision)
            assert image.topic("before") is not None and image.topic("x") is None
            image._task = asyncio.get_running_loop().create_task(image._follow())
            await image.wait_for_revision(put.revision)
            assert image.topic("before") is None and image.topic("x") is not None
        finally:
            await image.close()

    harness.run(scenario)


def test_a_revision_is_applied_whole(harness: Harness) -> None:
    """One transaction that deletes a topic and creates another is one change: no reader sees
    neither or both."""
    keys = _keys(harness)

    async def scenario(nodes: list[Node]) -> None:
        a, b = nodes
        old = await a.admin.create_topic("old", partitions=2, replication_factor=1)
        await b.until(lambda: b.image.topic("old") is not None)
        seen: list[tuple[bool, bool]] = []
        b.image.add_topics_listener(
            lambda _: seen.append((b.image.topic("old") is None, b.image.topic("new") is None))
        )
        state = PartitionState((1,), (1,), 1).encode()
        result = await a.store.txn([], [
            Delete(keys.topic("old")),
            Delete(keys.topic_partitions("old"), prefix=True),
            Put(keys.topic("new"), TopicRecord(uuid.uuid4(), 2).encode()),
            Put(keys.partition("new", 0), state),
            Put(keys.partition("new", 1), state),
        ])
        await b.image.wait_for_revision(result.revision)
        assert seen == [(True, False)]
        (change,) = b.changes[-1:]
        assert [t.name for t in change.added] == ["new"] and change.removed == (old,)

    _run(harness, THREE, 2, scenario)
