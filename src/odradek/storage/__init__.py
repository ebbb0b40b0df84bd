"""Synchronous, clock-injected storage engine: partition logs on local disk."""

from odradek.storage.log import (
    AppendOrigin,
    FetchDataInfo,
    FetchIsolation,
    LogAppendInfo,
    PartitionLog,
    SegmentInfo,
    TimestampAndOffset,
    UnexpectedAppendOffsetError,
)
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import LogManager

__all__ = [
    "AppendOrigin",
    "FetchDataInfo",
    "FetchIsolation",
    "LogAppendInfo",
    "LogConfig",
    "LogManager",
    "PartitionLog",
    "SegmentInfo",
    "TimestampAndOffset",
    "UnexpectedAppendOffsetError",
]
