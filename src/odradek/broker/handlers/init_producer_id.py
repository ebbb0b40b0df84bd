"""InitProducerId (key 22): producer ids for idempotent and transactional producers.

Ids come from the metadata store's durable allocator, so no id is handed out twice, even across a
crash. A producer without a transactional id always gets a fresh id at epoch 0, as Kafka does;
with one, the transaction coordinator bumps the id's epoch (fencing older producers and aborting
their open transaction). PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v4.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 22
_ZERO = datetime.timedelta(0)


def _body(version: int, code: ErrorCode, producer_id: int = -1, epoch: int = -1) -> Any:
    mod = response_module(KEY, version)
    return build(
        mod.InitProducerIdResponse,
        throttle_time=_ZERO,
        error_code=code,
        producer_id=producer_id,
        producer_epoch=epoch,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    timeout_ms = int(body.transaction_timeout / datetime.timedelta(milliseconds=1))
    coordinator = broker.txn_coordinator
    result = broker.transactions.init_producer_id(
        body.transactional_id,
        lambda: coordinator.init_producer_id(
            body.transactional_id,
            timeout_ms,
            getattr(body, "producer_id", -1),
            getattr(body, "producer_epoch", -1),
        ),
    )
    return _body(request.api_version, ErrorCode.none, result.producer_id, result.producer_epoch)


def error_response(request: Request, code: ErrorCode) -> Any:
    return _body(request.api_version, code)


API = ApiHandler(
    api_key=KEY,
    name="InitProducerId",
    min_version=0,
    max_version=5,
    handle=handle,
    error_response=error_response,
)
