"""OffsetFetch answers as of the durable log: a commit (or a tombstone, or a transaction's
marker) the coordinator has written and replayed is not shown until the high watermark covers
it, as Kafka's runtime reads at its last committed offset. Driven over an in-memory
``__consumer_offsets`` whose high watermark the test moves."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from coordinator_log import MemoryLog, Replications

from odradek.clock import ManualClock
from odradek.coordinator.group.context import GroupConfig
from odradek.coordinator.group.coordinator import CommittedOffset, GroupCoordinator
from odradek.coordinator.runtime import CoordinatorResult, CoordinatorRuntime
from odradek.errors import CoordinatorNotAvailableError, ErrorCode, NotCoordinatorError
from odradek.topic_names import OFFSETS_TOPIC

CONFIG = GroupConfig(offsets_partitions=1)


class Node:
    """A group coordinator whose writes are durable once :attr:`repl` says so."""

    def __init__(self, log: MemoryLog | None = None) -> None:
        self.log = log if log is not None else MemoryLog()
        self.repl = Replications()
        self.c = GroupCoordinator(CONFIG, ManualClock(), topics=dict)
        self.reverted: list[int] = []
        self.rt = CoordinatorRuntime(
            self.c, self.log.write, topic=OFFSETS_TOPIC, replicated=self.repl,
            on_failed=self.reverted.append,
        )

    def start(self, high_watermark: int = 0) -> None:
        """Load partition 0 from the log as the broker does: what is at or above
        ``high_watermark`` is not durable yet."""
        self.repl.high_watermark[0] = high_watermark
        self.rt.begin_load(0)
        self.rt.pending_from(0, high_watermark)
        self.rt.replay_stored(0, self.log.stored(0))
        self.rt.complete_load(0, self.log.end(0))

    def commit(self, group: str, *offsets: tuple[int, int]) -> list[object]:
        written: list[object] = []
        self.rt.write(0, lambda: self._with(written, self.c.commit_offsets(
            group, member_id="", generation_or_epoch=-1, instance_id=None,
            offsets=[("t", p, o, -1, None) for p, o in offsets], api_version=8,
        )))
        return written

    @staticmethod
    def _with(written: list[object], result: CoordinatorResult[Any]) -> CoordinatorResult[Any]:
        return dataclasses.replace(result, on_written=written.append)

    def fetch(self, group: str = "g", *, stable: bool = False, partitions: int = 1,
              every: bool = False) -> list[CommittedOffset]:
        topics = None if every else [("t", list(range(partitions)))]
        return self.rt.run(0, lambda: self.c.fetch_offsets(group, topics, require_stable=stable))

    def offsets(self, group: str = "g", *, stable: bool = False) -> list[tuple[int, ErrorCode]]:
        return [(o.offset, o.error) for o in self.fetch(group, stable=stable, partitions=2)]


def test_a_commit_is_read_once_durable() -> None:
    node = Node()
    node.start()
    node.commit("g", (0, 5))
    assert node.offsets() == [(-1, ErrorCode.none), (-1, ErrorCode.none)]  # not durable yet
    node.repl.advance(0, 1)
    assert node.offsets() == [(5, ErrorCode.none), (-1, ErrorCode.none)]
    written = node.commit("g", (0, 7), (1, 3))
    assert node.c.offsets["g"][("t", 0)].offset == 7  # applied: what follows validates on it
    assert node.offsets() == [(5, ErrorCode.none), (-1, ErrorCode.none)]
    assert node.fetch(every=True) == [CommittedOffset("t", 0, 5)]
    node.commit("g", (0, 9))  # a second write in flight keeps the durable value
    node.repl.advance(0, 2)  # half the batch (offsets 1 and 2) is not a durable write
    assert written == [] and node.offsets()[0] == (5, ErrorCode.none)
    node.repl.advance(0, 3)
    assert written == [None]
    assert node.offsets() == [(7, ErrorCode.none), (3, ErrorCode.none)]
    node.repl.advance(0, 4)
    assert node.offsets() == [(9, ErrorCode.none), (3, ErrorCode.none)]
    assert node.fetch(every=True) == [CommittedOffset("t", 0, 9), CommittedOffset("t", 1, 3)]
    assert node.c._undurable == {}  # nothing kept once everything is durable


def test_a_deletion_is_read_once_durable() -> None:
    node = Node()
    node.start()
    node.commit("g", (0, 5))
    node.repl.advance(0, 1)
    node.rt.write(0, lambda: node.c.delete_offsets("g", [("t", [0])]))
    assert "g" not in node.c.offsets
    assert node.fetch(every=True) == [CommittedOffset("t", 0, 5)]
    node.repl.advance(0, 2)
    assert node.fetch(every=True) == []
    assert node.offsets() == [(-1, ErrorCode.none), (-1, ErrorCode.none)]


def test_a_commit_that_fails_to_replicate_is_never_read() -> None:
    node = Node()
    node.start()
    node.commit("g", (0, 5))
    node.repl.advance(0, 1)
    written = node.commit("g", (0, 6))
    assert node.offsets()[0] == (5, ErrorCode.none)
    node.repl.fail(0, CoordinatorNotAvailableError("not enough replicas"))
    assert isinstance(written[0], CoordinatorNotAvailableError)
    assert node.reverted == [0]  # the broker reloads what is durable
    assert node.offsets()[0] == (5, ErrorCode.none)  # meanwhile: still the durable offset
    # Without a host the partition is dropped: nothing is answered from it.
    bare = Node()
    bare.rt = CoordinatorRuntime(bare.c, bare.log.write, topic=OFFSETS_TOPIC,
                                 replicated=bare.repl)
    bare.start()
    bare.commit("g", (0, 6))
    bare.repl.fail(0, CoordinatorNotAvailableError("not enough replicas"))
    with pytest.raises(NotCoordinatorError):
        bare.fetch()


def test_what_a_load_replays_as_pending_is_read_once_durable() -> None:
    """A load replays the log to its end; what the host names pending (appended since its
    leadership began: a revert's reload, a marker written while it loaded) is kept from reads
    until the high watermark passes it, and then watched again if its replication fails."""
    first = Node()
    first.start()
    first.commit("g", (0, 5))
    first.commit("g", (0, 8), (1, 2))
    node = Node(first.log)
    node.start(high_watermark=1)
    assert node.c.offsets["g"][("t", 0)].offset == 8
    assert node.offsets() == [(5, ErrorCode.none), (-1, ErrorCode.none)]
    node.repl.advance(0, 2)  # half of the second commit's batch: not yet
    assert node.offsets() == [(5, ErrorCode.none), (-1, ErrorCode.none)]
    # The ISR shrank below min.insync.replicas: the records stay in the log (nothing to
    # revert) and become durable once it grows back.
    node.repl.fail(0, CoordinatorNotAvailableError("not enough replicas"))
    assert node.reverted == [] and node.offsets()[0] == (5, ErrorCode.none)
    node.repl.advance(0, 3)
    assert node.offsets() == [(8, ErrorCode.none), (2, ErrorCode.none)]
    # One that loads with everything durable keeps nothing back.
    again = Node(first.log)
    again.start(high_watermark=3)
    assert again.offsets() == [(8, ErrorCode.none), (2, ErrorCode.none)]
    assert again.c._undurable == {}


def _txn_commit(node: Node, pid: int, offset: int) -> None:
    node.rt.write(0, lambda: node.c.txn_commit_offsets(
        "g", producer_id=pid, producer_epoch=0, member_id="", generation_id=-1,
        instance_id=None, offsets=[("t", 0, offset, -1, "")],
    ))


def test_a_transactions_offsets_are_read_once_its_marker_is_durable() -> None:
    """KIP-447: while the transaction's offset is pending, require_stable answers
    UNSTABLE_OFFSET_COMMIT; the COMMIT marker makes it committed for reads once it is
    durable (until then the offset is still pending as of the durable log)."""
    node = Node()
    node.start()
    node.commit("g", (0, 5))
    node.repl.advance(0, 1)
    _txn_commit(node, 7, 10)
    # Not durable: as of the durable log nothing is pending.
    assert node.offsets(stable=True)[0] == (5, ErrorCode.none)
    node.repl.advance(0, 2)
    assert node.offsets(stable=True)[0] == (-1, ErrorCode.unstable_offset_commit)
    assert node.offsets()[0] == (5, ErrorCode.none)
    offset = node.log.marker(0, 7, True)
    node.rt.replay_marker(0, 7, True, offset)
    assert node.c.offsets["g"][("t", 0)].offset == 10  # applied
    assert node.offsets(stable=True)[0] == (-1, ErrorCode.unstable_offset_commit)
    assert node.offsets()[0] == (5, ErrorCode.none)
    node.repl.advance(0, 3)
    assert node.offsets(stable=True)[0] == (10, ErrorCode.none)
    # An ABORT marker not durable yet: still pending as of the durable log.
    _txn_commit(node, 8, 20)
    node.repl.advance(0, 4)
    offset = node.log.marker(0, 8, False)
    node.rt.replay_marker(0, 8, False, offset)
    assert not node.c.has_pending_offsets("g", "t", 0)
    assert node.offsets(stable=True)[0] == (-1, ErrorCode.unstable_offset_commit)
    node.repl.advance(0, 5)
    assert node.offsets(stable=True)[0] == (10, ErrorCode.none)
    # A reload reads the markers at their offsets: the same answers.
    loaded = Node(node.log)
    loaded.start(high_watermark=2)
    assert loaded.offsets(stable=True)[0] == (-1, ErrorCode.unstable_offset_commit)
    loaded.repl.advance(0, 5)
    assert loaded.offsets(stable=True)[0] == (10, ErrorCode.none)


def test_with_one_replica_nothing_is_kept() -> None:
    """Writes durable when written (one replica, or no replication): the shard hears so before
    each replay and keeps no view."""
    c = GroupCoordinator(CONFIG, ManualClock(), topics=dict)
    log = MemoryLog()
    rt = log.runtime(c, 1, OFFSETS_TOPIC)
    rt.write(0, lambda: c.commit_offsets(
        "g", member_id="", generation_or_epoch=-1, instance_id=None,
        offsets=[("t", 0, 4, -1, None)], api_version=8,
    ))
    assert c.fetch_offsets("g", None) == [CommittedOffset("t", 0, 4)]
    assert c._undurable == {}
