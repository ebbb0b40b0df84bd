"""AddOffsetsToTxn (key 25): make a consumer group's offset commits part of a transaction.

The transaction coordinator adds the group's ``__consumer_offsets`` partition to the
transaction, so EndTxn writes the transaction's marker there too (which commits or discards
the offsets the producer sends with TxnOffsetCommit). Versions before 2 get
INVALID_PRODUCER_EPOCH instead of PRODUCER_FENCED, as Kafka's broker answers them.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.coordinator.txn.coordinator import TransactionCoordinator
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 25
_ZERO = datetime.timedelta(0)


def _body(version: int, code: ErrorCode) -> Any:
    mod = response_module(KEY, version)
    return build(mod.AddOffsetsToTxnResponse, throttle_time=_ZERO, error_code=code)


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    coordinator: TransactionCoordinator = broker.txn_coordinator
    broker.transactions.write(body.transactional_id, lambda: coordinator.add_offsets(
        body.transactional_id, body.producer_id, body.producer_epoch, body.group_id
    ))
    return _body(request.api_version, ErrorCode.none)


def error_response(request: Request, code: ErrorCode) -> Any:
    return _body(request.api_version, code)


API = ApiHandler(
    api_key=KEY,
    name="AddOffsetsToTxn",
    min_version=0,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
