"""EndTxn (key 26): commit or abort a producer's open transaction.

Answered once the decision (PrepareCommit / PrepareAbort) is in ``__transaction_state``; the
coordinator writes the markers and the completion in the same call unless a marker write fails,
in which case it finishes later and meanwhile answers CONCURRENT_TRANSACTIONS to the producer's
next transactional request. Versions before 2 get INVALID_PRODUCER_EPOCH instead of
PRODUCER_FENCED, as Kafka's broker answers them.

v5 (an epoch bump per transaction, KIP-890 part 2 / transaction version 2) is not served.
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

KEY = 26
_ZERO = datetime.timedelta(0)


def _body(version: int, code: ErrorCode) -> Any:
    mod = response_module(KEY, version)
    return build(mod.EndTxnResponse, throttle_time=_ZERO, error_code=code)


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    coordinator: TransactionCoordinator = broker.txn_coordinator
    broker.transactions.write(body.transactional_id, lambda: coordinator.end_txn(
        body.transactional_id, body.producer_id, body.producer_epoch, body.committed
    ))
    return _body(request.api_version, ErrorCode.none)


def error_response(request: Request, code: ErrorCode) -> Any:
    return _body(request.api_version, code)


API = ApiHandler(
    api_key=KEY,
    name="EndTxn",
    min_version=0,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
