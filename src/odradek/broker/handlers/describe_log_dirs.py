"""DescribeLogDirs (key 35): the one log directory and the size of each partition in it.

``topics`` null means every partition; otherwise the listed partitions that exist (others are
left out, as Kafka does; so are topics left with no partition). The offset lag of a current log
is max(high watermark - log end offset, 0), i.e. 0; there are no future logs. v4 adds the volume's
total and usable bytes; if the directory cannot be inspected the result is KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices
    from odradek.storage.log import PartitionLog

__all__ = ["API"]

KEY = 35
_ZERO = datetime.timedelta(0)


def _wanted(request: Request) -> set[tuple[str, int]] | None:
    topics = request.body.topics
    if topics is None:
        return None
    return {(t.topic, p) for t in topics for p in t.partitions}


def _partition(mod: Any, log: PartitionLog) -> Any:
    return build(
        mod.DescribeLogDirsPartition,
        partition_index=log.partition,
        partition_size=log.size_in_bytes,
        offset_lag=max(log.high_watermark - log.log_end_offset, 0),
        is_future_key=False,
    )


def _result(mod: Any, log_dir: str, code: ErrorCode, topics: tuple[Any, ...] = (),
            total: int = -1, usable: int = -1) -> Any:
    return build(
        mod.DescribeLogDirsResult,
        error_code=code,
        log_dir=log_dir,
        topics=topics,
        total_bytes=total,
        usable_bytes=usable,
        is_cordoned=False,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    mod = response_module(KEY, request.api_version)
    log_dir = os.path.abspath(broker.data_dir)
    wanted = _wanted(request)
    by_topic: dict[str, list[PartitionLog]] = defaultdict(list)
    for log in broker.logs.all_logs():
        if wanted is None or (log.topic, log.partition) in wanted:
            by_topic[log.topic].append(log)
    topics = tuple(
        build(
            mod.DescribeLogDirsTopic,
            name=topic,
            partitions=tuple(
                _partition(mod, log) for log in sorted(logs, key=lambda log: log.partition)
            ),
        )
        for topic, logs in sorted(by_topic.items())
    )
    try:
        usage = shutil.disk_usage(log_dir)
    except OSError:
        result = _result(mod, log_dir, ErrorCode.kafka_storage_error)
    else:
        result = _result(mod, log_dir, ErrorCode.none, topics, usage.total, usage.free)
    return build(
        mod.DescribeLogDirsResponse,
        throttle_time=_ZERO,
        error_code=ErrorCode.none,
        results=(result,),
    )


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    return build(mod.DescribeLogDirsResponse, throttle_time=_ZERO, error_code=code, results=())


API = ApiHandler(
    api_key=KEY,
    name="DescribeLogDirs",
    min_version=1,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
