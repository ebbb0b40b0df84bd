"""OffsetDelete (key 47): remove a group's committed offsets of some partitions.

Refused for a partition whose topic the group still consumes (GROUP_SUBSCRIBED_TO_TOPIC), and
for a whole non-consumer group that has members (NON_EMPTY_GROUP), as Kafka does.
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

KEY = 47
_ZERO = datetime.timedelta(0)


def _response(code: ErrorCode, results: list[tuple[str, int, ErrorCode]]) -> Any:
    mod = response_module(KEY, 0)
    by_topic: dict[str, list[Any]] = {}
    for topic, partition, pcode in results:
        by_topic.setdefault(topic, []).append(
            build(mod.OffsetDeleteResponsePartition, partition_index=partition, error_code=pcode)
        )
    return build(
        mod.OffsetDeleteResponse,
        error_code=code,
        throttle_time=_ZERO,
        topics=tuple(
            build(mod.OffsetDeleteResponseTopic, name=t, partitions=tuple(ps))
            for t, ps in by_topic.items()
        ),
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    topics = [(t.name, [p.partition_index for p in t.partitions]) for t in body.topics]
    coordinator = broker.group_coordinator
    results = broker.groups.write(
        body.group_id, lambda: coordinator.delete_offsets(body.group_id, topics)
    )
    return _response(ErrorCode.none, results)


def error_response(request: Request, code: ErrorCode) -> Any:
    return _response(code, [])


API = ApiHandler(
    api_key=KEY,
    name="OffsetDelete",
    min_version=0,
    max_version=0,
    handle=handle,
    error_response=error_response,
)
