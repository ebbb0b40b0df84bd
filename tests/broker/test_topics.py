"""TopicManager rules and crash reconciliation, without a network."""

from __future__ import annotations

from pathlib import Path

import pytest

from odradek.broker.topics import TopicManager, validate_topic_name
from odradek.clock import ManualClock
from odradek.config import BrokerConfig
from odradek.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from odradek.metadata.store import MetadataStore
from odradek.storage.log_manager import LogManager


def _manager(data: Path) -> tuple[TopicManager, MetadataStore, LogManager]:
    config = BrokerConfig().with_overrides(listen="127.0.0.1:0", data_dir=str(data))
    store = MetadataStore(data, config.node_id)
    logs = LogManager(data, ManualClock(1_700_000_000_000), config.default_log_config())
    logs.startup()
    return TopicManager(config, store, logs), store, logs


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "bad name", "ü", "a/b"])
def test_illegal_topic_names(name: str) -> None:
    with pytest.raises(InvalidTopicError):
        validate_topic_name(name)


def test_create_rules(tmp_path: Path) -> None:
    topics, _, _ = _manager(tmp_path)
    meta = topics.create("orders", num_partitions=3, configs={"retention.ms": "1000"})
    assert meta.partitions == 3
    assert topics.log("orders", 2).log_end_offset == 0
    with pytest.raises(TopicAlreadyExistsError):
        topics.create("orders")
    with pytest.raises(InvalidPartitionsError):
        topics.create("zero", num_partitions=0)
    with pytest.raises(InvalidReplicationFactorError):
        topics.create("rf3", replication_factor=3)
    with pytest.raises(InvalidConfigError):
        topics.create("badcfg", configs={"cleanup.policy": "shred"})
    with pytest.raises(InvalidReplicationFactorError):
        topics.create("assigned", assignments={0: [7]})
    validated = topics.create("dry", num_partitions=2, validate_only=True)
    assert validated.partitions == 2 and topics.topic("dry") is None
    with pytest.raises(UnknownTopicOrPartitionError):
        topics.log("orders", 3)


def test_partitions_grow_only(tmp_path: Path) -> None:
    topics, _, _ = _manager(tmp_path)
    topics.create("t", num_partitions=2)
    with pytest.raises(InvalidPartitionsError):
        topics.create_partitions("t", 1, validate_only=False)
    assert topics.create_partitions("t", 4, validate_only=False).partitions == 4
    assert topics.log("t", 3).log_end_offset == 0


def test_reconcile_after_crash_between_metadata_and_disk(tmp_path: Path) -> None:
    topics, store, logs = _manager(tmp_path)
    topics.create("kept", num_partitions=2)
    topics.create("gone", num_partitions=1)
    # A crash after the metadata changed but before the directories did:
    store.remove_topic("gone")
    logs.delete_log("kept", 1)
    logs.shutdown()
    topics, _, logs = _manager(tmp_path)
    topics.reconcile()
    assert logs.get_log("gone", 0) is None
    assert logs.get_log("kept", 1) is not None
    assert not any(p.name.startswith("gone-0") and p.is_dir() and not p.name.endswith("-delete")
                   for p in tmp_path.iterdir())
