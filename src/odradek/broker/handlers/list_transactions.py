"""ListTransactions (key 66, KIP-664): transactional ids filtered by state and producer id, and
(v1, KIP-994) by how long their transaction has been running.

State filters use Kafka's state names ("Ongoing", "PrepareCommit"...); names the coordinator
does not know are returned in ``unknown_state_filters``. v2's transactional-id pattern
(KIP-1152, after Kafka 3.9) is not served.
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

KEY = 66
_ZERO = datetime.timedelta(0)


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    coordinator: TransactionCoordinator = broker.txn_coordinator
    listing = broker.transactions.list_transactions(lambda: coordinator.list_transactions(
        states=body.state_filters,
        producer_ids=body.producer_id_filters,
        duration_filter_ms=getattr(body, "duration_filter", -1),
    ))
    return build(
        mod.ListTransactionsResponse,
        throttle_time=_ZERO,
        error_code=ErrorCode.none,
        unknown_state_filters=listing.unknown_state_filters,
        transaction_states=tuple(
            build(
                mod.TransactionState,
                transactional_id=meta.transactional_id,
                producer_id=meta.producer_id,
                transaction_state=meta.state.kafka_name,
            )
            for meta in listing.transactions
        ),
    )


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    return build(
        mod.ListTransactionsResponse,
        throttle_time=_ZERO,
        error_code=code,
        unknown_state_filters=(),
        transaction_states=(),
    )


API = ApiHandler(
    api_key=KEY,
    name="ListTransactions",
    min_version=0,
    max_version=1,
    handle=handle,
    error_response=error_response,
)
