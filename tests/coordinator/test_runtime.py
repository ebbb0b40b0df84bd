"""The coordinator runtime: records are written, then replayed; a failed write replays nothing;
continuations, follow-ups and timers; partition states. Driven with a minimal key-value
coordinator over an in-memory log."""

from __future__ import annotations

from typing import Any

import pytest
from coordinator_log import MemoryLog, Replications

from odradek.coordinator.runtime import (
    CoordinatorResult,
    CoordinatorRuntime,
    PartitionState,
    StoredMarker,
    StoredRecord,
)
from odradek.coordinator.timer import Timer
from odradek.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)

Record = tuple[int, str, str | None]  # (partition, key, value): a key-value store per partition


class KeyValues:
    """A coordinator whose state is a dict per partition, changed only by replay."""

    def __init__(self) -> None:
        self.timer = Timer()
        self.state: dict[int, dict[str, str]] = {}
        self.replayed: list[tuple[Record, int, int | None]] = []
        self.markers: list[tuple[int, int, bool]] = []
        self.loaded: list[int] = []
        self.unloaded: list[int] = []
        self.durability: list[tuple[str, int, int]] = []

    def partition_of(self, record: Record) -> int:
        return record[0]

    def encode(self, record: Record) -> tuple[bytes, bytes | None]:
        value = record[2].encode() if record[2] is not None else None
        return f"{record[0]}:{record[1]}".encode(), value

    def decode(self, key: bytes, value: bytes | None) -> Record | None:
        partition, name = key.decode().split(":")
        if name == "skip":
            return None
        return int(partition), name, value.decode() if value is not None else None

    def replay(
        self, record: Record, *, partition: int, offset: int, producer_id: int | None
    ) -> None:
        assert partition == record[0]
        self.replayed.append((record, offset, producer_id))
        values = self.state.setdefault(partition, {})
        if record[2] is None:
            values.pop(record[1], None)
        else:
            values[record[1]] = record[2]

    def replay_marker(
        self, partition: int, producer_id: int, commit: bool, offset: int = -1
    ) -> None:
        self.markers.append((partition, producer_id, commit))

    def on_pending(self, partition: int, offset: int) -> None:
        self.durability.append(("pending", partition, offset))

    def on_durable(self, partition: int, end_offset: int) -> None:
        self.durability.append(("durable", partition, end_offset))

    def on_loaded(self, partition: int) -> None:
        self.loaded.append(partition)

    def on_unloaded(self, partition: int) -> None:
        self.unloaded.append(partition)
        self.state.pop(partition, None)

    # -- operations ---------------------------------------------------------------------------

    def put(self, partition: int, key: str, value: str | None, **kw: Any) -> CoordinatorResult[Any]:
        return CoordinatorResult([(partition, key, value)], f"put {key}", **kw)


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog()


@pytest.fixture
def kv() -> KeyValues:
    return KeyValues()


@pytest.fixture
def rt(kv: KeyValues, log: MemoryLog) -> CoordinatorRuntime:
    return log.runtime(kv, 3, "__kv")


def test_records_are_written_then_replayed_with_their_offsets(
    kv: KeyValues, log: MemoryLog, rt: CoordinatorRuntime
) -> None:
    seen: list[dict[str, str]] = []
    log.before_write = lambda p: seen.append(dict(kv.state.get(p, {})))
    assert rt.write(1, lambda: kv.put(1, "a", "1")) == "put a"
    assert rt.write(1, lambda: kv.put(1, "a", "2", producer=(7, 0))) == "put a"
    assert seen == [{}, {"a": "1"}]  # each write happened before its replay
    assert kv.state == {1: {"a": "2"}}
    assert [(r, o, pid) for r, o, pid in kv.replayed] == [
        ((1, "a", "1"), 0, None), ((1, "a", "2"), 1, 7)
    ]
    assert [(e.partition, e.offset, e.producer) for e in log.entries] == [
        (1, 0, None), (1, 1, (7, 0))
    ]


def test_a_failed_write_replays_nothing_and_fails_the_operation(
    kv: KeyValues, log: MemoryLog, rt: CoordinatorRuntime
) -> None:
    outcomes: list[Exception | None] = []
    log.fail = CoordinatorNotAvailableError("not writable")
    with pytest.raises(CoordinatorNotAvailableError):
        rt.write(0, lambda: kv.put(0, "a", "1", on_written=outcomes.append))
    assert kv.state == {} and log.entries == []
    assert len(outcomes) == 1 and isinstance(outcomes[0], CoordinatorNotAvailableError)
    log.fail = None
    rt.write(0, lambda: kv.put(0, "a", "1", on_written=outcomes.append))
    assert outcomes[1] is None and kv.state == {0: {"a": "1"}}


def test_snapshot_records_are_written_but_not_replayed(
    kv: KeyValues, log: MemoryLog, rt: CoordinatorRuntime
) -> None:
    rt.write(0, lambda: kv.put(0, "a", "1", replay=False))
    assert len(log.entries) == 1 and kv.state == {}


def test_records_of_several_partitions_go_in_one_batch_each(
    kv: KeyValues, log: MemoryLog, rt: CoordinatorRuntime
) -> None:
    rt.execute(CoordinatorResult([(0, "a", "1"), (2, "b", "2"), (0, "c", "3")], None))
    assert log.writes == 2
    assert [(e.partition, e.offset, e.key) for e in log.entries] == [
        (0, 0, b"0:a"), (0, 1, b"0:c"), (2, 0, b"2:b")
    ]


def test_a_continuation_answers_and_its_failure_is_the_operations(
    kv: KeyValues, log: MemoryLog, rt: CoordinatorRuntime
) -> None:
    def second() -> CoordinatorResult[Any]:
        assert kv.state[0] == {"a": "1"}  # it sees the first records replayed
        return kv.put(0, "b", "2")

    assert rt.write(0, lambda: kv.put(0, "a", "1", then=second)) == "put b"
    assert kv.state == {0: {"a": "1", "b": "2"}}

    def failing() -> CoordinatorResult[Any]:
        log.fail = CoordinatorNotAvailableError("gone")
        return kv.put(0, "d", "4")

    with pytest.raises(CoordinatorNotAvailableError):
        rt.write(0, lambda: kv.put(0, "c", "3", then=failing))
    assert kv.state == {0: {"a": "1", "b": "2", "c": "3"}}  # the first part stays


def test_follow_ups_run_after_and_their_failure_is_only_logged(
    kv: KeyValues, log: MemoryLog, rt: CoordinatorRuntime
) -> None:
    order: list[str] = []

    def follow_up() -> CoordinatorResult[Any]:
        order.append("follow-up")
        log.fail = CoordinatorNotAvailableError("gone")
        return kv.put(0, "b", "2")

    answer = rt.write(0, lambda: kv.put(
        0, "a", "1", after=(follow_up,), on_written=lambda e: order.append("written")
    ))
    assert answer == "put a" and order == ["written", "follow-up"]
    assert kv.state == {0: {"a": "1"}}


def test_partition_states(kv: KeyValues, log: MemoryLog) -> None:
    rt = CoordinatorRuntime(kv, log.write, topic="__kv")
    ran: list[int] = []

    def op() -> CoordinatorResult[Any]:
        ran.append(1)
        return kv.put(0, "a", "1")

    with pytest.raises(NotCoordinatorError):
        rt.write(0, op)
    rt.begin_load(0)
    with pytest.raises(CoordinatorLoadInProgressError):
        rt.write(0, op)
    with pytest.raises(CoordinatorLoadInProgressError):
        rt.execute(kv.put(0, "x", "1"))  # a timer's write to a loading partition too
    assert ran == [] and log.entries == []
    applied = rt.replay_stored(0, [
        StoredRecord(b"0:a", b"0"),
        StoredRecord(b"0:skip", b"?"),
        StoredRecord(b"garbage", b"?"),
        StoredMarker(9, True),
        StoredRecord(None, None),
    ])
    assert applied == 1 and kv.markers == [(0, 9, True)]
    rt.complete_load(0)
    assert rt.state(0) is PartitionState.ACTIVE and kv.loaded == [0]
    rt.write(0, op)
    assert kv.state == {0: {"a": "1"}}
    rt.replay_marker(0, 3, False)
    rt.begin_load(1)
    rt.replay_marker(1, 4, True)  # a loading partition reads its markers from its log
    assert kv.markers == [(0, 9, True), (0, 3, False)]
    assert rt.is_loading() and rt.partitions(PartitionState.LOADING) == [1]
    rt.begin_load(0)  # loading again drops what was there
    assert kv.unloaded == [0] and 0 not in kv.state
    rt.unload(1)
    assert rt.state(1) is None and kv.unloaded == [0, 1]


def test_timers_are_operations(kv: KeyValues, log: MemoryLog, rt: CoordinatorRuntime) -> None:
    kv.timer.schedule("one", 10, lambda: kv.put(0, "t", "1"))
    kv.timer.schedule("many", 20, lambda: [kv.put(1, "u", "1"), kv.put(2, "v", "1")])
    kv.timer.schedule("none", 20, lambda: None)
    rt.begin_load(2)  # the last write of "many" is refused: logged, the others stand
    assert rt.poll(5) == 0
    assert rt.poll(20) == 3
    assert kv.state == {0: {"t": "1"}, 1: {"u": "1"}}


def test_effects_and_follow_ups_wait_until_the_write_is_durable(
    kv: KeyValues, log: MemoryLog
) -> None:
    """Kafka's runtime applies a write at once but completes it (its response, what follows)
    only once the high watermark covers it."""
    repl = Replications()
    rt = CoordinatorRuntime(kv, log.write, topic="__kv", replicated=repl)
    rt.load(0, ())
    order: list[str] = []

    def follow_up() -> CoordinatorResult[Any]:
        order.append("follow-up")
        return kv.put(0, "b", "2", on_written=lambda e: order.append(f"b written {e}"))

    answer = rt.write(0, lambda: kv.put(
        0, "a", "1", after=(follow_up,), on_written=lambda e: order.append(f"a written {e}")
    ))
    assert answer == "put a" and kv.state == {0: {"a": "1"}}  # applied at once
    assert order == []  # ...but not complete: nothing follows yet
    repl.advance(0, 1)
    assert order == ["a written None", "follow-up"]
    assert kv.state == {0: {"a": "1", "b": "2"}}
    repl.advance(0, 2)
    assert order[-1] == "b written None"
    # A timer's write waits the same way.
    kv.timer.schedule("t", 10, lambda: kv.put(0, "c", "3",
                                              on_written=lambda e: order.append("timer")))
    rt.poll(10)
    assert order[-1] != "timer"
    repl.advance(0, 3)
    assert order[-1] == "timer"


def test_a_write_that_fails_to_replicate_reverts_the_partition(
    kv: KeyValues, log: MemoryLog
) -> None:
    repl = Replications()
    reverted: list[int] = []
    rt = CoordinatorRuntime(kv, log.write, topic="__kv", replicated=repl,
                            on_failed=reverted.append)
    rt.load(0, ())
    rt.load(1, ())
    outcomes: list[Exception | None] = []
    followed: list[int] = []
    rt.write(0, lambda: kv.put(0, "a", "1", on_written=outcomes.append,
                               after=(lambda: followed.append(1),)))
    rt.write(1, lambda: kv.put(1, "x", "1"))
    repl.fail(0, CoordinatorNotAvailableError("not enough replicas"))
    assert len(outcomes) == 1 and isinstance(outcomes[0], CoordinatorNotAvailableError)
    assert followed == []  # what follows a failed write never runs
    assert reverted == [0]  # the host rebuilds partition 0 from its durable log
    # Without a host the partition is dropped (NOT_COORDINATOR): its state ran ahead.
    bare = CoordinatorRuntime(kv, log.write, topic="__kv", replicated=repl)
    bare.load(2, ())
    bare.write(2, lambda: kv.put(2, "k", "v"))
    repl.fail(2, CoordinatorNotAvailableError("not enough replicas"))
    with pytest.raises(NotCoordinatorError):
        bare.write(2, lambda: kv.put(2, "k", "w"))
    # A snapshot write (not replayed) reverts nothing: its effect waited in on_written.
    repl.advance(1, 1)
    rt.write(1, lambda: kv.put(1, "s", "1", replay=False))
    repl.fail(1, CoordinatorNotAvailableError("not enough replicas"))
    assert reverted == [0]


def test_a_continued_writes_replication_is_watched_too(kv: KeyValues, log: MemoryLog) -> None:
    """A write followed by a ``then`` continuation, with nothing ``after`` it (a timer's, say:
    a timed-out transaction's abort): its replication was handed out and never looked at, so
    when it failed (the ISR shrank) the failure was an exception nobody retrieved and the
    state it replayed stayed (found by the simulation, seed 1006 of the first transactional
    workload)."""
    repl = Replications()
    reverted: list[int] = []
    rt = CoordinatorRuntime(kv, log.write, topic="__kv", replicated=repl,
                            on_failed=reverted.append)
    rt.load(0, ())
    rt.load(1, ())
    assert rt.write(0, lambda: kv.put(0, "a", "1", then=lambda: kv.put(1, "b", "2"))) == "put b"
    # Both writes are watched: the first link's and the last's (each by the shard's durability
    # too).
    assert sorted({(p, o) for p, o, _ in repl.waiting}) == [(0, 1), (1, 1)]
    repl.advance(1, 1)
    repl.fail(0, CoordinatorNotAvailableError("not enough replicas"))
    assert reverted == [0]


def test_the_shard_hears_what_is_durable_before_replaying_it(
    kv: KeyValues, log: MemoryLog
) -> None:
    """Durable reads: a write durable when written is announced durable before its replay; one
    that is not is announced pending before its replay and durable once replicated; a marker
    and a load's records above the high watermark likewise, watched again if their
    replication fails without the leadership moving."""
    seen: list[object] = []
    kv.durability = seen  # type: ignore[assignment]
    original = kv.replay

    def replay(record: Record, **kw: Any) -> None:
        seen.append(("replay", kw["partition"], kw["offset"]))
        original(record, **kw)

    kv.replay = replay  # type: ignore[method-assign]
    repl = Replications()
    rt = CoordinatorRuntime(kv, log.write, topic="__kv", replicated=repl)
    rt.load(0, ())
    repl.high_watermark[0] = 0
    rt.write(0, lambda: kv.put(0, "a", "1"))
    assert seen == [("pending", 0, 0), ("replay", 0, 0)]
    repl.advance(0, 1)
    assert seen[-1] == ("durable", 0, 1)
    seen.clear()
    repl.high_watermark[0] = 5  # durable when written
    rt.write(0, lambda: kv.put(0, "b", "1"))
    assert seen == [("durable", 0, 2), ("replay", 0, 1)]
    seen.clear()
    rt.replay_marker(0, 7, True, offset=4)
    assert seen == [("durable", 0, 5)]
    seen.clear()
    rt.replay_marker(0, 7, True, offset=9)
    assert seen == [("pending", 0, 9)]
    repl.fail(0, CoordinatorNotAvailableError("not enough replicas"))  # watched again
    repl.fail(0, NotCoordinatorError("moved"))  # not watched again
    repl.advance(0, 10)
    assert seen == [("pending", 0, 9), ("pending", 0, 10)]
    seen.clear()
    rt.begin_load(1)
    rt.pending_from(1, 0)
    rt.complete_load(1, 3)
    assert seen == [("pending", 1, 0), ("pending", 1, 3)]
    repl.advance(1, 3)
    assert seen[-1] == ("durable", 1, 3)
