"""Loading ``__consumer_offsets`` in orders compaction can produce, and bad records; the
states of a partition while it loads and after it is unloaded."""

from __future__ import annotations

import pytest
from coordinator_log import MemoryLog

from odradek.clock import ManualClock
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
from odradek.coordinator.runtime import CoordinatorRuntime, PartitionState
from odradek.errors import CoordinatorLoadInProgressError, NotCoordinatorError
from odradek.topic_names import OFFSETS_TOPIC

CONFIG = GroupConfig(offsets_partitions=1)


def stored(key: object, value: object) -> StoredRecord:
    return StoredRecord(encode_key(key), encode_value(value))  # type: ignore[arg-type]


def runtime(config: GroupConfig = CONFIG) -> tuple[GroupCoordinator, CoordinatorRuntime]:
    c = GroupCoordinator(config, ManualClock(), topics=dict)
    return c, CoordinatorRuntime(c, MemoryLog().write, topic=OFFSETS_TOPIC)


def test_offsets_before_the_consumer_group_records_load() -> None:
    """An admin commit made before a KIP-848 group existed can end up first after compaction:
    the "simple" group it implies gives way to the consumer group, as in Kafka."""
    c, rt = runtime()
    rt.load(
        0,
        [
            stored(OffsetCommitKey("g", "t", 0), OffsetCommitValue(5, -1, "", 0)),
            stored(ConsumerGroupMetadataKey("g"), ConsumerGroupMetadataValue(3)),
        ],
    )
    assert isinstance(c.groups["g"], ConsumerGroup)
    assert c.offsets["g"][("t", 0)].offset == 5


def test_a_record_that_cannot_be_replayed_is_skipped() -> None:
    c, rt = runtime()
    applied = rt.load(
        0,
        [
            StoredRecord(b"\x00\x01garbage", b"\x00"),
            stored(OffsetCommitKey("g", "t", 0), OffsetCommitValue(7, -1, "", 0)),
        ],
    )
    assert applied == 1
    assert c.offsets["g"][("t", 0)].offset == 7


def _commit(c: GroupCoordinator, group: str, offset: int):  # type: ignore[no-untyped-def]
    return lambda: c.commit_offsets(
        group, member_id="", generation_or_epoch=-1, instance_id=None,
        offsets=[("t", 0, offset, -1, None)], api_version=8,
    )


def test_requests_wait_for_their_partition_to_load_and_are_refused_after_unload() -> None:
    config = GroupConfig(offsets_partitions=2)
    c, rt = runtime(config)
    g0 = next(g for g in (f"g{i}" for i in range(50)) if c.partition_for(g) == 0)
    g1 = next(g for g in (f"g{i}" for i in range(50)) if c.partition_for(g) == 1)
    with pytest.raises(NotCoordinatorError):
        rt.write(0, _commit(c, g0, 1))  # never loaded: not this coordinator's
    rt.load(0, ())
    rt.begin_load(1)
    assert rt.state(1) is PartitionState.LOADING
    with pytest.raises(CoordinatorLoadInProgressError):
        rt.write(1, _commit(c, g1, 1))
    with pytest.raises(CoordinatorLoadInProgressError):
        rt.run(1, lambda: c.fetch_offsets(g1, None))
    rt.write(0, _commit(c, g0, 4))  # the loaded partition serves meanwhile
    rt.replay_stored(1, [stored(OffsetCommitKey(g1, "t", 0), OffsetCommitValue(9, -1, "", 0))])
    rt.complete_load(1)
    assert rt.run(1, lambda: c.fetch_offsets(g1, None))[0].offset == 9
    rt.unload(1)
    assert rt.state(1) is None
    assert g1 not in c.groups and g1 not in c.offsets  # its state is gone with it
    assert c.offsets[g0][("t", 0)].offset == 4
    with pytest.raises(NotCoordinatorError):
        rt.run(1, lambda: c.fetch_offsets(g1, None))


def test_a_load_that_fails_leaves_the_partition_failed_and_empty() -> None:
    c, rt = runtime()

    def broken():  # type: ignore[no-untyped-def]
        yield stored(OffsetCommitKey("g", "t", 0), OffsetCommitValue(1, -1, "", 0))
        raise OSError("disk gone")

    with pytest.raises(OSError):
        rt.load(0, broken())
    assert rt.state(0) is PartitionState.FAILED
    assert c.offsets == {} and c.groups == {}
    with pytest.raises(NotCoordinatorError):
        rt.run(0, lambda: c.fetch_offsets("g", None))
