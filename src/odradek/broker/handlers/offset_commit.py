"""OffsetCommit (key 8): store a group's consumed positions in ``__consumer_offsets``.

Classic groups check member id and generation (admin commits with generation -1 are accepted
for empty groups); KIP-848 groups check member id and epoch (v9). v2–v4's retention time sets
an explicit expiry; later versions follow ``offsets.retention.minutes``.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.handlers._offsets import (
    Result,
    every_partition,
    in_request_order,
    known_partitions,
    requested_offsets,
    topic_results,
)
from odradek.errors import ErrorCode
from odradek.protocol.build import response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 8
_ZERO = datetime.timedelta(0)


def _response(version: int, results: list[Result]) -> Any:
    return topic_results(
        response_module(KEY, version),
        "OffsetCommitResponse",
        "OffsetCommitResponseTopic",
        "OffsetCommitResponsePartition",
        results,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    expire = -1
    retention = getattr(body, "retention_time", None)
    if retention is not None:
        retention_ms = int(retention / datetime.timedelta(milliseconds=1))
        if retention_ms >= 0:
            expire = broker.clock.milliseconds() + retention_ms
    offsets = requested_offsets(body)
    known, unknown = known_partitions(broker, offsets)
    coordinator = broker.group_coordinator
    results = broker.groups.write(body.group_id, lambda: coordinator.commit_offsets(
        body.group_id,
        member_id=body.member_id,
        generation_or_epoch=body.generation_id_or_member_epoch,
        instance_id=getattr(body, "group_instance_id", None),
        offsets=known,
        api_version=version,
        expire_timestamp=expire,
    ))
    return _response(version, in_request_order(offsets, results, unknown))


def error_response(request: Request, code: ErrorCode) -> Any:
    return _response(request.api_version, every_partition(request.body, code))


API = ApiHandler(
    api_key=KEY,
    name="OffsetCommit",
    min_version=2,
    max_version=9,
    handle=handle,
    error_response=error_response,
)
