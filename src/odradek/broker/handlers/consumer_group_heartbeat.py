"""ConsumerGroupHeartbeat (key 68): join, heartbeat in and leave a KIP-848 consumer group.

Version 1 (KIP-1082) has the client choose its member id and adds the regex subscription. Every
outcome, errors included, is computed by ``ConsumerGroups.heartbeat``; this module only converts
between the wire form and its arguments. Errors carry Kafka's message in ``error_message``.
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import CLIENT_HOST, ApiHandler
from odradek.coordinator.group.consumer import HeartbeatResult
from odradek.coordinator.group.records import TopicPartitions
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 68
_ZERO = datetime.timedelta(0)
_NIL_TOPIC_ID = uuid.UUID(int=0)


def _response(
    version: int,
    code: ErrorCode,
    message: str | None = None,
    result: HeartbeatResult | None = None,
) -> Any:
    mod = response_module(KEY, version)
    assignment = None
    if result is not None and result.assignment is not None:
        assignment = build(
            mod.Assignment,
            topic_partitions=tuple(
                build(mod.TopicPartitions, topic_id=tp.topic_id, partitions=tp.partitions)
                for tp in result.assignment
            ),
        )
    return build(
        mod.ConsumerGroupHeartbeatResponse,
        throttle_time=_ZERO,
        error_code=code,
        error_message=message,
        member_id=result.member_id if result is not None else None,
        member_epoch=result.member_epoch if result is not None else 0,
        heartbeat_interval=datetime.timedelta(
            milliseconds=result.heartbeat_interval_ms if result is not None else 0
        ),
        assignment=assignment,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    owned = None
    if body.topic_partitions is not None:
        owned = tuple(
            TopicPartitions(tp.topic_id or _NIL_TOPIC_ID, tuple(tp.partitions))
            for tp in body.topic_partitions
        )
    consumer = broker.group_coordinator.consumer
    result = broker.groups.write(body.group_id, lambda: consumer.heartbeat(
        group_id=body.group_id,
        member_id=body.member_id,
        member_epoch=body.member_epoch,
        instance_id=body.instance_id,
        rack_id=body.rack_id,
        rebalance_timeout_ms=_ms(body.rebalance_timeout),
        subscribed_topic_names=body.subscribed_topic_names,
        subscribed_topic_regex=getattr(body, "subscribed_topic_regex", None),
        server_assignor=body.server_assignor,
        owned_partitions=owned,
        client_id=request.client_id or "",
        client_host="/" + CLIENT_HOST.get(),
    ))
    return _response(request.api_version, ErrorCode.none, None, result)


def _ms(value: Any) -> int:
    if isinstance(value, datetime.timedelta):
        return int(value / datetime.timedelta(milliseconds=1))
    return int(value)


def error_response(request: Request, code: ErrorCode) -> Any:
    return _response(request.api_version, code)


API = ApiHandler(
    api_key=KEY,
    name="ConsumerGroupHeartbeat",
    min_version=0,
    max_version=1,
    handle=handle,
    error_response=error_response,
)
