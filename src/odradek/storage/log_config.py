"""Per-partition log configuration (Kafka's topic-level ``segment.bytes``, ``retention.ms`` ...)."""

from __future__ import annotations

from dataclasses import dataclass

from odradek.errors import InvalidConfigError

__all__ = ["LogConfig", "CREATE_TIME", "LOG_APPEND_TIME"]

CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"

_LONG_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Storage settings of one partition log, with Kafka's defaults.

    Field names are the Kafka names in snake case (``segment.bytes`` -> ``segment_bytes``).
    ``retention_ms``/``retention_bytes`` of -1 mean unlimited.
    """

    segment_bytes: int = 1073741824
    segment_ms: int = 604800000
    segment_index_bytes: int = 10485760
    index_interval_bytes: int = 4096
    retention_ms: int = 604800000
    retention_bytes: int = -1
    flush_messages: int = _LONG_MAX
    flush_ms: int = _LONG_MAX
    message_timestamp_type: str = CREATE_TIME
    max_message_bytes: int = 1048588
    file_delete_delay_ms: int = 60000
    cleanup_policy: str = "delete"

    def __post_init__(self) -> None:
        if self.segment_bytes < 14:
            raise InvalidConfigError(f"segment.bytes must be at least 14, got {self.segment_bytes}")
        if self.segment_ms < 1:
            raise InvalidConfigError(f"segment.ms must be at least 1, got {self.segment_ms}")
        if self.segment_index_bytes < 4:
            raise InvalidConfigError(
                f"segment.index.bytes must be at least 4, got {self.segment_index_bytes}"
            )
        if self.index_interval_bytes < 0:
            raise InvalidConfigError("index.interval.bytes must not be negative")
        if self.retention_ms < -1:
            raise InvalidConfigError("retention.ms must be -1 or more")
        if self.flush_messages < 1 or self.flush_ms < 0:
            raise InvalidConfigError("flush.messages must be >= 1 and flush.ms >= 0")
        if self.message_timestamp_type not in (CREATE_TIME, LOG_APPEND_TIME):
            raise InvalidConfigError(
                f"message.timestamp.type must be CreateTime or LogAppendTime, "
                f"got {self.message_timestamp_type!r}"
            )
        if self.max_message_bytes < 0:
            raise InvalidConfigError("max.message.bytes must not be negative")
        if self.file_delete_delay_ms < 0:
            raise InvalidConfigError("file.delete.delay.ms must not be negative")

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == LOG_APPEND_TIME
