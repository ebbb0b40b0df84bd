"""A MetadataView for tests: a cluster described as data, or a single node's view with some
partitions handed to other brokers.

Until the cluster image and the multi-broker fixture are merged, this is how tests show a broker
what a cluster would tell it (another broker leads a partition, a leader is gone, an epoch moved
on). Views are immutable values: a test changes a broker's view by assigning a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from odradek.cluster.membership import BrokerInfo, RegisteredBroker
from odradek.cluster.model import MetadataView, PartitionState, TopicInfo


@dataclass(frozen=True)
class StaticView:
    """Every field as given; topics by name."""

    cluster_id: str
    controller_id: int
    brokers: tuple[RegisteredBroker, ...]
    topic_infos: Mapping[str, TopicInfo] = field(default_factory=dict)

    def live_brokers(self) -> Sequence[RegisteredBroker]:
        return self.brokers

    def broker(self, node_id: int) -> RegisteredBroker | None:
        return next((b for b in self.brokers if b.info.node_id == node_id), None)

    def topics(self) -> Iterable[TopicInfo]:
        return [self.topic_infos[n] for n in sorted(self.topic_infos)]

    def topic(self, name: str) -> TopicInfo | None:
        return self.topic_infos.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        return next((t for t in self.topic_infos.values() if t.topic_id == topic_id), None)

    def partition(self, topic: str, partition: int) -> PartitionState | None:
        info = self.topic_infos.get(topic)
        if info is None or not 0 <= partition < len(info.partitions):
            return None
        return info.partitions[partition]


def registered(node_id: int, host: str = "127.0.0.1", port: int = 9092,
               rack: str | None = None) -> RegisteredBroker:
    return RegisteredBroker(BrokerInfo(node_id, host, port, rack), epoch=100 + node_id)


def reassigned(
    base: MetadataView,
    states: Mapping[tuple[str, int], PartitionState],
    *,
    extra_brokers: Sequence[RegisteredBroker] = (),
    controller_id: int | None = None,
) -> StaticView:
    """``base`` (a broker's own view, read now) with the given partitions' states replaced and
    more brokers registered (replacing any of the same node id)."""
    brokers = {b.info.node_id: b for b in (*base.live_brokers(), *extra_brokers)}
    infos: dict[str, TopicInfo] = {}
    for info in base.topics():
        parts = list(info.partitions)
        for (name, p), state in states.items():
            if name == info.name:
                parts[p] = state
        infos[info.name] = replace(info, partitions=tuple(parts))
    return StaticView(
        cluster_id=base.cluster_id,
        controller_id=base.controller_id if controller_id is None else controller_id,
        brokers=tuple(sorted(brokers.values(), key=lambda b: b.info.node_id)),
        topic_infos=infos,
    )
