"""KIP-848 reconciliation: how a member moves towards its target assignment, one heartbeat at
a time (the rules of Apache Kafka's ``CurrentAssignmentBuilder``).

Pure functions over frozen :class:`~odradek.coordinator.group.consumer_model.ConsumerGroupMember`
values: no state, no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from odradek.coordinator.group.consumer_model import (
    JOIN_GROUP_MEMBER_EPOCH,
    Assignment,
    ConsumerGroupMember,
    MemberState,
)
from odradek.coordinator.group.records import TopicPartitions
from odradek.errors import FencedMemberEpochError

__all__ = ["reconcile", "check_member_epoch"]

def reconcile(
    member: ConsumerGroupMember,
    target_epoch: int,
    target: Assignment,
    partition_epoch: Callable[[uuid.UUID, int], int],
    owned: Sequence[TopicPartitions] | None,
) -> ConsumerGroupMember:
    """The member's next state towards ``target`` at ``target_epoch``, or ``member`` itself
    when it cannot move yet. ``partition_epoch(topic, p)`` is the epoch of p's current owner
    (-1 when free); ``owned`` is what the member reported owning (None: not reported)."""
    state = member.state
    if state is MemberState.STABLE:
        if member.member_epoch != target_epoch:
            return _next_assignment(
                member, member.member_epoch, target_epoch, target, partition_epoch, owned
            )
        return member
    if state is MemberState.UNREVOKED_PARTITIONS:
        if _owns_any(owned, member.partitions_pending_revocation):
            return member
        return _next_assignment(
            member, member.member_epoch, target_epoch, target, partition_epoch, owned
        )
    if state is MemberState.UNRELEASED_PARTITIONS:
        return _next_assignment(
            member, member.member_epoch, target_epoch, target, partition_epoch, owned
        )
    # UNKNOWN: written by a newer version; start over from nothing owned.
    if owned is None or len(owned) > 0:
        raise FencedMemberEpochError(
            "The consumer group member is in a unknown state. The member must abandon all its "
            "partitions and rejoin."
        )
    return _next_assignment(member, target_epoch, target_epoch, target, partition_epoch, owned)


def _next_assignment(
    member: ConsumerGroupMember,
    member_epoch: int,
    target_epoch: int,
    target: Assignment,
    partition_epoch: Callable[[uuid.UUID, int], int],
    owned: Sequence[TopicPartitions] | None,
) -> ConsumerGroupMember:
    kept: dict[uuid.UUID, frozenset[int]] = {}
    revoking: dict[uuid.UUID, frozenset[int]] = {}
    adding: dict[uuid.UUID, frozenset[int]] = {}
    unreleased = False
    for topic_id in set(target) | set(member.assigned_partitions):
        wanted = target.get(topic_id, frozenset())
        current = member.assigned_partitions.get(topic_id, frozenset())
        own_revoking = member.partitions_pending_revocation.get(topic_id, frozenset())
        keep = current & wanted
        free = {
            p
            for p in wanted - keep
            # A partition the member itself is revoking counts as free for it: only one member
            # owns a partition at a time.
            if partition_epoch(topic_id, p) == -1 or p in own_revoking
        }
        unreleased = unreleased or len(free) < len(wanted - keep)
        if keep:
            kept[topic_id] = keep
        if current - keep:
            revoking[topic_id] = current - keep
        if free:
            adding[topic_id] = frozenset(free)

    if revoking and _owns_any(owned, revoking):
        # Stay at the current epoch until the client has given those partitions up.
        return _with_epoch(
            member,
            member_epoch,
            state=MemberState.UNREVOKED_PARTITIONS,
            assigned_partitions=kept,
            partitions_pending_revocation=revoking,
        )
    if adding:
        assigned = dict(kept)
        for topic_id, partitions in adding.items():
            assigned[topic_id] = assigned.get(topic_id, frozenset()) | partitions
        kept = assigned
    return _with_epoch(
        member,
        target_epoch,
        state=MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE,
        assigned_partitions=kept,
        partitions_pending_revocation={},
    )


def _with_epoch(member: ConsumerGroupMember, epoch: int, **changes: Any) -> ConsumerGroupMember:
    return replace(member, member_epoch=epoch, previous_member_epoch=member.member_epoch, **changes)


def _owns_any(owned: Sequence[TopicPartitions] | None, partitions: Assignment) -> bool:
    """Whether the member still reports any of ``partitions``; not reporting counts as yes."""
    if owned is None:
        return True
    for tp in owned:
        pending = partitions.get(tp.topic_id)
        if pending and any(p in pending for p in tp.partitions):
            return True
    return False


def check_member_epoch(
    member: ConsumerGroupMember, epoch: int, owned: Sequence[TopicPartitions] | None
) -> None:
    """Whether a heartbeat at ``epoch`` may act for ``member``; FencedMemberEpochError if not."""
    if epoch == JOIN_GROUP_MEMBER_EPOCH:
        # A fenced member rejoins under its own id with epoch 0 (KIP-848; KAFKA-19233).
        return
    if epoch > member.member_epoch:
        raise FencedMemberEpochError(
            f"The consumer group member has a greater member epoch ({epoch}) than the one known "
            f"by the group coordinator ({member.member_epoch}). The member must abandon all its "
            "partitions and rejoin."
        )
    if epoch < member.member_epoch:
        # The response that moved the member to its current epoch may have been lost: accept
        # the previous epoch while the member owns nothing it should not.
        if epoch != member.previous_member_epoch or not _is_subset(
            owned, member.assigned_partitions
        ):
            raise FencedMemberEpochError(
                f"The consumer group member has a smaller member epoch ({epoch}) than the one "
                f"known by the group coordinator ({member.member_epoch}). The member must "
                "abandon all its partitions and rejoin."
            )


def _is_subset(owned: Sequence[TopicPartitions] | None, assigned: Assignment) -> bool:
    if owned is None:
        return False
    for tp in owned:
        partitions = assigned.get(tp.topic_id)
        if partitions is None or not set(tp.partitions) <= partitions:
            return False
    return True


# -- subscriptions ----------------------------------------------------------------------------
