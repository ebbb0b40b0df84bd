"""What ``odradek cluster status`` shows, read from the metadata store: the cluster id, the live
brokers (id, address, rack, broker epoch), the controller, and the partitions without a live
leader."""

from __future__ import annotations

from dataclasses import dataclass

from odradek.cluster.membership import (
    ClusterKeys,
    RegisteredBroker,
    current_controller,
    live_brokers,
)
from odradek.cluster.model import NO_LEADER, PartitionState
from odradek.cluster.store import ClusterStore

__all__ = ["ClusterStatus", "read_status"]


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    cluster_id: str | None
    brokers: tuple[RegisteredBroker, ...]
    controller: tuple[int, int] | None  # (node id, controller epoch)
    leaderless: tuple[tuple[str, int], ...]  # (topic, partition), sorted
    revision: int

    def to_json(self) -> dict[str, object]:
        return {
            "cluster_id": self.cluster_id,
            "brokers": [
                {
                    "node_id": b.info.node_id,
                    "host": b.info.host,
                    "port": b.info.port,
                    "rack": b.info.rack,
                    "epoch": b.epoch,
                }
                for b in self.brokers
            ],
            "controller": (
                None
                if self.controller is None
                else {"node_id": self.controller[0], "epoch": self.controller[1]}
            ),
            "partitions_without_leader": [
                {"topic": t, "partition": p} for t, p in self.leaderless
            ],
        }


async def read_status(store: ClusterStore, keys: ClusterKeys) -> ClusterStatus:
    """Read the status (several reads: each is consistent, together they are nearly so)."""
    cluster_id = await store.get(keys.cluster_id)
    read, brokers = await live_brokers(store, keys)
    controller = await current_controller(store, keys)
    partitions = await store.range(keys.partitions, prefix=True)
    leaderless = []
    for kv in partitions.kvs:
        topic, _, number = kv.key[len(keys.partitions):].rpartition("/")
        if PartitionState.decode(kv.value).leader == NO_LEADER and number.isdigit():
            leaderless.append((topic, int(number)))
    return ClusterStatus(
        cluster_id.value.decode() if cluster_id is not None else None,
        tuple(brokers),
        controller,
        tuple(sorted(leaderless)),
        read.revision,
    )
