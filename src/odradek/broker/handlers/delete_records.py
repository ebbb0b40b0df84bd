"""DeleteRecords (key 21): move partitions' log start offset forward.

An offset of -1 means the high watermark; any other negative offset, or one beyond the high
watermark, is OFFSET_OUT_OF_RANGE. Each partition answers with its low watermark (the new log start
offset; -1 on error). As Kafka: internal topics are refused (INVALID_TOPIC_EXCEPTION) and so are
topics whose cleanup.policy does not include ``delete`` (POLICY_VIOLATION). Only the partition's
leader deletes (NOT_LEADER_OR_FOLLOWER elsewhere).

With several replicas a partition is answered once its *low watermark* -- the lowest log start
offset over the leader and its followers on registered brokers -- has reached the new log start
(Kafka's DelayedDeleteRecords): followers learn the leader's log start from their fetches and
move theirs. Partitions still waiting at the request's ``timeout`` answer REQUEST_TIMED_OUT;
one whose leadership moves meanwhile NOT_LEADER_OR_FOLLOWER.
"""

from __future__ import annotations

import asyncio
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
    # per topic, per partition entry in request order: [index, error, low watermark]
    results: list[tuple[str, list[list[Any]]]] = []
    waits: dict[int, tuple[str, list[Any], asyncio.Future[int]]] = {}
    for t in request.body.topics:
        parts: list[list[Any]] = []
        results.append((t.name, parts))
        for p in t.partitions:
            index = p.partition_index
            try:
                start = _delete(broker, t.name, index, p.offset)
                wait = broker.replicas.wait_for_low_watermark(t.name, index, start)
            except Exception as e:
                code = error_code_for(e, context=f"delete records of {t.name}-{index}")
                parts.append([index, code, -1])
                continue
            if wait is None:
                low = broker.replicas.low_watermark(t.name, index)
                parts.append([index, ErrorCode.none, low])
            else:
                entry = [index, ErrorCode.request_timed_out, -1]
                parts.append(entry)
                waits[len(waits)] = (t.name, entry, wait)
    if not waits:
        return _response(mod, results)

    async def replicated() -> Any:
        futures = [fut for _name, _entry, fut in waits.values()]
        try:
            _done, pending = await asyncio.wait(
                futures, timeout=request.body.timeout.total_seconds()
            )
        except asyncio.CancelledError:
            for fut in futures:  # the client went away: nobody reads how they end
                fut.cancel()
            raise
        for name, entry, fut in waits.values():
            if fut in pending:
                fut.cancel()  # stays REQUEST_TIMED_OUT
                continue
            exc = fut.exception()
            if exc is None:
                entry[1], entry[2] = ErrorCode.none, fut.result()
            else:
                entry[1] = error_code_for(exc, context=f"delete records of {name}-{entry[0]}")
        return _response(mod, results)

    return replicated()


def _response(mod: Any, results: list[tuple[str, list[list[Any]]]]) -> Any:
    topics = tuple(
        build(mod.DeleteRecordsTopicResult, name=name, partitions=tuple(
            _partition(mod, index, code, low) for index, code, low in parts
        ))
        for name, parts in results
    )
    return build(mod.DeleteRecordsResponse, throttle_time=_ZERO, topics=topics)


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
