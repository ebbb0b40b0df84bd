"""The group coordinator on the broker's event loop: its storage (``__consumer_offsets``), its
loading and its timers, and the requests that reach it.

The coordinator itself (:mod:`odradek.coordinator.group`) is synchronous and clock-driven; this
module hosts it (:class:`~odradek.broker.internal_topics.CoordinatorHost`): its operations'
records are appended to the internal topic (created on first use with
``offsets.topic.num.partitions`` partitions and ``cleanup.policy=compact``) and replayed once
written; each partition is loaded by a task after the broker listens, and a task advances the
coordinator's timer at each deadline. Handlers reach it through :meth:`GroupRuntime.write` and
:meth:`GroupRuntime.run` with the group id, which answer COORDINATOR_LOAD_IN_PROGRESS while the
group's partition is loading.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from odradek.broker.internal_topics import CoordinatorHost, InternalTopic, LoadHook
from odradek.coordinator.group.context import GroupConfig, TopicInfo
from odradek.coordinator.group.coordinator import GroupCoordinator, GroupListing
from odradek.coordinator.pending import Pending
from odradek.errors import ErrorCode, KafkaError
from odradek.topic_names import OFFSETS_TOPIC

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["GroupRuntime", "then"]

log = logging.getLogger("odradek.broker.groups")


T = TypeVar("T")


class GroupRuntime(CoordinatorHost):
    """Owned by the broker's event loop, like everything in :mod:`odradek.broker`."""

    def __init__(self, broker: BrokerServices, *, load_hook: LoadHook | None = None) -> None:
        config = GroupConfig.from_broker(broker.config)
        existing = broker.topics.topic(OFFSETS_TOPIC)
        if existing is not None:
            # Groups hash over the partitions the topic has, whatever the setting says today.
            config = dataclasses.replace(config, offsets_partitions=existing.partitions)
        self.config = config
        self._topic_cache: tuple[int, dict[str, TopicInfo]] | None = None
        self.coordinator = GroupCoordinator(config, broker.clock, topics=self._topic_infos)
        topic = InternalTopic(
            broker,
            OFFSETS_TOPIC,
            config.offsets_partitions,
            {"cleanup.policy": "compact", "segment.bytes": "104857600",
             "compression.type": "producer"},
        )
        super().__init__(broker, topic, self.coordinator, name="group", load_hook=load_hook)

    def partition_for(self, key: str) -> int:
        return self.coordinator.partition_for(key)

    async def ensure_offsets_topic(self) -> None:
        await self.topic.ensure()

    # -- requests about many groups ----------------------------------------------------------

    def delete_groups(self, group_ids: Sequence[str]) -> list[tuple[str, ErrorCode]]:
        """DeleteGroups: one operation per group, each answered with its own error."""
        results = []
        for group_id in group_ids:
            try:
                self.write(group_id, functools.partial(self.coordinator.delete_group, group_id))
            except KafkaError as e:
                results.append((group_id, e.code))
            else:
                results.append((group_id, ErrorCode.none))
        return results

    def list_groups(self, states: Sequence[str], types: Sequence[str]) -> list[GroupListing]:
        """ListGroups: COORDINATOR_LOAD_IN_PROGRESS while any partition loads, as Kafka."""
        self.check_loaded()
        return self.coordinator.list_groups(states, types)

    def on_topic_deleted(self, topic: str) -> None:
        """Remove every group's committed offsets of a deleted topic (failures are logged:
        expiry removes what is left)."""
        for result in self.coordinator.on_topic_deleted(topic):
            self.runtime.run_detached(functools.partial(_identity, result))

    def on_marker(
        self, partition: int, producer_id: int, commit: bool, offset: int = -1
    ) -> None:
        """A COMMIT/ABORT marker of ``producer_id`` was written to ``partition`` at ``offset``:
        its pending offsets there are committed or dropped (read as committed once the marker
        is durable; a partition still loading reads the marker from the log itself)."""
        self.runtime.replay_marker(partition, producer_id, commit, offset)

    def _topic_infos(self) -> Mapping[str, TopicInfo]:
        topics = self._broker.topics.topics()
        # Topic metadata changes rarely; rebuild the map only when it does.
        stamp = hash(tuple((t.name, t.topic_id, t.partitions) for t in topics))
        cached = self._topic_cache
        if cached is None or cached[0] != stamp:
            cached = (stamp, {t.name: TopicInfo(t.name, t.topic_id, t.partitions) for t in topics})
            self._topic_cache = cached
        return cached[1]


def _identity(value: T) -> T:
    return value


def then(pending: Pending[T], build: Callable[[T], Any]) -> Any:
    """``build(value)`` now if ``pending`` is complete, else an awaitable of it."""
    if pending.done:
        return build(pending.value)

    async def wait() -> Any:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        pending.on_done(lambda value: None if fut.done() else fut.set_result(value))
        return build(await fut)

    return wait()
