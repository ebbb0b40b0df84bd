"""KIP-848 consumer groups as data: members, groups and their assignments.

A :class:`ConsumerGroup` is changed only by replaying records
(:meth:`odradek.coordinator.group.consumer.ConsumerGroups.replay` calls its ``_put_member`` /
``_remove_member``); everyone else reads it. Members are frozen values: an update is a new
:class:`ConsumerGroupMember`. Owned by the group coordinator, on the broker's event-loop thread.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from odradek.coordinator.group.records import (
    ConsumerGroupCurrentMemberAssignmentValue,
    ConsumerGroupMemberMetadataValue,
    TopicMetadata,
    TopicPartitions,
)

__all__ = [
    "JOIN_GROUP_MEMBER_EPOCH",
    "LEAVE_GROUP_MEMBER_EPOCH",
    "LEAVE_GROUP_STATIC_MEMBER_EPOCH",
    "EMPTY_ASSIGNMENT",
    "Assignment",
    "IllegalReplayError",
    "MemberState",
    "ConsumerGroupMember",
    "HeartbeatResult",
    "ConsumerGroup",
    "to_topic_partitions",
    "as_assignment",
    "preferred_assignor",
]

JOIN_GROUP_MEMBER_EPOCH = 0
LEAVE_GROUP_MEMBER_EPOCH = -1
LEAVE_GROUP_STATIC_MEMBER_EPOCH = -2

Assignment = Mapping[uuid.UUID, frozenset[int]]
"""Topic id -> partitions. Never mutated once built (members and groups share them)."""

EMPTY_ASSIGNMENT: Assignment = {}


class IllegalReplayError(Exception):
    """A record that cannot apply to the current state (e.g. a KIP-848 record for a classic
    group): the log and the in-memory state disagree. Nothing is changed."""


class MemberState(enum.IntEnum):
    """Reconciliation state of a member, as stored in the current-assignment record."""

    STABLE = 0
    UNREVOKED_PARTITIONS = 1
    UNRELEASED_PARTITIONS = 2
    UNKNOWN = 127

    @classmethod
    def from_value(cls, value: int) -> MemberState:
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True, slots=True)
class ConsumerGroupMember:
    """One member: its subscription (member-metadata record) and its current assignment
    (current-assignment record)."""

    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: tuple[str, ...] = ()
    subscribed_topic_regex: str | None = None
    rebalance_timeout_ms: int = -1
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: MemberState = MemberState.STABLE
    assigned_partitions: Assignment = field(default_factory=dict)
    partitions_pending_revocation: Assignment = field(default_factory=dict)

    def is_reconciled_to(self, assignment_epoch: int) -> bool:
        return self.state is MemberState.STABLE and self.member_epoch == assignment_epoch

    def subscription_equals(self, other: ConsumerGroupMember) -> bool:
        return (
            self.subscribed_topic_names == other.subscribed_topic_names
            and self.subscribed_topic_regex == other.subscribed_topic_regex
        )

    def metadata_value(self) -> ConsumerGroupMemberMetadataValue:
        return ConsumerGroupMemberMetadataValue(
            instance_id=self.instance_id,
            rack_id=self.rack_id,
            client_id=self.client_id,
            client_host=self.client_host,
            subscribed_topic_names=self.subscribed_topic_names,
            subscribed_topic_regex=self.subscribed_topic_regex,
            rebalance_timeout_ms=self.rebalance_timeout_ms,
            server_assignor=self.server_assignor,
        )

    def assignment_value(self) -> ConsumerGroupCurrentMemberAssignmentValue:
        return ConsumerGroupCurrentMemberAssignmentValue(
            member_epoch=self.member_epoch,
            previous_member_epoch=self.previous_member_epoch,
            state=int(self.state),
            assigned_partitions=to_topic_partitions(self.assigned_partitions),
            partitions_pending_revocation=to_topic_partitions(self.partitions_pending_revocation),
        )


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """What a ConsumerGroupHeartbeat response carries on success. ``assignment`` None means
    "unchanged, not sent"."""

    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: tuple[TopicPartitions, ...] | None


class ConsumerGroup:
    """One KIP-848 group. Mutated only by :meth:`ConsumerGroups.replay`; read by anyone."""

    protocol_type = "consumer"
    group_type = "consumer"

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.members: dict[str, ConsumerGroupMember] = {}
        self.target_assignment: dict[str, Assignment] = {}
        #: Topic name -> metadata, as of the last ConsumerGroupPartitionMetadata record.
        self.subscription_metadata: dict[str, TopicMetadata] = {}
        self.static_members: dict[str, str] = {}  # instance id -> member id
        # topic id -> partition -> epoch of the member owning it (assigned or being revoked).
        self._partition_epochs: dict[uuid.UUID, dict[int, int]] = {}

    @property
    def state(self) -> str:
        if not self.members:
            return "Empty"
        if self.group_epoch > self.assignment_epoch:
            return "Assigning"
        if any(not m.is_reconciled_to(self.assignment_epoch) for m in self.members.values()):
            return "Reconciling"
        return "Stable"

    def is_empty(self) -> bool:
        return not self.members

    def static_member(self, instance_id: str) -> ConsumerGroupMember | None:
        member_id = self.static_members.get(instance_id)
        return self.members.get(member_id) if member_id is not None else None

    def current_partition_epoch(self, topic_id: uuid.UUID, partition: int) -> int:
        """The epoch of the member that owns ``partition`` now, or -1 when nobody does."""
        return self._partition_epochs.get(topic_id, {}).get(partition, -1)

    def preferred_server_assignor(self) -> str | None:
        """The server assignor most members ask for (ties to the smallest name), or None."""
        return preferred_assignor(self.members.values())

    def subscribed_topic_names(self) -> frozenset[str]:
        """Every topic some member subscribes to by name or through its regex (the regexes as
        resolved at the last epoch bump, i.e. the group's subscription metadata)."""
        names = {n for m in self.members.values() for n in m.subscribed_topic_names}
        if any(m.subscribed_topic_regex for m in self.members.values()):
            names.update(self.subscription_metadata)
        return frozenset(names)

    def is_subscribed_to_topic(self, topic: str) -> bool:
        return topic in self.subscribed_topic_names()

    # -- replay helpers (called only from ConsumerGroups.replay) ------------------------------

    def _put_member(self, member: ConsumerGroupMember) -> ConsumerGroupMember | None:
        old = self.members.get(member.member_id)
        if old is not None:
            self._drop_partition_epochs(old)
            if old.instance_id is not None and old.instance_id != member.instance_id:
                if self.static_members.get(old.instance_id) == old.member_id:
                    del self.static_members[old.instance_id]
        self.members[member.member_id] = member
        if member.instance_id is not None:
            self.static_members[member.instance_id] = member.member_id
        self._add_partition_epochs(member)
        return old

    def _remove_member(self, member_id: str) -> ConsumerGroupMember | None:
        old = self.members.pop(member_id, None)
        if old is not None:
            self._drop_partition_epochs(old)
            if (
                old.instance_id is not None
                and self.static_members.get(old.instance_id) == member_id
            ):
                del self.static_members[old.instance_id]
        return old

    def _add_partition_epochs(self, member: ConsumerGroupMember) -> None:
        for assignment in (member.assigned_partitions, member.partitions_pending_revocation):
            for topic_id, partitions in assignment.items():
                epochs = self._partition_epochs.setdefault(topic_id, {})
                for p in partitions:
                    epochs[p] = member.member_epoch

    def _drop_partition_epochs(self, member: ConsumerGroupMember) -> None:
        for assignment in (member.assigned_partitions, member.partitions_pending_revocation):
            for topic_id, partitions in assignment.items():
                epochs = self._partition_epochs.get(topic_id)
                if epochs is None:
                    continue
                for p in partitions:
                    # Only the owner's own entry: a newer owner may already hold it.
                    if epochs.get(p) == member.member_epoch:
                        del epochs[p]
                if not epochs:
                    del self._partition_epochs[topic_id]



def to_topic_partitions(assignment: Assignment) -> tuple[TopicPartitions, ...]:
    """Record/wire form of an assignment, sorted (topics with no partitions left out)."""
    return tuple(
        TopicPartitions(topic_id, tuple(sorted(assignment[topic_id])))
        for topic_id in sorted(assignment)
        if assignment[topic_id]
    )


def as_assignment(topic_partitions: Iterable[TopicPartitions]) -> dict[uuid.UUID, frozenset[int]]:
    """Assignment form of a record's or a request's topic partitions (empty ones dropped)."""
    out: dict[uuid.UUID, frozenset[int]] = {}
    for tp in topic_partitions:
        if tp.partitions:
            out[tp.topic_id] = out.get(tp.topic_id, frozenset()) | frozenset(tp.partitions)
    return out


def preferred_assignor(members: Iterable[ConsumerGroupMember]) -> str | None:
    counts: dict[str, int] = {}
    for m in members:
        if m.server_assignor is not None:
            counts[m.server_assignor] = counts.get(m.server_assignor, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda name: (-counts[name], name))
