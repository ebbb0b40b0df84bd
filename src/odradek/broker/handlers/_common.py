"""Small facts shared by handlers."""

from __future__ import annotations

import enum

from odradek.broker.replica_manager import LEADER_EPOCH, check_leader_epoch
from odradek.topic_names import INTERNAL_TOPICS, is_internal

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
