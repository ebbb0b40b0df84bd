"""What the group coordinator gives the group state machines: config, time and topics.

:class:`CoordinatorContext` is implemented by :class:`~odradek.coordinator.group.coordinator.
GroupCoordinator`; the classic and the KIP-848 (consumer) group machines see only this.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from odradek.coordinator.timer import Timer

if TYPE_CHECKING:
    from odradek.config import BrokerConfig

__all__ = ["GroupConfig", "TopicInfo", "CoordinatorContext"]


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """The broker settings the group coordinator follows (Kafka's names in the comments)."""

    offsets_partitions: int = 50  # offsets.topic.num.partitions
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000  # offsets.retention.minutes
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096  # offset.metadata.max.bytes
    initial_rebalance_delay_ms: int = 3000  # group.initial.rebalance.delay.ms
    min_session_timeout_ms: int = 6000  # group.min.session.timeout.ms
    max_session_timeout_ms: int = 1_800_000  # group.max.session.timeout.ms
    max_size: int = 2**31 - 1  # group.max.size
    protocols: tuple[str, ...] = ("classic", "consumer")  # group.coordinator.rebalance.protocols
    consumer_session_timeout_ms: int = 45_000  # group.consumer.session.timeout.ms
    consumer_heartbeat_interval_ms: int = 5000  # group.consumer.heartbeat.interval.ms
    consumer_max_size: int = 2**31 - 1  # group.consumer.max.size
    consumer_assignors: tuple[str, ...] = ("uniform", "range")  # group.consumer.assignors

    @classmethod
    def from_broker(cls, config: BrokerConfig) -> GroupConfig:
        return cls(
            offsets_partitions=config.offsets_topic_num_partitions,
            offsets_retention_ms=config.offsets_retention_minutes * 60_000,
            offsets_retention_check_interval_ms=config.offsets_retention_check_interval_ms,
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
            min_session_timeout_ms=config.group_min_session_timeout_ms,
            max_session_timeout_ms=config.group_max_session_timeout_ms,
            max_size=config.group_max_size,
            protocols=config.group_coordinator_rebalance_protocols,
            consumer_session_timeout_ms=config.group_consumer_session_timeout_ms,
            consumer_heartbeat_interval_ms=config.group_consumer_heartbeat_interval_ms,
            consumer_max_size=config.group_consumer_max_size,
            consumer_assignors=config.group_consumer_assignors,
        )


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the coordinator sees it: name, id and partition count."""

    name: str
    topic_id: uuid.UUID
    partitions: int


class CoordinatorContext(Protocol):
    """Services of the coordinator that owns a group state machine (same thread, no I/O)."""

    @property
    def timer(self) -> Timer: ...

    @property
    def config(self) -> GroupConfig: ...

    def now_ms(self) -> int:
        """Wall-clock milliseconds (for timestamps and deadlines on :attr:`timer`)."""
        ...

    def topics(self) -> Mapping[str, TopicInfo]:
        """Every existing topic by name (internal topics included), as of now."""
        ...

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None: ...
