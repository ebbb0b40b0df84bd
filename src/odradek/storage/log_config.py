"""Per-partition log configuration (Kafka's topic-level ``segment.bytes``, ``retention.ms`` ...)."""

from __future__ import annotations

from dataclasses import dataclass

from odradek.errors import InvalidConfigError

__all__ = ["LogConfig", "CREATE_TIME", "LOG_APPEND_TIME", "COMPACT", "DELETE"]

CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"
COMPACT = "compact"
DELETE = "delete"

_LONG_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Storage settings of one partition log, with Kafka's defaults.

    Field names are the Kafka names in snake case (``segment.bytes`` -> ``segment_bytes``).
    ``retention_ms``/``retention_bytes`` of -1 mean unlimited. ``cleanup_policy`` is a comma
    separated list of ``compact`` and ``delete`` in any order (empty: neither); the compaction
    settings (``delete_retention_ms``, ``min_cleanable_dirty_ratio``, ``min_compaction_lag_ms``,
    ``max_compaction_lag_ms``) matter only when it includes ``compact``.
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
    cleanup_policy: str = DELETE
    delete_retention_ms: int = 86400000
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = _LONG_MAX

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
        policies = self.cleanup_policies
        if not set(policies) <= {COMPACT, DELETE}:
            raise InvalidConfigError(
                f"cleanup.policy must list compact and/or delete, got {self.cleanup_policy!r}"
            )
        if self.delete_retention_ms < 0:
            raise InvalidConfigError("delete.retention.ms must not be negative")
        if not 0.0 <= self.min_cleanable_dirty_ratio <= 1.0:
            raise InvalidConfigError("min.cleanable.dirty.ratio must be between 0 and 1")
        if self.min_compaction_lag_ms < 0 or self.max_compaction_lag_ms < 1:
            raise InvalidConfigError(
                "min.compaction.lag.ms must be >= 0 and max.compaction.lag.ms >= 1"
            )
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms:
            raise InvalidConfigError(
                "min.compaction.lag.ms must not exceed max.compaction.lag.ms"
            )

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == LOG_APPEND_TIME

    @property
    def cleanup_policies(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.cleanup_policy.split(",") if p.strip())

    @property
    def compact(self) -> bool:
        """The log cleaner keeps the latest record per key (``cleanup.policy`` has compact)."""
        # A substring test: __post_init__ admits no policy but compact and delete, and every
        # append asks.
        return COMPACT in self.cleanup_policy

    @property
    def delete(self) -> bool:
        """Retention deletes old segments by time and size (``cleanup.policy`` has delete)."""
        return DELETE in self.cleanup_policy

    @property
    def max_segment_ms(self) -> int:
        """Age at which the active segment rolls: ``segment.ms``, or for a compacted log the
        smaller ``max.compaction.lag.ms`` (KIP-354), so no record stays in the uncleanable
        active segment longer than the lag allows."""
        if self.compact:
            return min(self.segment_ms, self.max_compaction_lag_ms)
        return self.segment_ms
