"""AddPartitionsToTxn (key 24): add partitions to a producer's open transaction.

v0–v3 come from producers and carry one transaction. v4 (KIP-890 part 1) comes from brokers
and batches transactions, each either added or only *verified* (``verify_only``: is every
partition already in the transaction?). All go to the transaction coordinator; a problem with
the whole transaction is reported on each of its partitions. As in Kafka, producers (v0–v3)
may not add partitions of internal topics (TOPIC_AUTHORIZATION_FAILED); AddOffsetsToTxn is the
way a transaction reaches ``__consumer_offsets``. Versions before 2 get
INVALID_PRODUCER_EPOCH instead of PRODUCER_FENCED, and versions before 5 INVALID_TXN_STATE
instead of TRANSACTION_ABORTABLE (codes those versions do not know), as Kafka's broker does.

v5 is not served: it belongs with transaction version 2 (KIP-890 part 2), which this broker does
not implement.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import compatible_code, error_code_for
from odradek.broker.handlers._common import is_internal
from odradek.coordinator.txn.coordinator import TransactionCoordinator
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 24
_ZERO = datetime.timedelta(0)


def _partitions(topics: Iterable[Any]) -> list[tuple[str, int]]:
    return [(t.name, p) for t in topics for p in t.partitions]


def _topic_results(mod: Any, version: int, results: Mapping[tuple[str, int], ErrorCode]) -> Any:
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), code in sorted(results.items()):
        by_topic.setdefault(topic, []).append(
            build(
                mod.AddPartitionsToTxnPartitionResult,
                partition_index=partition,
                partition_error_code=compatible_code(KEY, version, code),
            )
        )
    return tuple(
        build(mod.AddPartitionsToTxnTopicResult, name=name, results_by_partition=tuple(parts))
        for name, parts in by_topic.items()
    )


def _one(
    broker: BrokerServices,
    transactional_id: str,
    producer_id: int,
    producer_epoch: int,
    topics: Iterable[Any],
    *,
    verify_only: bool,
    from_client: bool,
) -> dict[tuple[str, int], ErrorCode]:
    partitions = _partitions(topics)
    if from_client and any(is_internal(topic) for topic, _ in partitions):
        # Producers may not write to internal topics: Kafka treats them as unauthorized, and
        # fails the whole transaction's request as for any partition it refuses.
        return {
            tp: (
                ErrorCode.topic_authorization_failed
                if is_internal(tp[0])
                else ErrorCode.operation_not_attempted
            )
            for tp in partitions
        }
    coordinator: TransactionCoordinator = broker.txn_coordinator
    try:
        return broker.transactions.write(transactional_id, lambda: coordinator.add_partitions(
            transactional_id, producer_id, producer_epoch, partitions, verify_only=verify_only
        ))
    except Exception as e:
        # Downgraded for old clients where the results are built (_topic_results).
        code = error_code_for(e, context=f"adding partitions to {transactional_id}")
        return dict.fromkeys(partitions, code)


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    mod = response_module(KEY, version)
    if version < 4:
        results = _one(
            broker,
            body.v3_and_below_transactional_id,
            body.v3_and_below_producer_id,
            body.v3_and_below_producer_epoch,
            body.v3_and_below_topics,
            verify_only=False,
            from_client=True,
        )
        return build(
            mod.AddPartitionsToTxnResponse,
            throttle_time=_ZERO,
            results_by_topic_v3_and_below=_topic_results(mod, version, results),
        )
    transactions = []
    for txn in body.transactions:
        results = _one(
            broker,
            txn.transactional_id,
            txn.producer_id,
            txn.producer_epoch,
            txn.topics,
            verify_only=txn.verify_only,
            from_client=False,
        )
        transactions.append(
            build(
                mod.AddPartitionsToTxnResult,
                transactional_id=txn.transactional_id,
                topic_results=_topic_results(mod, version, results),
            )
        )
    return build(
        mod.AddPartitionsToTxnResponse,
        throttle_time=_ZERO,
        error_code=ErrorCode.none,
        results_by_transaction=tuple(transactions),
    )


def error_response(request: Request, code: ErrorCode) -> Any:
    version = request.api_version
    mod = response_module(KEY, version)
    if version < 4:
        results = dict.fromkeys(_partitions(request.body.v3_and_below_topics), code)
        return build(
            mod.AddPartitionsToTxnResponse,
            throttle_time=_ZERO,
            results_by_topic_v3_and_below=_topic_results(mod, version, results),
        )
    return build(
        mod.AddPartitionsToTxnResponse,
        throttle_time=_ZERO,
        error_code=compatible_code(KEY, version, code),
        results_by_transaction=(),
    )


API = ApiHandler(
    api_key=KEY,
    name="AddPartitionsToTxn",
    min_version=0,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
