"""KIP-848 consumer groups: the ConsumerGroupHeartbeat state machine and its replay.

A consumer group is the server-side rebalance protocol of KIP-848. Members heartbeat; the
coordinator keeps three epochs and moves them forward:

- the *group epoch* moves whenever the group's membership or subscriptions change (a member
  joins, leaves or is fenced, a subscription changes, a subscribed topic is created, deleted or
  grows);
- the *assignment epoch* follows the group epoch once a new *target assignment* has been
  computed with the group's server assignor;
- each *member epoch* follows the assignment epoch once that member has reconciled with its
  target: a partition moves to its new owner only after the previous owner has stopped
  reporting it in its heartbeats.

Reconciliation (:mod:`~odradek.coordinator.group.consumer_reconciliation`) follows Apache
Kafka's ``CurrentAssignmentBuilder``. Member states (``state`` in
``ConsumerGroupCurrentMemberAssignmentValue``):

================= ================================================================================
STABLE            reconciled at its epoch. transition: the assignment epoch moves -> compute next.
UNREVOKED         keeps its epoch until it stops reporting ``partitions_pending_revocation``;
                  then -> compute next (previous states: STABLE, UNREVOKED, UNRELEASED).
UNRELEASED        at the assignment epoch, but some target partitions are still owned by other
                  members; each heartbeat -> compute next, which takes whatever has been freed.
UNKNOWN           a state written by a newer version: the member must rejoin with nothing owned.
================= ================================================================================

Like Kafka's coordinators, handlers never mutate state: :meth:`ConsumerGroups.heartbeat`
computes records from the current state and returns them with the answer in a
:class:`~odradek.coordinator.runtime.CoordinatorResult`; the runtime persists them and then
replays each one, and :meth:`ConsumerGroups.replay` is the only code that changes a group.
Session and rebalance timeouts are timer operations that return the fencing records. Loading a coordinator after a restart replays the same records; replay also arms the
session timer of every member it creates and the rebalance timer of every member waiting to
revoke, so a loaded group expires its silent members as a live one does.

The pieces: members and groups as data in :mod:`~odradek.coordinator.group.consumer_model`,
reconciliation in :mod:`~odradek.coordinator.group.consumer_reconciliation`, subscriptions
(names, regexes, topic metadata) in :mod:`~odradek.coordinator.group.consumer_subscriptions`;
this module is the state machine and re-exports their public names.

Owned by the group coordinator, on the broker's event-loop thread; not thread-safe. Nothing
here does I/O or reads the clock (time comes from ``ctx.now_ms()``).
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

from odradek.coordinator.group.assignors import MemberSubscription, get_assignor
from odradek.coordinator.group.consumer_model import (
    EMPTY_ASSIGNMENT,
    JOIN_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH,
    Assignment,
    ConsumerGroup,
    ConsumerGroupMember,
    HeartbeatResult,
    IllegalReplayError,
    MemberState,
    as_assignment,
    preferred_assignor,
    to_topic_partitions,
)
from odradek.coordinator.group.consumer_reconciliation import check_member_epoch, reconcile
from odradek.coordinator.group.consumer_subscriptions import SubscriptionResolver, compile_regex
from odradek.coordinator.group.context import CoordinatorContext
from odradek.coordinator.group.records import (
    ConsumerGroupCurrentMemberAssignmentKey,
    ConsumerGroupCurrentMemberAssignmentValue,
    ConsumerGroupMemberMetadataKey,
    ConsumerGroupMemberMetadataValue,
    ConsumerGroupMetadataKey,
    ConsumerGroupMetadataValue,
    ConsumerGroupPartitionMetadataKey,
    ConsumerGroupPartitionMetadataValue,
    ConsumerGroupTargetAssignmentMemberKey,
    ConsumerGroupTargetAssignmentMemberValue,
    ConsumerGroupTargetAssignmentMetadataKey,
    ConsumerGroupTargetAssignmentMetadataValue,
    GroupMetadataKey,
    RecordKey,
    RecordValue,
    TopicMetadata,
    TopicPartitions,
)
from odradek.coordinator.runtime import CoordinatorResult
from odradek.errors import (
    FencedInstanceIdError,
    GroupIdNotFoundError,
    GroupMaxSizeReachedError,
    InvalidGroupIdError,
    InvalidRequestError,
    StaleMemberEpochError,
    UnknownMemberIdError,
    UnreleasedInstanceIdError,
    UnsupportedAssignorError,
    UnsupportedVersionError,
)

__all__ = [
    "JOIN_GROUP_MEMBER_EPOCH",
    "LEAVE_GROUP_MEMBER_EPOCH",
    "LEAVE_GROUP_STATIC_MEMBER_EPOCH",
    "Assignment",
    "MemberState",
    "ConsumerGroupMember",
    "ConsumerGroup",
    "ConsumerGroups",
    "HeartbeatResult",
    "IllegalReplayError",
    "reconcile",
    "session_timer_key",
    "rebalance_timer_key",
]

log = logging.getLogger(__name__)


def session_timer_key(group_id: str, member_id: str) -> tuple[str, str, str]:
    return ("consumer-session", group_id, member_id)


def rebalance_timer_key(group_id: str, member_id: str) -> tuple[str, str, str]:
    return ("consumer-rebalance", group_id, member_id)


def _random_member_id() -> str:
    # Kafka's Uuid.toString: url-safe base64 of the 16 bytes, no padding.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


Record = tuple[RecordKey, RecordValue | None]


class ConsumerGroups:
    """Every KIP-848 group of one coordinator, sharing its group registry.

    ``groups`` maps every group id of the coordinator to its group object (classic groups are
    other types with an ``is_empty()``); this class adds and removes :class:`ConsumerGroup`
    entries, and only in :meth:`replay`.
    """

    def __init__(
        self,
        ctx: CoordinatorContext,
        groups: MutableMapping[str, Any],
        *,
        new_member_id: Callable[[], str] = _random_member_id,
    ) -> None:
        self._ctx = ctx
        self._groups = groups
        self._new_member_id = new_member_id

    # -- queries --------------------------------------------------------------------------------

    def get(self, group_id: str) -> ConsumerGroup | None:
        group = self._groups.get(group_id)
        return group if isinstance(group, ConsumerGroup) else None

    def describe(self, group_id: str) -> ConsumerGroup:
        """The consumer group ``group_id``; GroupIdNotFoundError if there is none (also when the
        id names a classic group)."""
        group = self._groups.get(group_id)
        if group is None:
            raise GroupIdNotFoundError(f"Group {group_id} not found.")
        if not isinstance(group, ConsumerGroup):
            raise GroupIdNotFoundError(f"Group {group_id} is not a consumer group.")
        return group

    def assignor_name(self, group: ConsumerGroup) -> str:
        """The server assignor the group uses (its members' preference, else the default)."""
        return group.preferred_server_assignor() or self._default_assignor()

    def validate_offset_commit(self, group_id: str, member_id: str, member_epoch: int) -> None:
        """KIP-848 rules for OffsetCommit v9+ to a consumer group: a negative epoch (admin or
        manual-assignment commits) is accepted only while the group is empty; otherwise the
        member must exist (UnknownMemberIdError) and send its current epoch exactly
        (StaleMemberEpochError)."""
        group = self.describe(group_id)
        if member_epoch < 0 and not group.members:
            return
        self._validate_member_epoch(group, member_id, member_epoch)

    def validate_offset_fetch(
        self, group_id: str, member_id: str | None, member_epoch: int
    ) -> None:
        """KIP-848 rules for OffsetFetch v9+: no member id and a negative epoch (admin clients)
        is always accepted; otherwise as :meth:`validate_offset_commit`."""
        if member_id is None and member_epoch < 0:
            return
        group = self.describe(group_id)
        self._validate_member_epoch(group, member_id or "", member_epoch)

    @staticmethod
    def _validate_member_epoch(group: ConsumerGroup, member_id: str, member_epoch: int) -> None:
        member = group.members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(
                f"Member {member_id} is not a member of group {group.group_id}."
            )
        if member_epoch != member.member_epoch:
            raise StaleMemberEpochError(
                f"The received member epoch {member_epoch} does not match the expected member "
                f"epoch {member.member_epoch}."
            )

    def tombstones(self, group_id: str) -> list[Record]:
        """Records deleting every KIP-848 record of ``group_id`` (empty when it is not a
        consumer group). The group-epoch tombstone comes last: replaying it drops the group."""
        group = self.get(group_id)
        if group is None:
            return []
        member_ids = sorted(set(group.members) | set(group.target_assignment))
        records: list[Record] = []
        records += [
            (ConsumerGroupCurrentMemberAssignmentKey(group_id, m), None) for m in member_ids
        ]
        records += [(ConsumerGroupTargetAssignmentMemberKey(group_id, m), None) for m in member_ids]
        records.append((ConsumerGroupTargetAssignmentMetadataKey(group_id), None))
        records += [(ConsumerGroupMemberMetadataKey(group_id, m), None) for m in member_ids]
        records.append((ConsumerGroupPartitionMetadataKey(group_id), None))
        records.append((ConsumerGroupMetadataKey(group_id), None))
        return records

    # -- heartbeat ------------------------------------------------------------------------------

    def heartbeat(
        self,
        *,
        group_id: str,
        member_id: str,
        member_epoch: int,
        instance_id: str | None,
        rack_id: str | None,
        rebalance_timeout_ms: int,
        subscribed_topic_names: Sequence[str] | None,
        subscribed_topic_regex: str | None,
        server_assignor: str | None,
        owned_partitions: Sequence[TopicPartitions] | None,
        client_id: str,
        client_host: str,
    ) -> CoordinatorResult[HeartbeatResult]:
        """Serve one ConsumerGroupHeartbeat: the records it changes the group with, and the
        answer. Fields that are None (-1 for the rebalance timeout) are unchanged since the
        member's last heartbeat. Raises a KafkaError for the response's error code."""
        self._validate_request(
            group_id,
            member_id,
            member_epoch,
            instance_id,
            rack_id,
            rebalance_timeout_ms,
            subscribed_topic_names,
            subscribed_topic_regex,
            server_assignor,
            owned_partitions,
        )
        if member_epoch in (LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH):
            return self._leave(group_id, member_id, member_epoch, instance_id)

        records: list[Record] = []
        joining = member_epoch == JOIN_GROUP_MEMBER_EPOCH
        group = self._group_for_heartbeat(group_id, joining, records)
        self._check_group_size(group, member_id, instance_id)
        if not member_id:
            member_id = self._new_member_id()

        member, replaced = self._find_member(
            group, member_id, member_epoch, instance_id, owned_partitions, joining
        )
        if replaced is not None:
            records += self._replace_member_records(group, replaced, member)
        is_new = member_id not in group.members

        updated = replace(
            member,
            instance_id=instance_id if instance_id is not None else member.instance_id,
            rack_id=rack_id if rack_id is not None else member.rack_id,
            rebalance_timeout_ms=(
                rebalance_timeout_ms if rebalance_timeout_ms != -1 else member.rebalance_timeout_ms
            ),
            server_assignor=server_assignor
            if server_assignor is not None
            else member.server_assignor,
            subscribed_topic_names=(
                tuple(subscribed_topic_names)
                if subscribed_topic_names is not None
                else member.subscribed_topic_names
            ),
            subscribed_topic_regex=(
                (subscribed_topic_regex or None)
                if subscribed_topic_regex is not None
                else member.subscribed_topic_regex
            ),
            client_id=client_id,
            client_host=client_host,
        )

        # 1. The member's metadata, the group's subscription metadata and the group epoch.
        bump = is_new and replaced is None
        if updated != member or is_new:
            records.append(
                (ConsumerGroupMemberMetadataKey(group_id, member_id), updated.metadata_value())
            )
            bump = bump or not updated.subscription_equals(member)
        members = dict(group.members)
        if replaced is not None:
            del members[replaced.member_id]
        members[member_id] = updated
        resolver = SubscriptionResolver(self._ctx.topics())
        metadata = resolver.subscription_metadata(members.values())
        if metadata != group.subscription_metadata:
            records.append(
                (
                    ConsumerGroupPartitionMetadataKey(group_id),
                    ConsumerGroupPartitionMetadataValue(
                        tuple(metadata[n] for n in sorted(metadata))
                    ),
                )
            )
            bump = True
        group_epoch = group.group_epoch
        if bump:
            group_epoch += 1
            records.append(
                (ConsumerGroupMetadataKey(group_id), ConsumerGroupMetadataValue(group_epoch))
            )

        # 2. A new target assignment when the group epoch is ahead of the assignment epoch.
        if group_epoch > group.assignment_epoch:
            targets = self._assign(group, members, metadata, resolver, replaced, updated)
            for mid in sorted(targets):
                old_target = group.target_assignment.get(mid)
                if replaced is not None and mid == member_id:
                    old_target = group.target_assignment.get(replaced.member_id)
                if targets[mid] != old_target:
                    records.append(
                        (
                            ConsumerGroupTargetAssignmentMemberKey(group_id, mid),
                            ConsumerGroupTargetAssignmentMemberValue(
                                to_topic_partitions(targets[mid])
                            ),
                        )
                    )
            records.append(
                (
                    ConsumerGroupTargetAssignmentMetadataKey(group_id),
                    ConsumerGroupTargetAssignmentMetadataValue(group_epoch),
                )
            )
            target_epoch = group_epoch
            target = targets.get(member_id, EMPTY_ASSIGNMENT)
        else:
            target_epoch = group.assignment_epoch
            target = group.target_assignment.get(member_id, EMPTY_ASSIGNMENT)
            if replaced is not None:
                target = group.target_assignment.get(replaced.member_id, EMPTY_ASSIGNMENT)

        # 3. Move the member towards its target.
        reconciled = updated
        if not updated.is_reconciled_to(target_epoch):
            reconciled = reconcile(
                updated, target_epoch, target, group.current_partition_epoch, owned_partitions
            )
        if reconciled != updated or is_new:
            records.append(
                (
                    ConsumerGroupCurrentMemberAssignmentKey(group_id, member_id),
                    reconciled.assignment_value(),
                )
            )

        def written(error: Exception | None) -> None:
            if error is None:
                self._schedule_session_timeout(group_id, member_id)

        full_request = joining or (
            rebalance_timeout_ms != -1
            and (subscribed_topic_names is not None or subscribed_topic_regex is not None)
            and owned_partitions is not None
        )
        send = (
            full_request
            or reconciled.assigned_partitions != member.assigned_partitions
            or (
                owned_partitions is not None
                and as_assignment(owned_partitions) != reconciled.assigned_partitions
            )
        )
        answer = HeartbeatResult(
            member_id=member_id,
            member_epoch=reconciled.member_epoch,
            heartbeat_interval_ms=self._ctx.config.consumer_heartbeat_interval_ms,
            assignment=to_topic_partitions(reconciled.assigned_partitions) if send else None,
        )
        return CoordinatorResult(records, answer, on_written=written)

    def _validate_request(
        self,
        group_id: str,
        member_id: str,
        member_epoch: int,
        instance_id: str | None,
        rack_id: str | None,
        rebalance_timeout_ms: int,
        subscribed_topic_names: Sequence[str] | None,
        subscribed_topic_regex: str | None,
        server_assignor: str | None,
        owned_partitions: Sequence[TopicPartitions] | None,
    ) -> None:
        if "consumer" not in self._ctx.config.protocols:
            raise UnsupportedVersionError("The consumer group protocol is not enabled.")
        if not group_id:
            raise InvalidGroupIdError("GroupId can't be empty.")
        if instance_id == "":
            raise InvalidRequestError("InstanceId can't be empty.")
        if rack_id == "":
            raise InvalidRequestError("RackId can't be empty.")
        if member_epoch > 0 or member_epoch == LEAVE_GROUP_MEMBER_EPOCH:
            if not member_id:
                raise InvalidRequestError("MemberId can't be empty.")
        elif member_epoch == JOIN_GROUP_MEMBER_EPOCH:
            if rebalance_timeout_ms == -1:
                raise InvalidRequestError("RebalanceTimeoutMs must be provided in first request.")
            if owned_partitions is None or len(owned_partitions) > 0:
                raise InvalidRequestError("TopicPartitions must be empty when (re-)joining.")
            if subscribed_topic_names is None and subscribed_topic_regex is None:
                raise InvalidRequestError(
                    "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when "
                    "(re-)joining."
                )
        elif member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            if not member_id:
                raise InvalidRequestError("MemberId can't be empty.")
            if instance_id is None:
                raise InvalidRequestError("InstanceId can't be null.")
        else:
            raise InvalidRequestError("MemberEpoch is invalid.")
        if (
            server_assignor is not None
            and server_assignor not in self._ctx.config.consumer_assignors
        ):
            raise UnsupportedAssignorError(
                f"ServerAssignor {server_assignor} is not supported. Supported assignors: "
                f"{', '.join(self._ctx.config.consumer_assignors)}."
            )
        if subscribed_topic_regex:
            compile_regex(subscribed_topic_regex)

    def _group_for_heartbeat(
        self, group_id: str, create: bool, records: list[Record]
    ) -> ConsumerGroup:
        existing = self._groups.get(group_id)
        if isinstance(existing, ConsumerGroup):
            return existing
        if existing is not None:
            if not existing.is_empty():
                raise GroupIdNotFoundError(f"Group {group_id} is not a consumer group.")
            if not create:
                raise GroupIdNotFoundError(f"Group {group_id} is not a consumer group.")
            # An empty classic group gives way: its tombstone goes first so that replay drops
            # it before the consumer group's records create the new group.
            records.append((GroupMetadataKey(group_id), None))
        elif not create:
            raise GroupIdNotFoundError(f"Consumer group {group_id} not found.")
        # Not registered: replaying the records this heartbeat writes creates it.
        return ConsumerGroup(group_id)

    def _check_group_size(
        self, group: ConsumerGroup, member_id: str, instance_id: str | None
    ) -> None:
        limit = self._ctx.config.consumer_max_size
        if len(group.members) < limit:
            return
        if member_id and member_id in group.members:
            return
        if instance_id is not None and group.static_member(instance_id) is not None:
            return  # a static member replacing itself does not grow the group
        raise GroupMaxSizeReachedError(
            f"The consumer group has reached its maximum capacity of {limit} members."
        )

    def _find_member(
        self,
        group: ConsumerGroup,
        member_id: str,
        member_epoch: int,
        instance_id: str | None,
        owned: Sequence[TopicPartitions] | None,
        joining: bool,
    ) -> tuple[ConsumerGroupMember, ConsumerGroupMember | None]:
        """The member the heartbeat is for (a fresh one when joining) and, when a static member
        takes over a departed instance, the member it replaces."""
        if instance_id is not None:
            static = group.static_member(instance_id)
            if joining and static is not None and static.member_id != member_id:
                if static.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH:
                    raise UnreleasedInstanceIdError(
                        f"Static member {member_id} with instance id {instance_id} cannot join "
                        f"the group because the instance id is owned by {static.member_id} member."
                    )
                log.info(
                    "[GroupId %s] Static member %s with instance id %s replaces member %s.",
                    group.group_id,
                    member_id,
                    instance_id,
                    static.member_id,
                )
                # The new incarnation takes over the departed one's assignment (no rebalance).
                new = replace(static, member_id=member_id, member_epoch=0, previous_member_epoch=0)
                return new, static
            if not joining:
                if static is None:
                    raise UnknownMemberIdError(f"Instance id {instance_id} is unknown.")
                if static.member_id != member_id:
                    raise FencedInstanceIdError(
                        f"Static member {member_id} with instance id {instance_id} was fenced by "
                        f"member {static.member_id}."
                    )
        member = group.members.get(member_id)
        if member is None:
            if not joining:
                raise UnknownMemberIdError(
                    f"Member {member_id} is not a member of group {group.group_id}."
                )
            log.info("[GroupId %s] Member %s joins the consumer group.", group.group_id, member_id)
            return ConsumerGroupMember(member_id=member_id), None
        check_member_epoch(member, member_epoch, owned)
        return member, None

    def _replace_member_records(
        self, group: ConsumerGroup, old: ConsumerGroupMember, new: ConsumerGroupMember
    ) -> list[Record]:
        gid = group.group_id
        return [
            *_member_tombstones(gid, old.member_id),
            (ConsumerGroupMemberMetadataKey(gid, new.member_id), new.metadata_value()),
            (
                ConsumerGroupTargetAssignmentMemberKey(gid, new.member_id),
                ConsumerGroupTargetAssignmentMemberValue(
                    to_topic_partitions(group.target_assignment.get(old.member_id, EMPTY_ASSIGNMENT))
                ),
            ),
            (ConsumerGroupCurrentMemberAssignmentKey(gid, new.member_id), new.assignment_value()),
        ]

    def _assign(
        self,
        group: ConsumerGroup,
        members: Mapping[str, ConsumerGroupMember],
        metadata: Mapping[str, TopicMetadata],
        resolver: SubscriptionResolver,
        replaced: ConsumerGroupMember | None,
        updated: ConsumerGroupMember,
    ) -> dict[str, Assignment]:
        name = preferred_assignor(members.values()) or self._default_assignor()
        try:
            assignor = get_assignor(name)
        except UnsupportedAssignorError:
            assignor = get_assignor(self._default_assignor())
        subscriptions = []
        for mid, m in members.items():
            current = group.target_assignment.get(mid, EMPTY_ASSIGNMENT)
            if replaced is not None and mid == updated.member_id:
                current = group.target_assignment.get(replaced.member_id, EMPTY_ASSIGNMENT)
            ids = frozenset(
                metadata[n].topic_id for n in resolver.member_topics(m) if n in metadata
            )
            subscriptions.append(MemberSubscription(mid, m.rack_id, ids, current))
        topics = {t.topic_id: t.num_partitions for t in metadata.values()}
        result = assignor.assign(subscriptions, topics)
        return {mid: {t: ps for t, ps in result.get(mid, {}).items() if ps} for mid in members}

    def _default_assignor(self) -> str:
        return self._ctx.config.consumer_assignors[0]

    # -- leaving and fencing --------------------------------------------------------------------

    def _leave(
        self, group_id: str, member_id: str, member_epoch: int, instance_id: str | None
    ) -> CoordinatorResult[HeartbeatResult]:
        group = self.describe(group_id)
        if instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                raise UnknownMemberIdError(
                    f"Member {member_id} is not a member of group {group_id}."
                )
        else:
            static = group.static_member(instance_id)
            if static is None:
                raise UnknownMemberIdError(f"Instance id {instance_id} is unknown.")
            if static.member_id != member_id:
                raise FencedInstanceIdError(
                    f"Static member {member_id} with instance id {instance_id} was fenced by "
                    f"member {static.member_id}."
                )
            member = static
        if member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            # The instance is expected back: keep its assignment (and session timer) so that its
            # next incarnation can take over without a rebalance.
            log.info(
                "[GroupId %s] Static member %s with instance id %s temporarily left.",
                group_id,
                member_id,
                instance_id,
            )
            leaving = replace(
                member,
                member_epoch=LEAVE_GROUP_STATIC_MEMBER_EPOCH,
                partitions_pending_revocation={},
            )
            records: list[Record] = [
                (
                    ConsumerGroupCurrentMemberAssignmentKey(group_id, member_id),
                    leaving.assignment_value(),
                )
            ]
        else:
            log.info("[GroupId %s] Member %s left the consumer group.", group_id, member_id)
            records = self._fence_records(group, member)
        return CoordinatorResult(records, HeartbeatResult(member_id, member_epoch, 0, None))

    def _fence_records(self, group: ConsumerGroup, member: ConsumerGroupMember) -> list[Record]:
        gid = group.group_id
        records: list[Record] = list(_member_tombstones(gid, member.member_id))
        others = [m for mid, m in group.members.items() if mid != member.member_id]
        metadata = SubscriptionResolver(self._ctx.topics()).subscription_metadata(others)
        if metadata != group.subscription_metadata:
            records.append(
                (
                    ConsumerGroupPartitionMetadataKey(gid),
                    ConsumerGroupPartitionMetadataValue(
                        tuple(metadata[n] for n in sorted(metadata))
                    ),
                )
            )
        records.append(
            (ConsumerGroupMetadataKey(gid), ConsumerGroupMetadataValue(group.group_epoch + 1))
        )
        return records

    def _fence(
        self, group_id: str, member_id: str, reason: str, epoch: int | None = None
    ) -> CoordinatorResult[None] | None:
        """A timer: the records removing a member that stopped heartbeating or revoking."""
        group = self.get(group_id)
        member = group.members.get(member_id) if group is not None else None
        if group is None or member is None:
            return None
        if epoch is not None and (
            member.member_epoch != epoch or member.state is not MemberState.UNREVOKED_PARTITIONS
        ):
            return None
        log.info(
            "[GroupId %s] Member %s fenced from the group because %s", group_id, member_id, reason
        )

        def written(error: Exception | None) -> None:
            if error is not None:
                # Try again after another session timeout rather than forget.
                log.warning(
                    "[GroupId %s] could not fence member %s: %s", group_id, member_id, error
                )
                self._schedule_session_timeout(group_id, member_id)

        return CoordinatorResult(self._fence_records(group, member), None, on_written=written)

    def _schedule_session_timeout(self, group_id: str, member_id: str) -> None:
        group = self.get(group_id)
        if group is None or member_id not in group.members:
            return
        self._ctx.timer.schedule(
            session_timer_key(group_id, member_id),
            self._ctx.now_ms() + self._ctx.config.consumer_session_timeout_ms,
            lambda: self._fence(group_id, member_id, "the member session expired."),
        )

    def _schedule_rebalance_timeout(self, group_id: str, member: ConsumerGroupMember) -> None:
        member_id, epoch = member.member_id, member.member_epoch
        timeout = max(member.rebalance_timeout_ms, 0)
        self._ctx.timer.schedule(
            rebalance_timer_key(group_id, member_id),
            self._ctx.now_ms() + timeout,
            lambda: self._fence(
                group_id,
                member_id,
                f"it failed to revoke its partitions of epoch {epoch} within {timeout}ms.",
                epoch=epoch,
            ),
        )

    # -- replay ---------------------------------------------------------------------------------

    def replay(self, key: RecordKey, value: RecordValue | None) -> None:
        """Apply one KIP-848 record (the only mutator of consumer groups). Tombstones for groups
        or members that do not exist are ignored; a record for a group id held by a classic
        group raises :class:`IllegalReplayError` and changes nothing."""
        match key:
            case ConsumerGroupMetadataKey(group_id=gid):
                if value is None:
                    self.drop(gid)
                else:
                    assert isinstance(value, ConsumerGroupMetadataValue)
                    self._group_for_replay(gid).group_epoch = value.epoch
            case ConsumerGroupPartitionMetadataKey(group_id=gid):
                if value is None:
                    if (group := self.get(gid)) is not None:
                        group.subscription_metadata = {}
                else:
                    assert isinstance(value, ConsumerGroupPartitionMetadataValue)
                    self._group_for_replay(gid).subscription_metadata = {
                        t.topic_name: t for t in value.topics
                    }
            case ConsumerGroupMemberMetadataKey(group_id=gid, member_id=mid):
                if value is None:
                    self._remove_member(gid, mid)
                else:
                    assert isinstance(value, ConsumerGroupMemberMetadataValue)
                    group = self._group_for_replay(gid)
                    old = group.members.get(mid)
                    new = replace(
                        old if old is not None else ConsumerGroupMember(member_id=mid),
                        instance_id=value.instance_id,
                        rack_id=value.rack_id,
                        client_id=value.client_id,
                        client_host=value.client_host,
                        subscribed_topic_names=tuple(value.subscribed_topic_names),
                        subscribed_topic_regex=value.subscribed_topic_regex,
                        rebalance_timeout_ms=value.rebalance_timeout_ms,
                        server_assignor=value.server_assignor,
                    )
                    self._put_member(group, old, new)
            case ConsumerGroupTargetAssignmentMetadataKey(group_id=gid):
                if value is None:
                    if (group := self.get(gid)) is not None:
                        group.assignment_epoch = 0
                else:
                    assert isinstance(value, ConsumerGroupTargetAssignmentMetadataValue)
                    self._group_for_replay(gid).assignment_epoch = value.assignment_epoch
            case ConsumerGroupTargetAssignmentMemberKey(group_id=gid, member_id=mid):
                if value is None:
                    if (group := self.get(gid)) is not None:
                        group.target_assignment.pop(mid, None)
                else:
                    assert isinstance(value, ConsumerGroupTargetAssignmentMemberValue)
                    group = self._group_for_replay(gid)
                    group.target_assignment[mid] = as_assignment(value.topic_partitions)
            case ConsumerGroupCurrentMemberAssignmentKey(group_id=gid, member_id=mid):
                if value is None:
                    group = self.get(gid)
                    old = group.members.get(mid) if group is not None else None
                    if group is not None and old is not None:
                        self._put_member(
                            group,
                            old,
                            replace(
                                old,
                                member_epoch=LEAVE_GROUP_MEMBER_EPOCH,
                                previous_member_epoch=LEAVE_GROUP_MEMBER_EPOCH,
                                state=MemberState.STABLE,
                                assigned_partitions={},
                                partitions_pending_revocation={},
                            ),
                        )
                else:
                    assert isinstance(value, ConsumerGroupCurrentMemberAssignmentValue)
                    group = self._group_for_replay(gid)
                    old = group.members.get(mid)
                    new = replace(
                        old if old is not None else ConsumerGroupMember(member_id=mid),
                        member_epoch=value.member_epoch,
                        previous_member_epoch=value.previous_member_epoch,
                        state=MemberState.from_value(value.state),
                        assigned_partitions=as_assignment(value.assigned_partitions),
                        partitions_pending_revocation=as_assignment(
                            value.partitions_pending_revocation
                        ),
                    )
                    self._put_member(group, old, new)
            case _:
                raise IllegalReplayError(f"not a consumer group record: {key!r}")

    def _group_for_replay(self, group_id: str) -> ConsumerGroup:
        existing = self._groups.get(group_id)
        if isinstance(existing, ConsumerGroup):
            return existing
        if existing is not None and not _is_simple_group(existing):
            raise IllegalReplayError(f"group {group_id} is not a consumer group")
        # A "simple" group (offsets only, no membership ever) gives way to the consumer group,
        # as in Kafka: compaction can leave its offset commits before the group's records.
        group = self._groups[group_id] = ConsumerGroup(group_id)
        return group

    def drop(self, group_id: str) -> None:
        """Remove the consumer group ``group_id`` and its timers (replayed tombstone, or its
        partition unloaded)."""
        group = self.get(group_id)
        if group is None:
            return
        for member_id in list(group.members):
            self._remove_member(group_id, member_id)
        del self._groups[group_id]

    def _put_member(
        self, group: ConsumerGroup, old: ConsumerGroupMember | None, new: ConsumerGroupMember
    ) -> None:
        group._put_member(new)
        timer = self._ctx.timer
        gid, mid = group.group_id, new.member_id
        if old is None and not timer.is_scheduled(session_timer_key(gid, mid)):
            self._schedule_session_timeout(gid, mid)
        if new.state is MemberState.UNREVOKED_PARTITIONS and new.member_epoch >= 0:
            if (
                old is None
                or old.state is not MemberState.UNREVOKED_PARTITIONS
                or old.member_epoch != new.member_epoch
                or not timer.is_scheduled(rebalance_timer_key(gid, mid))
            ):
                self._schedule_rebalance_timeout(gid, new)
        else:
            timer.cancel(rebalance_timer_key(gid, mid))

    def _remove_member(self, group_id: str, member_id: str) -> None:
        group = self.get(group_id)
        if group is None:
            return
        group._remove_member(member_id)
        self._ctx.timer.cancel(session_timer_key(group_id, member_id))
        self._ctx.timer.cancel(rebalance_timer_key(group_id, member_id))


def _member_tombstones(group_id: str, member_id: str) -> tuple[Record, ...]:
    return (
        (ConsumerGroupCurrentMemberAssignmentKey(group_id, member_id), None),
        (ConsumerGroupTargetAssignmentMemberKey(group_id, member_id), None),
        (ConsumerGroupMemberMetadataKey(group_id, member_id), None),
    )


def _is_simple_group(group: Any) -> bool:
    """An empty classic group that never had a protocol: it only holds committed offsets."""
    return bool(group.is_empty()) and getattr(group, "protocol_type", "") is None
