"""What ``odradek cluster status`` shows, read from the metadata store: the cluster id, the live
brokers (id, address, rack, broker epoch, whether in controlled shutdown), the controller, the
partitions without a live leader, and the under-replicated ones (an ISR smaller than the
replicas: Kafka's ``--under-replicated-partitions``)."""

from __future__ import annotations

from dataclasses import dataclass

from odradek.cluster.membership import (
    ClusterKeys,
    RegisteredBroker,
    current_controller,
    live_brokers,
)
from odradek.cluster.model import NO_LEADER, PartitionState
from odradek.cluster.store import ClusterStore, RevisionCompacted

__all__ = ["ClusterStatus", "read_status"]


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    cluster_id: str | None
    brokers: tuple[RegisteredBroker, ...]
    controller: tuple[int, int] | None  # (node id, controller epoch)
    leaderless: tuple[tuple[str, int], ...]  # (topic, partition), sorted
    revision: int
    under_replicated: tuple[tuple[str, int], ...] = ()  # (topic, partition), sorted

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
                    "shutting_down": b.info.shutting_down,
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
            "under_replicated_partitions": [
                {"topic": t, "partition": p} for t, p in self.under_replicated
            ],
        }


async def read_status(store: ClusterStore, keys: ClusterKeys) -> ClusterStatus:
    """Read the status as of one revision (the brokers' read's): a controller elected after
    a broker's lease ran out is never shown beside that broker."""
    while True:
        read, brokers = await live_brokers(store, keys)
        try:
            cluster_id = await store.get(keys.cluster_id, revision=read.revision)
            controller = await current_controller(store, keys, revision=read.revision)
            partitions = await store.range(keys.partitions, prefix=True, revision=read.revision)
        except RevisionCompacted:
            continue  # compacted past that revision meanwhile: read again
        break
    leaderless = []
    under_replicated = []
    for kv in partitions.kvs:
        topic, _, number = kv.key[len(keys.partitions):].rpartition("/")
        if not number.isdigit():
            continue
        state = PartitionState.decode(kv.value)
        if state.leader == NO_LEADER:
            leaderless.append((topic, int(number)))
        if len(state.isr) < len(state.replicas):
            under_replicated.append((topic, int(number)))
    return ClusterStatus(
        cluster_id.value.decode() if cluster_id is not None else None,
        tuple(brokers),
        controller,
        tuple(sorted(leaderless)),
        read.revision,
        tuple(sorted(under_replicated)),
    )
