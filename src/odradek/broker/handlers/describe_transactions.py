"""DescribeTransactions (key 65, KIP-664): the state of given transactional ids.

Each id is answered on its own: its state, producer id and epoch, timeout, start time and the
partitions of its open transaction (while it is being completed, only those still waiting for
a marker). Unknown ids get TRANSACTIONAL_ID_NOT_FOUND, an empty id INVALID_REQUEST.
"""

from __future__ import annotations

import datetime
import functools
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_of
from odradek.coordinator.txn.coordinator import TransactionCoordinator
from odradek.coordinator.txn.state import TransactionMetadata
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 65
_ZERO = datetime.timedelta(0)
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)


def _state(mod: Any, transactional_id: str, meta: TransactionMetadata) -> Any:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(meta.partitions):
        by_topic.setdefault(topic, []).append(partition)
    return build(
        mod.TransactionState,
        error_code=ErrorCode.none,
        transactional_id=transactional_id,
        transaction_state=meta.state.kafka_name,
        transaction_timeout=datetime.timedelta(milliseconds=meta.txn_timeout_ms),
        # -1 (no transaction started) is sent as -1, as Kafka sends it.
        transaction_start_time=_EPOCH + datetime.timedelta(milliseconds=meta.txn_start_timestamp),
        producer_id=meta.producer_id,
        producer_epoch=meta.producer_epoch,
        topics=tuple(
            build(mod.TopicData, topic=topic, partitions=tuple(ps))
            for topic, ps in by_topic.items()
        ),
    )


def _error(mod: Any, transactional_id: str, code: ErrorCode) -> Any:
    return build(
        mod.TransactionState,
        error_code=code,
        transactional_id=transactional_id,
        transaction_state="",
        transaction_timeout=_ZERO,
        transaction_start_time=_EPOCH,
        producer_id=0,
        producer_epoch=0,
        topics=(),
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    mod = response_module(KEY, request.api_version)
    coordinator: TransactionCoordinator = broker.txn_coordinator
    states = []
    for transactional_id in request.body.transactional_ids:
        try:
            meta = broker.transactions.run(
                transactional_id, functools.partial(coordinator.describe, transactional_id)
            )
        except Exception as e:
            code, _ = error_of(e, context=f"describing {transactional_id}", api_key=KEY,
                               version=request.api_version)
            states.append(_error(mod, transactional_id, code))
        else:
            states.append(_state(mod, transactional_id, meta))
    return build(
        mod.DescribeTransactionsResponse, throttle_time=_ZERO, transaction_states=tuple(states)
    )


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    return build(
        mod.DescribeTransactionsResponse,
        throttle_time=_ZERO,
        transaction_states=tuple(_error(mod, t, code) for t in request.body.transactional_ids),
    )


API = ApiHandler(
    api_key=KEY,
    name="DescribeTransactions",
    min_version=0,
    max_version=0,
    handle=handle,
    error_response=error_response,
)
