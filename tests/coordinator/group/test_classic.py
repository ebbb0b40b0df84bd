"""The classic group state machine, driven by a manual clock (no broker, no sockets)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest
from coordinator_log import MemoryLog

from odradek.clock import ManualClock
from odradek.coordinator.group.classic import (
    ClassicGroup,
    ClassicGroupState,
    IllegalStateTransition,
    JoinResult,
    LeaveResult,
    SyncResult,
)
from odradek.coordinator.group.context import GroupConfig
from odradek.coordinator.group.coordinator import GroupCoordinator
from odradek.coordinator.group.records import (
    GroupMetadataKey,
    GroupMetadataValue,
    decode,
)
from odradek.coordinator.pending import Pending
from odradek.coordinator.runtime import CoordinatorResult
from odradek.errors import (
    CoordinatorNotAvailableError,
    ErrorCode,
    FencedInstanceIdError,
    GroupMaxSizeReachedError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidSessionTimeoutError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from odradek.topic_names import OFFSETS_TOPIC as OFFSETS

S = ClassicGroupState
T = TypeVar("T")
SESSION = 10_000
REBALANCE = 30_000


class Ctx:
    """A real group coordinator and runtime over an in-memory log, with a manual clock."""

    def __init__(self, config: GroupConfig) -> None:
        self.clock = ManualClock(1_000_000)
        self.config = config
        self.log = MemoryLog()
        self.coordinator = GroupCoordinator(config, self.clock, topics=dict)
        self.runtime = self.log.runtime(self.coordinator, config.offsets_partitions, OFFSETS)
        self.groups = self.coordinator.groups
        self.classic = self.coordinator.classic

    @property
    def written(self) -> list[tuple[bytes | None, bytes | None]]:
        return self.log.records()

    def now_ms(self) -> int:
        return self.clock.milliseconds()

    def write(self, group_id: str, op: Callable[[], CoordinatorResult[T]]) -> T:
        return self.runtime.write(self.coordinator.partition_for(group_id), op)

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.runtime.poll(self.now_ms())


@pytest.fixture
def ctx() -> Ctx:
    return Ctx(GroupConfig(initial_rebalance_delay_ms=0, min_session_timeout_ms=1000))


def join(
    ctx: Ctx,
    member_id: str = "",
    *,
    group: str = "g",
    protocols: Sequence[tuple[str, bytes]] = (("range", b"sub"),),
    instance: str | None = None,
    require_known: bool = False,
    session: int = SESSION,
) -> Pending[JoinResult]:
    return ctx.write(group, lambda: ctx.classic.join(
        group_id=group,
        member_id=member_id,
        group_instance_id=instance,
        protocol_type="consumer",
        protocols=protocols,
        session_timeout_ms=session,
        rebalance_timeout_ms=REBALANCE,
        client_id="client",
        client_host="/127.0.0.1",
        require_known_member_id=require_known,
        supports_skip_assignment=True,
    ))


def sync(
    ctx: Ctx, member_id: str, generation: int, assignments: Sequence[tuple[str, bytes]] = (),
    *, group: str = "g", instance: str | None = None,
) -> Pending[SyncResult]:
    return ctx.write(group, lambda: ctx.classic.sync(
        group_id=group, generation_id=generation, member_id=member_id,
        group_instance_id=instance, protocol_type="consumer", protocol_name=None,
        assignments=assignments,
    ))


def leave(ctx: Ctx, members: Sequence[tuple[str, str | None]]) -> list[LeaveResult]:
    return ctx.write("g", lambda: ctx.classic.leave("g", members))


def heartbeat(ctx: Ctx, member_id: str, generation: int, *, instance: str | None = None) -> None:
    ctx.classic.heartbeat(
        group_id="g", generation_id=generation, member_id=member_id, group_instance_id=instance
    )


def stable_group_of_two(ctx: Ctx) -> tuple[str, str, int]:
    a = join(ctx)
    assert a.done and a.value.error == ErrorCode.none
    leader = a.value.member_id
    gen = a.value.generation_id
    assert sync(ctx, leader, gen, [(leader, b"A")]).value.error == ErrorCode.none
    b = join(ctx)  # triggers a rebalance: the leader must rejoin
    assert not b.done
    with pytest.raises(RebalanceInProgressError):
        heartbeat(ctx, leader, gen)
    a2 = join(ctx, leader)
    assert a2.done and b.done
    gen2 = a2.value.generation_id
    assert gen2 == gen + 1
    follower = b.value.member_id
    assert a2.value.leader == leader and len(a2.value.members) == 2
    assert b.value.members == ()
    fs = sync(ctx, follower, gen2)
    assert not fs.done  # waits for the leader
    ls = sync(ctx, leader, gen2, [(leader, b"A2"), (follower, b"B2")])
    assert ls.value.assignment == b"A2" and fs.value.assignment == b"B2"
    assert ctx.groups["g"].state is S.STABLE
    return leader, follower, gen2


def test_first_member_becomes_leader_and_group_becomes_stable(ctx: Ctx) -> None:
    p = join(ctx)
    r = p.value
    assert r.error == ErrorCode.none and r.generation_id == 1 and r.leader == r.member_id
    assert r.protocol_name == "range" and r.members[0].metadata == b"sub"
    group = ctx.groups["g"]
    assert group.state is S.COMPLETING_REBALANCE
    s = sync(ctx, r.member_id, 1, [(r.member_id, b"assignment")])
    assert s.value == SyncResult(ErrorCode.none, "consumer", "range", b"assignment")
    assert group.state is S.STABLE
    # Persist before apply: the stable generation is on record.
    stored = decode(*ctx.written[-1])
    assert stored is not None
    key, value = stored
    assert key == GroupMetadataKey("g")
    assert isinstance(value, GroupMetadataValue) and value.generation == 1
    assert value.members[0].assignment == b"assignment"


def test_two_members_rebalance_and_share_assignment(ctx: Ctx) -> None:
    stable_group_of_two(ctx)


def test_member_id_required_then_join(ctx: Ctx) -> None:
    p = join(ctx, require_known=True)
    assert p.value.error == ErrorCode.member_id_required
    member_id = p.value.member_id
    assert member_id.startswith("client-")
    assert ctx.groups["g"].pending_members == {member_id}
    second = join(ctx, member_id, require_known=True)
    assert second.value.error == ErrorCode.none and second.value.member_id == member_id


def test_pending_member_expires_after_session_timeout(ctx: Ctx) -> None:
    p = join(ctx, require_known=True)
    member_id = p.value.member_id
    ctx.advance(SESSION)
    assert ctx.groups["g"].pending_members == set()
    with pytest.raises(UnknownMemberIdError):
        join(ctx, member_id, require_known=True)


def test_session_expiry_removes_member_and_rebalances(ctx: Ctx) -> None:
    leader, follower, gen = stable_group_of_two(ctx)
    # Only the leader keeps heartbeating.
    ctx.advance(SESSION // 2)
    heartbeat(ctx, leader, gen)
    group = ctx.groups["g"]
    assert follower in group.members
    ctx.advance(SESSION // 2)
    assert follower not in group.members
    assert group.state is S.PREPARING_REBALANCE
    with pytest.raises(RebalanceInProgressError):
        heartbeat(ctx, leader, gen)
    again = join(ctx, leader)
    assert again.value.generation_id == gen + 1 and len(again.value.members) == 1


def test_member_that_does_not_rejoin_is_dropped_at_rebalance_timeout(ctx: Ctx) -> None:
    leader, follower, gen = stable_group_of_two(ctx)
    rejoin = join(ctx, leader, protocols=(("range", b"new-subscription"),))
    assert not rejoin.done
    # The follower keeps heartbeating (told to rejoin) but never joins.
    for _ in range(REBALANCE // 5000 - 1):
        ctx.advance(5000)
        with pytest.raises(RebalanceInProgressError):
            heartbeat(ctx, follower, gen)
    assert not rejoin.done
    ctx.advance(5000)
    assert rejoin.done
    assert rejoin.value.generation_id == gen + 1
    assert [m.member_id for m in rejoin.value.members] == [leader]
    assert follower not in ctx.groups["g"].members


LONG_SESSION = 3 * REBALANCE  # a static member that outlives a whole rebalance unheard


def _static_group(ctx: Ctx, *instances: str) -> tuple[dict[str, str], int]:
    """A Stable group of static members with long sessions (the first one leads); returns
    instance -> member id and the generation."""
    first = join(ctx, instance=instances[0], session=LONG_SESSION)
    ids = {instances[0]: first.value.member_id}
    sync(ctx, ids[instances[0]], 1, [], instance=instances[0])
    waiting = {i: join(ctx, instance=i, session=LONG_SESSION) for i in instances[1:]}
    rejoined = join(ctx, ids[instances[0]], instance=instances[0], session=LONG_SESSION)
    gen = rejoined.value.generation_id
    ids.update({i: p.value.member_id for i, p in waiting.items()})
    for i in instances[1:]:
        sync(ctx, ids[i], gen, instance=i)
    sync(ctx, ids[instances[0]], gen, [(m, i.encode()) for i, m in ids.items()],
         instance=instances[0])
    assert ctx.groups["g"].state is S.STABLE
    return ids, gen


def test_absent_static_member_keeps_its_place_through_a_rebalance(ctx: Ctx) -> None:
    # Kafka drops only dynamic members that miss the rebalance timeout; a static member keeps
    # its place and its share of the assignment until its session expires.
    ids, gen = _static_group(ctx, "a", "b")
    newcomer = join(ctx)  # a dynamic member joins; "b" is down and does not rejoin
    a = join(ctx, ids["a"], instance="a", session=LONG_SESSION)
    assert not a.done
    ctx.advance(REBALANCE)
    group = ctx.groups["g"]
    assert a.done and newcomer.done and group.state is S.COMPLETING_REBALANCE
    assert a.value.generation_id == gen + 1
    assert {m.member_id for m in a.value.members} == {ids["a"], ids["b"], newcomer.value.member_id}
    n = newcomer.value.member_id
    sync(ctx, n, gen + 1)
    sync(ctx, ids["a"], gen + 1, [(ids["a"], b"A"), (ids["b"], b"B"), (n, b"N")], instance="a")
    assert group.state is S.STABLE
    # "b" comes back in time: its share is waiting, no further rebalance.
    back = join(ctx, ids["b"], instance="b", session=LONG_SESSION).value
    assert back.error == ErrorCode.none and back.generation_id == gen + 1
    assert sync(ctx, ids["b"], gen + 1, instance="b").value.assignment == b"B"
    assert group.state is S.STABLE and group.generation_id == gen + 1


def test_absent_static_member_that_never_syncs_is_removed_at_the_sync_deadline(ctx: Ctx) -> None:
    ids, gen = _static_group(ctx, "a", "b")
    join(ctx, ids["a"], instance="a", protocols=(("range", b"changed"),), session=LONG_SESSION)
    ctx.advance(REBALANCE)  # "b" stays in the group, absent
    sync(ctx, ids["a"], gen + 1, [(ids["a"], b"A"), (ids["b"], b"B")], instance="a")
    ctx.advance(REBALANCE)  # nor does it send SyncGroup
    group = ctx.groups["g"]
    assert ids["b"] not in group.members and group.state is S.PREPARING_REBALANCE
    again = join(ctx, ids["a"], instance="a", protocols=(("range", b"changed"),),
                 session=LONG_SESSION)
    assert again.value.generation_id == gen + 2 and len(again.value.members) == 1


def test_absent_static_leader_hands_leadership_to_a_member_that_rejoined(ctx: Ctx) -> None:
    ids, gen = _static_group(ctx, "a", "b")
    assert ctx.groups["g"].leader_id == ids["a"]
    b = join(ctx, ids["b"], instance="b", protocols=(("range", b"changed"),),
             session=LONG_SESSION)
    ctx.advance(REBALANCE)  # the leader "a" does not rejoin
    assert b.done and b.value.leader == ids["b"] and len(b.value.members) == 2
    assert ctx.groups["g"].leader_id == ids["b"]


def test_rebalance_nobody_rejoined_waits_for_the_static_sessions(ctx: Ctx) -> None:
    ids, gen = _static_group(ctx, "a", "b")
    ctx.classic.leave("g", [("", "b")])  # "b" leaves; "a" never rejoins
    group = ctx.groups["g"]
    ctx.advance(REBALANCE)
    # No generation that nobody joined: still preparing, "a" still a member.
    assert group.state is S.PREPARING_REBALANCE and group.generation_id == gen
    assert ids["a"] in group.members
    ctx.advance(LONG_SESSION)
    assert group.state is S.EMPTY and not group.members


def test_leave_triggers_rebalance_and_last_leave_empties_group(ctx: Ctx) -> None:
    leader, follower, gen = stable_group_of_two(ctx)
    results = leave(ctx, [(follower, None)])
    assert results[0].error == ErrorCode.none
    group = ctx.groups["g"]
    assert group.state is S.PREPARING_REBALANCE
    j = join(ctx, leader)
    assert j.value.generation_id == gen + 1
    leave(ctx, [(leader, None)])
    # The join completes with no members: Empty, and the new generation is stored.
    ctx.advance(0)
    assert group.state is S.EMPTY and not group.members
    value = decode(*ctx.written[-1])
    assert value is not None and isinstance(value[1], GroupMetadataValue)
    assert value[1].members == ()


def test_unknown_member_and_generation_errors(ctx: Ctx) -> None:
    leader, _, gen = stable_group_of_two(ctx)
    with pytest.raises(UnknownMemberIdError):
        heartbeat(ctx, "nobody", gen)
    with pytest.raises(IllegalGenerationError):
        heartbeat(ctx, leader, gen - 1)
    with pytest.raises(IllegalGenerationError):
        sync(ctx, leader, gen + 5)
    with pytest.raises(UnknownMemberIdError):
        join(ctx, "nobody")
    assert leave(ctx, [("nobody", None)])[0].error == ErrorCode.unknown_member_id


def test_inconsistent_protocols_are_refused(ctx: Ctx) -> None:
    stable_group_of_two(ctx)
    with pytest.raises(InconsistentGroupProtocolError):
        join(ctx, protocols=(("roundrobin", b""),))


def test_protocol_selection_picks_common_protocol(ctx: Ctx) -> None:
    a = join(ctx, protocols=(("cooperative-sticky", b"a"), ("range", b"a")))
    sync(ctx, a.value.member_id, 1, [])
    b = join(ctx, protocols=(("range", b"b"),))
    again = join(ctx, a.value.member_id, protocols=(("cooperative-sticky", b"a"), ("range", b"a")))
    assert b.done and again.done
    assert again.value.protocol_name == "range"
    metadata = {m.member_id: m.metadata for m in again.value.members}
    assert metadata[a.value.member_id] == b"a" and metadata[b.value.member_id] == b"b"


def test_invalid_session_timeout(ctx: Ctx) -> None:
    with pytest.raises(InvalidSessionTimeoutError):
        join(ctx, session=10)


def test_group_max_size() -> None:
    ctx = Ctx(GroupConfig(initial_rebalance_delay_ms=0, max_size=1, min_session_timeout_ms=1000))
    join(ctx)
    with pytest.raises(GroupMaxSizeReachedError):
        join(ctx)


def test_initial_rebalance_delay_collects_members() -> None:
    ctx = Ctx(GroupConfig(initial_rebalance_delay_ms=3000, min_session_timeout_ms=1000))
    first = join(ctx)
    ctx.advance(2000)
    second = join(ctx)  # arrives within the delay: extends it
    assert not first.done and not second.done
    ctx.advance(1000)
    assert not first.done  # the delay was extended because a member arrived
    ctx.advance(3000)
    assert first.done and second.done
    assert first.value.generation_id == 1 == second.value.generation_id
    assert len({first.value.leader, second.value.leader}) == 1


def test_static_member_rejoin_without_rebalance(ctx: Ctx) -> None:
    a = join(ctx, instance="i-1")
    old_id = a.value.member_id
    sync(ctx, old_id, 1, [(old_id, b"A")])
    group = ctx.groups["g"]
    assert group.state is S.STABLE
    # The process restarts: same instance id, no member id.
    b = join(ctx, instance="i-1")
    r = b.value
    assert r.error == ErrorCode.none and r.generation_id == 1  # no new generation
    assert r.member_id != old_id and group.state is S.STABLE
    assert r.skip_assignment and r.leader == r.member_id
    assert sync(ctx, r.member_id, 1, instance="i-1").value.assignment == b"A"
    # The old incarnation is fenced.
    with pytest.raises(FencedInstanceIdError):
        heartbeat(ctx, old_id, 1, instance="i-1")


def _static_pair(ctx: Ctx, protocols: Sequence[tuple[str, bytes]]) -> tuple[str, str, int]:
    """A Stable group of static members "a" (leader) and "b" that both joined with
    ``protocols``."""
    a = join(ctx, instance="a", protocols=protocols)
    sync(ctx, a.value.member_id, 1, [], instance="a")
    b = join(ctx, instance="b", protocols=protocols)
    a2 = join(ctx, a.value.member_id, instance="a", protocols=protocols)
    gen = a2.value.generation_id
    leader, follower = a.value.member_id, b.value.member_id
    sync(ctx, follower, gen, instance="b")
    sync(ctx, leader, gen, [(leader, b"A"), (follower, b"B")], instance="a")
    assert ctx.groups["g"].state is S.STABLE
    return leader, follower, gen


def test_static_member_back_with_new_subscription_bytes_does_not_rebalance(ctx: Ctx) -> None:
    # A consumer that restarts owns no partitions yet, so its subscription bytes differ from
    # its last incarnation's; as in Kafka only a change of the selected protocol rebalances.
    leader, follower, gen = _static_pair(ctx, (("range", b"owned:0,1"),))
    back = join(ctx, instance="b", protocols=(("range", b"owned:none"),)).value
    group = ctx.groups["g"]
    assert back.error == ErrorCode.none and back.generation_id == gen
    assert group.state is S.STABLE and group.generation_id == gen
    assert sync(ctx, back.member_id, gen, instance="b").value.assignment == b"B"
    # The stored snapshot carries the new incarnation with its new subscription.
    record = decode(*ctx.written[-1])
    assert record is not None
    value = record[1]
    assert isinstance(value, GroupMetadataValue) and value.generation == gen
    stored = {m.group_instance_id: (m.member_id, m.subscription) for m in value.members}
    assert stored["b"] == (back.member_id, b"owned:none")


def test_static_member_back_with_another_protocol_rebalances(ctx: Ctx) -> None:
    both = (("range", b"r"), ("roundrobin", b"rr"))
    leader, follower, gen = _static_pair(ctx, both)
    assert ctx.groups["g"].protocol_name == "range"
    back = join(ctx, instance="b", protocols=(("roundrobin", b"rr"),))
    assert not back.done and ctx.groups["g"].state is S.PREPARING_REBALANCE
    join(ctx, leader, instance="a", protocols=both)
    assert back.value.generation_id == gen + 1
    assert ctx.groups["g"].protocol_name == "roundrobin"


def test_static_member_leave_by_instance_id(ctx: Ctx) -> None:
    a = join(ctx, instance="i-1")
    sync(ctx, a.value.member_id, 1, [])
    results = leave(ctx, [("", "i-1")])
    assert results[0].error == ErrorCode.none
    assert leave(ctx, [("", "i-1")])[0].error == ErrorCode.unknown_member_id


def test_sync_timeout_removes_members_that_never_sync(ctx: Ctx) -> None:
    leader, follower, gen = stable_group_of_two(ctx)
    join(ctx, leader, protocols=(("range", b"x"),))
    j = join(ctx, follower)
    assert j.done
    sync(ctx, leader, gen + 1, [])
    # The follower never syncs: after the rebalance timeout it is out.
    ctx.advance(REBALANCE)
    assert follower not in ctx.groups["g"].members


def test_loading_restores_a_stable_group_and_expires_dead_members(ctx: Ctx) -> None:
    leader, follower, gen = stable_group_of_two(ctx)
    fresh = Ctx(ctx.config)
    fresh.clock.set(ctx.now_ms())
    for partition in range(ctx.config.offsets_partitions):
        fresh.runtime.load(partition, ctx.log.stored(partition))
    group = fresh.groups["g"]
    assert isinstance(group, ClassicGroup)
    assert group.state is S.STABLE and group.generation_id == gen
    assert set(group.members) == {leader, follower}
    assert sync(fresh, follower, gen).value.assignment == b"B2"
    fresh.advance(SESSION // 2)
    heartbeat(fresh, leader, gen)
    fresh.advance(SESSION // 2)
    assert follower not in group.members  # never heartbeated after the restart


def test_illegal_transition_raises_and_changes_nothing() -> None:
    group = ClassicGroup("g")
    with pytest.raises(IllegalStateTransition):
        group.transition_to(S.STABLE, 0)
    assert group.state is S.EMPTY


def test_tombstone_removes_group(ctx: Ctx) -> None:
    a = join(ctx)
    sync(ctx, a.value.member_id, 1, [])
    leave(ctx, [(a.value.member_id, None)])
    ctx.advance(0)
    ctx.runtime.execute(CoordinatorResult([(GroupMetadataKey("g"), None)], None))
    assert "g" not in ctx.groups


# -- regressions found in review -------------------------------------------------------------


def test_restarting_static_leader_stays_leader_in_a_larger_group(ctx: Ctx) -> None:
    a = join(ctx, instance="a")
    leader = a.value.member_id
    sync(ctx, leader, 1, [(leader, b"A")])
    b = join(ctx, instance="b")
    a2 = join(ctx, leader, instance="a")
    gen = a2.value.generation_id
    follower = b.value.member_id
    sync(ctx, follower, gen, instance="b")
    sync(ctx, leader, gen, [(leader, b"A2"), (follower, b"B2")], instance="a")
    group = ctx.groups["g"]
    assert group.state is S.STABLE and group.leader_id == leader
    again = join(ctx, instance="a").value  # the leader's process restarts
    assert group.leader_id == again.member_id
    assert again.leader == again.member_id and again.skip_assignment
    assert {m.member_id for m in again.members} == {again.member_id, follower}


def test_member_waiting_in_sync_group_is_not_expired(ctx: Ctx) -> None:
    leader, follower, gen = stable_group_of_two(ctx)
    join(ctx, leader, protocols=(("range", b"changed"),))
    rejoined = join(ctx, follower)
    gen2 = rejoined.value.generation_id
    waiting = sync(ctx, follower, gen2)
    assert not waiting.done
    # The leader computes a slow assignment (heartbeating meanwhile); the follower cannot
    # heartbeat behind its SyncGroup.
    for _ in range(4):
        ctx.advance(SESSION // 2)
        heartbeat(ctx, leader, gen2)
    assert follower in ctx.groups["g"].members
    assert sync(ctx, leader, gen2, [(leader, b"L"), (follower, b"F")]).value.error == (
        ErrorCode.none
    )
    assert waiting.value.assignment == b"F"


def test_pending_member_leaving_lets_the_join_complete(ctx: Ctx) -> None:
    leader, follower, gen = stable_group_of_two(ctx)
    pending = join(ctx, require_known=True).value.member_id
    rejoin = join(ctx, leader, protocols=(("range", b"x"),))
    join(ctx, follower)
    assert not rejoin.done  # waiting for the pending member too
    leave(ctx, [(pending, None)])
    assert rejoin.done and rejoin.value.generation_id == gen + 1


def test_static_member_replaced_while_storing_fails_still_expires() -> None:
    ctx = Ctx(GroupConfig(initial_rebalance_delay_ms=0, min_session_timeout_ms=1000))
    a = join(ctx, instance="i")
    old = a.value.member_id
    sync(ctx, old, 1, [])
    ctx.log.fail = CoordinatorNotAvailableError("disk gone")
    with pytest.raises(CoordinatorNotAvailableError):
        join(ctx, instance="i")
    # Persisted first: the failed write replaced nobody.
    group = ctx.groups["g"]
    assert list(group.members) == [old] and group.static_members == {"i": old}
    assert group.state is S.STABLE
    ctx.advance(SESSION)
    assert not ctx.groups["g"].members  # nobody left behind for ever


def test_unknown_instance_id_is_unknown_member(ctx: Ctx) -> None:
    leader, _, gen = stable_group_of_two(ctx)
    with pytest.raises(UnknownMemberIdError):
        heartbeat(ctx, leader, gen, instance="never-joined")


# -- persist first, then apply ----------------------------------------------------------------


def test_a_failed_assignment_write_changes_nothing_and_fails_the_sync(ctx: Ctx) -> None:
    """The leader's assignment is stored before the group becomes Stable: when the write
    fails, no assignment is applied, the leader's SyncGroup fails with the writer's error, the
    members waiting in SyncGroup get it too, and the group rebalances (Kafka's
    resetAndPropagateAssignmentWithError) instead of passing through a transition its table
    forbids."""
    leader, follower, gen = stable_group_of_two(ctx)
    join(ctx, leader, protocols=(("range", b"changed"),))
    gen2 = join(ctx, follower).value.generation_id
    group = ctx.groups["g"]
    assert group.state is S.COMPLETING_REBALANCE
    waiting = sync(ctx, follower, gen2)
    assert not waiting.done
    assignments = {m.member_id: m.assignment for m in group.members.values()}
    stored = len(ctx.written)
    ctx.log.fail = CoordinatorNotAvailableError("__consumer_offsets is not writable")
    with pytest.raises(CoordinatorNotAvailableError):
        sync(ctx, leader, gen2, [(leader, b"L"), (follower, b"F")])
    assert len(ctx.written) == stored
    assert {m.member_id: m.assignment for m in group.members.values()} == assignments
    assert group.generation_id == gen2 and group.state is S.PREPARING_REBALANCE
    assert waiting.value == SyncResult(ErrorCode.coordinator_not_available)
    # Once the log is writable again the members rejoin and the next generation is stored.
    ctx.log.fail = None
    rejoin = join(ctx, leader, protocols=(("range", b"changed"),))
    join(ctx, follower)
    gen3 = rejoin.value.generation_id
    assert gen3 == gen2 + 1
    follower_sync = sync(ctx, follower, gen3)
    assert sync(ctx, leader, gen3, [(leader, b"L"), (follower, b"F")]).value.assignment == b"L"
    assert follower_sync.value.assignment == b"F" and group.state is S.STABLE


def test_the_assignment_is_stored_before_the_group_becomes_stable(ctx: Ctx) -> None:
    first = join(ctx).value
    group = ctx.groups["g"]
    seen: list[tuple[ClassicGroupState, bytes]] = []
    ctx.log.before_write = lambda _: seen.append(
        (group.state, group.members[first.member_id].assignment)
    )
    sync(ctx, first.member_id, first.generation_id, [(first.member_id, b"mine")])
    assert seen == [(S.COMPLETING_REBALANCE, b"")]  # written while nothing was applied
    assert group.state is S.STABLE and group.members[first.member_id].assignment == b"mine"


def test_unloading_the_partition_answers_waiting_members_not_coordinator(ctx: Ctx) -> None:
    waiting = join(ctx)  # the initial join of a one-member group completes at once...
    leader = waiting.value.member_id
    rejoin = join(ctx, leader, protocols=(("range", b"changed"),))
    assert rejoin.done
    second = join(ctx)  # ...a second member makes the leader rejoin: both wait
    assert not second.done
    ctx.runtime.unload(ctx.coordinator.partition_for("g"))
    assert second.value.error == ErrorCode.not_coordinator
    assert "g" not in ctx.groups and len(ctx.coordinator.timer) == 1  # offset expiry only
