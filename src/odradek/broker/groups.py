"""The group coordinator on the broker's event loop: its storage (``__consumer_offsets``), its
loading at start-up and its timers.

The coordinator itself (:mod:`odradek.coordinator.group`) is synchronous and clock-driven; this
module gives it a writer that appends to the internal topic (created on first use with
``offsets.topic.num.partitions`` partitions and ``cleanup.policy=compact``), replays that topic
before the broker serves, and runs a task that advances the coordinator's timer at each deadline.
A write is acknowledged once it is in the log and the high watermark covers it (one replica);
the coordinator applies a change only after that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from odradek.broker.internal_topics import InternalTopic, TimerTask
from odradek.coordinator.group.context import GroupConfig, TopicInfo
from odradek.coordinator.group.coordinator import GroupCoordinator, StoredMarker, StoredRecord
from odradek.coordinator.pending import Pending
from odradek.protocol.records import CONTROL_ABORT, CONTROL_COMMIT, control_type
from odradek.topic_names import OFFSETS_TOPIC

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["GroupRuntime", "OFFSETS_TOPIC"]

log = logging.getLogger("odradek.broker.groups")


T = TypeVar("T")


class GroupRuntime:
    """Owned by the broker's event loop, like everything in :mod:`odradek.broker`."""

    def __init__(self, broker: BrokerServices) -> None:
        self._broker = broker
        config = GroupConfig.from_broker(broker.config)
        existing = broker.topics.topic(OFFSETS_TOPIC)
        if existing is not None:
            # Groups hash over the partitions the topic has, whatever the setting says today.
            config = dataclasses.replace(config, offsets_partitions=existing.partitions)
        self.config = config
        self.topic = InternalTopic(
            broker,
            OFFSETS_TOPIC,
            self.config.offsets_partitions,
            {"cleanup.policy": "compact", "segment.bytes": "104857600",
             "compression.type": "producer"},
        )
        self.coordinator = GroupCoordinator(
            self.config, broker.clock, write=self.topic.append, topics=self._topic_infos
        )
        self._timers = TimerTask(self.coordinator.timer, broker.clock, "odradek-group-timers")
        self._topic_cache: tuple[int, dict[str, TopicInfo]] | None = None

    def load(self) -> int:
        """Replay ``__consumer_offsets`` into the coordinator; returns the records applied."""
        meta = self._broker.topics.topic(OFFSETS_TOPIC)
        applied = 0
        if meta is not None:
            for partition in range(meta.partitions):
                applied += self.coordinator.load(partition, self._stored(partition))
        self.coordinator.loaded()
        if applied:
            log.info("group coordinator loaded %d records of %s", applied, OFFSETS_TOPIC)
        return applied

    def start(self) -> None:
        self._timers.start()

    async def stop(self) -> None:
        await self._timers.stop()

    def ensure_offsets_topic(self) -> None:
        self.topic.ensure()

    def _stored(self, partition: int) -> Iterator[StoredRecord | StoredMarker]:
        for header, records in self.topic.read(partition):
            if header.is_control:
                for record in records:
                    marker = control_type(record.key)
                    if marker in (CONTROL_ABORT, CONTROL_COMMIT):
                        yield StoredMarker(header.producer_id, marker == CONTROL_COMMIT)
                continue
            producer_id = header.producer_id if header.is_transactional else None
            for record in records:
                yield StoredRecord(record.key, record.value, producer_id, record.offset)

    def _topic_infos(self) -> Mapping[str, TopicInfo]:
        topics = self._broker.topics.topics()
        # Topic metadata changes rarely; rebuild the map only when it does.
        stamp = hash(tuple((t.name, t.topic_id, t.partitions) for t in topics))
        cached = self._topic_cache
        if cached is None or cached[0] != stamp:
            cached = (stamp, {t.name: TopicInfo(t.name, t.topic_id, t.partitions) for t in topics})
            self._topic_cache = cached
        return cached[1]


def then(pending: Pending[T], build: Callable[[T], Any]) -> Any:
    """``build(value)`` now if ``pending`` is complete, else an awaitable of it."""
    if pending.done:
        return build(pending.value)

    async def wait() -> Any:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        pending.on_done(lambda value: None if fut.done() else fut.set_result(value))
        return build(await fut)

    return wait()
