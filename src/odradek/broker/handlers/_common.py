"""Small facts shared by handlers."""

from __future__ import annotations

import enum

from odradek.errors import FencedLeaderEpochError, UnknownLeaderEpochError

__all__ = [
    "LEADER_EPOCH",
    "is_internal",
    "INTERNAL_TOPICS",
    "check_leader_epoch",
    "CLUSTER_OPERATIONS",
    "TOPIC_OPERATIONS",
    "GROUP_OPERATIONS",
    "NOT_REQUESTED",
]

# A single broker leads every partition from the start and never hands leadership over.
LEADER_EPOCH = 0

INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


def is_internal(topic: str) -> bool:
    return topic in INTERNAL_TOPICS


def check_leader_epoch(current_leader_epoch: int) -> None:
    """Validate a client's idea of the leader epoch (KIP-320); -1 means "not known", no check."""
    if current_leader_epoch < 0 or current_leader_epoch == LEADER_EPOCH:
        return
    if current_leader_epoch < LEADER_EPOCH:
        raise FencedLeaderEpochError(f"leader epoch {current_leader_epoch} is stale")
    raise UnknownLeaderEpochError(f"leader epoch {current_leader_epoch} is not known yet")


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
