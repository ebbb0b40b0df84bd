"""What the transaction coordinator needs from its owner: config, time, producer ids, and the
marker writer. (Its own records go out through the coordinator runtime, not the context.)

The broker implements :class:`TxnContext`; unit tests implement it with a manual clock and
in-memory markers. Everything runs on the owner's thread, synchronously.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from odradek.coordinator.timer import Timer
from odradek.errors import ErrorCode

if TYPE_CHECKING:
    from odradek.config import BrokerConfig

__all__ = ["TxnConfig", "TxnContext"]


@dataclass(frozen=True, slots=True)
class TxnConfig:
    """The broker settings the transaction coordinator follows (Kafka's names in comments)."""

    state_log_partitions: int = 50  # transaction.state.log.num.partitions
    max_timeout_ms: int = 900_000  # transaction.max.timeout.ms
    transactional_id_expiration_ms: int = 604_800_000  # transactional.id.expiration.ms
    # transaction.abort.timed.out.transaction.cleanup.interval.ms
    abort_timed_out_interval_ms: int = 10_000
    # transaction.remove.expired.transaction.cleanup.interval.ms
    remove_expired_interval_ms: int = 3_600_000
    #: Pause before writing markers again to partitions whose marker write failed (Kafka's
    #: marker sender retries on its own schedule; not a Kafka setting).
    marker_retry_backoff_ms: int = 100

    @classmethod
    def from_broker(cls, config: BrokerConfig) -> TxnConfig:
        return cls(
            state_log_partitions=config.transaction_state_log_num_partitions,
            max_timeout_ms=config.transaction_max_timeout_ms,
            transactional_id_expiration_ms=config.transactional_id_expiration_ms,
            abort_timed_out_interval_ms=(
                config.transaction_abort_timed_out_transaction_cleanup_interval_ms
            ),
            remove_expired_interval_ms=(
                config.transaction_remove_expired_transaction_cleanup_interval_ms
            ),
        )


class TxnContext(Protocol):
    """Services the owner gives :class:`~odradek.coordinator.txn.coordinator.
    TransactionCoordinator` (same thread, no I/O in the coordinator itself)."""

    @property
    def timer(self) -> Timer:
        """The timer the owner advances; the coordinator keeps its periodic jobs on it."""
        ...

    @property
    def config(self) -> TxnConfig: ...

    def now_ms(self) -> int:
        """Wall-clock milliseconds (transaction timestamps and timeouts)."""
        ...

    def allocate_producer_id(self) -> int:
        """A producer id never handed out before (durable across restarts)."""
        ...

    def write_markers(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        partitions: Sequence[tuple[str, int]],
        *,
        state_partition: int,
    ) -> dict[tuple[str, int], ErrorCode]:
        """Append a COMMIT (``commit``) or ABORT control batch of ``producer_id`` at
        ``producer_epoch`` to each partition, and for ``__consumer_offsets`` partitions complete
        the group coordinator's pending transactional offsets. The batch carries the coordinator
        epoch of ``state_partition`` (the transaction's ``__transaction_state`` partition: its
        leader epoch as this coordinator holds it), by which a partition refuses the markers of
        a deposed coordinator (TRANSACTION_COORDINATOR_FENCED). Returns each partition's
        outcome; the coordinator writes a failed partition's marker again later. A partition
        left out of the result is one whose marker is on its way to another broker (its leader):
        the coordinator asks again after the retry backoff, or sooner when the context calls
        :meth:`~odradek.coordinator.txn.coordinator.TransactionCoordinator.retry_markers`, and
        the context then answers with that write's outcome."""
        ...

    def partition_exists(self, topic: str, partition: int) -> bool: ...

    def offsets_partition_for(self, group_id: str) -> int:
        """The ``__consumer_offsets`` partition that holds ``group_id``."""
        ...
