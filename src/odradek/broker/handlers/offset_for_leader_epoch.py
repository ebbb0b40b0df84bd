"""OffsetForLeaderEpoch (key 23): the end offset of a leader epoch, which clients use to check
that their position is still on the leader's log (KIP-320) after metadata changes. Answered by
the partition's leader only, after checking the client's current leader epoch; the current
epoch ends at the log end offset even before its first append (as if recorded when this broker
became leader, as Kafka records it)."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.replica_manager import end_offset_for_epoch
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 23
_ZERO = datetime.timedelta(0)


def _result(mod: Any, partition: int, code: ErrorCode, epoch: int = -1, end: int = -1) -> Any:
    return build(
        mod.EpochEndOffset, error_code=code, partition=partition, leader_epoch=epoch,
        end_offset=end,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    mod = response_module(KEY, request.api_version)
    topics = []
    for t in request.body.topics:
        parts = []
        for p in t.partitions:
            try:
                log, current = broker.replicas.leader_log_and_epoch(
                    t.topic, p.partition, p.current_leader_epoch
                )
                epoch, end = end_offset_for_epoch(log, p.leader_epoch, current)
                parts.append(_result(mod, p.partition, ErrorCode.none, epoch, end))
            except Exception as e:
                code = error_code_for(e, context=f"offset for epoch {t.topic}-{p.partition}")
                parts.append(_result(mod, p.partition, code))
        topics.append(build(mod.OffsetForLeaderTopicResult, topic=t.topic, partitions=tuple(parts)))
    return build(mod.OffsetForLeaderEpochResponse, throttle_time=_ZERO, topics=tuple(topics))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    topics = tuple(
        build(
            mod.OffsetForLeaderTopicResult,
            topic=t.topic,
            partitions=tuple(_result(mod, p.partition, code) for p in t.partitions),
        )
        for t in request.body.topics
    )
    return build(mod.OffsetForLeaderEpochResponse, throttle_time=_ZERO, topics=topics)


API = ApiHandler(
    api_key=KEY,
    name="OffsetForLeaderEpoch",
    min_version=2,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
