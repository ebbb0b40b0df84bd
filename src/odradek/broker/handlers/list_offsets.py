"""ListOffsets (key 2): earliest, latest, by timestamp and max-timestamp offsets.

For ``read_committed`` (isolation level 1) the log ends at the last stable offset, as in Kafka:
"latest" is the last stable offset and timestamp lookups find nothing past it. Only the
partition's leader answers (NOT_LEADER_OR_FOLLOWER elsewhere), checking the client's leader
epoch (KIP-320); "latest" carries the current leader epoch, and a new leader answers it with
OFFSET_NOT_AVAILABLE (retriable) until its high watermark reaches the start of its epoch
(KIP-207), since before that the offset could be lower than one its predecessor gave.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.replica_manager import epoch_for_offset
from odradek.errors import (
    ErrorCode,
    InvalidRequestError,
)
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices
    from odradek.storage.log import PartitionLog

__all__ = ["API"]

KEY = 2
_ZERO = datetime.timedelta(0)

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4


def _lookup(
    log: PartitionLog, leader_epoch: int, timestamp: int, version: int, read_committed: bool
) -> tuple[int, int, int]:
    """(timestamp, offset, leader_epoch) for one query; offset -1 when no record matches."""
    end = log.last_stable_offset if read_committed else log.high_watermark
    if timestamp == LATEST:
        return -1, end, leader_epoch
    if timestamp in (EARLIEST, EARLIEST_LOCAL) and (timestamp == EARLIEST or version >= 8):
        start = log.log_start_offset
        return -1, start, epoch_for_offset(log, start, leader_epoch)
    if timestamp == MAX_TIMESTAMP and version >= 7:
        found = log.max_timestamp_and_offset()
    elif timestamp < 0:
        raise InvalidRequestError(f"unsupported special timestamp {timestamp} in v{version}")
    else:
        found = log.fetch_offset_by_timestamp(timestamp)
    if found is None or found.offset >= end:
        return -1, -1, -1
    return found.timestamp, found.offset, found.leader_epoch


def _partition(mod: Any, index: int, code: ErrorCode, ts: int = -1, offset: int = -1,
               epoch: int = -1) -> Any:
    return build(
        mod.ListOffsetsPartitionResponse,
        partition_index=index,
        error_code=code,
        timestamp=ts,
        offset=offset,
        leader_epoch=epoch,
        old_style_offsets=(),
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    mod = response_module(KEY, request.api_version)
    read_committed = getattr(request.body, "isolation_level", 0) == 1
    topics = []
    for t in request.body.topics:
        parts = []
        for p in t.partitions:
            try:
                log, current = broker.replicas.leader_log_and_epoch(
                    t.name, p.partition_index, getattr(p, "current_leader_epoch", -1)
                )
                if p.timestamp == LATEST:
                    broker.replicas.check_latest_offset_available(t.name, p.partition_index)
                ts, offset, leader_epoch = _lookup(
                    log, current, p.timestamp, request.api_version, read_committed
                )
                parts.append(
                    _partition(mod, p.partition_index, ErrorCode.none, ts, offset, leader_epoch)
                )
            except Exception as e:
                code = error_code_for(e, context=f"list offsets of {t.name}-{p.partition_index}")
                parts.append(_partition(mod, p.partition_index, code))
        topics.append(build(mod.ListOffsetsTopicResponse, name=t.name, partitions=tuple(parts)))
    return build(mod.ListOffsetsResponse, throttle_time=_ZERO, topics=tuple(topics))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    topics = tuple(
        build(
            mod.ListOffsetsTopicResponse,
            name=t.name,
            partitions=tuple(_partition(mod, p.partition_index, code) for p in t.partitions),
        )
        for t in request.body.topics
    )
    return build(mod.ListOffsetsResponse, throttle_time=_ZERO, topics=topics)


API = ApiHandler(
    api_key=KEY,
    name="ListOffsets",
    min_version=1,
    max_version=8,
    handle=handle,
    error_response=error_response,
)
