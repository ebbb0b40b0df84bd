"""The cluster's metadata as data: what the store holds about topics and partitions, its JSON
encoding, and the read-only view a broker answers clients from.

Keys (:class:`odradek.cluster.membership.ClusterKeys`, under ``<etcd.prefix>/<cluster>/``):

| key | value |
|---|---|
| ``cluster_id`` | the cluster id, UTF-8 |
| ``brokers/<node.id>`` | :class:`~odradek.cluster.membership.BrokerInfo` under the broker's lease |
| ``controller`` | ``{"node_id"}`` under the controller's lease |
| ``producer_ids`` | ``{"next": N}``: the first producer id not yet handed out in a block |
| ``topics/<name>`` | :class:`TopicRecord`: id, partition count, configs |
| ``partitions/<name>/<p>`` | :class:`PartitionState`: replicas, ISR, leader, the epochs, and a reassignment's adding/removing replicas |

Partition states are keys of their own so that one partition's leadership or ISR changes by a
compare-and-swap of that key alone (replication's AlterPartition), never of its topic. etcd
caps a transaction at 128 operations by default (``--max-txn-ops``), so a topic with many
partitions is written in several transactions: its record first, then its partitions. A topic
is *complete* when every partition below its count has a state; a view shows only complete
topics, and the controller finishes an incomplete one (a creator that crashed half-way).

Values are JSON, so ``etcdctl get --prefix`` reads them. Every record carries the fields
replication needs from the start (ISR, leader epoch, partition epoch), even while every
partition has one replica.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from odradek.cluster.membership import RegisteredBroker
from odradek.topic_names import is_internal

__all__ = [
    "NO_LEADER",
    "TopicRecord",
    "PartitionState",
    "TopicInfo",
    "MetadataView",
]

#: A partition without a live leader (Kafka's ``-1``; Metadata answers LEADER_NOT_AVAILABLE).
NO_LEADER = -1


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """``topics/<name>``: what a topic is, apart from its partitions' states."""

    topic_id: uuid.UUID
    partition_count: int
    configs: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "topic_id": str(self.topic_id),
                "partitions": self.partition_count,
                "configs": dict(sorted(self.configs.items())),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> TopicRecord:
        raw = json.loads(data)
        return cls(
            uuid.UUID(raw["topic_id"]),
            int(raw["partitions"]),
            {str(k): str(v) for k, v in raw.get("configs", {}).items()},
        )


@dataclass(frozen=True, slots=True)
class PartitionState:
    """``partitions/<name>/<p>``: who holds a partition and who leads it.

    ``leader_epoch`` grows with every change of leader; ``partition_epoch`` with every change of
    this record at all (leader, ISR or replicas), and is what a compare-and-swap of the ISR names
    (KIP-497's AlterPartition). When the leader's broker is gone and no other replica can lead,
    ``leader`` is :data:`NO_LEADER` and the ISR keeps its last member (as Kafka does), so the
    partition comes back when that broker does.

    While a reassignment runs (KIP-455, :mod:`odradek.cluster.reassignment`), ``replicas`` is the
    target followed by the replicas being removed, ``adding_replicas`` the target's replicas not
    in the replica set before, ``removing_replicas`` the replicas not in the target. Both are
    encoded only when non-empty, so a record written before they existed reads as it was and a
    record without a reassignment is written as before.
    """

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int = 0
    partition_epoch: int = 0
    adding_replicas: tuple[int, ...] = ()
    removing_replicas: tuple[int, ...] = ()

    @property
    def reassigning(self) -> bool:
        """Whether a reassignment is in progress (KIP-455)."""
        return bool(self.adding_replicas or self.removing_replicas)

    @property
    def target_replicas(self) -> tuple[int, ...]:
        """The replica set once the reassignment in progress completes (else ``replicas``)."""
        return tuple(r for r in self.replicas if r not in self.removing_replicas)

    def encode(self) -> bytes:
        raw: dict[str, object] = {
            "replicas": list(self.replicas),
            "isr": list(self.isr),
            "leader": self.leader,
            "leader_epoch": self.leader_epoch,
            "partition_epoch": self.partition_epoch,
        }
        if self.adding_replicas:
            raw["adding_replicas"] = list(self.adding_replicas)
        if self.removing_replicas:
            raw["removing_replicas"] = list(self.removing_replicas)
        return json.dumps(raw, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> PartitionState:
        raw = json.loads(data)
        return cls(
            tuple(int(r) for r in raw["replicas"]),
            tuple(int(r) for r in raw["isr"]),
            int(raw["leader"]),
            int(raw.get("leader_epoch", 0)),
            int(raw.get("partition_epoch", 0)),
            tuple(int(r) for r in raw.get("adding_replicas", ())),
            tuple(int(r) for r in raw.get("removing_replicas", ())),
        )


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A complete topic as a view shows it. A new value (never mutated) whenever its record or
    any of its partitions changes, so a cache may key on identity."""

    name: str
    topic_id: uuid.UUID
    configs: Mapping[str, str]
    partitions: tuple[PartitionState, ...]  # index = partition number

    @property
    def internal(self) -> bool:
        return is_internal(self.name)


class MetadataView(Protocol):
    """What a broker reads of the cluster's metadata (Metadata, DescribeCluster,
    DescribeTopicPartitions, leadership checks on produce and fetch). Owned by the broker's event
    loop; reads are synchronous and see one consistent revision of the store."""

    @property
    def cluster_id(self) -> str: ...

    @property
    def controller_id(self) -> int:
        """The controller's node id, or -1 while there is none."""
        ...

    def live_brokers(self) -> Sequence[RegisteredBroker]:
        """Every registered broker, by node id."""
        ...

    def broker(self, node_id: int) -> RegisteredBroker | None: ...

    def topics(self) -> Iterable[TopicInfo]: ...

    def topic(self, name: str) -> TopicInfo | None: ...

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None: ...

    def partition(self, topic: str, partition: int) -> PartitionState | None: ...
