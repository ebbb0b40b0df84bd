"""The transaction coordinator's state machine, driven as the broker drives it — each request
an operation of a real CoordinatorRuntime — through a fake TxnContext: a manual clock and a
real Timer, records kept as the bytes they are stored as (and loaded from those bytes), markers
recorded, failures injectable."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odradek.clock import ManualClock
from odradek.coordinator.runtime import CoordinatorResult, CoordinatorRuntime, StoredRecord
from odradek.coordinator.timer import Timer
from odradek.coordinator.txn.context import TxnConfig
from odradek.coordinator.txn.coordinator import (
    ConcurrentTransactionsError,
    InvalidProducerIdMappingError,
    InvalidTransactionTimeoutError,
    InvalidTxnStateError,
    ProducerFencedError,
    ProducerIdAndEpoch,
    TransactionalIdNotFoundError,
    TransactionCoordinator,
    to_value,
)
from odradek.coordinator.txn.records import (
    TxnKey,
    TxnValue,
    decode,
    partition_for,
)
from odradek.coordinator.txn.state import (
    VALID_PREVIOUS,
    IllegalTransitionError,
    TransactionMetadata,
    TransactionState,
)
from odradek.errors import (
    CoordinatorNotAvailableError,
    ErrorCode,
    InvalidProducerEpochError,
    InvalidRequestError,
    KafkaError,
)

S = TransactionState
START_MS = 1_700_000_000_000
TIMEOUT = 60_000
ABORT_CHECK = 1_000
EXPIRATION = 3_600_000
EXPIRY_CHECK = 60_000
BACKOFF = 100
CONFIG = TxnConfig(
    state_log_partitions=7,
    max_timeout_ms=900_000,
    transactional_id_expiration_ms=EXPIRATION,
    abort_timed_out_interval_ms=ABORT_CHECK,
    remove_expired_interval_ms=EXPIRY_CHECK,
    marker_retry_backoff_ms=BACKOFF,
)
OFFSETS = "__consumer_offsets"
ORDERS0, ORDERS1, AUDIT0 = ("orders", 0), ("orders", 1), ("audit", 0)


class FakeContext:
    """Implements TxnContext and the writer of the coordinator's runtime. ``log`` holds every
    stored record as (partition, key bytes, value bytes); ``markers`` every marker batch
    written."""

    def __init__(self, start_ms: int = START_MS, config: TxnConfig = CONFIG) -> None:
        self.clock = ManualClock(start_ms)
        self.timer = Timer()
        self.config = config
        self.coordinator: TransactionCoordinator | None = None
        self.runtime: CoordinatorRuntime | None = None
        self.log: list[tuple[int, bytes, bytes | None]] = []
        self.markers: list[tuple[int, int, bool, tuple[tuple[str, int], ...]]] = []
        self.fail_appends = False
        #: Writes fail once the log holds this many records (None: never).
        self.fail_after: int | None = None
        self.marker_failures: dict[tuple[str, int], ErrorCode] = {}
        #: The ``state_partition`` of every write_markers call.
        self.state_partitions: list[int] = []
        self.partitions = {("orders", p) for p in range(4)} | {("audit", p) for p in range(2)}
        self.partitions |= {(OFFSETS, p) for p in range(5)}
        self._pids = itertools.count(1000)

    def now_ms(self) -> int:
        return self.clock.milliseconds()

    def write(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        producer: tuple[int, int] | None,
    ) -> int:
        if self.fail_appends or (self.fail_after is not None and len(self.log) >= self.fail_after):
            raise CoordinatorNotAvailableError("__transaction_state is not writable")
        base = len(self.log)
        self.log.extend((partition, k, v) for k, v in records)
        return base

    def allocate_producer_id(self) -> int:
        return next(self._pids)

    def write_markers(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        partitions: Sequence[tuple[str, int]],
        *,
        state_partition: int,
    ) -> dict[tuple[str, int], ErrorCode]:
        self.state_partitions.append(state_partition)
        results = {tp: self.marker_failures.get(tp, ErrorCode.none) for tp in partitions}
        written = tuple(tp for tp in partitions if results[tp] is ErrorCode.none)
        if written:
            self.markers.append((producer_id, producer_epoch, commit, written))
        return results

    def partition_exists(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self.partitions

    def offsets_partition_for(self, group_id: str) -> int:
        return partition_for(group_id, 5)

    # -- test helpers ------------------------------------------------------------------------

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        assert self.runtime is not None
        self.runtime.poll(self.now_ms())

    def states(self) -> list[TransactionState]:
        """The state of every stored value, in order."""
        out = []
        for _, k, v in self.log:
            decoded = decode(k, v)
            assert decoded is not None
            out.append(decoded[1].state if decoded[1] is not None else S.DEAD)
        return out


class Driven:
    """The coordinator as the broker drives it: a request that changes state is an operation
    of the runtime (records written, then replayed); timer-like jobs called by a test have
    their operations run the same way. Everything else reads the coordinator."""

    _WRITES = frozenset({"init_producer_id", "add_partitions", "add_offsets", "end_txn"})

    def __init__(self, coordinator: TransactionCoordinator, runtime: CoordinatorRuntime) -> None:
        self.coordinator = coordinator
        self.runtime = runtime

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.coordinator, name)
        if name not in self._WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            op = functools.partial(attr, *args, **kwargs)
            if args[0] is None:  # an idempotent producer: no transactional id, no partition
                return self.runtime.execute(op())
            return self.runtime.write(self.coordinator.partition_for(args[0]), op)

        return write

    def replay(self, key: TxnKey, value: TxnValue | None) -> None:
        self.coordinator.replay((key, value))

    def expire_transactional_ids(self) -> int:
        return self._run_all(self.coordinator.expire_transactional_ids())

    def abort_timed_out_transactions(self) -> int:
        return self._run_all(self.coordinator.abort_timed_out_transactions())

    def _run_all(self, results: list[CoordinatorResult[Any]]) -> int:
        done = 0
        for result in results:
            try:
                self.runtime.execute(result)
            except KafkaError:
                continue
            done += 1
        return done


def new_coordinator(ctx: FakeContext, *, load_from: FakeContext | None = None) -> Driven:
    coordinator = TransactionCoordinator(ctx)
    runtime = CoordinatorRuntime(coordinator, ctx.write, topic="__transaction_state")
    for partition in range(CONFIG.state_log_partitions):
        stored = (
            [StoredRecord(k, v) for p, k, v in load_from.log if p == partition]
            if load_from is not None else []
        )
        runtime.load(partition, stored)
    ctx.coordinator, ctx.runtime = coordinator, runtime
    return Driven(coordinator, runtime)


@pytest.fixture
def ctx() -> FakeContext:
    return FakeContext()


@pytest.fixture
def txn(ctx: FakeContext) -> Driven:
    return new_coordinator(ctx)


def persisted(coordinator: Driven) -> dict[str, TxnValue]:
    return {txn_id: to_value(meta) for txn_id, meta in coordinator.transactions.items()}


def reload(ctx: FakeContext) -> tuple[FakeContext, Driven]:
    """A fresh coordinator loaded from ``ctx``'s records, partition by partition."""
    fresh = FakeContext(ctx.now_ms())
    fresh.partitions = set(ctx.partitions)
    coordinator = new_coordinator(fresh, load_from=ctx)
    fresh.log = list(ctx.log)
    return fresh, coordinator


def begin(
    txn: Driven, txn_id: str, *partitions: tuple[str, int]
) -> ProducerIdAndEpoch:
    pe = txn.init_producer_id(txn_id, TIMEOUT)
    result = txn.add_partitions(txn_id, pe.producer_id, pe.producer_epoch, partitions)
    assert result == dict.fromkeys(partitions, ErrorCode.none)
    return pe


# -- InitProducerId ---------------------------------------------------------------------------


def test_non_transactional_producers_get_a_fresh_id_at_epoch_0(
    ctx: FakeContext, txn: Driven
) -> None:
    assert txn.init_producer_id(None, TIMEOUT) == ProducerIdAndEpoch(1000, 0)
    assert txn.init_producer_id(None, TIMEOUT) == ProducerIdAndEpoch(1001, 0)
    assert ctx.log == []


def test_init_creates_the_id_then_bumps_its_epoch(
    ctx: FakeContext, txn: Driven
) -> None:
    assert txn.init_producer_id("tx", TIMEOUT) == ProducerIdAndEpoch(1000, 0)
    meta = txn.get("tx")
    assert meta is not None
    assert (meta.state, meta.txn_timeout_ms, meta.txn_start_timestamp) == (S.EMPTY, TIMEOUT, -1)
    assert ctx.log[0][0] == partition_for("tx", CONFIG.state_log_partitions)
    # A second producer instance with the same id gets the same producer id, a newer epoch.
    assert txn.init_producer_id("tx", 30_000) == ProducerIdAndEpoch(1000, 1)
    meta = txn.get("tx")
    assert meta is not None and meta.txn_timeout_ms == 30_000
    assert ctx.states() == [S.EMPTY, S.EMPTY]


@pytest.mark.parametrize("timeout", [0, -5, CONFIG.max_timeout_ms + 1])
def test_init_refuses_timeouts_out_of_range(
    ctx: FakeContext, txn: Driven, timeout: int
) -> None:
    with pytest.raises(InvalidTransactionTimeoutError):
        txn.init_producer_id("tx", timeout)
    assert ctx.log == [] and txn.get("tx") is None


def test_init_refuses_an_empty_id_and_half_a_producer_id_and_epoch(
    txn: Driven,
) -> None:
    with pytest.raises(InvalidRequestError):
        txn.init_producer_id("", TIMEOUT)
    with pytest.raises(InvalidRequestError):
        txn.init_producer_id("tx", TIMEOUT, producer_id=1000)
    with pytest.raises(InvalidRequestError):
        txn.init_producer_id("tx", TIMEOUT, producer_epoch=0)


def test_kip360_resume_with_the_current_epoch_and_retry_of_a_lost_response(
    ctx: FakeContext, txn: Driven
) -> None:
    first = txn.init_producer_id("tx", TIMEOUT)
    bumped = txn.init_producer_id("tx", TIMEOUT, first.producer_id, first.producer_epoch)
    assert bumped == ProducerIdAndEpoch(first.producer_id, first.producer_epoch + 1)
    # The response was lost: the producer retries with the epoch it had; no second bump.
    again = txn.init_producer_id("tx", TIMEOUT, first.producer_id, first.producer_epoch)
    assert again == bumped
    # An epoch that is neither current nor previous belongs to a zombie.
    with pytest.raises(ProducerFencedError):
        txn.init_producer_id("tx", TIMEOUT, first.producer_id, 7)
    # So does another producer id.
    with pytest.raises(ProducerFencedError):
        txn.init_producer_id("tx", TIMEOUT, 4242, 0)
    meta = txn.get("tx")
    assert meta is not None and meta.producer_epoch == bumped.producer_epoch


def test_kip360_after_id_expiry_the_producer_gets_a_new_id(
    txn: Driven,
) -> None:
    # The coordinator forgot the id; a producer resuming with its old id/epoch starts over.
    assert txn.init_producer_id("tx", TIMEOUT, 77, 3) == ProducerIdAndEpoch(1000, 0)


def test_exhausted_epoch_rotates_to_a_new_producer_id(
    ctx: FakeContext, txn: Driven
) -> None:
    txn.init_producer_id("tx", TIMEOUT)
    txn.replay(TxnKey("tx"), TxnValue(1000, 32766, TIMEOUT, S.COMPLETE_COMMIT, (), START_MS, 1))
    rotated = txn.init_producer_id("tx", TIMEOUT, 1000, 32766)
    assert rotated == ProducerIdAndEpoch(1001, 0)
    meta = txn.get("tx")
    assert meta is not None
    assert (meta.last_producer_id, meta.last_producer_epoch) == (1000, 32766)
    # The rotation's response was lost: the retry names the old id at its exhausted epoch.
    assert txn.init_producer_id("tx", TIMEOUT, 1000, 32766) == rotated
    # A new producer instance simply bumps the new id.
    assert txn.init_producer_id("tx", TIMEOUT) == ProducerIdAndEpoch(1001, 1)


def test_exhausted_epoch_without_expected_epoch_rotates_too(
    txn: Driven,
) -> None:
    txn.init_producer_id("tx", TIMEOUT)
    txn.replay(TxnKey("tx"), TxnValue(1000, 32767, TIMEOUT, S.COMPLETE_ABORT, (), START_MS, 1))
    assert txn.init_producer_id("tx", TIMEOUT) == ProducerIdAndEpoch(1001, 0)


def test_failed_write_changes_nothing(ctx: FakeContext, txn: Driven) -> None:
    ctx.fail_appends = True
    with pytest.raises(CoordinatorNotAvailableError):
        txn.init_producer_id("tx", TIMEOUT)
    assert txn.get("tx") is None
    ctx.fail_appends = False
    pe = begin(txn, "tx", ORDERS0)
    before = txn.get("tx")
    ctx.fail_appends = True
    with pytest.raises(CoordinatorNotAvailableError):
        txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    assert txn.get("tx") == before
    assert ctx.markers == []


def test_a_failed_end_txn_write_changes_nothing_and_answers_the_error(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = begin(txn, "tx", ORDERS0, AUDIT0)
    before, stored = txn.get("tx"), len(ctx.log)
    ctx.fail_appends = True
    with pytest.raises(CoordinatorNotAvailableError):
        txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    assert txn.get("tx") == before and len(ctx.log) == stored
    assert ctx.markers == [] and txn.pending_markers("tx") == set()
    ctx.fail_appends = False
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)  # the retry succeeds
    meta = txn.get("tx")
    assert meta is not None and meta.state is S.COMPLETE_COMMIT


def test_a_failed_completion_write_does_not_fail_end_txn_and_is_retried(
    ctx: FakeContext, txn: Driven
) -> None:
    """The decision is what EndTxn waits for; writing CompleteCommit is its own operation."""
    pe = begin(txn, "tx", ORDERS0)
    ctx.fail_after = len(ctx.log) + 1  # PrepareCommit is stored, CompleteCommit is not
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    meta = txn.get("tx")
    assert meta is not None and meta.state is S.PREPARE_COMMIT
    assert ctx.markers == [(pe.producer_id, pe.producer_epoch, True, (ORDERS0,))]
    ctx.fail_after = None
    ctx.advance(BACKOFF)
    meta = txn.get("tx")
    assert meta is not None and meta.state is S.COMPLETE_COMMIT


# -- a whole transaction ----------------------------------------------------------------------


def test_commit_writes_markers_to_every_partition_then_completes(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = txn.init_producer_id("tx", TIMEOUT)
    ctx.advance(5)
    txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0])
    started = ctx.now_ms()
    ctx.advance(5)
    txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS1, AUDIT0])
    tp = txn.add_offsets("tx", pe.producer_id, pe.producer_epoch, "group-a")
    assert tp == (OFFSETS, partition_for("group-a", 5))
    meta = txn.get("tx")
    assert meta is not None
    assert meta.state is S.ONGOING
    assert meta.partitions == {ORDERS0, ORDERS1, AUDIT0, tp}
    assert meta.txn_start_timestamp == started  # the first addition started it
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    assert ctx.markers == [
        (pe.producer_id, pe.producer_epoch, True, tuple(sorted([ORDERS0, ORDERS1, AUDIT0, tp])))
    ]
    # The markers carry the coordinator epoch of the transaction's own state partition.
    assert ctx.state_partitions == [partition_for("tx", CONFIG.state_log_partitions)]
    meta = txn.get("tx")
    assert meta is not None
    assert (meta.state, meta.partitions) == (S.COMPLETE_COMMIT, frozenset())
    assert ctx.states() == [
        S.EMPTY, S.ONGOING, S.ONGOING, S.ONGOING, S.PREPARE_COMMIT, S.COMPLETE_COMMIT
    ]
    # A retried EndTxn of the same outcome succeeds without writing anything.
    written = len(ctx.log)
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    assert len(ctx.log) == written
    # The next transaction starts from CompleteCommit.
    txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS1])
    meta = txn.get("tx")
    assert meta is not None and meta.partitions == {ORDERS1}


def test_abort_writes_abort_markers(ctx: FakeContext, txn: Driven) -> None:
    pe = begin(txn, "tx", ORDERS0, AUDIT0)
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=False)
    assert ctx.markers == [(pe.producer_id, pe.producer_epoch, False, (AUDIT0, ORDERS0))]
    meta = txn.get("tx")
    assert meta is not None and meta.state is S.COMPLETE_ABORT
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=False)  # retry: fine


def test_adding_partitions_already_in_the_transaction_writes_nothing(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = begin(txn, "tx", ORDERS0, ORDERS1)
    written = len(ctx.log)
    assert txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS1]) == {
        ORDERS1: ErrorCode.none
    }
    assert txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, []) == {}
    assert len(ctx.log) == written


def test_unknown_partitions_fail_the_whole_addition(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = txn.init_producer_id("tx", TIMEOUT)
    written = len(ctx.log)
    result = txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0, ("nope", 0)])
    assert result == {
        ORDERS0: ErrorCode.operation_not_attempted,
        ("nope", 0): ErrorCode.unknown_topic_or_partition,
    }
    assert len(ctx.log) == written
    meta = txn.get("tx")
    assert meta is not None and meta.state is S.EMPTY


def test_verify_only_reports_membership_and_adds_nothing(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = begin(txn, "tx", ORDERS0)
    written = len(ctx.log)
    result = txn.add_partitions(
        "tx", pe.producer_id, pe.producer_epoch, [ORDERS0, AUDIT0], verify_only=True
    )
    assert result == {ORDERS0: ErrorCode.none, AUDIT0: ErrorCode.transaction_abortable}
    assert len(ctx.log) == written
    with pytest.raises(ProducerFencedError):
        txn.add_partitions("tx", pe.producer_id, 9, [ORDERS0], verify_only=True)
    with pytest.raises(InvalidProducerIdMappingError):
        txn.add_partitions("other", pe.producer_id, 0, [ORDERS0], verify_only=True)


def test_verify_offset_commit_needs_add_offsets_first(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = begin(txn, "tx", ORDERS0)
    with pytest.raises(InvalidTxnStateError):
        txn.verify_offset_commit("tx", pe.producer_id, pe.producer_epoch, "g")
    txn.add_offsets("tx", pe.producer_id, pe.producer_epoch, "g")
    txn.verify_offset_commit("tx", pe.producer_id, pe.producer_epoch, "g")
    # Offsets of another group (another partition of __consumer_offsets) are not covered.
    other = next(g for g in (f"g{i}" for i in range(100))
                 if ctx.offsets_partition_for(g) != ctx.offsets_partition_for("g"))
    with pytest.raises(InvalidTxnStateError):
        txn.verify_offset_commit("tx", pe.producer_id, pe.producer_epoch, other)
    # TxnOffsetCommit v0-v4 predate PRODUCER_FENCED.
    with pytest.raises(InvalidProducerEpochError):
        txn.verify_offset_commit("tx", pe.producer_id, pe.producer_epoch + 1, "g")
    with pytest.raises(InvalidProducerIdMappingError):
        txn.verify_offset_commit("nope", pe.producer_id, pe.producer_epoch, "g")


def test_requests_with_the_wrong_producer_id_or_unknown_id(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = begin(txn, "tx", ORDERS0)
    with pytest.raises(InvalidProducerIdMappingError):
        txn.add_partitions("tx", pe.producer_id + 1, pe.producer_epoch, [ORDERS1])
    with pytest.raises(InvalidProducerIdMappingError):
        txn.end_txn("tx", pe.producer_id + 1, pe.producer_epoch, commit=True)
    with pytest.raises(InvalidProducerIdMappingError):
        txn.add_offsets("unknown", pe.producer_id, pe.producer_epoch, "g")
    with pytest.raises(InvalidRequestError):
        txn.end_txn("", pe.producer_id, pe.producer_epoch, commit=True)


# -- invalid transitions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "commit"),
    [
        ("empty", True),
        ("empty", False),
        ("committed", False),
        ("aborted", True),
    ],
)
def test_ending_without_a_matching_transaction_is_invalid_and_changes_nothing(
    ctx: FakeContext, txn: Driven, setup: str, commit: bool
) -> None:
    pe = txn.init_producer_id("tx", TIMEOUT)
    if setup != "empty":
        txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0])
        txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=setup == "committed")
    before, written, markers = txn.get("tx"), len(ctx.log), list(ctx.markers)
    with pytest.raises(InvalidTxnStateError):
        txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=commit)
    assert (txn.get("tx"), len(ctx.log), ctx.markers) == (before, written, markers)


def test_the_transition_table_refuses_everything_it_does_not_list() -> None:
    for source in S:
        meta = TransactionMetadata("t", 1, 0, TIMEOUT, source, frozenset(), 0, 0)
        for target in S:
            if source in VALID_PREVIOUS[target]:
                assert meta.transition(target).state is target
            else:
                with pytest.raises(IllegalTransitionError):
                    meta.transition(target)
            assert meta.state is source  # pure: the original never changes


def test_prepare_methods_refuse_illegal_sources() -> None:
    empty = TransactionMetadata("t", 1, 0, TIMEOUT, S.EMPTY, frozenset(), -1, 0)
    with pytest.raises(IllegalTransitionError):
        empty.prepare_complete(1)
    with pytest.raises(IllegalTransitionError):
        empty.prepare_abort_or_commit(True, 1)
    with pytest.raises(IllegalTransitionError):
        empty.prepare_fence(1)
    ongoing = empty.prepare_add_partitions([ORDERS0], 5)
    assert (ongoing.state, ongoing.txn_start_timestamp) == (S.ONGOING, 5)
    with pytest.raises(IllegalTransitionError):
        ongoing.prepare_dead()
    with pytest.raises(IllegalTransitionError):
        ongoing.prepare_producer_id_rotation(2, TIMEOUT, 6, False)
    fenced = ongoing.prepare_fence(7)
    assert (fenced.state, fenced.producer_epoch, fenced.last_producer_epoch) == (
        S.PREPARE_ABORT, 1, -1
    )


# -- fencing and concurrency ------------------------------------------------------------------


def test_a_new_producer_fences_the_zombie_and_aborts_its_transaction(
    ctx: FakeContext, txn: Driven
) -> None:
    zombie = begin(txn, "tx", ORDERS0, AUDIT0)
    fresh = txn.init_producer_id("tx", TIMEOUT)
    # The open transaction was aborted under a bumped epoch (1), then the new producer got 2.
    assert ctx.markers == [(zombie.producer_id, 1, False, (AUDIT0, ORDERS0))]
    assert fresh == ProducerIdAndEpoch(zombie.producer_id, 2)
    assert ctx.states() == [
        S.EMPTY, S.ONGOING, S.PREPARE_ABORT, S.COMPLETE_ABORT, S.EMPTY
    ]
    with pytest.raises(ProducerFencedError):
        txn.add_partitions("tx", zombie.producer_id, zombie.producer_epoch, [ORDERS1])
    with pytest.raises(ProducerFencedError):
        txn.end_txn("tx", zombie.producer_id, zombie.producer_epoch, commit=True)
    with pytest.raises(ProducerFencedError):
        txn.add_offsets("tx", zombie.producer_id, zombie.producer_epoch, "g")
    meta = txn.get("tx")
    assert meta is not None and (meta.state, meta.producer_epoch) == (S.EMPTY, 2)


def test_failed_markers_keep_the_transaction_preparing_until_a_retry(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = begin(txn, "tx", ORDERS0, ORDERS1)
    ctx.marker_failures[ORDERS1] = ErrorCode.kafka_storage_error
    # The decision is persisted: EndTxn succeeds even though a marker is missing.
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    meta = txn.get("tx")
    assert meta is not None and meta.state is S.PREPARE_COMMIT
    assert txn.pending_markers("tx") == {ORDERS1}
    assert txn.describe("tx").partitions == {ORDERS1}
    with pytest.raises(ConcurrentTransactionsError):
        txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [AUDIT0])
    with pytest.raises(ConcurrentTransactionsError):
        txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0], verify_only=True)
    for commit in (True, False):  # either outcome: see the next test
        with pytest.raises(ConcurrentTransactionsError):
            txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=commit)
    with pytest.raises(ConcurrentTransactionsError):
        txn.init_producer_id("tx", TIMEOUT)
    ctx.advance(BACKOFF)  # still failing: nothing changes, another retry is scheduled
    assert txn.get("tx") == meta
    del ctx.marker_failures[ORDERS1]
    ctx.advance(BACKOFF)
    meta = txn.get("tx")
    assert meta is not None and meta.state is S.COMPLETE_COMMIT
    # Only the missing marker was written again.
    assert ctx.markers == [
        (pe.producer_id, pe.producer_epoch, True, (ORDERS0,)),
        (pe.producer_id, pe.producer_epoch, True, (ORDERS1,)),
    ]


@pytest.mark.parametrize("first", ["commit", "abort"])
@pytest.mark.parametrize("reloaded", [False, True])
def test_ending_the_next_transaction_while_the_last_one_completes_is_concurrent(
    ctx: FakeContext, txn: Driven, first: str, reloaded: bool
) -> None:
    """librdkafka's sequence (chaos run 1802, five fatal aborts): the last transaction's end is
    answered, its markers are not all written yet; the next transaction's AddPartitionsToTxn is
    answered CONCURRENT_TRANSACTIONS, which librdkafka counts as maybe registered, so the
    abort the application calls at once sends EndTxn(abort). Kafka holds the completion as a
    pending transition until CompleteX is written and answers any EndTxn
    CONCURRENT_TRANSACTIONS meanwhile (retried); INVALID_TXN_STATE, fatal to the producer, is
    for a transaction that is complete. A coordinator that loaded the Prepare* transaction
    answers the same."""
    commit = first == "commit"
    pe = begin(txn, "tx", ORDERS0, ORDERS1)
    ctx.marker_failures[ORDERS1] = ErrorCode.not_leader_or_follower
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=commit)
    if reloaded:
        ctx, txn = reload(ctx)
        ctx.marker_failures[ORDERS1] = ErrorCode.not_leader_or_follower
        ctx.advance(0)  # the loaded transaction's markers are tried again, ORDERS1 still fails
    preparing = txn.get("tx")
    assert preparing is not None
    assert preparing.state is (S.PREPARE_COMMIT if commit else S.PREPARE_ABORT)
    with pytest.raises(ConcurrentTransactionsError):
        txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [AUDIT0])
    written = len(ctx.log)
    for outcome in (not commit, commit):
        with pytest.raises(ConcurrentTransactionsError):
            txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=outcome)
    assert (txn.get("tx"), len(ctx.log)) == (preparing, written)
    del ctx.marker_failures[ORDERS1]
    ctx.advance(BACKOFF)
    meta = txn.get("tx")
    assert meta is not None
    assert meta.state is (S.COMPLETE_COMMIT if commit else S.COMPLETE_ABORT)
    # Complete: the same outcome is a retry that succeeded, the other one is invalid (Kafka).
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=commit)
    with pytest.raises(InvalidTxnStateError):
        txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=not commit)


def test_init_while_a_transaction_completes_is_concurrent_before_its_producer_id_is_checked(
    ctx: FakeContext, txn: Driven
) -> None:
    """Kafka's InitProducerId checks the pending transition (a Prepare* transaction's
    completion) before the KIP-360 producer id: CONCURRENT_TRANSACTIONS, then PRODUCER_FENCED
    once complete."""
    pe = begin(txn, "tx", ORDERS0)
    ctx.marker_failures[ORDERS0] = ErrorCode.not_leader_or_follower
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    with pytest.raises(ConcurrentTransactionsError):
        txn.init_producer_id("tx", TIMEOUT, pe.producer_id + 1, 0)
    del ctx.marker_failures[ORDERS0]
    ctx.advance(BACKOFF)
    with pytest.raises(ProducerFencedError):
        txn.init_producer_id("tx", TIMEOUT, pe.producer_id + 1, 0)


def test_markers_skip_partitions_deleted_since_they_were_added(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = begin(txn, "tx", ORDERS0, AUDIT0)
    ctx.partitions.discard(AUDIT0)
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    assert ctx.markers == [(pe.producer_id, pe.producer_epoch, True, (ORDERS0,))]
    meta = txn.get("tx")
    assert meta is not None and meta.state is S.COMPLETE_COMMIT


def test_init_on_an_ongoing_transaction_with_failing_markers_is_concurrent(
    ctx: FakeContext, txn: Driven
) -> None:
    zombie = begin(txn, "tx", ORDERS0)
    ctx.marker_failures[ORDERS0] = ErrorCode.not_leader_or_follower
    with pytest.raises(ConcurrentTransactionsError):
        txn.init_producer_id("tx", TIMEOUT)
    meta = txn.get("tx")
    assert meta is not None
    assert (meta.state, meta.producer_epoch) == (S.PREPARE_ABORT, zombie.producer_epoch + 1)
    ctx.marker_failures.clear()
    ctx.advance(BACKOFF)
    assert txn.init_producer_id("tx", TIMEOUT) == ProducerIdAndEpoch(zombie.producer_id, 2)


# -- timers -----------------------------------------------------------------------------------


def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = txn.init_producer_id("tx", 5_000)
    txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0])
    ctx.advance(5_000)  # start + timeout is not yet *before* now
    meta = txn.get("tx")
    assert meta is not None and meta.state is S.ONGOING
    ctx.advance(ABORT_CHECK)
    meta = txn.get("tx")
    assert meta is not None
    assert (meta.state, meta.producer_epoch) == (S.COMPLETE_ABORT, pe.producer_epoch + 1)
    assert ctx.markers == [(pe.producer_id, pe.producer_epoch + 1, False, (ORDERS0,))]
    with pytest.raises(ProducerFencedError):
        txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    # The producer re-initialises (KIP-360 cannot help: its epoch was fenced) and carries on.
    assert txn.init_producer_id("tx", 5_000) == ProducerIdAndEpoch(pe.producer_id, 2)


def test_idle_ids_expire_and_open_transactions_do_not(
    ctx: FakeContext, txn: Driven
) -> None:
    txn.init_producer_id("idle", TIMEOUT)
    committed = begin(txn, "done", ORDERS0)
    txn.end_txn("done", committed.producer_id, committed.producer_epoch, commit=True)
    pe = txn.init_producer_id("open", CONFIG.max_timeout_ms)
    ctx.advance(EXPIRATION - CONFIG.max_timeout_ms)
    txn.add_partitions("open", pe.producer_id, pe.producer_epoch, [ORDERS1])
    ctx.advance(CONFIG.max_timeout_ms - 1)
    assert set(txn.transactions) == {"idle", "done", "open"}
    ctx.advance(EXPIRY_CHECK)
    assert set(txn.transactions) == {"open"}
    tombstones = [
        decode(k, v)[0].transactional_id  # type: ignore[index]
        for _, k, v in ctx.log
        if v is None
    ]
    assert sorted(tombstones) == ["done", "idle"]
    # An expired id starts over with a new producer id.
    assert txn.init_producer_id("idle", TIMEOUT).producer_id not in (1000, committed.producer_id)


def test_a_failed_tombstone_keeps_the_id(ctx: FakeContext, txn: Driven) -> None:
    txn.init_producer_id("idle", TIMEOUT)
    ctx.clock.advance(EXPIRATION + 1)
    ctx.fail_appends = True
    assert txn.expire_transactional_ids() == 0
    assert "idle" in txn.transactions
    ctx.fail_appends = False
    assert txn.expire_transactional_ids() == 1
    assert "idle" not in txn.transactions


# -- operators: describe and list (KIP-664) ---------------------------------------------------


def test_describe(ctx: FakeContext, txn: Driven) -> None:
    pe = begin(txn, "tx", ORDERS0, AUDIT0)
    meta = txn.describe("tx")
    assert (meta.state.kafka_name, meta.producer_id, meta.producer_epoch) == (
        "Ongoing", pe.producer_id, pe.producer_epoch
    )
    assert meta.partitions == {ORDERS0, AUDIT0}
    assert meta.txn_start_timestamp == START_MS
    with pytest.raises(TransactionalIdNotFoundError):
        txn.describe("nope")
    with pytest.raises(InvalidRequestError):
        txn.describe("")


def test_list_filters(ctx: FakeContext, txn: Driven) -> None:
    a = begin(txn, "a", ORDERS0)
    ctx.advance(10_000)
    b = begin(txn, "b", ORDERS1)
    txn.init_producer_id("c", TIMEOUT)
    ctx.advance(1_000)

    def ids(**kw: Any) -> list[str]:
        return sorted(m.transactional_id for m in txn.list_transactions(**kw).transactions)

    assert ids() == ["a", "b", "c"]
    assert ids(states=["Ongoing"]) == ["a", "b"]
    assert ids(states=["Empty", "Ongoing"], producer_ids=[b.producer_id]) == ["b"]
    assert ids(producer_ids=[a.producer_id, 999_999]) == ["a"]
    assert ids(states=["Ongoing"], duration_filter_ms=5_000) == ["a"]
    listing = txn.list_transactions(states=["Ongoing", "Bogus", "ongoing"])
    assert listing.unknown_state_filters == ("Bogus", "ongoing")
    assert sorted(m.transactional_id for m in listing.transactions) == ["a", "b"]
    assert txn.list_transactions(states=["Bogus"]).transactions == ()


# -- reloading --------------------------------------------------------------------------------


def test_reload_rebuilds_the_same_state(ctx: FakeContext, txn: Driven) -> None:
    txn.init_producer_id("gone", TIMEOUT)
    ctx.clock.advance(EXPIRATION + 1)
    a = begin(txn, "a", ORDERS0, AUDIT0)
    txn.end_txn("a", a.producer_id, a.producer_epoch, commit=True)
    begin(txn, "b", ORDERS1)
    txn.add_offsets("b", *_pe(txn, "b"), "g")
    c = begin(txn, "c", ORDERS0)
    txn.init_producer_id("c", TIMEOUT)  # fences and aborts c's transaction
    d = txn.init_producer_id("d", TIMEOUT)
    txn.init_producer_id("d", TIMEOUT, d.producer_id, d.producer_epoch)  # KIP-360 bump
    assert txn.expire_transactional_ids() == 1
    _, loaded = reload(ctx)
    assert persisted(loaded) == persisted(txn)
    assert set(loaded.transactions) == {"a", "b", "c", "d"}
    meta = loaded.get("c")
    assert meta is not None and (meta.state, meta.producer_epoch) == (
        S.EMPTY, c.producer_epoch + 2
    )
    # Transient KIP-360 state is not persisted, exactly as in Kafka.
    live, meta = txn.get("d"), loaded.get("d")
    assert live is not None and live.last_producer_epoch == d.producer_epoch
    assert meta is not None and meta.last_producer_epoch == -1


def test_loaded_finishes_transactions_decided_before_a_restart(
    ctx: FakeContext, txn: Driven
) -> None:
    pe = begin(txn, "tx", ORDERS0, ORDERS1)
    ctx.marker_failures = {ORDERS0: ErrorCode.kafka_storage_error}
    txn.end_txn("tx", pe.producer_id, pe.producer_epoch, commit=True)
    fresh, loaded = reload(ctx)
    meta = loaded.get("tx")
    assert meta is not None and meta.state is S.PREPARE_COMMIT  # loaded; its timer is due now
    fresh.advance(0)
    meta = loaded.get("tx")
    assert meta is not None and meta.state is S.COMPLETE_COMMIT
    # After a reload every marker is written again (idempotent for partitions).
    assert fresh.markers == [(pe.producer_id, pe.producer_epoch, True, (ORDERS0, ORDERS1))]


def _pe(txn: Driven, txn_id: str) -> tuple[int, int]:
    meta = txn.get(txn_id)
    assert meta is not None
    return meta.producer_id, meta.producer_epoch


# A random workload from several producers (some zombies), with time passing and failures
# injected; whatever the coordinator ends up with, replaying its records gives the same state.
_ops = st.lists(
    st.tuples(
        st.sampled_from(["init", "init-kip360", "add", "offsets", "commit", "abort", "tick",
                         "fail-markers", "heal", "fail-append", "verify"]),
        st.sampled_from(["t1", "t2", "t3"]),
        st.integers(0, 3),
    ),
    min_size=5,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_reload_equals_live_state_for_any_workload(
    ops: list[tuple[str, str, int]],
) -> None:
    ctx = FakeContext()
    txn = new_coordinator(ctx)
    producers = {t: [txn.init_producer_id(t, 5_000)] for t in ("t1", "t2", "t3")}
    tps = [ORDERS0, ORDERS1, AUDIT0, ("audit", 1)]
    for op, txn_id, n in ops:
        known = producers[txn_id]
        # Mostly the newest producer of the id; n == 3 picks the oldest (often a zombie).
        pe = known[0] if n == 3 else known[-1]
        try:
            match op:
                case "init":
                    producers[txn_id].append(txn.init_producer_id(txn_id, 5_000))
                case "init-kip360":
                    producers[txn_id].append(
                        txn.init_producer_id(txn_id, 5_000, pe.producer_id, pe.producer_epoch)
                    )
                case "add":
                    txn.add_partitions(txn_id, pe.producer_id, pe.producer_epoch, tps[: n + 1])
                case "verify":
                    txn.add_partitions(
                        txn_id, pe.producer_id, pe.producer_epoch, tps[n:], verify_only=True
                    )
                case "offsets":
                    txn.add_offsets(txn_id, pe.producer_id, pe.producer_epoch, f"g{n}")
                case "commit" | "abort":
                    txn.end_txn(txn_id, pe.producer_id, pe.producer_epoch, op == "commit")
                case "tick":
                    ctx.advance(1_000 * (n + 1))
                case "fail-markers":
                    ctx.marker_failures[tps[n]] = ErrorCode.kafka_storage_error
                case "heal":
                    ctx.marker_failures.clear()
                    ctx.fail_appends = False
                case "fail-append":
                    ctx.fail_appends = True
        except KafkaError:
            pass
    for meta in txn.transactions.values():
        assert meta.state not in (S.DEAD, S.PREPARE_EPOCH_FENCE)
        assert not meta.partitions or meta.state in (
            S.ONGOING, S.PREPARE_COMMIT, S.PREPARE_ABORT
        )
    # Zombie fencing: a producer id's markers never go back to an older epoch.
    last_epoch: dict[int, int] = {}
    for producer_id, epoch, _, _ in ctx.markers:
        assert epoch >= last_epoch.get(producer_id, -1)
        last_epoch[producer_id] = epoch
    _, loaded = reload(ctx)
    assert persisted(loaded) == persisted(txn)


# -- writes not yet durable ---------------------------------------------------------------------


class _Durability:
    """The runtime's ``replicated`` hook: every write waits until :meth:`durable` or
    :meth:`lost` settles all those under way."""

    def __init__(self) -> None:
        self.waiting: list[Any] = []

    def __call__(self, partition: int, end_offset: int) -> Any:
        waiting = self.waiting

        class One:
            def add_done(self, callback: Any) -> None:
                waiting.append(callback)

        return One()

    def settle(self, error: Exception | None) -> None:
        callbacks, self.waiting[:] = list(self.waiting), []
        for callback in callbacks:
            callback(error)


def test_no_answer_rests_on_a_write_that_is_not_durable_yet(ctx: FakeContext) -> None:
    """Kafka's ``pendingTransitionInProgress``: while a write of a transactional id is applied
    but not replicated, a retried AddPartitionsToTxn, a produce's verification, EndTxn and
    InitProducerId answer CONCURRENT_TRANSACTIONS instead of reading what a failover may lose.
    (Answered at once, the retry promised partitions that the next coordinator never knew of:
    their records stayed in a transaction nobody ended, and the last stable offset stuck;
    found by the simulation.)"""
    durability = _Durability()
    coordinator = TransactionCoordinator(ctx)
    runtime = CoordinatorRuntime(coordinator, ctx.write, topic="__transaction_state",
                                 replicated=durability)
    for partition in range(CONFIG.state_log_partitions):
        runtime.load(partition, [])
    ctx.coordinator, ctx.runtime = coordinator, runtime
    txn = Driven(coordinator, runtime)
    pe = txn.init_producer_id("tx", TIMEOUT)
    durability.settle(None)
    txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0])  # under way
    for retry in (
        lambda: txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0]),
        lambda: txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0],
                                   verify_only=True),
        lambda: txn.end_txn("tx", pe.producer_id, pe.producer_epoch, True),
        lambda: txn.init_producer_id("tx", TIMEOUT),
    ):
        with pytest.raises(ConcurrentTransactionsError):
            retry()
    ctx.advance(TIMEOUT + ABORT_CHECK)  # nor is it aborted on a timeout meanwhile
    assert txn.get("tx").state is S.ONGOING
    durability.settle(None)  # replicated: now the same requests are answered
    assert txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0],
                              verify_only=True) == {ORDERS0: ErrorCode.none}
    # A write that fails to replicate ends the wait too: the partition is unloaded (rebuilt
    # by its host from what is durable), and once loaded again the id answers.
    txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS1])
    durability.settle(CoordinatorNotAvailableError("not replicated"))
    partition = coordinator.partition_for("tx")
    runtime.load(partition, [StoredRecord(k, v) for p, k, v in ctx.log[:-1] if p == partition])
    assert txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0],
                              verify_only=True)[ORDERS0] is ErrorCode.none


def _replicated_coordinator(ctx: FakeContext) -> tuple[Driven, _Durability]:
    durability = _Durability()
    coordinator = TransactionCoordinator(ctx)
    runtime = CoordinatorRuntime(coordinator, ctx.write, topic="__transaction_state",
                                 replicated=durability)
    for partition in range(CONFIG.state_log_partitions):
        runtime.load(partition, [])
    ctx.coordinator, ctx.runtime = coordinator, runtime
    return Driven(coordinator, runtime), durability


def test_a_fenced_transactions_markers_wait_until_the_abort_is_durable(ctx: FakeContext) -> None:
    """The abort of a timed-out transaction (or of one a new producer fences) writes its
    markers only once its PrepareAbort is replicated, as EndTxn's do. (They went out at once:
    a failover then lost the decision while a partition had its ABORT marker, the producer's
    EndTxn committed the transaction everywhere else and the broker acknowledged it, and the
    COMMIT marker was refused by that partition forever; found by the simulation, seed 2110.)"""
    txn, durability = _replicated_coordinator(ctx)
    pe = txn.init_producer_id("tx", TIMEOUT)
    durability.settle(None)
    txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0, ORDERS1])
    durability.settle(None)
    ctx.advance(TIMEOUT + ABORT_CHECK)  # timed out: fenced, abort decided, not yet durable
    assert txn.get("tx").state is S.PREPARE_ABORT
    assert ctx.markers == []
    durability.settle(None)
    assert ctx.markers == [(pe.producer_id, pe.producer_epoch + 1, False, (ORDERS0, ORDERS1))]
    durability.settle(None)  # the completion
    assert txn.get("tx").state is S.COMPLETE_ABORT
    # A new producer's InitProducerId on an open transaction: CONCURRENT_TRANSACTIONS until the
    # abort is durable and complete (Kafka answers so too), then the epoch after the fence.
    pe = txn.init_producer_id("tx", TIMEOUT)
    durability.settle(None)
    txn.add_partitions("tx", pe.producer_id, pe.producer_epoch, [ORDERS0])
    durability.settle(None)
    with pytest.raises(ConcurrentTransactionsError):
        txn.init_producer_id("tx", TIMEOUT)
    assert len(ctx.markers) == 1
    durability.settle(CoordinatorNotAvailableError("not replicated"))  # the decision is lost
    assert len(ctx.markers) == 1  # ...and so no marker went out for it
