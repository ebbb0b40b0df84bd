"""Classic consumer groups: JoinGroup / SyncGroup / Heartbeat / LeaveGroup, as Apache Kafka runs
them (eager and cooperative clients alike: cooperative rebalancing is a client-side protocol on
top of the same broker state machine).

States and transitions (``_VALID_PREVIOUS`` is the table; anything else raises and changes
nothing):

- ``Empty``: no members; may hold committed offsets. → PreparingRebalance when one joins.
- ``PreparingRebalance``: waiting for every known member to (re)join, bounded by the largest
  member rebalance timeout; a new group first waits ``group.initial.rebalance.delay.ms``
  (extended while members keep arriving). At the deadline dynamic members that did not rejoin
  are dropped; static ones keep their place until their session expires (KIP-345), and if only
  such absent members are left the deadline is extended. → CompletingRebalance when the join
  completes, → Empty if nobody is left.
- ``CompletingRebalance``: the join answered every member with the new generation; waiting for
  the leader's SyncGroup with the assignment. → Stable once it is persisted,
  → PreparingRebalance if a member leaves, fails or changes its subscription.
- ``Stable``: members heartbeat. → PreparingRebalance on any membership change.
- ``Dead``: removed (deleted or expired); requests see it as unknown.

Membership is in memory; what survives a restart is the ``GroupMetadataValue`` record written
when a generation becomes Stable or Empty (or a static member is replaced). Operations (and the
timers, which are operations too) return those records in a
:class:`~odradek.coordinator.runtime.CoordinatorResult` with ``replay=False``: the group in
memory is what they snapshot, so only loading replays them (as Kafka). What must wait for the
write — the leader's assignment becoming Stable, a static member taking its predecessor's place
without a rebalance — happens in the result's ``on_written``, so a failed write changes nothing
and fails the request with the writer's error. Loading replays the records: a group with members
comes back Stable with fresh session deadlines, so live clients carry on and dead ones expire.
Owned by the coordinator's thread; no I/O, time from the context.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from odradek.coordinator.group.context import CoordinatorContext
from odradek.coordinator.group.records import (
    GroupMetadataKey,
    GroupMetadataValue,
    MemberMetadata,
    RecordKey,
    RecordValue,
)
from odradek.coordinator.pending import Pending
from odradek.coordinator.runtime import CoordinatorResult, error_code_of
from odradek.coordinator.timer import Callback
from odradek.errors import (
    ErrorCode,
    FencedInstanceIdError,
    GroupMaxSizeReachedError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidGroupIdError,
    InvalidSessionTimeoutError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

__all__ = [
    "ClassicGroupState",
    "ClassicGroup",
    "ClassicMember",
    "ClassicGroups",
    "JoinResult",
    "JoinedMember",
    "SyncResult",
    "LeaveResult",
    "IllegalStateTransition",
]

log = logging.getLogger("odradek.coordinator.group")

#: Why a group rebalances after its leader's assignment could not be stored.
_STORE_FAILED = "the group metadata could not be stored"

R = TypeVar("R")
Record = tuple[RecordKey, RecordValue | None]


class ClassicGroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


S = ClassicGroupState
_VALID_PREVIOUS: dict[ClassicGroupState, frozenset[ClassicGroupState]] = {
    S.PREPARING_REBALANCE: frozenset({S.STABLE, S.COMPLETING_REBALANCE, S.EMPTY}),
    S.COMPLETING_REBALANCE: frozenset({S.PREPARING_REBALANCE}),
    S.STABLE: frozenset({S.COMPLETING_REBALANCE}),
    S.EMPTY: frozenset({S.PREPARING_REBALANCE}),
    S.DEAD: frozenset(S),
}


class IllegalStateTransition(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class JoinedMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    error: ErrorCode
    member_id: str = ""
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: tuple[JoinedMember, ...] = ()
    skip_assignment: bool = False


@dataclass(frozen=True, slots=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True, slots=True)
class LeaveResult:
    member_id: str
    group_instance_id: str | None
    error: ErrorCode


@dataclass(slots=True, eq=False)
class ClassicMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    assignment: bytes = b""
    join_waiter: Pending[JoinResult] | None = None
    sync_waiter: Pending[SyncResult] | None = None
    is_new: bool = False
    # Whether the join response asked the leader to skip assignment (KIP-814).
    supports_skip_assignment: bool = False

    def metadata(self, protocol: str | None) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]


@dataclass(slots=True, eq=False)
class ClassicGroup:
    group_id: str
    state: ClassicGroupState = S.EMPTY
    protocol_type: str | None = None
    protocol_name: str | None = None
    generation_id: int = 0
    leader_id: str | None = None
    members: dict[str, ClassicMember] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    pending_members: set[str] = field(default_factory=set)
    pending_sync: set[str] = field(default_factory=set)
    new_member_added: bool = False
    initial_delay_remaining_ms: int | None = None  # not None while in the initial delay
    current_state_timestamp: int = -1

    group_type = "classic"

    def is_empty(self) -> bool:
        return not self.members

    @property
    def state_name(self) -> str:
        return self.state.value

    def transition_to(self, target: ClassicGroupState, now_ms: int) -> None:
        if self.state not in _VALID_PREVIOUS[target]:
            raise IllegalStateTransition(
                f"group {self.group_id}: {self.state.value} -> {target.value} is not allowed"
            )
        self.state = target
        self.current_state_timestamp = now_ms

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def candidate_protocols(self, members: Sequence[ClassicMember] | None = None) -> list[str]:
        """Protocols every member (of ``members``, by default the group's) supports, in the
        first member's order of preference."""
        members = list(self.members.values()) if members is None else members
        if not members:
            return []
        common = set(members[0].protocol_names())
        for m in members[1:]:
            common &= set(m.protocol_names())
        return [p for p in members[0].protocol_names() if p in common]

    def supports_protocols(self, protocol_type: str, protocols: Sequence[str]) -> bool:
        if not self.members:
            return bool(protocol_type) and bool(protocols)
        if protocol_type != self.protocol_type:
            return False
        candidates = set(self.candidate_protocols())
        return any(p in candidates for p in protocols)

    def select_protocol(self, members: Sequence[ClassicMember] | None = None) -> str:
        members = list(self.members.values()) if members is None else members
        candidates = self.candidate_protocols(members)
        votes: Counter[str] = Counter()
        for m in members:
            for name in m.protocol_names():
                if name in candidates:
                    votes[name] += 1
                    break
        # Most votes wins; ties go to the earlier candidate.
        return max(candidates, key=lambda p: (votes[p], -candidates.index(p)))

    def all_joined(self) -> bool:
        return not self.pending_members and all(
            m.join_waiter is not None for m in self.members.values()
        )

    def add(self, member: ClassicMember) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if self.leader_id is None:
            self.leader_id = member.member_id

    def remove(self, member_id: str) -> ClassicMember | None:
        member = self.members.pop(member_id, None)
        if member is None:
            return None
        if member.group_instance_id is not None:
            if self.static_members.get(member.group_instance_id) == member_id:
                del self.static_members[member.group_instance_id]
        self.pending_sync.discard(member_id)
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return member

    def to_record(
        self,
        *,
        members: Iterable[ClassicMember] | None = None,
        assignment: dict[str, bytes] | None = None,
        leader_id: str | None = None,
        current_state_timestamp: int | None = None,
    ) -> GroupMetadataValue:
        """The group's snapshot record; the keyword arguments describe the group as it will be
        once the record is written (the record is written before the change is applied)."""
        return GroupMetadataValue(
            protocol_type=self.protocol_type or "",
            generation=self.generation_id,
            protocol=self.protocol_name,
            leader=leader_id if leader_id is not None else self.leader_id,
            current_state_timestamp=(
                current_state_timestamp
                if current_state_timestamp is not None
                else self.current_state_timestamp
            ),
            members=tuple(
                MemberMetadata(
                    member_id=m.member_id,
                    group_instance_id=m.group_instance_id,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    rebalance_timeout_ms=m.rebalance_timeout_ms,
                    session_timeout_ms=m.session_timeout_ms,
                    subscription=m.metadata(self.protocol_name),
                    assignment=(
                        assignment.get(m.member_id, b"") if assignment is not None
                        else m.assignment
                    ),
                )
                for m in (self.members.values() if members is None else members)
            ),
        )


def _new_member_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


class ClassicGroups:
    """The classic protocol over the coordinator's group registry (``groups``, shared with the
    KIP-848 machine: a value that is not a :class:`ClassicGroup` is a consumer group)."""

    def __init__(
        self,
        ctx: CoordinatorContext,
        groups: MutableMapping[str, Any],
        *,
        take_over_consumer_group: Callable[[str], Sequence[Record]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._groups = groups
        # The records deleting an empty KIP-848 group whose id a classic JoinGroup wants.
        self._take_over = take_over_consumer_group
        # Records and after-write effects of the operation being run (see _operation).
        self._records: list[Record] = []
        self._on_written: list[Callable[[Exception | None], None]] = []
        self._in_operation = False

    # -- lookup -----------------------------------------------------------------------------

    def get(self, group_id: str) -> ClassicGroup | None:
        group = self._groups.get(group_id)
        return group if isinstance(group, ClassicGroup) else None

    def get_or_create(self, group_id: str) -> ClassicGroup:
        group = self._groups.get(group_id)
        if group is not None and not isinstance(group, ClassicGroup):
            raise InconsistentGroupProtocolError(
                f"group {group_id} is a consumer group of the KIP-848 protocol"
            )
        if group is None:
            group = ClassicGroup(group_id, current_state_timestamp=self._ctx.now_ms())
            self._groups[group_id] = group
        return group

    # -- JoinGroup -------------------------------------------------------------------------

    def join(
        self,
        *,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
        supports_skip_assignment: bool = False,
    ) -> CoordinatorResult[Pending[JoinResult]]:
        """JoinGroup; the response completes when the member's join does (the rebalance)."""
        if not group_id:
            raise InvalidGroupIdError("the group id must not be empty")
        cfg = self._ctx.config
        if not cfg.min_session_timeout_ms <= session_timeout_ms <= cfg.max_session_timeout_ms:
            raise InvalidSessionTimeoutError(
                f"session timeout {session_timeout_ms} ms is outside "
                f"[{cfg.min_session_timeout_ms}, {cfg.max_session_timeout_ms}]"
            )
        request: dict[str, Any] = dict(
            group_id=group_id,
            member_id=member_id,
            group_instance_id=group_instance_id,
            protocol_type=protocol_type,
            protocols=protocols,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            client_id=client_id,
            client_host=client_host,
            require_known_member_id=require_known_member_id,
            supports_skip_assignment=supports_skip_assignment,
        )
        existing = self._groups.get(group_id)
        if (
            existing is not None
            and not isinstance(existing, ClassicGroup)
            and existing.is_empty()
            and self._take_over is not None
        ):
            # An empty KIP-848 group holds the id: its records are deleted first (replaying the
            # tombstones drops it), then the join runs again.
            return CoordinatorResult(
                self._take_over(group_id),
                Pending(),
                then=lambda: self._operation(lambda: self._join(**request)),
            )
        return self._operation(lambda: self._join(**request))

    def _join(
        self,
        *,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
        supports_skip_assignment: bool,
    ) -> Pending[JoinResult]:
        cfg = self._ctx.config
        if rebalance_timeout_ms < 0:
            rebalance_timeout_ms = session_timeout_ms  # JoinGroup v0 has none
        existing = self._groups.get(group_id)
        if existing is None and member_id:
            raise UnknownMemberIdError(f"group {group_id} does not exist")
        group = self.get_or_create(group_id)
        if group.state is S.DEAD:
            # Deleted while the request was on its way; the client retries with a new group.
            raise UnknownMemberIdError(f"group {group_id} was removed")
        names = [name for name, _ in protocols]
        member_args = dict(
            client_id=client_id,
            client_host=client_host,
            rebalance_timeout_ms=rebalance_timeout_ms,
            session_timeout_ms=session_timeout_ms,
            protocol_type=protocol_type,
            protocols=tuple(protocols),
            supports_skip_assignment=supports_skip_assignment,
        )
        if not member_id:
            if len(group.members) + len(group.pending_members) >= cfg.max_size:
                raise GroupMaxSizeReachedError(f"group {group_id} has {cfg.max_size} members")
            if not group.supports_protocols(protocol_type, names):
                raise InconsistentGroupProtocolError(
                    f"protocols {names} of type {protocol_type!r} do not match group {group_id}"
                )
            if group_instance_id is not None:
                return self._join_static_unknown(group, group_instance_id, member_args)
            new_id = _new_member_id(client_id)
            if require_known_member_id:
                # KIP-394: hand out the id and wait for the second JoinGroup that carries it.
                group.pending_members.add(new_id)
                self._schedule(
                    ("pending", group_id, new_id),
                    self._ctx.now_ms() + session_timeout_ms,
                    lambda: self._expire_pending(group, new_id),
                )
                return Pending.completed(JoinResult(ErrorCode.member_id_required, new_id))
            return self._add_and_rebalance(group, new_id, group_instance_id, member_args)
        # A known (or pending) member id.
        if member_id in group.pending_members:
            group.pending_members.discard(member_id)
            self._ctx.timer.cancel(("pending", group_id, member_id))
            if not group.supports_protocols(protocol_type, names):
                raise InconsistentGroupProtocolError(
                    f"protocols {names} of type {protocol_type!r} do not match group {group_id}"
                )
            return self._add_and_rebalance(group, member_id, group_instance_id, member_args)
        member = self._known_member(group, member_id, group_instance_id)
        if not group.supports_protocols(protocol_type, names) and len(group.members) > 1:
            raise InconsistentGroupProtocolError(
                f"protocols {names} of type {protocol_type!r} do not match group {group_id}"
            )
        return self._join_known(group, member, member_args)

    def _join_static_unknown(
        self, group: ClassicGroup, instance_id: str, member_args: dict[str, Any]
    ) -> Pending[JoinResult]:
        old_id = group.static_members.get(instance_id)
        new_id = _new_member_id(instance_id)
        if old_id is None:
            return self._add_and_rebalance(group, new_id, instance_id, member_args)
        old = group.members[old_id]
        member = ClassicMember(new_id, instance_id, assignment=old.assignment, **member_args)
        if group.state is S.STABLE and self._keeps_protocol(group, old, member):
            # As in Kafka, only a change of the group's protocol rebalances: new subscription
            # bytes alone (e.g. a restarted consumer that owns no partitions yet) do not.
            return self._replace_static_member_stable(group, old, member)
        self._replace_static_member(group, old, member)
        waiter: Pending[JoinResult] = Pending()
        member.join_waiter = waiter
        if group.state is S.PREPARING_REBALANCE:
            self._maybe_complete_join(group)
        else:
            self._prepare_rebalance(group, f"static member {instance_id} rejoined")
        return waiter

    def _replace_static_member(
        self, group: ClassicGroup, old: ClassicMember, member: ClassicMember
    ) -> None:
        """KIP-345: the new incarnation takes the old one's place and fences it."""
        old_id, new_id = old.member_id, member.member_id
        if old.join_waiter is not None:
            old.join_waiter.complete(JoinResult(ErrorCode.fenced_instance_id, old_id))
            old.join_waiter = None
        if old.sync_waiter is not None:
            old.sync_waiter.complete(SyncResult(ErrorCode.fenced_instance_id))
            old.sync_waiter = None
        self._cancel_member_timers(group, old_id)
        # Read before remove(), which hands leadership and the pending sync to others.
        was_leader = group.leader_id == old_id
        awaited_sync = old_id in group.pending_sync
        group.remove(old_id)
        group.add(member)
        if was_leader:
            group.leader_id = new_id
        if awaited_sync:
            group.pending_sync.add(new_id)
        # The new incarnation must expire like any member, even if what follows fails.
        self._schedule_session(group, member)

    def _replace_static_member_stable(
        self, group: ClassicGroup, old: ClassicMember, member: ClassicMember
    ) -> Pending[JoinResult]:
        """Same subscription in a Stable group: no rebalance. The group with the new member id
        is persisted first; once it is, the new incarnation takes the old one's place and is
        answered with the current generation (the leader is told to skip the assignment,
        KIP-814). If the write fails, the old member stays and the join fails."""
        old_id, new_id = old.member_id, member.member_id
        was_leader = group.leader_id == old_id
        record = group.to_record(
            members=[*(m for m in group.members.values() if m is not old), member],
            leader_id=new_id if was_leader else None,
        )
        waiter: Pending[JoinResult] = Pending()

        def written(error: Exception | None) -> None:
            if error is not None:
                log.warning(
                    "group %s: storing static member %s failed: %s",
                    group.group_id, member.group_instance_id, error,
                )
                waiter.complete(JoinResult(error_code_of(error), new_id))
                return
            self._replace_static_member(group, old, member)
            is_leader = group.leader_id == new_id
            skip = is_leader and member.supports_skip_assignment
            # A leader too old for KIP-814 is told the previous leader id, so it acts as a
            # follower instead of assigning partitions with no member list.
            leader = group.leader_id if skip or not is_leader else old_id
            waiter.complete(
                JoinResult(
                    ErrorCode.none,
                    new_id,
                    group.generation_id,
                    group.protocol_type,
                    group.protocol_name,
                    leader or "",
                    self._joined_members(group) if skip else (),
                    skip_assignment=skip,
                )
            )

        self._emit(group, record, written)
        return waiter

    @staticmethod
    def _keeps_protocol(group: ClassicGroup, old: ClassicMember, member: ClassicMember) -> bool:
        """Whether the group would select the protocol it has now with ``member`` in ``old``'s
        place."""
        members = [*(m for m in group.members.values() if m is not old), member]
        candidates = group.candidate_protocols(members)
        return (
            group.protocol_name in candidates
            and group.select_protocol(members) == group.protocol_name
        )

    def _known_member(
        self, group: ClassicGroup, member_id: str, group_instance_id: str | None
    ) -> ClassicMember:
        if group_instance_id is not None:
            current = group.static_members.get(group_instance_id)
            if current is None:
                raise UnknownMemberIdError(
                    f"instance {group_instance_id} is not a member of {group.group_id}"
                )
            if current != member_id:
                raise FencedInstanceIdError(
                    f"instance {group_instance_id} of group {group.group_id} is now {current}"
                )
        member = group.members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(f"{member_id} is not a member of {group.group_id}")
        if group_instance_id is not None and member.group_instance_id != group_instance_id:
            raise FencedInstanceIdError(f"{member_id} is not instance {group_instance_id}")
        return member

    def _join_known(
        self, group: ClassicGroup, member: ClassicMember, member_args: dict[str, Any]
    ) -> Pending[JoinResult]:
        same = member.protocols == member_args["protocols"]
        if group.state is S.PREPARING_REBALANCE:
            self._update_member(member, member_args)
            return self._await_join(group, member)
        if group.state is S.COMPLETING_REBALANCE:
            if same:
                # The join response was lost; send the same answer again.
                return Pending.completed(self._join_answer(group, member))
            self._update_member(member, member_args)
            waiter = self._await_join(group, member)
            self._prepare_rebalance(group, f"member {member.member_id} changed its protocols")
            return waiter
        if group.state is S.STABLE:
            if group.leader_id == member.member_id or not same:
                # The leader rejoining (e.g. topic metadata changed) or a new subscription.
                self._update_member(member, member_args)
                waiter = self._await_join(group, member)
                self._prepare_rebalance(group, f"member {member.member_id} rejoined")
                return waiter
            return Pending.completed(self._join_answer(group, member))
        raise UnknownMemberIdError(f"{member.member_id} is not a member of {group.group_id}")

    @staticmethod
    def _update_member(member: ClassicMember, member_args: dict[str, Any]) -> None:
        member.protocols = member_args["protocols"]
        member.rebalance_timeout_ms = member_args["rebalance_timeout_ms"]
        member.session_timeout_ms = member_args["session_timeout_ms"]
        member.client_id = member_args["client_id"]
        member.client_host = member_args["client_host"]
        member.supports_skip_assignment = member_args["supports_skip_assignment"]

    def _await_join(self, group: ClassicGroup, member: ClassicMember) -> Pending[JoinResult]:
        if member.join_waiter is not None:
            # A retried JoinGroup replaces the one whose connection went away.
            member.join_waiter.complete(JoinResult(ErrorCode.rebalance_in_progress))
        waiter: Pending[JoinResult] = Pending()
        member.join_waiter = waiter
        if group.state is S.PREPARING_REBALANCE:
            self._maybe_complete_join(group)
        return waiter

    def _add_and_rebalance(
        self,
        group: ClassicGroup,
        member_id: str,
        group_instance_id: str | None,
        member_args: dict[str, Any],
    ) -> Pending[JoinResult]:
        member = ClassicMember(member_id, group_instance_id, is_new=True, **member_args)
        waiter: Pending[JoinResult] = Pending()
        member.join_waiter = waiter
        group.add(member)
        group.new_member_added = True
        # A new member that never completes its join expires after its session timeout.
        self._schedule_session(group, member)
        if group.state is S.PREPARING_REBALANCE:
            self._maybe_complete_join(group)
        else:
            self._prepare_rebalance(group, f"member {member_id} joined")
        return waiter

    # -- rebalance --------------------------------------------------------------------------

    def _prepare_rebalance(self, group: ClassicGroup, reason: str) -> None:
        now = self._ctx.now_ms()
        if group.state is S.COMPLETING_REBALANCE:
            for m in group.members.values():
                if m.sync_waiter is not None:
                    m.sync_waiter.complete(SyncResult(ErrorCode.rebalance_in_progress))
                    m.sync_waiter = None
        self._ctx.timer.cancel(("sync", group.group_id))
        group.pending_sync.clear()
        initial = group.state is S.EMPTY
        delay = self._ctx.config.initial_rebalance_delay_ms
        # A failed store is logged as a warning already; a fenced coordinator fails one every
        # few milliseconds (its members rejoin at once).
        log.log(
            logging.DEBUG if reason == _STORE_FAILED else logging.INFO,
            "group %s preparing to rebalance in state %s with generation %d (%s)",
            group.group_id, group.state_name, group.generation_id, reason,
        )
        group.transition_to(S.PREPARING_REBALANCE, now)
        if initial and delay > 0:
            group.new_member_added = False
            group.initial_delay_remaining_ms = max(group.rebalance_timeout_ms() - delay, 0)
            self._schedule_join(group, now + delay)
        else:
            group.initial_delay_remaining_ms = None
            self._schedule_join(group, now + group.rebalance_timeout_ms())
            self._maybe_complete_join(group)

    def _schedule_join(self, group: ClassicGroup, deadline: int) -> None:
        self._schedule(
            ("join", group.group_id), deadline, lambda: self._on_join_deadline(group)
        )

    def _on_join_deadline(self, group: ClassicGroup) -> None:
        if group.state is not S.PREPARING_REBALANCE or self._groups.get(group.group_id) is not group:
            return
        remaining = group.initial_delay_remaining_ms
        if remaining is not None and group.new_member_added and remaining > 0:
            # Members are still arriving: wait another delay, within the rebalance timeout.
            delay = min(self._ctx.config.initial_rebalance_delay_ms, remaining)
            group.new_member_added = False
            group.initial_delay_remaining_ms = remaining - delay
            self._schedule_join(group, self._ctx.now_ms() + delay)
            return
        self._complete_join(group)

    def _maybe_complete_join(self, group: ClassicGroup) -> None:
        if (
            group.state is S.PREPARING_REBALANCE
            and group.initial_delay_remaining_ms is None
            and group.all_joined()
        ):
            self._complete_join(group)

    def _complete_join(self, group: ClassicGroup) -> None:
        self._ctx.timer.cancel(("join", group.group_id))
        group.initial_delay_remaining_ms = None
        now = self._ctx.now_ms()
        absent = [m for m in group.members.values() if m.join_waiter is None]
        for member in absent:
            if member.group_instance_id is not None:
                # As in Kafka, a static member that did not rejoin in time keeps its place (and
                # gets an assignment) until its session expires or it misses the SyncGroup
                # deadline: a restarting process comes back to it without another rebalance.
                continue
            # A dynamic member that did not rejoin within the rebalance timeout is out.
            self._cancel_member_timers(group, member.member_id)
            if member.sync_waiter is not None:
                member.sync_waiter.complete(SyncResult(ErrorCode.unknown_member_id))
            group.remove(member.member_id)
        if group.members and not self._elect_joined_leader(group):
            # Only absent static members are left: wait another rebalance timeout (their
            # sessions expire meanwhile) rather than start a generation nobody joined.
            self._schedule_join(group, now + group.rebalance_timeout_ms())
            return
        group.generation_id += 1
        if not group.members:
            group.protocol_name = None
            group.leader_id = None
            group.transition_to(S.EMPTY, now)
            self._persist(group)
            return
        group.protocol_name = group.select_protocol()
        group.transition_to(S.COMPLETING_REBALANCE, now)
        log.info("group %s: generation %d joined by %d members (%d had not rejoined), "
                 "awaiting the leader's assignment", group.group_id, group.generation_id,
                 len(group.members), len(absent))
        group.pending_sync = set(group.members)
        for member in group.members.values():
            waiter, member.join_waiter = member.join_waiter, None
            member.is_new = False
            self._schedule_session(group, member)
            if waiter is not None:
                waiter.complete(self._join_answer(group, member))
        self._schedule(
            ("sync", group.group_id),
            now + group.rebalance_timeout_ms(),
            lambda: self._on_sync_deadline(group, group.generation_id),
        )

    @staticmethod
    def _elect_joined_leader(group: ClassicGroup) -> bool:
        """Keep the leader if it rejoined, else hand leadership to a member that did; False
        if no member rejoined."""
        leader = group.members.get(group.leader_id or "")
        if leader is not None and leader.join_waiter is not None:
            return True
        joined = next((m for m in group.members.values() if m.join_waiter is not None), None)
        if joined is None:
            return False
        group.leader_id = joined.member_id
        return True

    def _join_answer(self, group: ClassicGroup, member: ClassicMember) -> JoinResult:
        is_leader = group.leader_id == member.member_id
        return JoinResult(
            ErrorCode.none,
            member.member_id,
            group.generation_id,
            group.protocol_type,
            group.protocol_name,
            group.leader_id or "",
            self._joined_members(group) if is_leader else (),
        )

    @staticmethod
    def _joined_members(group: ClassicGroup) -> tuple[JoinedMember, ...]:
        return tuple(
            JoinedMember(m.member_id, m.group_instance_id, m.metadata(group.protocol_name))
            for m in group.members.values()
        )

    def _on_sync_deadline(self, group: ClassicGroup, generation: int) -> None:
        if group.generation_id != generation or not group.pending_sync:
            return
        if group.state not in (S.COMPLETING_REBALANCE, S.STABLE):
            return
        for member_id in list(group.pending_sync):
            self._cancel_member_timers(group, member_id)
            group.remove(member_id)
        self._prepare_rebalance(group, "members did not send SyncGroup in time")

    # -- SyncGroup --------------------------------------------------------------------------

    def sync(
        self,
        *,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Sequence[tuple[str, bytes]],
    ) -> CoordinatorResult[Pending[SyncResult]]:
        """SyncGroup; the response completes once the leader's assignment is stored."""
        return self._operation(
            lambda: self._sync(
                group_id, generation_id, member_id, group_instance_id, protocol_type,
                protocol_name, assignments,
            )
        )

    def _sync(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Sequence[tuple[str, bytes]],
    ) -> Pending[SyncResult]:
        group = self.get(group_id)
        if group is None or group.state is S.DEAD:
            raise UnknownMemberIdError(f"group {group_id} does not exist")
        member = self._known_member(group, member_id, group_instance_id)
        if generation_id != group.generation_id:
            raise IllegalGenerationError(
                f"generation {generation_id} is not group {group_id}'s {group.generation_id}"
            )
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            raise InconsistentGroupProtocolError("protocol type or name differ from the group's")
        if group.state is S.EMPTY:
            raise UnknownMemberIdError(f"{member_id} is not a member of {group_id}")
        if group.state is S.PREPARING_REBALANCE:
            raise RebalanceInProgressError(f"group {group_id} is rebalancing")
        group.pending_sync.discard(member_id)
        if group.state is S.STABLE:
            if not group.pending_sync:
                self._ctx.timer.cancel(("sync", group_id))
            return Pending.completed(self._sync_answer(group, member))
        # CompletingRebalance
        waiter: Pending[SyncResult] = Pending()
        if member.sync_waiter is not None:
            member.sync_waiter.complete(SyncResult(ErrorCode.rebalance_in_progress))
        member.sync_waiter = waiter
        if member_id == group.leader_id:
            self._store_assignment(group, dict(assignments))
        return waiter

    def _store_assignment(self, group: ClassicGroup, given: dict[str, bytes]) -> None:
        """Persist the leader's assignment; once it is stored the group is Stable and every
        waiting member gets its part. If the write fails the group stays as it was, the waiting
        members get the error and the group rebalances (Kafka's
        ``resetAndPropagateAssignmentWithError``)."""
        assignment = {m: given.get(m, b"") for m in group.members}
        generation = group.generation_id
        now = self._ctx.now_ms()
        record = group.to_record(assignment=assignment, current_state_timestamp=now)

        def written(error: Exception | None) -> None:
            if group.state is not S.COMPLETING_REBALANCE or group.generation_id != generation:
                return  # the group moved on meanwhile: this assignment is stale
            if error is not None:
                log.warning("group %s: storing the assignment failed: %s", group.group_id, error)
                code = error_code_of(error)
                for m in group.members.values():
                    if m.sync_waiter is not None:
                        w, m.sync_waiter = m.sync_waiter, None
                        w.complete(SyncResult(code))
                self._prepare_rebalance(group, _STORE_FAILED)
                return
            for m in group.members.values():
                m.assignment = assignment.get(m.member_id, b"")
            group.transition_to(S.STABLE, now)
            log.info("group %s is Stable in generation %d", group.group_id, generation)
            if not group.pending_sync:
                self._ctx.timer.cancel(("sync", group.group_id))
            for m in group.members.values():
                # Every member's session starts afresh with the new assignment, as in Kafka.
                self._schedule_session(group, m)
                if m.sync_waiter is not None:
                    w, m.sync_waiter = m.sync_waiter, None
                    w.complete(self._sync_answer(group, m))

        self._emit(group, record, written)

    @staticmethod
    def _sync_answer(group: ClassicGroup, member: ClassicMember) -> SyncResult:
        return SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name,
                          member.assignment)

    # -- Heartbeat / LeaveGroup -------------------------------------------------------------

    def heartbeat(
        self, *, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> None:
        """Returns normally for NONE; raises the error otherwise (REBALANCE_IN_PROGRESS tells the
        member to rejoin)."""
        group = self.get(group_id)
        if group is None or group.state in (S.DEAD, S.EMPTY):
            raise UnknownMemberIdError(f"{member_id} is not a member of {group_id}")
        member = self._known_member(group, member_id, group_instance_id)
        if generation_id != group.generation_id:
            raise IllegalGenerationError(
                f"generation {generation_id} is not group {group_id}'s {group.generation_id}"
            )
        self._schedule_session(group, member)
        if group.state is S.PREPARING_REBALANCE:
            raise RebalanceInProgressError(f"group {group_id} is rebalancing")

    def leave(
        self, group_id: str, members: Sequence[tuple[str, str | None]]
    ) -> CoordinatorResult[list[LeaveResult]]:
        """LeaveGroup: remove members given as (member id, instance id); one result each."""
        return self._operation(lambda: self._leave(group_id, members))

    def _leave(
        self, group_id: str, members: Sequence[tuple[str, str | None]]
    ) -> list[LeaveResult]:
        group = self.get(group_id)
        if group is None or group.state is S.DEAD:
            raise UnknownMemberIdError(f"group {group_id} does not exist")
        results = []
        for member_id, instance_id in members:
            try:
                target = self._leaving_member(group, member_id, instance_id)
            except KafkaError as e:
                results.append(LeaveResult(member_id, instance_id, e.code))
                continue
            if target is None:  # a pending member (KIP-394) that never joined
                group.pending_members.discard(member_id)
                self._ctx.timer.cancel(("pending", group_id, member_id))
                self._maybe_complete_join(group)
            else:
                self._remove_member(group, target, "left the group")
            results.append(LeaveResult(member_id, instance_id, ErrorCode.none))
        return results

    def _leaving_member(
        self, group: ClassicGroup, member_id: str, instance_id: str | None
    ) -> ClassicMember | None:
        if instance_id is not None:
            current = group.static_members.get(instance_id)
            if current is None:
                raise UnknownMemberIdError(f"instance {instance_id} is not in {group.group_id}")
            if member_id and member_id != current:
                raise FencedInstanceIdError(f"instance {instance_id} is now {current}")
            return group.members[current]
        if member_id in group.pending_members:
            return None
        member = group.members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(f"{member_id} is not a member of {group.group_id}")
        return member

    def _remove_member(self, group: ClassicGroup, member: ClassicMember, reason: str) -> None:
        self._cancel_member_timers(group, member.member_id)
        if member.join_waiter is not None:
            member.join_waiter.complete(JoinResult(ErrorCode.unknown_member_id, member.member_id))
            member.join_waiter = None
        if member.sync_waiter is not None:
            member.sync_waiter.complete(SyncResult(ErrorCode.unknown_member_id))
            member.sync_waiter = None
        group.remove(member.member_id)
        log.info("group %s: member %s %s", group.group_id, member.member_id, reason)
        if group.state in (S.STABLE, S.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, f"member {member.member_id} {reason}")
        elif group.state is S.PREPARING_REBALANCE:
            self._maybe_complete_join(group)

    # -- timers -----------------------------------------------------------------------------

    def _schedule_session(self, group: ClassicGroup, member: ClassicMember) -> None:
        member_id = member.member_id
        self._schedule(
            ("session", group.group_id, member_id),
            self._ctx.now_ms() + member.session_timeout_ms,
            lambda: self._expire_member(group, member_id),
        )

    def _cancel_member_timers(self, group: ClassicGroup, member_id: str) -> None:
        self._ctx.timer.cancel(("session", group.group_id, member_id))

    def _expire_member(self, group: ClassicGroup, member_id: str) -> None:
        member = group.members.get(member_id)
        if member is None or self._groups.get(group.group_id) is not group:
            return
        if member.join_waiter is not None or member.sync_waiter is not None:
            # Waiting in JoinGroup or SyncGroup counts as alive (Kafka's rule): its heartbeats
            # queue behind that request on the same connection. Check again later.
            self._schedule_session(group, member)
            return
        self._remove_member(group, member, "timed out (session expired)")

    def _expire_pending(self, group: ClassicGroup, member_id: str) -> None:
        if member_id in group.pending_members:
            group.pending_members.discard(member_id)
            self._maybe_complete_join(group)

    # -- operations and persistence -----------------------------------------------------------

    def _operation(self, fn: Callable[[], R]) -> CoordinatorResult[R]:
        """Run ``fn`` and return its response with the snapshot records it emitted (written,
        not replayed: the groups in memory are what they snapshot)."""
        if self._in_operation:
            raise RuntimeError("classic group operations do not nest")
        self._in_operation = True
        try:
            response = fn()
            records, callbacks = self._records, self._on_written
        finally:
            self._records, self._on_written = [], []
            self._in_operation = False
        on_written = None
        if callbacks:
            def on_written(error: Exception | None) -> None:
                for callback in callbacks:
                    callback(error)
        return CoordinatorResult(records, response, replay=False, on_written=on_written)

    def _schedule(self, key: tuple[str, ...], deadline_ms: int, fn: Callable[[], None]) -> None:
        """A timer of this machine: run as an operation, so what it persists is written."""
        callback: Callback = lambda: self._operation(fn)  # noqa: E731
        self._ctx.timer.schedule(key, deadline_ms, callback)

    def _emit(
        self,
        group: ClassicGroup,
        value: GroupMetadataValue,
        on_written: Callable[[Exception | None], None],
    ) -> None:
        if not self._in_operation:
            # Only an effect of a write's outcome can get here; the next snapshot covers it.
            log.warning("group %s: a snapshot outside an operation is not stored", group.group_id)
            return
        self._records.append((GroupMetadataKey(group.group_id), value))
        self._on_written.append(on_written)

    def _persist(self, group: ClassicGroup) -> None:
        """Store the group's snapshot as it is now (a generation that became Empty). If the
        write fails only a warning is logged: the previous snapshot comes back after a restart
        and its members expire, as Kafka accepts."""

        def written(error: Exception | None) -> None:
            if error is not None:
                log.warning("group %s: storing the group metadata failed: %s",
                            group.group_id, error)

        self._emit(group, group.to_record(), written)

    def replay(self, key: GroupMetadataKey, value: GroupMetadataValue | None) -> None:
        """Apply a stored group record. Live writes of this machine are not replayed, so a
        value is a snapshot being loaded: it replaces the group (the latest one wins). A
        tombstone removes the group."""
        group = self._groups.get(key.group_id)
        if value is None:
            if isinstance(group, ClassicGroup):
                self.drop(group)
            return
        if group is not None and not isinstance(group, ClassicGroup):
            return
        group = ClassicGroup(
            key.group_id,
            state=S.STABLE if value.members else S.EMPTY,
            protocol_type=value.protocol_type or None,
            protocol_name=value.protocol,
            generation_id=value.generation,
            leader_id=value.leader,
            current_state_timestamp=value.current_state_timestamp,
        )
        for m in value.members:
            member = ClassicMember(
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                rebalance_timeout_ms=m.rebalance_timeout_ms,
                session_timeout_ms=m.session_timeout_ms,
                protocol_type=value.protocol_type,
                protocols=((value.protocol or "", m.subscription),),
                assignment=m.assignment,
            )
            group.members[member.member_id] = member
            if member.group_instance_id is not None:
                group.static_members[member.group_instance_id] = member.member_id
        self._groups[key.group_id] = group

    def start_session_timers(self, group_ids: Iterable[str] | None = None) -> None:
        """After loading (the groups of ``group_ids``, or all): every loaded member must
        heartbeat within its session timeout."""
        groups = (
            list(self._groups.values()) if group_ids is None
            else [self._groups[g] for g in group_ids if g in self._groups]
        )
        for group in groups:
            if isinstance(group, ClassicGroup):
                for member in group.members.values():
                    self._schedule_session(group, member)

    def drop(self, group: ClassicGroup, error: ErrorCode = ErrorCode.unknown_member_id) -> None:
        """Remove ``group`` and its timers (replayed tombstone, or its partition unloaded:
        then members still waiting in JoinGroup or SyncGroup are answered ``error``)."""
        for member_id, member in list(group.members.items()):
            self._cancel_member_timers(group, member_id)
            if member.join_waiter is not None:
                member.join_waiter.complete(JoinResult(error, member_id))
                member.join_waiter = None
            if member.sync_waiter is not None:
                member.sync_waiter.complete(SyncResult(error))
                member.sync_waiter = None
        for member_id in group.pending_members:
            self._ctx.timer.cancel(("pending", group.group_id, member_id))
        self._ctx.timer.cancel(("join", group.group_id))
        self._ctx.timer.cancel(("sync", group.group_id))
        group.state = S.DEAD
        if self._groups.get(group.group_id) is group:
            del self._groups[group.group_id]
