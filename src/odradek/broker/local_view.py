"""The single node's :class:`~odradek.cluster.model.MetadataView`, over today's
:class:`~odradek.metadata.store.MetadataStore`.

One broker leads every partition: each partition's replicas and ISR are this node, its leader is
this node, its leader and partition epochs are 0, the only live broker is this one (with its
advertised address and ``broker.rack``) and it is its own controller. Handlers read leadership
only through the view, so the cluster's ``MetadataImage`` (same Protocol, following etcd)
replaces this class with no handler changed.

Owned by the broker's event loop. A :class:`TopicInfo` is built once per
:class:`TopicMetadata` value and handed out again while the store holds that same value (the
store replaces a topic's value on every change), so caches keyed on a TopicInfo's identity (the
Metadata handler's encoded topics) stay valid exactly as long as the topic is unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from odradek.cluster.membership import BrokerInfo, RegisteredBroker
from odradek.cluster.model import PartitionState, TopicInfo
from odradek.metadata.store import MetadataStore, TopicMetadata

__all__ = ["LocalMetadataView"]


class LocalMetadataView:
    """Implements :class:`~odradek.cluster.model.MetadataView` for a broker on its own."""

    def __init__(self, store: MetadataStore, me: BrokerInfo) -> None:
        self._store = store
        self._me = RegisteredBroker(me, epoch=0)
        self._brokers = (self._me,)
        # One state serves every partition: they are all alike on a single node.
        self._state = PartitionState(replicas=(me.node_id,), isr=(me.node_id,), leader=me.node_id)
        self._infos: dict[str, tuple[TopicMetadata, TopicInfo]] = {}

    @property
    def cluster_id(self) -> str:
        return self._store.cluster_id

    @property
    def controller_id(self) -> int:
        return self._me.info.node_id

    def live_brokers(self) -> Sequence[RegisteredBroker]:
        return self._brokers

    def broker(self, node_id: int) -> RegisteredBroker | None:
        return self._me if node_id == self._me.info.node_id else None

    def topics(self) -> list[TopicInfo]:
        """Every topic, by name."""
        infos = sorted((self._info(m) for m in self._store.topics()), key=_name)
        if len(self._infos) > len(infos):  # deleted topics' entries
            held = {i.name for i in infos}
            for name in [n for n in self._infos if n not in held]:
                del self._infos[name]
        return infos

    def topic(self, name: str) -> TopicInfo | None:
        meta = self._store.topic(name)
        return None if meta is None else self._info(meta)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        meta = self._store.topic_by_id(topic_id)
        return None if meta is None else self._info(meta)

    def partition(self, topic: str, partition: int) -> PartitionState | None:
        meta = self._store.topic(topic)
        if meta is None or not 0 <= partition < meta.partitions:
            return None
        return self._state

    def _info(self, meta: TopicMetadata) -> TopicInfo:
        cached = self._infos.get(meta.name)
        if cached is not None and cached[0] is meta:
            return cached[1]
        info = TopicInfo(
            name=meta.name,
            topic_id=meta.topic_id,
            configs=meta.configs,
            partitions=(self._state,) * meta.partitions,
        )
        self._infos[meta.name] = (meta, info)
        return info


def _name(info: TopicInfo) -> str:
    return info.name
