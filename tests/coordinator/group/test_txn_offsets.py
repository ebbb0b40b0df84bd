"""Offsets committed inside transactions: pending until the marker, then committed or dropped,
live and after a reload."""

from __future__ import annotations

from collections.abc import Sequence

from odradek.coordinator.group.context import GroupConfig
from odradek.coordinator.group.coordinator import GroupCoordinator, StoredMarker, StoredRecord
from odradek.errors import ErrorCode
from odradek.storage.clock import ManualClock

CONFIG = GroupConfig(offsets_partitions=3, initial_rebalance_delay_ms=0)


class Log:
    def __init__(self) -> None:
        self.items: dict[int, list[StoredRecord | StoredMarker]] = {}

    def write(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        producer: tuple[int, int] | None,
    ) -> int:
        pid = producer[0] if producer is not None else None
        items = self.items.setdefault(partition, [])
        base = len(items)  # one log offset per item (markers take one too)
        items.extend(StoredRecord(k, v, pid, base + i) for i, (k, v) in enumerate(records))
        return base

    def marker(self, coordinator: GroupCoordinator, group: str, pid: int, commit: bool) -> None:
        partition = coordinator.partition_for(group)
        self.items.setdefault(partition, []).append(StoredMarker(pid, commit))
        coordinator.complete_transaction(pid, commit, partition)

    def reload(self) -> GroupCoordinator:
        fresh = GroupCoordinator(CONFIG, ManualClock(), write=self.write, topics=dict)
        for partition, items in self.items.items():
            fresh.load(partition, list(items))
        fresh.loaded()
        return fresh


def coordinator(log: Log) -> GroupCoordinator:
    return GroupCoordinator(CONFIG, ManualClock(), write=log.write, topics=dict)


def txn_commit(c: GroupCoordinator, group: str, pid: int, offset: int) -> None:
    results = c.txn_commit_offsets(
        group, producer_id=pid, producer_epoch=0, member_id="", generation_id=-1,
        instance_id=None, offsets=[("t", 0, offset, -1, "meta")],
    )
    assert results == [("t", 0, ErrorCode.none)]


def offset(c: GroupCoordinator, group: str, *, stable: bool = False) -> tuple[int, ErrorCode]:
    (o,) = c.fetch_offsets(group, [("t", [0])], require_stable=stable)
    return o.offset, o.error


def test_pending_until_commit_marker() -> None:
    log = Log()
    c = coordinator(log)
    txn_commit(c, "g", 7, 10)
    assert offset(c, "g") == (-1, ErrorCode.none)
    assert offset(c, "g", stable=True) == (-1, ErrorCode.unstable_offset_commit)
    log.marker(c, "g", 7, commit=True)
    assert offset(c, "g", stable=True) == (10, ErrorCode.none)
    assert offset(log.reload(), "g", stable=True) == (10, ErrorCode.none)


def test_abort_marker_drops_pending_offsets() -> None:
    log = Log()
    c = coordinator(log)
    c.commit_offsets("g", member_id="", generation_or_epoch=-1, instance_id=None,
                     offsets=[("t", 0, 3, -1, None)], api_version=8)
    txn_commit(c, "g", 7, 10)
    log.marker(c, "g", 7, commit=False)
    assert offset(c, "g", stable=True) == (3, ErrorCode.none)
    assert offset(log.reload(), "g", stable=True) == (3, ErrorCode.none)


def test_open_transaction_stays_pending_after_reload() -> None:
    log = Log()
    c = coordinator(log)
    txn_commit(c, "g", 7, 10)
    fresh = log.reload()
    assert offset(fresh, "g", stable=True) == (-1, ErrorCode.unstable_offset_commit)
    log.marker(fresh, "g", 7, commit=True)
    assert offset(fresh, "g") == (10, ErrorCode.none)


def test_marker_completes_only_groups_of_its_partition() -> None:
    log = Log()
    c = coordinator(log)
    groups = [f"g{i}" for i in range(20)]
    a = groups[0]
    b = next(g for g in groups if c.partition_for(g) != c.partition_for(a))
    txn_commit(c, a, 7, 1)
    txn_commit(c, b, 7, 2)
    log.marker(c, a, 7, commit=True)
    assert offset(c, a) == (1, ErrorCode.none)
    assert offset(c, b, stable=True) == (-1, ErrorCode.unstable_offset_commit)
    log.marker(c, b, 7, commit=True)
    assert offset(c, b) == (2, ErrorCode.none)


def test_require_stable_applies_when_fetching_every_offset() -> None:
    log = Log()
    c = coordinator(log)
    c.commit_offsets("g", member_id="", generation_or_epoch=-1, instance_id=None,
                     offsets=[("t", 0, 3, -1, None), ("t", 1, 4, -1, None)], api_version=8)
    txn_commit(c, "g", 7, 10)
    every = {(o.topic, o.partition): (o.offset, o.error)
             for o in c.fetch_offsets("g", None, require_stable=True)}
    assert every == {("t", 0): (-1, ErrorCode.unstable_offset_commit),
                     ("t", 1): (4, ErrorCode.none)}


def test_expiry_keeps_offsets_pending_in_a_transaction() -> None:
    log = Log()
    clock = ManualClock()
    c = GroupCoordinator(CONFIG, clock, write=log.write, topics=dict)
    c.commit_offsets("g", member_id="", generation_or_epoch=-1, instance_id=None,
                     offsets=[("t", 0, 3, -1, None)], api_version=8)
    txn_commit(c, "g", 7, 10)
    clock.advance(CONFIG.offsets_retention_ms + 1)
    c.expire_offsets()
    assert "g" in c.groups
    log.marker(c, "g", 7, commit=True)
    assert offset(c, "g") == (10, ErrorCode.none)


def test_plain_commit_after_the_transactional_one_wins_live_and_after_reload() -> None:
    """Kafka applies a transactional offset at its marker only if no later plain commit of
    the partition exists, so the result does not depend on compaction or restarts."""
    log = Log()
    c = coordinator(log)

    def plain(value: int) -> None:
        c.commit_offsets("g", member_id="", generation_or_epoch=-1, instance_id=None,
                         offsets=[("t", 0, value, -1, None)], api_version=8)

    plain(10)
    txn_commit(c, "g", 7, 20)
    plain(30)
    log.marker(c, "g", 7, commit=True)
    assert offset(c, "g") == (30, ErrorCode.none)
    assert offset(log.reload(), "g") == (30, ErrorCode.none)
    txn_commit(c, "g", 7, 40)  # a later transaction's offset is newer: it applies
    log.marker(c, "g", 7, commit=True)
    assert offset(c, "g") == (40, ErrorCode.none)


def test_deleted_group_does_not_come_back_when_its_transaction_commits() -> None:
    log = Log()
    c = coordinator(log)
    c.commit_offsets("g", member_id="", generation_or_epoch=-1, instance_id=None,
                     offsets=[("t", 1, 3, -1, None)], api_version=8)
    txn_commit(c, "g", 7, 10)
    assert c.delete_groups(["g"]) == [("g", ErrorCode.none)]
    log.marker(c, "g", 7, commit=True)
    assert offset(c, "g") == (-1, ErrorCode.none)
    assert "g" not in c.groups
    assert offset(log.reload(), "g") == (-1, ErrorCode.none)
