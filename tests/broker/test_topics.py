"""TopicManager rules and crash reconciliation, without a network: the topics live in a durable
in-process cluster store, the image follows it and the manager's logs follow the image."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from odradek.broker.runner import local_config
from odradek.broker.topics import TopicManager, internal_topic_replication, validate_topic_name
from odradek.clock import ManualClock
from odradek.cluster.durable import open_single_node_store
from odradek.cluster.image import MetadataImage
from odradek.cluster.membership import BrokerInfo, ClusterKeys
from odradek.cluster.store import ClusterStore
from odradek.cluster.topic_admin import TopicAdmin
from odradek.config import BrokerConfig
from odradek.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from odradek.storage.log_manager import LogManager

KEYS = ClusterKeys()


@asynccontextmanager
async def _manager(data: Path) -> AsyncIterator[tuple[TopicManager, ClusterStore, LogManager]]:
    config = BrokerConfig().with_overrides(listen="127.0.0.1:0", data_dir=str(data))
    store = await open_single_node_store(data, KEYS, node_id=config.node_id, cluster_id="c")
    await store.put(KEYS.broker(config.node_id), BrokerInfo(config.node_id, "h", 1).encode())
    image = MetadataImage(store, KEYS)
    await image.start()
    logs = LogManager(data, ManualClock(1_700_000_000_000), config.default_log_config())
    logs.startup()
    try:
        yield TopicManager(config, image, TopicAdmin(store, KEYS, image), logs), store, logs
    finally:
        await image.close()
        await store.close()


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "bad name", "ü", "a/b"])
def test_illegal_topic_names(name: str) -> None:
    with pytest.raises(InvalidTopicError):
        validate_topic_name(name)


def test_create_rules(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _manager(tmp_path) as (topics, _, _):
            meta = await topics.create("orders", num_partitions=3,
                                       configs={"retention.ms": "1000"})
            assert meta.partitions == 3
            assert topics.log("orders", 2).log_end_offset == 0
            with pytest.raises(TopicAlreadyExistsError):
                await topics.create("orders")
            with pytest.raises(InvalidPartitionsError):
                await topics.create("zero", num_partitions=0)
            with pytest.raises(InvalidReplicationFactorError):
                await topics.create("rf3", replication_factor=3)
            with pytest.raises(InvalidConfigError):
                await topics.create("badcfg", configs={"cleanup.policy": "shred"})
            with pytest.raises(InvalidReplicaAssignmentError):
                await topics.create("assigned", assignments={0: [7]})
            validated = await topics.create("dry", num_partitions=2, validate_only=True)
            assert validated.partitions == 2 and topics.topic("dry") is None
            with pytest.raises(UnknownTopicOrPartitionError):
                topics.log("orders", 3)

    asyncio.run(scenario())


def test_partitions_grow_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _manager(tmp_path) as (topics, _, _):
            await topics.create("t", num_partitions=2)
            with pytest.raises(InvalidPartitionsError):
                await topics.create_partitions("t", 1, validate_only=False)
            grown = await topics.create_partitions("t", 4, validate_only=False)
            assert grown.partitions == 4
            assert topics.log("t", 3).log_end_offset == 0

    asyncio.run(scenario())


def test_topics_survive_a_restart_and_logs_follow_deletion(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _manager(tmp_path) as (topics, _, logs):
            created = await topics.create("kept", num_partitions=2, configs={"retention.ms": "7"})
            await topics.create("gone", num_partitions=1)
            await topics.delete("gone")
            assert logs.get_log("gone", 0) is None
            logs.shutdown()
        async with _manager(tmp_path) as (topics, _, logs):
            kept = topics.topic("kept")
            assert kept == created and topics.topic("gone") is None
            assert topics.partition_count() == 2

    asyncio.run(scenario())


def test_reconcile_after_crash_between_metadata_and_disk(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _manager(tmp_path) as (topics, store, logs):
            await topics.create("kept", num_partitions=2)
            await topics.create("gone", num_partitions=1)
            # A crash after the metadata changed but before the directories did:
            await store.delete(KEYS.topic("gone"))
            await store.delete(KEYS.topic_partitions("gone"), prefix=True)
            logs.delete_log("kept", 1)
            logs.shutdown()
        # (The image's listener would have deleted gone-0 had it run: recreate it on disk.)
        async with _manager(tmp_path) as (topics, _, logs):
            logs.create_log("gone", 0)
            topics.reconcile()
            assert logs.get_log("gone", 0) is None
            assert logs.get_log("kept", 1) is not None
            logs.shutdown()
        assert not any(p.name.startswith("gone-0") and p.is_dir() and not p.name.endswith("-delete")
                       for p in tmp_path.iterdir())

    asyncio.run(scenario())


def test_logs_follow_the_image_on_every_broker(tmp_path: Path) -> None:
    """A topic created through one broker's manager gets its logs on whichever brokers hold its
    replicas, and loses them there when another broker deletes it."""

    async def scenario() -> None:
        store = await open_single_node_store(tmp_path, KEYS, node_id=1, cluster_id="c")
        managers: list[tuple[TopicManager, LogManager, MetadataImage]] = []
        try:
            for node in (1, 2):
                await store.put(KEYS.broker(node), BrokerInfo(node, "h", node).encode())
            for node in (1, 2):
                data = tmp_path / f"broker-{node}"
                config = local_config(data, **{"node.id": str(node)})
                image = MetadataImage(store, KEYS)
                await image.start()
                logs = LogManager(data, ManualClock(1_700_000_000_000),
                                  config.default_log_config())
                logs.startup()
                admin = TopicAdmin(store, KEYS, image)
                managers.append((TopicManager(config, image, admin, logs), logs, image))
            (one, logs1, image1), (two, logs2, image2) = managers
            await one.create("spread", num_partitions=4, replication_factor=1)
            info = image1.topic("spread")
            assert info is not None
            await image2.wait_for_revision(image1.revision)
            for node, logs in ((1, logs1), (2, logs2)):
                held = {p for p, s in enumerate(info.partitions) if node in s.replicas}
                assert held and {p for t, p in logs.partitions() if t == "spread"} == held
            assert one.partition_count() + two.partition_count() == 4
            # Two live brokers: two replicas fit, each broker holds a log of every partition;
            # three do not, and nothing is written.
            await one.create("twice", num_partitions=2, replication_factor=2)
            await image2.wait_for_revision(image1.revision)
            twice = image2.topic("twice")
            assert twice is not None
            assert [sorted(s.replicas) for s in twice.partitions] == [[1, 2], [1, 2]]
            assert [s.isr for s in twice.partitions] == [s.replicas for s in twice.partitions]
            for logs in (logs1, logs2):
                assert {p for t, p in logs.partitions() if t == "twice"} == {0, 1}
            with pytest.raises(InvalidReplicationFactorError, match="live brokers"):
                await one.create("thrice", num_partitions=1, replication_factor=3)
            # min.insync.replicas above the replication factor is accepted, as Kafka accepts it
            # (acks=all produces then fail with NOT_ENOUGH_REPLICAS).
            strict = await one.create("strict", num_partitions=1, replication_factor=2,
                                      configs={"min.insync.replicas": "3"})
            assert strict.configs == {"min.insync.replicas": "3"}
            await one.delete("strict")
            with pytest.raises(InvalidReplicaAssignmentError):
                await one.create("assigned", assignments={0: [1, 3]})
            assert image1.topic("thrice") is None and image1.topic("assigned") is None
            await one.delete("twice")
            await two.delete("spread")
            await image1.wait_for_revision(image2.revision)
            assert not logs1.partitions() and not logs2.partitions()
        finally:
            for _, logs, image in managers:
                await image.close()
                logs.shutdown()
            await store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("settings", "live", "offsets", "txn"),
    [
        # Unset: min(3, live brokers), and the transaction log's min ISR at most that.
        ({}, 1, 1, (1, "1")),
        ({}, 2, 2, (2, "2")),
        ({}, 5, 3, (3, "2")),
        # Set: as set, whatever is live (creation then waits for the brokers, as in Kafka).
        ({"offsets.topic.replication.factor": "3",
          "transaction.state.log.replication.factor": "2",
          "transaction.state.log.min.isr": "3"}, 1, 3, (2, "3")),
        ({"transaction.state.log.min.isr": "1"}, 5, 3, (3, "1")),
    ],
)
def test_internal_topic_replication(
    tmp_path: Path, settings: dict[str, str], live: int, offsets: int, txn: tuple[int, str]
) -> None:
    config = local_config(tmp_path, **settings)
    assert internal_topic_replication(config, "__consumer_offsets", live) == (offsets, {})
    factor, configs = internal_topic_replication(config, "__transaction_state", live)
    assert (factor, configs["min.insync.replicas"]) == txn
