"""The transaction coordinator: transactional ids, their producer ids and epochs, and the
two-phase end of every transaction, persisted in ``__transaction_state``.

Semantics are Apache Kafka 3.9's (KIP-98, KIP-360, KIP-588, KIP-664, the verification form of
KIP-890 part 1). Every change goes ``target metadata -> records -> write -> replay``: a request
computes the target with a pure ``prepare_*`` of :class:`~odradek.coordinator.txn.state.
TransactionMetadata` (which raises, changing nothing, on an illegal transition) and returns its
record in a :class:`~odradek.coordinator.runtime.CoordinatorResult`; the runtime writes it to
``__transaction_state`` and only then calls :meth:`TransactionCoordinator.replay` — the same
code that rebuilds the state when a partition is loaded — which alone changes persisted state.

Ending a transaction (EndTxn, a timeout, or fencing by a new producer) is a chain of
operations, run synchronously by the runtime: write PrepareCommit/PrepareAbort (from then on the
outcome is decided; EndTxn is answered NONE), then write a COMMIT/ABORT marker to every
partition of the transaction through ``write_markers`` and write CompleteCommit/CompleteAbort.
Partitions that no longer exist need no marker (as Kafka drops them); a partition whose marker
failed keeps the transaction in Prepare* (other requests get CONCURRENT_TRANSACTIONS) and is
written again after ``marker_retry_backoff_ms``. A partition loaded with a transaction in
Prepare* finishes it on a timer scheduled by :meth:`TransactionCoordinator.on_loaded`.

Where this differs from Kafka's asynchronous coordinator: InitProducerId on an Ongoing
transaction fences and aborts it and, when the abort completes at once (it does unless a
marker write fails), carries on with the epoch bump in the same call instead of answering
CONCURRENT_TRANSACTIONS and waiting for the retry — the state reached is the one the retry
would reach. AddPartitionsToTxn with no partitions changes nothing.

Transient state (not in the log, rebuilt as Kafka rebuilds it): the KIP-360 last producer
id/epoch (-1 after a reload) and which partitions of a Prepare* transaction already have their
marker (none after a reload: markers are written again, which partitions tolerate).

Owned by one thread (the broker's event loop). Time comes from the context; periodic jobs
(aborting timed-out transactions, expiring idle ids, retrying markers) live on the context's
timer, whose callbacks are operations returning their records like requests do.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from odradek.coordinator.runtime import CoordinatorResult
from odradek.coordinator.timer import Timer
from odradek.coordinator.txn.context import TxnContext
from odradek.coordinator.txn.records import (
    TxnKey,
    TxnPartitions,
    TxnValue,
    decode,
    encode_key,
    encode_value,
    partition_for,
)
from odradek.coordinator.txn.state import (
    EXPIRATION_ALLOWED,
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    IllegalTransitionError,
    TopicPartition,
    TransactionMetadata,
    TransactionState,
    is_epoch_exhausted,
)
from odradek.errors import (
    ConcurrentTransactionsError,
    ErrorCode,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    InvalidRequestError,
    InvalidTransactionTimeoutError,
    InvalidTxnStateError,
    ProducerFencedError,
    TransactionalIdNotFoundError,
    UnknownTopicOrPartitionError,
)
from odradek.topic_names import OFFSETS_TOPIC

__all__ = [
    "TransactionCoordinator",
    "ProducerIdAndEpoch",
    "TransactionListing",
    "Record",
    "ConcurrentTransactionsError",
    "InvalidTxnStateError",
    "InvalidProducerIdMappingError",
    "InvalidTransactionTimeoutError",
    "ProducerFencedError",
    "TransactionalIdNotFoundError",
    "to_value",
]

log = logging.getLogger("odradek.coordinator.txn")

R = TypeVar("R")
#: A record of ``__transaction_state``: the transactional id and its state (None: a tombstone).
Record = tuple[TxnKey, TxnValue | None]


_S = TransactionState
_PREPARING = frozenset({_S.PREPARE_COMMIT, _S.PREPARE_ABORT})
_ABORT_TIMER = ("txn", "abort-timed-out")
_EXPIRE_TIMER = ("txn", "expire-ids")


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProducerIdAndEpoch:
    producer_id: int
    producer_epoch: int


@dataclass(frozen=True, slots=True)
class TransactionListing:
    """ListTransactions: the matching transactions and the state filters nobody knows."""

    unknown_state_filters: tuple[str, ...]
    transactions: tuple[TransactionMetadata, ...]


def to_value(meta: TransactionMetadata) -> TxnValue:
    """The ``__transaction_state`` value of ``meta`` (partitions grouped by topic, sorted)."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in meta.partitions:
        by_topic.setdefault(topic, []).append(partition)
    return TxnValue(
        producer_id=meta.producer_id,
        producer_epoch=meta.producer_epoch,
        transaction_timeout_ms=meta.txn_timeout_ms,
        state=meta.state,
        partitions=tuple(
            TxnPartitions(topic, tuple(sorted(ps))) for topic, ps in sorted(by_topic.items())
        ),
        last_update_timestamp_ms=meta.txn_last_update_timestamp,
        start_timestamp_ms=meta.txn_start_timestamp,
    )


def _from_value(
    transactional_id: str, value: TxnValue, previous: TransactionMetadata | None
) -> TransactionMetadata:
    partitions = frozenset(
        (tp.topic, p) for tp in value.partitions for p in tp.partitions
    )
    return TransactionMetadata(
        transactional_id=transactional_id,
        producer_id=value.producer_id,
        producer_epoch=value.producer_epoch,
        txn_timeout_ms=value.transaction_timeout_ms,
        state=value.state,
        partitions=partitions,
        txn_start_timestamp=value.start_timestamp_ms,
        txn_last_update_timestamp=value.last_update_timestamp_ms,
        last_producer_id=previous.last_producer_id if previous else NO_PRODUCER_ID,
        last_producer_epoch=previous.last_producer_epoch if previous else NO_PRODUCER_EPOCH,
    )


class TransactionCoordinator:
    """Coordinates every transactional id of this broker (all partitions of
    ``__transaction_state``); the runtime's
    :class:`~odradek.coordinator.runtime.CoordinatorShard`. Every request method returns a
    :class:`CoordinatorResult` or raises a typed :class:`KafkaError` for a whole-request
    failure, changing nothing in that case."""

    def __init__(self, context: TxnContext) -> None:
        self._ctx = context
        self._txns: dict[str, TransactionMetadata] = {}
        #: Partitions of a Prepare* transaction whose marker is written (or not needed).
        self._marked: dict[str, set[TopicPartition]] = {}
        #: Writes of each transactional id applied but not yet durable (Kafka's
        #: ``pendingTransitionInProgress``): requests about such an id answer
        #: CONCURRENT_TRANSACTIONS, so that no answer rests on state a failover may lose.
        self._in_flight: dict[str, int] = {}
        self._schedule_abort_check()
        self._schedule_expiry()

    # -- reading -----------------------------------------------------------------------------

    @property
    def transactions(self) -> Mapping[str, TransactionMetadata]:
        """Every known transactional id (a read-only view)."""
        return MappingProxyType(self._txns)

    def get(self, transactional_id: str) -> TransactionMetadata | None:
        return self._txns.get(transactional_id)

    def partition_for(self, transactional_id: str) -> int:
        """The ``__transaction_state`` partition of ``transactional_id``."""
        return partition_for(transactional_id, self._ctx.config.state_log_partitions)

    def pending_markers(self, transactional_id: str) -> frozenset[TopicPartition]:
        """Partitions of a Prepare* transaction still waiting for their marker (else empty)."""
        meta = self._txns.get(transactional_id)
        if meta is None or meta.state not in _PREPARING:
            return frozenset()
        return meta.partitions - self._marked.get(transactional_id, set())

    # -- CoordinatorShard: records, replay, loading -------------------------------------------

    @property
    def timer(self) -> Timer:
        return self._ctx.timer

    def partition_of(self, record: Record) -> int:
        return self.partition_for(record[0].transactional_id)

    @staticmethod
    def encode(record: Record) -> tuple[bytes, bytes | None]:
        return encode_key(record[0]), encode_value(record[1])

    @staticmethod
    def decode(key: bytes, value: bytes | None) -> Record | None:
        """Unknown key versions decode to None and are skipped, as Kafka skips them."""
        return decode(key, value)

    def replay(
        self,
        record: Record,
        *,
        partition: int = -1,
        offset: int = -1,
        producer_id: int | None = None,
    ) -> None:
        """Apply one record of ``__transaction_state``: the only mutator of persisted state."""
        key, value = record
        txn_id = key.transactional_id
        previous = self._txns.get(txn_id)
        if value is None:
            self._txns.pop(txn_id, None)
            self._forget_markers(txn_id)
            return
        meta = _from_value(txn_id, value, previous)
        self._txns[txn_id] = meta
        if meta.state not in _PREPARING or previous is None or previous.state not in _PREPARING:
            self._forget_markers(txn_id)

    def replay_marker(
        self, partition: int, producer_id: int, commit: bool, offset: int = -1
    ) -> None:
        """Nothing: this topic's records are never transactional."""

    def on_pending(self, partition: int, offset: int) -> None:
        """Nothing: no read of this coordinator is kept to the durable log yet."""

    def on_durable(self, partition: int, end_offset: int) -> None:
        """Nothing (see :meth:`on_pending`)."""

    def on_loaded(self, partition: int) -> None:
        """Finish the transactions of ``partition`` whose outcome was decided (Prepare*) before
        the restart: their markers are written again at once, on the timer."""
        for txn_id, meta in self._txns.items():
            if meta.state in _PREPARING and self.partition_for(txn_id) == partition:
                self._schedule_marker_retry(txn_id, delay_ms=0)

    def on_unloaded(self, partition: int) -> None:
        """Forget the transactional ids of ``partition`` and their timers."""
        for txn_id in [t for t in self._txns if self.partition_for(t) == partition]:
            del self._txns[txn_id]
            self._forget_markers(txn_id)
        for txn_id in [t for t in self._in_flight if self.partition_for(t) == partition]:
            del self._in_flight[txn_id]

    def _no_write_in_flight(self, transactional_id: str) -> None:
        """Raise CONCURRENT_TRANSACTIONS while a write of ``transactional_id`` is applied but
        not durable. Its state may still be lost (the write not replicated before a failover):
        an answer resting on it (partitions already added, verified) would be a promise the
        next coordinator does not know of, leaving records of a transaction nobody ends (found
        by the simulation: a retried AddPartitionsToTxn answered at once from a write that was
        then truncated, and the last stable offset of two partitions stuck for good)."""
        if self._in_flight.get(transactional_id):
            raise ConcurrentTransactionsError(
                f"{transactional_id} has a write under way; try again"
            )

    # -- InitProducerId ----------------------------------------------------------------------

    def init_producer_id(
        self,
        transactional_id: str | None,
        transaction_timeout_ms: int,
        producer_id: int = NO_PRODUCER_ID,
        producer_epoch: int = NO_PRODUCER_EPOCH,
    ) -> CoordinatorResult[ProducerIdAndEpoch]:
        """InitProducerId. Without a transactional id: a fresh producer id at epoch 0. With
        one: the id's producer id at a bumped epoch (a new producer id once the epochs are
        exhausted), fencing older producers and aborting their open transaction. A
        ``producer_id``/``producer_epoch`` pair (v3+, KIP-360) lets the current producer
        resume; any other producer that gives one is fenced."""
        if transactional_id is None:
            return CoordinatorResult((), ProducerIdAndEpoch(self._ctx.allocate_producer_id(), 0))
        if not transactional_id:
            raise InvalidRequestError("the transactional id must not be empty")
        expected: ProducerIdAndEpoch | None = None
        if producer_id != NO_PRODUCER_ID or producer_epoch != NO_PRODUCER_EPOCH:
            if producer_id == NO_PRODUCER_ID or producer_epoch == NO_PRODUCER_EPOCH:
                raise InvalidRequestError("give both the producer id and epoch, or neither")
            expected = ProducerIdAndEpoch(producer_id, producer_epoch)
        if not 0 < transaction_timeout_ms <= self._ctx.config.max_timeout_ms:
            raise InvalidTransactionTimeoutError(
                f"transaction timeout {transaction_timeout_ms} ms is not in "
                f"(0, {self._ctx.config.max_timeout_ms}]"
            )
        meta = self._txns.get(transactional_id)
        if meta is None:
            meta = TransactionMetadata.new(
                transactional_id,
                self._ctx.allocate_producer_id(),
                transaction_timeout_ms,
                self._ctx.now_ms(),
            )
        # A write under way or a completion (Kafka's pending transition) first, then whose
        # producer id it is, in Kafka's order: a producer that may be fenced retries first.
        self._no_write_in_flight(transactional_id)
        if meta.state in _PREPARING:
            raise ConcurrentTransactionsError(f"{transactional_id} is completing a transaction")
        if expected is not None and not _is_valid_producer_id(meta, expected):
            raise ProducerFencedError(
                f"producer id {expected.producer_id} no longer owns {transactional_id}"
            )
        if meta.state is _S.ONGOING:

            def after_abort() -> CoordinatorResult[ProducerIdAndEpoch]:
                aborted = self._txns[transactional_id]
                if aborted.state is not _S.COMPLETE_ABORT:
                    raise ConcurrentTransactionsError(
                        f"{transactional_id}: aborting the fenced transaction is still in "
                        "progress"
                    )
                return self._bump_epoch(aborted, transaction_timeout_ms, expected)

            return self._fence_and_abort(meta, then=after_abort)
        if meta.state not in EXPIRATION_ALLOWED:
            raise IllegalTransitionError(
                f"{transactional_id} is {meta.state.kafka_name}, which is never stored"
            )
        return self._bump_epoch(meta, transaction_timeout_ms, expected)

    def _bump_epoch(
        self,
        meta: TransactionMetadata,
        transaction_timeout_ms: int,
        expected: ProducerIdAndEpoch | None,
    ) -> CoordinatorResult[ProducerIdAndEpoch]:
        transactional_id = meta.transactional_id
        now = self._ctx.now_ms()
        if meta.is_epoch_exhausted and (
            expected is None or expected.producer_epoch == meta.producer_epoch
        ):
            target = meta.prepare_producer_id_rotation(
                self._ctx.allocate_producer_id(), transaction_timeout_ms, now, expected is not None
            )
        else:
            maybe = meta.prepare_increment_epoch(
                transaction_timeout_ms,
                expected.producer_epoch if expected is not None else None,
                now,
            )
            if maybe is None:
                assert expected is not None
                raise ProducerFencedError(
                    f"epoch {expected.producer_epoch} of {transactional_id} is neither the "
                    f"current ({meta.producer_epoch}) nor the previous one"
                )
            target = maybe
        answer = ProducerIdAndEpoch(target.producer_id, target.producer_epoch)
        return self._store(
            target,
            answer,
            on_stored=lambda: log.info(
                "initialised transactional id %s: producer id %d, epoch %d",
                transactional_id, answer.producer_id, answer.producer_epoch,
            ),
        )

    # -- AddPartitionsToTxn / AddOffsetsToTxn ------------------------------------------------

    def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Collection[TopicPartition],
        *,
        verify_only: bool = False,
    ) -> CoordinatorResult[dict[TopicPartition, ErrorCode]]:
        """AddPartitionsToTxn for one transaction; returns each partition's error code.

        If any partition does not exist nothing is added: those get UNKNOWN_TOPIC_OR_PARTITION
        and the others OPERATION_NOT_ATTEMPTED. ``verify_only`` (v4+, KIP-890) adds nothing and
        reports NONE for partitions in the transaction, TRANSACTION_ABORTABLE for the others.
        Whole-transaction problems (unknown id, wrong producer id or epoch, a transaction
        being completed) raise.
        """
        if not transactional_id:
            raise InvalidRequestError("the transactional id must not be empty")
        wanted = frozenset(partitions)
        missing = {tp for tp in wanted if not self._ctx.partition_exists(*tp)}
        if missing:
            return CoordinatorResult((), {
                tp: (
                    ErrorCode.unknown_topic_or_partition
                    if tp in missing
                    else ErrorCode.operation_not_attempted
                )
                for tp in wanted
            })
        if verify_only:
            meta = self._owned(transactional_id, producer_id, producer_epoch)
            self._no_write_in_flight(transactional_id)
            if meta.state in _PREPARING:
                raise ConcurrentTransactionsError(f"{transactional_id} is being completed")
            return CoordinatorResult((), {
                tp: ErrorCode.none if tp in meta.partitions else ErrorCode.transaction_abortable
                for tp in wanted
            })
        return self._add(
            transactional_id, producer_id, producer_epoch, wanted,
            dict.fromkeys(wanted, ErrorCode.none),
        )

    def add_offsets(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> CoordinatorResult[TopicPartition]:
        """AddOffsetsToTxn: add the group's ``__consumer_offsets`` partition to the
        transaction (so its offset commits get the transaction's marker); answers it."""
        if not transactional_id:
            raise InvalidRequestError("the transactional id must not be empty")
        tp = (OFFSETS_TOPIC, self._ctx.offsets_partition_for(group_id))
        return self._add(transactional_id, producer_id, producer_epoch, frozenset({tp}), tp)

    def verify_offset_commit(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> None:
        """TxnOffsetCommit's check (KIP-890 part 1 verification): the group's
        ``__consumer_offsets`` partition must be in this producer's open transaction (put there
        by AddOffsetsToTxn). Raises as a Kafka 3.9 broker answers TxnOffsetCommit v0–v4:
        INVALID_PRODUCER_EPOCH for a fenced producer, INVALID_TXN_STATE when the partition is
        not in the transaction, the coordinator's error otherwise."""
        tp = (OFFSETS_TOPIC, self._ctx.offsets_partition_for(group_id))
        try:
            code = self.add_partitions(
                transactional_id, producer_id, producer_epoch, [tp], verify_only=True
            ).response[tp]
        except ProducerFencedError as e:
            raise InvalidProducerEpochError(e.message) from e
        if code is ErrorCode.unknown_topic_or_partition:
            raise UnknownTopicOrPartitionError(f"{OFFSETS_TOPIC}-{tp[1]} does not exist")
        if code is not ErrorCode.none:
            raise InvalidTxnStateError(
                f"{OFFSETS_TOPIC}-{tp[1]} is not in the transaction of {transactional_id}; "
                "call AddOffsetsToTxn first"
            )

    def _owned(
        self, transactional_id: str, producer_id: int, producer_epoch: int
    ) -> TransactionMetadata:
        meta = self._txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            raise InvalidProducerIdMappingError(
                f"producer id {producer_id} is not the producer id of {transactional_id}"
            )
        if meta.producer_epoch != producer_epoch:
            raise ProducerFencedError(
                f"epoch {producer_epoch} of {transactional_id} is not the current "
                f"{meta.producer_epoch}"
            )
        return meta

    def _add(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: frozenset[TopicPartition],
        response: R,
    ) -> CoordinatorResult[R]:
        meta = self._owned(transactional_id, producer_id, producer_epoch)
        self._no_write_in_flight(transactional_id)
        if meta.state in _PREPARING:
            raise ConcurrentTransactionsError(f"{transactional_id} is being completed")
        if not partitions or (meta.state is _S.ONGOING and partitions <= meta.partitions):
            return CoordinatorResult((), response)  # nothing new: answer at once, as Kafka
        return self._store(meta.prepare_add_partitions(partitions, self._ctx.now_ms()), response)

    # -- EndTxn ------------------------------------------------------------------------------

    def end_txn(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> CoordinatorResult[None]:
        """EndTxn: commit or abort the open transaction. Answered once the decision is
        persisted; writing the markers and the completion follows as an operation of its own
        (run at once; retried on a timer when a marker write fails). Repeating the end of a
        completed transaction with the same outcome succeeds; a different outcome, or ending
        with no transaction open, is INVALID_TXN_STATE. While the previous end is still being
        completed (Prepare*) any EndTxn is CONCURRENT_TRANSACTIONS, as Kafka answers it."""
        if not transactional_id:
            raise InvalidRequestError("the transactional id must not be empty")
        meta = self._owned(transactional_id, producer_id, producer_epoch)
        self._no_write_in_flight(transactional_id)
        outcome = "commit" if commit else "abort"
        match meta.state:
            case _S.ONGOING:
                return self._store(
                    meta.prepare_abort_or_commit(commit, self._ctx.now_ms()),
                    None,
                    after=(lambda: self._complete(transactional_id),),
                )
            case _S.COMPLETE_COMMIT | _S.COMPLETE_ABORT if (
                commit == (meta.state is _S.COMPLETE_COMMIT)
            ):
                return CoordinatorResult((), None)  # a retry of an end that completed
            case _S.PREPARE_COMMIT | _S.PREPARE_ABORT:
                # Either outcome: Kafka's coordinator holds the completion as a pending
                # transition from before it answers the EndTxn that decided it (and from the
                # load of a Prepare* transaction) until CompleteCommit/CompleteAbort is written,
                # and checks that before the state: CONCURRENT_TRANSACTIONS, which producers
                # retry, where INVALID_TXN_STATE is fatal to them.
                raise ConcurrentTransactionsError(
                    f"{transactional_id} is still completing its "
                    f"{'commit' if meta.state is _S.PREPARE_COMMIT else 'abort'}"
                )
            case _S.DEAD | _S.PREPARE_EPOCH_FENCE:
                raise IllegalTransitionError(
                    f"{transactional_id} is {meta.state.kafka_name}, which is never stored"
                )
        # As Kafka 4 (a warning): the producer takes this answer as fatal.
        log.warning(
            "EndTxn(%s) of %s (producer id %d, epoch %d) refused: INVALID_TXN_STATE in state %s",
            outcome, transactional_id, producer_id, producer_epoch, meta.state.kafka_name,
        )
        raise InvalidTxnStateError(
            f"cannot {outcome} {transactional_id}: it is {meta.state.kafka_name}"
        )

    def _fence_and_abort(
        self,
        meta: TransactionMetadata,
        then: Callable[[], CoordinatorResult[Any]] | None = None,
    ) -> CoordinatorResult[Any]:
        """Bump the epoch of an Ongoing transaction's producer and decide to abort the
        transaction; then go on with ``then`` (whose result answers). The markers and the
        completion follow once the decision is durable, as after EndTxn: written before, a
        failover could lose the decision while a partition already had its ABORT marker, and the
        transaction was then committed by its producer everywhere else (found by the
        simulation, seed 2110: a timed-out transaction's abort)."""
        txn_id = meta.transactional_id
        fence = meta.prepare_fence(self._ctx.now_ms())

        def fenced() -> None:
            log.info(
                "fenced producer id %d of %s at epoch %d and aborting its transaction",
                meta.producer_id, txn_id, meta.producer_epoch,
            )

        return self._store(
            fence, None, on_stored=fenced, after=(lambda: self._complete(txn_id),), then=then
        )

    def _complete(
        self, transactional_id: str, then: Callable[[], CoordinatorResult[Any]] | None = None
    ) -> CoordinatorResult[Any]:
        """Write the markers still missing for a Prepare* transaction, then return its
        Complete* record; on a marker failure keep what succeeded, try again on a timer and
        return no record (``then`` still runs: it sees the transaction still Prepare*)."""
        meta = self._txns.get(transactional_id)
        if meta is None or meta.state not in _PREPARING:
            return CoordinatorResult((), None, then=then)
        commit = meta.state is _S.PREPARE_COMMIT
        marked = self._marked.setdefault(transactional_id, set())
        todo = sorted(meta.partitions - marked)
        present = []
        for tp in todo:
            if self._ctx.partition_exists(*tp):
                present.append(tp)
            else:
                marked.add(tp)  # deleted since it was added: nothing to mark
        failed: dict[TopicPartition, ErrorCode] = {}
        in_flight = False
        if present:
            try:
                results = self._ctx.write_markers(
                    meta.producer_id, meta.producer_epoch, commit, present,
                    state_partition=self.partition_for(transactional_id),
                )
            except Exception as e:
                log.warning("writing markers of %s failed: %r", transactional_id, e)
                results = {}
            for tp in present:
                code = results.get(tp)
                if code is None:
                    in_flight = True  # sent to its leader; asked again once answered
                elif code is ErrorCode.none:
                    marked.add(tp)
                else:
                    failed[tp] = code
        if in_flight and not failed:
            self._schedule_marker_retry(transactional_id)
            return CoordinatorResult((), None, then=then)
        if failed:
            log.warning(
                "markers of %s not written yet, will retry: %s",
                transactional_id,
                {f"{t}-{p}": c.name for (t, p), c in sorted(failed.items())},
            )
            self._schedule_marker_retry(transactional_id)
            return CoordinatorResult((), None, then=then)

        def not_completed(error: Exception) -> None:
            log.warning("completing the transaction of %s failed: %s", transactional_id, error)
            self._schedule_marker_retry(transactional_id)

        return self._store(
            meta.prepare_complete(self._ctx.now_ms()), None, then=then, on_failure=not_completed
        )

    def _schedule_marker_retry(self, transactional_id: str, delay_ms: int | None = None) -> None:
        delay = self._ctx.config.marker_retry_backoff_ms if delay_ms is None else delay_ms
        self._ctx.timer.schedule(
            ("txn", "markers", transactional_id),
            self._ctx.now_ms() + delay,
            lambda: self._complete(transactional_id),
        )

    def retry_markers(self, producer_id: int) -> bool:
        """The outcome of a marker of ``producer_id`` sent to another broker is in: write what
        is missing of its Prepare* transaction now rather than after the backoff. False when
        no transaction of that producer waits for markers here."""
        waiting = False
        for txn_id, meta in self._txns.items():
            if meta.producer_id == producer_id and meta.state in _PREPARING:
                self._schedule_marker_retry(txn_id, delay_ms=0)
                waiting = True
        return waiting

    def _forget_markers(self, transactional_id: str) -> None:
        self._marked.pop(transactional_id, None)
        self._ctx.timer.cancel(("txn", "markers", transactional_id))

    # -- DescribeTransactions / ListTransactions (KIP-664) -----------------------------------

    def describe(self, transactional_id: str) -> TransactionMetadata:
        """The state of one transactional id. While a transaction is being completed, its
        partitions are the ones still waiting for a marker (as Kafka reports them)."""
        if not transactional_id:
            raise InvalidRequestError("the transactional id must not be empty")
        meta = self._txns.get(transactional_id)
        if meta is None or meta.state is _S.DEAD:
            raise TransactionalIdNotFoundError(f"transactional id {transactional_id} is unknown")
        if meta.state in _PREPARING:
            meta = dataclasses.replace(meta, partitions=self.pending_markers(transactional_id))
        return meta

    def list_transactions(
        self,
        states: Iterable[str] = (),
        producer_ids: Iterable[int] = (),
        duration_filter_ms: int = -1,
    ) -> TransactionListing:
        """ListTransactions: filters combine with AND; an empty filter matches everything.
        ``states`` are Kafka's names; unknown ones are reported (and match nothing).
        ``duration_filter_ms`` >= 0 keeps transactions started longer ago than that."""
        state_names = set(states)
        wanted_states = set()
        unknown = []
        for name in sorted(state_names):
            state = TransactionState.from_kafka_name(name)
            if state is None:
                unknown.append(name)
            else:
                wanted_states.add(state)
        wanted_pids = set(producer_ids)
        now = self._ctx.now_ms()
        out = []
        for meta in self._txns.values():
            if meta.state is _S.DEAD:
                continue
            if wanted_pids and meta.producer_id not in wanted_pids:
                continue
            if state_names and meta.state not in wanted_states:
                continue
            if duration_filter_ms >= 0 and now - meta.txn_start_timestamp <= duration_filter_ms:
                continue
            out.append(meta)
        return TransactionListing(tuple(unknown), tuple(out))

    # -- timeouts and expiry -----------------------------------------------------------------

    def abort_timed_out_transactions(self) -> list[CoordinatorResult[Any]]:
        """Fence and abort every Ongoing transaction older than its timeout: one operation
        each."""
        now = self._ctx.now_ms()
        out = []
        for txn_id, meta in self._txns.items():
            if meta.state is not _S.ONGOING or meta.txn_start_timestamp + meta.txn_timeout_ms >= now:
                continue
            if self._in_flight.get(txn_id):
                continue  # as Kafka: not while a write of it is under way (the next check)
            try:
                out.append(self._fence_and_abort(meta))
            except IllegalTransitionError as e:
                log.warning("aborting the timed-out transaction of %s failed: %s", txn_id, e)
                continue
            log.info("aborting the transaction of %s: it exceeded its timeout", txn_id)
        return out

    def expire_transactional_ids(self) -> list[CoordinatorResult[None]]:
        """Forget (tombstone) ids idle for ``transactional.id.expiration.ms`` with no
        transaction open: one operation each."""
        now = self._ctx.now_ms()
        horizon = now - self._ctx.config.transactional_id_expiration_ms
        out: list[CoordinatorResult[None]] = []
        for txn_id, meta in self._txns.items():
            if meta.state not in EXPIRATION_ALLOWED or meta.txn_last_update_timestamp > horizon:
                continue
            meta.prepare_dead()  # validates; the tombstone is what gets stored
            out.append(CoordinatorResult([(TxnKey(txn_id), None)], None))
        if out:
            log.info("expiring %d idle transactional ids", len(out))
        return out

    def _schedule_abort_check(self) -> None:
        self._ctx.timer.schedule(
            _ABORT_TIMER,
            self._ctx.now_ms() + self._ctx.config.abort_timed_out_interval_ms,
            self._abort_tick,
        )

    def _abort_tick(self) -> list[CoordinatorResult[Any]]:
        self._schedule_abort_check()
        try:
            return self.abort_timed_out_transactions()
        except Exception:
            log.exception("aborting timed-out transactions failed")
            return []

    def _schedule_expiry(self) -> None:
        self._ctx.timer.schedule(
            _EXPIRE_TIMER,
            self._ctx.now_ms() + self._ctx.config.remove_expired_interval_ms,
            self._expiry_tick,
        )

    def _expiry_tick(self) -> list[CoordinatorResult[None]]:
        self._schedule_expiry()
        try:
            return self.expire_transactional_ids()
        except Exception:
            log.exception("expiring transactional ids failed")
            return []

    # -- persisting --------------------------------------------------------------------------

    def _store(
        self,
        target: TransactionMetadata,
        response: R,
        *,
        then: Callable[[], CoordinatorResult[Any]] | None = None,
        after: tuple[Callable[[], CoordinatorResult[Any]], ...] = (),
        on_stored: Callable[[], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> CoordinatorResult[R]:
        """The operation storing ``target``'s record; once it is written and replayed, the
        transient fields ``target`` carries (the KIP-360 previous producer) are kept."""
        txn_id = target.transactional_id
        self._in_flight[txn_id] = self._in_flight.get(txn_id, 0) + 1

        def written(error: Exception | None) -> None:
            left = self._in_flight.get(txn_id, 0) - 1
            if left > 0:
                self._in_flight[txn_id] = left
            else:
                self._in_flight.pop(txn_id, None)
            if error is not None:
                if on_failure is not None:
                    on_failure(error)
                return
            stored = self._txns.get(txn_id)
            if stored is not None and (stored.last_producer_id, stored.last_producer_epoch) != (
                target.last_producer_id,
                target.last_producer_epoch,
            ):
                self._txns[txn_id] = dataclasses.replace(
                    stored,
                    last_producer_id=target.last_producer_id,
                    last_producer_epoch=target.last_producer_epoch,
                )
            if on_stored is not None:
                on_stored()

        return CoordinatorResult(
            [(TxnKey(txn_id), to_value(target))],
            response,
            on_written=written,
            then=then,
            after=after,
        )


def _is_valid_producer_id(meta: TransactionMetadata, expected: ProducerIdAndEpoch) -> bool:
    """KIP-360: may a producer that gives ``expected`` re-initialise ``meta``'s id? Yes when
    the id has no epoch yet (just created: the producer recovers from UNKNOWN_PRODUCER_ID),
    when it names the current producer id (the epoch is checked next), or when it names the
    previous producer id at an exhausted epoch (a retry of the rotation it never heard of)."""
    return (
        meta.producer_epoch == NO_PRODUCER_EPOCH
        or expected.producer_id == meta.producer_id
        or (
            expected.producer_id == meta.last_producer_id
            and is_epoch_exhausted(expected.producer_epoch)
        )
    )

