"""Loading ``__consumer_offsets`` in orders compaction can produce, and bad records."""

from __future__ import annotations

from odradek.coordinator.group.consumer import ConsumerGroup
from odradek.coordinator.group.context import GroupConfig
from odradek.coordinator.group.coordinator import GroupCoordinator, StoredRecord
from odradek.coordinator.group.records import (
    ConsumerGroupMetadataKey,
    ConsumerGroupMetadataValue,
    OffsetCommitKey,
    OffsetCommitValue,
    encode_key,
    encode_value,
)
from odradek.storage.clock import ManualClock

CONFIG = GroupConfig(offsets_partitions=1)


def stored(key: object, value: object) -> StoredRecord:
    return StoredRecord(encode_key(key), encode_value(value))  # type: ignore[arg-type]


def coordinator() -> GroupCoordinator:
    return GroupCoordinator(CONFIG, ManualClock(), write=lambda p, r, t: None, topics=dict)


def test_offsets_before_the_consumer_group_records_load() -> None:
    """An admin commit made before a KIP-848 group existed can end up first after compaction:
    the "simple" group it implies gives way to the consumer group, as in Kafka."""
    c = coordinator()
    c.load(
        0,
        [
            stored(OffsetCommitKey("g", "t", 0), OffsetCommitValue(5, -1, "", 0)),
            stored(ConsumerGroupMetadataKey("g"), ConsumerGroupMetadataValue(3)),
        ],
    )
    c.loaded()
    assert isinstance(c.groups["g"], ConsumerGroup)
    assert c.offsets["g"][("t", 0)].offset == 5


def test_a_record_that_cannot_be_replayed_is_skipped() -> None:
    c = coordinator()
    applied = c.load(
        0,
        [
            StoredRecord(b"\x00\x01garbage", b"\x00"),
            stored(OffsetCommitKey("g", "t", 0), OffsetCommitValue(7, -1, "", 0)),
        ],
    )
    assert applied == 1
    assert c.offsets["g"][("t", 0)].offset == 7
