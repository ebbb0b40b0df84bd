"""Small facts shared by handlers."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from odradek.cluster.model import NO_LEADER
from odradek.protocol.build import build
from odradek.topic_names import INTERNAL_TOPICS, is_internal

if TYPE_CHECKING:
    from odradek.cluster.membership import BrokerInfo
    from odradek.cluster.model import MetadataView

__all__ = [
    "is_internal",
    "INTERNAL_TOPICS",
    "current_leader",
    "leader_hint",
    "CLUSTER_OPERATIONS",
    "TOPIC_OPERATIONS",
    "GROUP_OPERATIONS",
    "NOT_REQUESTED",
]


class AclOperation(enum.IntEnum):
    """Kafka's AclOperation codes (the bit positions of "authorized operations" fields)."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


# With no authorizer every operation a resource type supports is allowed.
CLUSTER_OPERATIONS = sum(
    1 << op
    for op in (
        AclOperation.CREATE, AclOperation.ALTER, AclOperation.DESCRIBE,
        AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE,
    )
)
TOPIC_OPERATIONS = sum(
    1 << op
    for op in (
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
        AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS,
    )
)

GROUP_OPERATIONS = sum(
    1 << op
    for op in (
        AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE,
        AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
    )
)
#: The value of an "authorized operations" field that was not asked for.
NOT_REQUESTED = -(2**31)


def current_leader(view: MetadataView, topic: str, partition: int) -> tuple[int, int, BrokerInfo | None]:
    """KIP-951's answer to a client that asked the wrong broker: the partition's leader id and
    leader epoch as the view knows them, and the leader's endpoint when it is a live broker;
    (-1, -1, None) for a partition the view does not know."""
    state = view.partition(topic, partition)
    if state is None:
        return NO_LEADER, -1, None
    leader = view.broker(state.leader) if state.leader != NO_LEADER else None
    return state.leader, state.leader_epoch, leader.info if leader is not None else None


def leader_hint(
    view: MetadataView, mod: Any, topic: str, partition: int, endpoints: dict[int, Any]
) -> Any:
    """A partition's ``CurrentLeader`` in a Produce (v10+) or Fetch (v16+) response module
    ``mod``, adding the leader's ``NodeEndpoint`` to ``endpoints`` (by node id) when it is
    live."""
    leader_id, leader_epoch, info = current_leader(view, topic, partition)
    if info is not None:
        endpoints[info.node_id] = build(
            mod.NodeEndpoint, node_id=info.node_id, host=info.host, port=info.port, rack=info.rack
        )
    return build(mod.LeaderIdAndEpoch, leader_id=leader_id, leader_epoch=leader_epoch)
