"""InitProducerId (key 22): producer ids for idempotent producers.

Ids come from the metadata store's durable allocator, so no id is handed out twice, even across a
crash. A producer without a transactional id always gets a fresh id at epoch 0, as Kafka does.
Transactional ids need the transaction coordinator, which this broker does not run yet.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.registry import ApiHandler
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.app import Broker

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


def handle(broker: Broker, request: Request) -> Any:
    if request.body.transactional_id is not None:
        # No transaction coordinator yet: refuse clearly rather than pretend.
        return _body(request.api_version, ErrorCode.unsupported_version)
    return _body(request.api_version, ErrorCode.none, broker.metadata.allocate_producer_id(), 0)


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
