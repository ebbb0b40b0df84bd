"""KIP-890 part 1 verification against a transaction coordinator on another broker.

A transactional produce, and a TxnOffsetCommit, must go to a partition already in the
producer's open transaction. When this broker coordinates the transactional id the check is a
local call (``add_partitions(..., verify_only=True)``); when another broker does (it leads the
id's ``__transaction_state`` partition), this asks it with AddPartitionsToTxn v4,
``verify_only``, as Kafka's ``AddPartitionsToTxnManager`` does, through the broker's
:class:`~odradek.broker.inter_broker.InterBrokerClient`.

Owned by the broker's event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kio.schema.add_partitions_to_txn.v4 import request as add_partitions_v4
from kio.schema.types import ProducerId, TopicName, TransactionalId
from kio.static.primitive import i16, i32

from odradek.broker.errors import error_code_for
from odradek.errors import ErrorCode

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["RETRIABLE", "verify_remotely"]

#: Answers that say "ask again later" rather than "not in the transaction".
RETRIABLE = frozenset({
    ErrorCode.concurrent_transactions,
    ErrorCode.coordinator_load_in_progress,
    ErrorCode.coordinator_not_available,
    ErrorCode.not_coordinator,
    ErrorCode.network_exception,
    ErrorCode.request_timed_out,
})


async def verify_remotely(
    broker: BrokerServices,
    transactional_id: str,
    producer_id: int,
    producer_epoch: int,
    partitions: Sequence[tuple[str, int]],
) -> dict[tuple[str, int], ErrorCode]:
    """Each partition's answer from the coordinator of ``transactional_id``: NONE when it is in
    the producer's open transaction. A coordinator that cannot be asked answers every partition
    with COORDINATOR_NOT_AVAILABLE (no leader), NETWORK_EXCEPTION, or the response's error."""
    txns = broker.transactions
    state = broker.cluster.partition(txns.topic.name, txns.partition_for(transactional_id))
    if state is None or state.leader < 0:
        return dict.fromkeys(partitions, ErrorCode.coordinator_not_available)
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    v4 = add_partitions_v4
    body = v4.AddPartitionsToTxnRequest(transactions=(v4.AddPartitionsToTxnTransaction(
        transactional_id=TransactionalId(transactional_id),
        producer_id=ProducerId(producer_id),
        producer_epoch=i16(producer_epoch),
        verify_only=True,
        topics=tuple(
            v4.AddPartitionsToTxnTopic(
                name=TopicName(topic), partitions=tuple(i32(p) for p in parts)
            )
            for topic, parts in by_topic.items()
        ),
    ),))
    try:
        response = await broker.inter_broker.send(state.leader, body)
    except Exception as e:
        code = error_code_for(e, context=f"verifying the transaction of {transactional_id}")
        return dict.fromkeys(partitions, code)
    if response.error_code != ErrorCode.none:
        return dict.fromkeys(partitions, ErrorCode(response.error_code))
    codes: dict[tuple[str, int], ErrorCode] = {}
    for result in response.results_by_transaction:
        if result.transactional_id != transactional_id:
            continue
        for topic in result.topic_results:
            for p in topic.results_by_partition:
                codes[(topic.name, int(p.partition_index))] = ErrorCode(p.partition_error_code)
    return {tp: codes.get(tp, ErrorCode.unknown_server_error) for tp in partitions}
