"""Offsets committed inside transactions: pending until the marker, then committed or dropped,
live and after a reload."""

from __future__ import annotations

import pytest
from coordinator_log import MemoryLog

from odradek.clock import ManualClock
from odradek.coordinator.group.context import GroupConfig
from odradek.coordinator.group.coordinator import GroupCoordinator
from odradek.errors import CoordinatorNotAvailableError, ErrorCode
from odradek.topic_names import OFFSETS_TOPIC

CONFIG = GroupConfig(offsets_partitions=3, initial_rebalance_delay_ms=0)


class Node:
    """A group coordinator and its runtime over an in-memory ``__consumer_offsets``."""

    def __init__(self, log: MemoryLog | None = None, clock: ManualClock | None = None) -> None:
        self.log = log if log is not None else MemoryLog()
        self.clock = clock if clock is not None else ManualClock()
        self.c = GroupCoordinator(CONFIG, self.clock, topics=dict)
        self.runtime = self.log.runtime(
            self.c, CONFIG.offsets_partitions, OFFSETS_TOPIC, load=log is not None
        )

    def reload(self) -> Node:
        return Node(self.log, self.clock)

    def commit(self, group: str, *offsets: tuple[int, int]) -> None:
        self.runtime.write(self.c.partition_for(group), lambda: self.c.commit_offsets(
            group, member_id="", generation_or_epoch=-1, instance_id=None,
            offsets=[("t", p, o, -1, None) for p, o in offsets], api_version=8,
        ))

    def txn_commit(self, group: str, pid: int, offset: int) -> None:
        results = self.runtime.write(self.c.partition_for(group), lambda: self.c.txn_commit_offsets(
            group, producer_id=pid, producer_epoch=0, member_id="", generation_id=-1,
            instance_id=None, offsets=[("t", 0, offset, -1, "meta")],
        ))
        assert results == [("t", 0, ErrorCode.none)]

    def marker(self, group: str, pid: int, commit: bool) -> None:
        """The transaction coordinator writes a marker into the group's partition."""
        partition = self.c.partition_for(group)
        self.log.marker(partition, pid, commit)
        self.runtime.replay_marker(partition, pid, commit)

    def offset(self, group: str, *, stable: bool = False) -> tuple[int, ErrorCode]:
        (o,) = self.c.fetch_offsets(group, [("t", [0])], require_stable=stable)
        return o.offset, o.error


def test_pending_until_commit_marker() -> None:
    node = Node()
    node.txn_commit("g", 7, 10)
    assert node.offset("g") == (-1, ErrorCode.none)
    assert node.offset("g", stable=True) == (-1, ErrorCode.unstable_offset_commit)
    node.marker("g", 7, commit=True)
    assert node.offset("g", stable=True) == (10, ErrorCode.none)
    assert node.reload().offset("g", stable=True) == (10, ErrorCode.none)


def test_abort_marker_drops_pending_offsets() -> None:
    node = Node()
    node.commit("g", (0, 3))
    node.txn_commit("g", 7, 10)
    node.marker("g", 7, commit=False)
    assert node.offset("g", stable=True) == (3, ErrorCode.none)
    assert node.reload().offset("g", stable=True) == (3, ErrorCode.none)


def test_open_transaction_stays_pending_after_reload() -> None:
    node = Node()
    node.txn_commit("g", 7, 10)
    fresh = node.reload()
    assert fresh.offset("g", stable=True) == (-1, ErrorCode.unstable_offset_commit)
    fresh.marker("g", 7, commit=True)
    assert fresh.offset("g") == (10, ErrorCode.none)


def test_marker_completes_only_groups_of_its_partition() -> None:
    node = Node()
    groups = [f"g{i}" for i in range(20)]
    a = groups[0]
    b = next(g for g in groups if node.c.partition_for(g) != node.c.partition_for(a))
    node.txn_commit(a, 7, 1)
    node.txn_commit(b, 7, 2)
    node.marker(a, 7, commit=True)
    assert node.offset(a) == (1, ErrorCode.none)
    assert node.offset(b, stable=True) == (-1, ErrorCode.unstable_offset_commit)
    node.marker(b, 7, commit=True)
    assert node.offset(b) == (2, ErrorCode.none)


def test_a_marker_for_a_partition_being_loaded_is_read_from_the_log() -> None:
    """While a partition loads, a marker written into it is not applied live (the partition
    has no state yet); the loader replays it in log order."""
    node = Node()
    node.txn_commit("g", 7, 10)
    fresh = Node(MemoryLog(), node.clock)
    partition = node.c.partition_for("g")
    fresh.runtime.begin_load(partition)
    node.log.marker(partition, 7, True)
    fresh.runtime.replay_marker(partition, 7, True)  # ignored: still loading
    assert not fresh.c.pending_txn_offsets
    fresh.runtime.replay_stored(partition, node.log.stored(partition))
    fresh.runtime.complete_load(partition)
    assert fresh.offset("g") == (10, ErrorCode.none)


def test_require_stable_applies_when_fetching_every_offset() -> None:
    node = Node()
    node.commit("g", (0, 3), (1, 4))
    node.txn_commit("g", 7, 10)
    every = {(o.topic, o.partition): (o.offset, o.error)
             for o in node.c.fetch_offsets("g", None, require_stable=True)}
    assert every == {("t", 0): (-1, ErrorCode.unstable_offset_commit),
                     ("t", 1): (4, ErrorCode.none)}


def test_expiry_keeps_offsets_pending_in_a_transaction() -> None:
    node = Node()
    node.commit("g", (0, 3))
    node.txn_commit("g", 7, 10)
    node.clock.advance(CONFIG.offsets_retention_ms + 1)
    for result in node.c.expire_offsets():
        node.runtime.execute(result)
    assert "g" in node.c.groups
    node.marker("g", 7, commit=True)
    assert node.offset("g") == (10, ErrorCode.none)


def test_plain_commit_after_the_transactional_one_wins_live_and_after_reload() -> None:
    """Kafka applies a transactional offset at its marker only if no later plain commit of
    the partition exists, so the result does not depend on compaction or restarts."""
    node = Node()
    node.commit("g", (0, 10))
    node.txn_commit("g", 7, 20)
    node.commit("g", (0, 30))
    node.marker("g", 7, commit=True)
    assert node.offset("g") == (30, ErrorCode.none)
    assert node.reload().offset("g") == (30, ErrorCode.none)
    node.txn_commit("g", 7, 40)  # a later transaction's offset is newer: it applies
    node.marker("g", 7, commit=True)
    assert node.offset("g") == (40, ErrorCode.none)


def test_deleted_group_does_not_come_back_when_its_transaction_commits() -> None:
    node = Node()
    node.commit("g", (1, 3))
    node.txn_commit("g", 7, 10)
    node.runtime.write(node.c.partition_for("g"), lambda: node.c.delete_group("g"))
    node.marker("g", 7, commit=True)
    assert node.offset("g") == (-1, ErrorCode.none)
    assert "g" not in node.c.groups
    assert node.reload().offset("g") == (-1, ErrorCode.none)


def test_a_failed_txn_offset_commit_leaves_nothing_pending() -> None:
    node = Node()
    node.log.fail = CoordinatorNotAvailableError("disk gone")
    with pytest.raises(CoordinatorNotAvailableError):
        node.txn_commit("g", 7, 10)
    assert node.c.pending_txn_offsets == {} and "g" not in node.c.groups
