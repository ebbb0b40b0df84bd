"""Transaction states, their transition table, and the metadata of one transactional id.

The states are Apache Kafka's, with Kafka's ids (the ``TransactionStatus`` byte of
``__transaction_state`` values) and names (what DescribeTransactions and ListTransactions show):

- ``Empty`` (0): no transaction open; the id has a producer id and epoch.
  → Ongoing on AddPartitionsToTxn / AddOffsetsToTxn; → Empty on InitProducerId (epoch bump).
- ``Ongoing`` (1): partitions were added. → PrepareCommit / PrepareAbort on EndTxn,
  → PrepareEpochFence when a new producer or the timeout fences the current one.
- ``PrepareCommit`` (2) / ``PrepareAbort`` (3): the outcome is decided and persisted; markers
  are being written. → CompleteCommit / CompleteAbort once every partition has its marker.
- ``CompleteCommit`` (4) / ``CompleteAbort`` (5): done; the next transaction may start.
- ``Dead`` (6): the id expired; only ever the target of a tombstone, never stored.
- ``PrepareEpochFence`` (7): the epoch is being bumped to fence a producer; passed through on
  the way to PrepareAbort, never stored (as in Kafka, where it is only a pending state).

:data:`VALID_PREVIOUS` is the table; :meth:`TransactionMetadata.transition` refuses anything
else. Every ``prepare_*`` method is pure: it returns the target metadata (or raises) and leaves
``self`` alone, so an illegal request changes nothing.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from odradek.errors import ErrorCode, KafkaError

__all__ = [
    "TransactionState",
    "VALID_PREVIOUS",
    "EXPIRATION_ALLOWED",
    "NO_PRODUCER_ID",
    "NO_PRODUCER_EPOCH",
    "MAX_EPOCH",
    "is_epoch_exhausted",
    "IllegalTransitionError",
    "TransactionMetadata",
    "TopicPartition",
]

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
#: Largest int16; an epoch never reaches it except through a fence.
MAX_EPOCH = 0x7FFF

TopicPartition = tuple[str, int]


class TransactionState(enum.IntEnum):
    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        """Kafka's name of the state ("Ongoing", "PrepareEpochFence"...)."""
        return _NAMES[self]

    @classmethod
    def from_kafka_name(cls, name: str) -> TransactionState | None:
        """The state Kafka calls ``name`` (case-sensitive, as Kafka matches), or None."""
        return _BY_NAME.get(name)


_NAMES = {
    TransactionState.EMPTY: "Empty",
    TransactionState.ONGOING: "Ongoing",
    TransactionState.PREPARE_COMMIT: "PrepareCommit",
    TransactionState.PREPARE_ABORT: "PrepareAbort",
    TransactionState.COMPLETE_COMMIT: "CompleteCommit",
    TransactionState.COMPLETE_ABORT: "CompleteAbort",
    TransactionState.DEAD: "Dead",
    TransactionState.PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}
_BY_NAME = {name: state for state, name in _NAMES.items()}

_S = TransactionState
#: target state -> the states it may be entered from (Kafka's ``validPreviousStates``).
VALID_PREVIOUS: Mapping[TransactionState, frozenset[TransactionState]] = {
    _S.EMPTY: frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.ONGOING: frozenset({_S.ONGOING, _S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.PREPARE_COMMIT: frozenset({_S.ONGOING}),
    _S.PREPARE_ABORT: frozenset({_S.ONGOING, _S.PREPARE_EPOCH_FENCE}),
    _S.COMPLETE_COMMIT: frozenset({_S.PREPARE_COMMIT}),
    _S.COMPLETE_ABORT: frozenset({_S.PREPARE_ABORT}),
    _S.DEAD: frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.PREPARE_EPOCH_FENCE: frozenset({_S.ONGOING}),
}
#: States in which an idle transactional id may be forgotten.
EXPIRATION_ALLOWED = frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT})


def is_epoch_exhausted(epoch: int) -> bool:
    """True when no further epoch may be handed to a client: the last one is kept free so the
    coordinator can always fence the current producer."""
    return epoch >= MAX_EPOCH - 1


class IllegalTransitionError(KafkaError):
    """A transition the table forbids. Reaching it is a coordinator bug, reported to the client
    as INVALID_TXN_STATE."""

    code = ErrorCode.invalid_txn_state


@dataclass(frozen=True, slots=True)
class TransactionMetadata:
    """What the coordinator knows of one transactional id (a snapshot; replay replaces it).

    Every field but the last two is persisted in ``__transaction_state``. ``last_producer_id``
    and ``last_producer_epoch`` serve only KIP-360 retries of InitProducerId; like Kafka (whose
    v0 record has no room for them) they are not persisted and are -1 after a reload.
    ``txn_start_timestamp`` is -1 until the first partition of a transaction is added.
    """

    transactional_id: str
    producer_id: int
    producer_epoch: int
    txn_timeout_ms: int
    state: TransactionState
    partitions: frozenset[TopicPartition]
    txn_start_timestamp: int
    txn_last_update_timestamp: int
    last_producer_id: int = NO_PRODUCER_ID
    last_producer_epoch: int = NO_PRODUCER_EPOCH

    @classmethod
    def new(
        cls, transactional_id: str, producer_id: int, txn_timeout_ms: int, now_ms: int
    ) -> TransactionMetadata:
        """A transactional id seen for the first time: no epoch yet (the first bump gives 0)."""
        return cls(
            transactional_id,
            producer_id,
            NO_PRODUCER_EPOCH,
            txn_timeout_ms,
            TransactionState.EMPTY,
            frozenset(),
            -1,
            now_ms,
        )

    @property
    def is_epoch_exhausted(self) -> bool:
        return is_epoch_exhausted(self.producer_epoch)

    @property
    def has_pending_transaction(self) -> bool:
        return self.state in (_S.ONGOING, _S.PREPARE_COMMIT, _S.PREPARE_ABORT)

    def transition(self, target: TransactionState, **changes: object) -> TransactionMetadata:
        """``self`` moved to ``target`` with ``changes`` applied; raises
        :class:`IllegalTransitionError` (and changes nothing) if the table forbids it."""
        if self.state not in VALID_PREVIOUS[target]:
            raise IllegalTransitionError(
                f"transactional id {self.transactional_id}: {self.state.kafka_name} cannot "
                f"become {target.kafka_name}"
            )
        epoch = changes.get("producer_epoch", self.producer_epoch)
        assert isinstance(epoch, int)
        if target is not _S.DEAD and not 0 <= epoch <= MAX_EPOCH:
            raise IllegalTransitionError(f"illegal producer epoch {epoch}")
        return dataclasses.replace(self, state=target, **changes)  # type: ignore[arg-type]

    # -- the transitions, as Kafka's TransactionMetadata.prepare* ---------------------------

    def prepare_increment_epoch(
        self, txn_timeout_ms: int, expected_epoch: int | None, now_ms: int
    ) -> TransactionMetadata | None:
        """InitProducerId on an id with no open transaction: bump the epoch.

        Without an expected epoch (a new producer) the epoch is bumped and the last epoch
        forgotten. With one (KIP-360): equal to the current epoch (or no epoch yet) bumps and
        remembers the current one as last; equal to the last epoch is a retry of a bump that
        succeeded, answered with the current epoch unchanged; anything else returns None — the
        caller answers PRODUCER_FENCED.
        """
        bumped = self.producer_epoch + 1
        if expected_epoch is None:
            epoch, last = bumped, NO_PRODUCER_EPOCH
        elif self.producer_epoch == NO_PRODUCER_EPOCH or expected_epoch == self.producer_epoch:
            epoch, last = bumped, self.producer_epoch
        elif expected_epoch == self.last_producer_epoch:
            epoch, last = self.producer_epoch, self.last_producer_epoch
        else:
            return None
        if epoch != self.producer_epoch and self.is_epoch_exhausted:
            raise IllegalTransitionError(
                f"producer id {self.producer_id} has no epochs left to bump to"
            )
        return self.transition(
            _S.EMPTY,
            producer_epoch=epoch,
            last_producer_epoch=last,
            last_producer_id=self.producer_id,
            txn_timeout_ms=txn_timeout_ms,
            partitions=frozenset(),
            txn_start_timestamp=-1,
            txn_last_update_timestamp=now_ms,
        )

    def prepare_producer_id_rotation(
        self, new_producer_id: int, txn_timeout_ms: int, now_ms: int, record_last_epoch: bool
    ) -> TransactionMetadata:
        """The epoch is exhausted: continue under a new producer id at epoch 0."""
        if self.has_pending_transaction:
            raise IllegalTransitionError("cannot rotate producer ids with a transaction open")
        if new_producer_id < 0:
            raise IllegalTransitionError(f"illegal producer id {new_producer_id}")
        return self.transition(
            _S.EMPTY,
            producer_id=new_producer_id,
            producer_epoch=0,
            last_producer_id=self.producer_id,
            last_producer_epoch=self.producer_epoch if record_last_epoch else NO_PRODUCER_EPOCH,
            txn_timeout_ms=txn_timeout_ms,
            partitions=frozenset(),
            txn_start_timestamp=-1,
            txn_last_update_timestamp=now_ms,
        )

    def prepare_add_partitions(
        self, added: Iterable[TopicPartition], now_ms: int
    ) -> TransactionMetadata:
        """Add partitions; the first addition starts the transaction (and its timeout)."""
        start = now_ms if self.state in EXPIRATION_ALLOWED else self.txn_start_timestamp
        return self.transition(
            _S.ONGOING,
            partitions=self.partitions | frozenset(added),
            txn_start_timestamp=start,
            txn_last_update_timestamp=now_ms,
        )

    def prepare_abort_or_commit(self, commit: bool, now_ms: int) -> TransactionMetadata:
        target = _S.PREPARE_COMMIT if commit else _S.PREPARE_ABORT
        return self.transition(target, txn_last_update_timestamp=now_ms)

    def prepare_fence(self, now_ms: int) -> TransactionMetadata:
        """Fence the current producer of an Ongoing transaction: bump the epoch (through
        PrepareEpochFence) and decide to abort. The new epoch is never handed to a client."""
        if self.producer_epoch >= MAX_EPOCH:
            raise IllegalTransitionError("cannot fence a producer at the largest epoch")
        fencing = self.transition(
            _S.PREPARE_EPOCH_FENCE,
            producer_epoch=self.producer_epoch + 1,
            last_producer_epoch=NO_PRODUCER_EPOCH,
        )
        return fencing.transition(_S.PREPARE_ABORT, txn_last_update_timestamp=now_ms)

    def prepare_complete(self, now_ms: int) -> TransactionMetadata:
        """Every marker is written: the transaction is over and holds no partitions."""
        if self.state is _S.PREPARE_COMMIT:
            target = _S.COMPLETE_COMMIT
        elif self.state is _S.PREPARE_ABORT:
            target = _S.COMPLETE_ABORT
        else:
            raise IllegalTransitionError(
                f"transactional id {self.transactional_id} is {self.state.kafka_name}, "
                "not preparing to commit or abort"
            )
        return self.transition(target, partitions=frozenset(), txn_last_update_timestamp=now_ms)

    def prepare_dead(self) -> TransactionMetadata:
        """The id expires (the caller writes a tombstone)."""
        return self.transition(_S.DEAD, partitions=frozenset())
