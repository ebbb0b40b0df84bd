"""Synchronous, clock-injected storage engine: partition logs on local disk."""

from odradek.storage.clock import Clock, ManualClock, SystemClock
from odradek.storage.log import (
    AppendOrigin,
    FetchDataInfo,
    FetchIsolation,
    LogAppendInfo,
    PartitionLog,
    SegmentInfo,
    TimestampAndOffset,
)
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import LogManager

__all__ = [
    "AppendOrigin",
    "Clock",
    "FetchDataInfo",
    "FetchIsolation",
    "LogAppendInfo",
    "LogConfig",
    "LogManager",
    "ManualClock",
    "PartitionLog",
    "SegmentInfo",
    "SystemClock",
    "TimestampAndOffset",
]
