"""DeleteRecords (key 21): move partitions' log start offset forward.

An offset of -1 means the high watermark; any other negative offset, or one beyond the high
watermark, is OFFSET_OUT_OF_RANGE. Each partition answers with its low watermark (the new log start
offset; -1 on error). As Kafka: internal topics are refused (INVALID_TOPIC_EXCEPTION) and so are
topics whose cleanup.policy does not include ``delete`` (POLICY_VIOLATION). With a single replica
the low watermark is reached at once, so the timeout is not used. Only the partition's leader
deletes (NOT_LEADER_OR_FOLLOWER elsewhere).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._common import is_internal
from odradek.errors import (
    ErrorCode,
    InvalidTopicError,
    OffsetOutOfRangeError,
    PolicyViolationError,
)
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API", "HIGH_WATERMARK"]

KEY = 21
_ZERO = datetime.timedelta(0)
#: The request offset that means "up to the high watermark".
HIGH_WATERMARK = -1


def _delete(broker: BrokerServices, topic: str, partition: int, offset: int) -> int:
    if is_internal(topic):
        raise InvalidTopicError(f"Cannot delete records of internal topic {topic}")
    log = broker.replicas.leader_log(topic, partition)
    if "delete" not in log.config.cleanup_policy.split(","):
        raise PolicyViolationError(
            f"Records of partition {topic}-{partition} can not be deleted due to the configured "
            "policy"
        )
    if offset < 0 and offset != HIGH_WATERMARK:
        raise OffsetOutOfRangeError(
            f"The offset {offset} for partition {topic}-{partition} is not valid"
        )
    return log.delete_records_before(offset)


def _partition(mod: Any, index: int, code: ErrorCode, low_watermark: int = -1) -> Any:
    return build(
        mod.DeleteRecordsPartitionResult,
        partition_index=index,
        low_watermark=low_watermark,
        error_code=code,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    mod = response_module(KEY, request.api_version)
    topics = []
    for t in request.body.topics:
        parts = []
        for p in t.partitions:
            try:
                low = _delete(broker, t.name, p.partition_index, p.offset)
            except Exception as e:
                code = error_code_for(e, context=f"delete records of {t.name}-{p.partition_index}")
                parts.append(_partition(mod, p.partition_index, code))
            else:
                parts.append(_partition(mod, p.partition_index, ErrorCode.none, low))
        topics.append(build(mod.DeleteRecordsTopicResult, name=t.name, partitions=tuple(parts)))
    return build(mod.DeleteRecordsResponse, throttle_time=_ZERO, topics=tuple(topics))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    topics = tuple(
        build(
            mod.DeleteRecordsTopicResult,
            name=t.name,
            partitions=tuple(_partition(mod, p.partition_index, code) for p in t.partitions),
        )
        for t in request.body.topics
    )
    return build(mod.DeleteRecordsResponse, throttle_time=_ZERO, topics=topics)


API = ApiHandler(
    api_key=KEY,
    name="DeleteRecords",
    min_version=0,
    max_version=2,
    handle=handle,
    error_response=error_response,
)
