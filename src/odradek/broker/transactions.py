"""The transaction coordinator on the broker's event loop: ``__transaction_state`` (created on
first use, compacted), its loading and timers (hosted as the group coordinator is, by
:class:`~odradek.broker.internal_topics.CoordinatorHost`), and the markers it writes.
Handlers reach it through :meth:`TxnRuntime.write` / :meth:`TxnRuntime.run` with the
transactional id, which answer COORDINATOR_LOAD_IN_PROGRESS while its partition is loading.

Markers are COMMIT/ABORT control batches appended to each partition of a transaction as the
coordinator; storage recognises them and ends the producer's transaction there (last stable
offset, aborted-transaction index). A marker in ``__consumer_offsets`` also tells the group
coordinator to commit or drop the transaction's pending offsets.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from odradek.broker.errors import error_code_for
from odradek.broker.internal_topics import CoordinatorHost, InternalTopic, LoadHook
from odradek.coordinator.runtime import CoordinatorResult
from odradek.coordinator.timer import Timer
from odradek.coordinator.txn.context import TxnConfig
from odradek.coordinator.txn.coordinator import TransactionCoordinator, TransactionListing
from odradek.errors import ErrorCode
from odradek.protocol.records import encode_control_batch
from odradek.storage.log import AppendOrigin
from odradek.topic_names import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["TxnRuntime"]

log = logging.getLogger("odradek.broker.transactions")

R = TypeVar("R")


class TxnRuntime(CoordinatorHost):
    """Implements :class:`~odradek.coordinator.txn.context.TxnContext` for the broker."""

    def __init__(self, broker: BrokerServices, *, load_hook: LoadHook | None = None) -> None:
        self._broker = broker
        config = TxnConfig.from_broker(broker.config)
        existing = broker.topics.topic(TRANSACTION_STATE_TOPIC)
        if existing is not None:
            # Ids hash over the partitions the topic has, whatever the setting says today.
            config = dataclasses.replace(config, state_log_partitions=existing.partitions)
        self._config = config
        self._timer = Timer()
        self.coordinator = TransactionCoordinator(self)
        topic = InternalTopic(
            broker,
            TRANSACTION_STATE_TOPIC,
            self._config.state_log_partitions,
            {"cleanup.policy": "compact", "segment.bytes": "104857600",
             "compression.type": "uncompressed", "min.insync.replicas": "1"},
        )
        super().__init__(broker, topic, self.coordinator, name="txn", load_hook=load_hook)

    def partition_for(self, key: str) -> int:
        return self.coordinator.partition_for(key)

    def init_producer_id(
        self, transactional_id: str | None, op: Callable[[], CoordinatorResult[R]]
    ) -> R:
        """InitProducerId: an idempotent producer (no transactional id) involves no partition
        of the topic; a transactional one is a write of its id's partition."""
        if transactional_id is None:
            return self.runtime.execute(op())
        return self.write(transactional_id, op)

    def list_transactions(self, op: Callable[[], TransactionListing]) -> TransactionListing:
        """ListTransactions: COORDINATOR_LOAD_IN_PROGRESS while any partition loads, as Kafka."""
        self.check_loaded()
        return op()

    # -- TxnContext ---------------------------------------------------------------------------

    @property
    def timer(self) -> Timer:
        return self._timer

    @property
    def config(self) -> TxnConfig:
        return self._config

    def now_ms(self) -> int:
        return self._broker.clock.milliseconds()

    def allocate_producer_id(self) -> int:
        return self._broker.producer_ids.allocate()

    def write_markers(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        partitions: Sequence[tuple[str, int]],
    ) -> dict[tuple[str, int], ErrorCode]:
        batch = encode_control_batch(
            producer_id, producer_epoch, commit=commit, coordinator_epoch=0,
            timestamp=self.now_ms(),
        )
        return {
            (topic, partition): self.append_marker(topic, partition, batch, producer_id, commit)
            for topic, partition in partitions
        }

    def append_marker(
        self, topic: str, partition: int, batch: bytes, producer_id: int, commit: bool
    ) -> ErrorCode:
        """Append a COMMIT/ABORT control ``batch`` to ``topic``-``partition``; storage ends the
        producer's transaction there, and in ``__consumer_offsets`` the group coordinator
        commits or drops the transaction's pending offsets. Returns the partition's outcome."""
        context = f"{'COMMIT' if commit else 'ABORT'} marker for {topic}-{partition}"
        try:
            self._broker.replicas.append_as_leader(
                topic, partition, batch, origin=AppendOrigin.COORDINATOR
            )
        except Exception as e:
            return error_code_for(e, context=context)
        if topic == OFFSETS_TOPIC:
            try:
                self._broker.groups.on_marker(partition, producer_id, commit)
            except Exception as e:
                # The marker is written; only the offsets cache missed it (as Kafka).
                return error_code_for(e, context=context)
        return ErrorCode.none

    def partition_exists(self, topic: str, partition: int) -> bool:
        meta = self._broker.topics.topic(topic)
        return meta is not None and 0 <= partition < meta.partitions

    def offsets_partition_for(self, group_id: str) -> int:
        return self._broker.groups.partition_for(group_id)
