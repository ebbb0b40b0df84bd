"""The group coordinator as a whole: committed offsets, group administration, offset expiry and
reloading from the records it wrote. Driven by a manual clock and an in-memory writer; classic
membership goes through ``coordinator.classic`` exactly as the JoinGroup/SyncGroup handlers do."""

from __future__ import annotations

import functools
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pytest
from coordinator_log import MemoryLog
from hypothesis import given, settings
from hypothesis import strategies as st

from odradek.clock import ManualClock
from odradek.coordinator.group.classic import ClassicGroup, ClassicGroupState, JoinResult
from odradek.coordinator.group.consumer import ConsumerGroup
from odradek.coordinator.group.context import GroupConfig, TopicInfo
from odradek.coordinator.group.coordinator import (
    CommittedOffset,
    GroupCoordinator,
)
from odradek.coordinator.group.records import (
    GroupMetadataKey,
    OffsetCommitKey,
    decode,
    partition_for,
)
from odradek.coordinator.runtime import CoordinatorResult, CoordinatorRuntime
from odradek.errors import (
    CoordinatorNotAvailableError,
    ErrorCode,
    FencedInstanceIdError,
    GroupIdNotFoundError,
    IllegalGenerationError,
    InvalidGroupIdError,
    KafkaError,
    KafkaStorageError,
    NonEmptyGroupError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from odradek.topic_names import OFFSETS_TOPIC as OFFSETS

S = ClassicGroupState
T = TypeVar("T")
START_MS = 1_700_000_000_000
SESSION = 10_000
REBALANCE = 20_000
RETENTION = 60_000
CHECK_EVERY = 1_000
CONFIG = GroupConfig(
    offsets_partitions=5,
    offsets_retention_ms=RETENTION,
    offsets_retention_check_interval_ms=CHECK_EVERY,
    offset_metadata_max_bytes=16,
    initial_rebalance_delay_ms=0,
    min_session_timeout_ms=1_000,
)


def subscription(*topics: str) -> bytes:
    """ConsumerProtocolSubscription v0: version, topic array, null user data."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


class Harness:
    """A coordinator and its runtime over an in-memory log, with a manual clock; every
    record written is kept in ``log``."""

    def __init__(self, config: GroupConfig = CONFIG, start_ms: int = START_MS) -> None:
        self.config = config
        self.clock = ManualClock(start_ms)
        self.log = MemoryLog()
        self.topic_map = {
            name: TopicInfo(name, uuid.uuid5(uuid.NAMESPACE_DNS, name), n)
            for name, n in (("orders", 4), ("audit", 2))
        }
        self.coordinator = GroupCoordinator(config, self.clock, topics=lambda: self.topic_map)
        self.runtime = self.log.runtime(self.coordinator, config.offsets_partitions, OFFSETS)
        self.reload_runtime: CoordinatorRuntime | None = None

    @property
    def written(self) -> list[tuple[int, bytes | None, bytes | None]]:
        return [(e.partition, e.key, e.value) for e in self.log.entries]

    def fail_writes(self) -> None:
        self.log.fail = KafkaStorageError("disk gone")

    def write(self, group_id: str, op: Callable[[], CoordinatorResult[T]]) -> T:
        return self.runtime.write(self.coordinator.partition_for(group_id), op)

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.runtime.poll(self.clock.milliseconds())

    def reloaded(self) -> GroupCoordinator:
        """A fresh coordinator that loaded every partition this one wrote, as the broker does
        at start-up (its runtime is ``reload_runtime``)."""
        fresh = GroupCoordinator(self.config, self.clock, topics=lambda: self.topic_map)
        self.reload_runtime = self.log.runtime(
            fresh, self.config.offsets_partitions, OFFSETS, load=True
        )
        return fresh

    # -- group operations as the handlers run them ------------------------------------------

    def delete_offsets(
        self, group: str, topics: Sequence[tuple[str, Sequence[int]]]
    ) -> list[tuple[str, int, ErrorCode]]:
        return self.write(group, lambda: self.coordinator.delete_offsets(group, topics))

    def delete_groups(self, group_ids: Sequence[str]) -> list[tuple[str, ErrorCode]]:
        out = []
        for group_id in group_ids:
            try:
                self.write(group_id, functools.partial(self.coordinator.delete_group, group_id))
            except KafkaError as e:
                out.append((group_id, e.code))
            else:
                out.append((group_id, ErrorCode.none))
        return out

    def leave(self, group: str, members: Sequence[tuple[str, str | None]]) -> list[Any]:
        return self.write(group, lambda: self.coordinator.classic.leave(group, members))

    # -- classic membership -------------------------------------------------------------

    def join(
        self,
        group: str,
        member_id: str = "",
        *,
        instance: str | None = None,
        topics: Sequence[str] = ("orders",),
        protocol_type: str = "consumer",
    ) -> JoinResult:
        pending = self.write(group, lambda: self.coordinator.classic.join(
            group_id=group,
            member_id=member_id,
            group_instance_id=instance,
            protocol_type=protocol_type,
            protocols=(("range", subscription(*topics)),),
            session_timeout_ms=SESSION,
            rebalance_timeout_ms=REBALANCE,
            client_id="client",
            client_host="/127.0.0.1",
            require_known_member_id=False,
        ))
        assert pending.done
        assert pending.value.error == ErrorCode.none, pending.value
        return pending.value

    def stable_member(
        self, group: str, *, instance: str | None = None, protocol_type: str = "consumer",
        topics: Sequence[str] = ("orders",),
    ) -> tuple[str, int]:
        """A one-member Stable group; returns (member id, generation)."""
        r = self.join(group, instance=instance, protocol_type=protocol_type, topics=topics)
        sync = self.write(group, lambda: self.coordinator.classic.sync(
            group_id=group, generation_id=r.generation_id, member_id=r.member_id,
            group_instance_id=instance, protocol_type=None, protocol_name=None,
            assignments=[(r.member_id, b"all")],
        ))
        assert sync.value.error == ErrorCode.none
        assert self.group(group).state is S.STABLE
        return r.member_id, r.generation_id

    def group(self, group_id: str) -> ClassicGroup:
        g = self.coordinator.groups[group_id]
        assert isinstance(g, ClassicGroup)
        return g

    # -- offsets ------------------------------------------------------------------------

    def commit(
        self,
        group: str,
        offsets: Sequence[tuple[str, int, int]] | Sequence[tuple[str, int, int, int, str | None]],
        *,
        member_id: str = "",
        generation: int = -1,
        instance: str | None = None,
        api_version: int = 8,
        expire_timestamp: int = -1,
    ) -> list[tuple[str, int, ErrorCode]]:
        full = [o if len(o) == 5 else (*o, -1, None) for o in offsets]
        return self.write(group, lambda: self.coordinator.commit_offsets(
            group, member_id=member_id, generation_or_epoch=generation, instance_id=instance,
            offsets=full, api_version=api_version, expire_timestamp=expire_timestamp,  # type: ignore[arg-type]
        ))

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        return {
            (c.topic, c.partition): c.offset
            for c in self.coordinator.fetch_offsets(group, None)
        }


@pytest.fixture
def h() -> Harness:
    return Harness()


def ok(results: list[tuple[str, int, ErrorCode]]) -> bool:
    return all(code == ErrorCode.none for _, _, code in results)


# -- commit and fetch -----------------------------------------------------------------------


def test_commit_and_fetch_round_trip(h: Harness) -> None:
    results = h.commit("g", [("orders", 0, 10, 3, "meta"), ("orders", 1, 20, -1, None)])
    assert results == [("orders", 0, ErrorCode.none), ("orders", 1, ErrorCode.none)]
    fetched = h.coordinator.fetch_offsets("g", [("orders", [0, 1, 2]), ("audit", [0])])
    assert fetched == [
        CommittedOffset("orders", 0, 10, 3, "meta"),
        CommittedOffset("orders", 1, 20, -1, ""),
        CommittedOffset("orders", 2, -1),
        CommittedOffset("audit", 0, -1),
    ]
    # A later commit replaces the earlier one; fetching everything is sorted.
    h.commit("g", [("orders", 0, 11)])
    assert h.committed("g") == {("orders", 0): 11, ("orders", 1): 20}
    assert h.coordinator.fetch_offsets("unknown", None) == []


def test_commits_are_written_to_the_groups_partition_before_they_apply(h: Harness) -> None:
    h.commit("g", [("orders", 0, 5)])
    assert len(h.written) == 1
    partition, key, value = h.written[0]
    assert partition == partition_for("g", CONFIG.offsets_partitions)
    decoded = decode(key, value)
    assert decoded is not None
    k, v = decoded
    assert k == OffsetCommitKey("g", "orders", 0)
    assert v is not None and v.offset == 5 and v.commit_timestamp == START_MS  # type: ignore[union-attr]


def test_a_failed_write_changes_nothing(h: Harness) -> None:
    h.commit("g", [("orders", 0, 5)])
    h.fail_writes()
    with pytest.raises(KafkaError):
        h.commit("g", [("orders", 0, 6)])
    assert h.committed("g") == {("orders", 0): 5}
    assert h.delete_groups(["g"]) == [("g", ErrorCode.kafka_storage_error)]
    with pytest.raises(KafkaError):
        h.delete_offsets("g", [("orders", [0])])
    assert h.committed("g") == {("orders", 0): 5} and "g" in h.coordinator.groups


def test_a_failed_offset_commit_write_leaves_the_offsets_and_answers_the_error(
    h: Harness,
) -> None:
    member, gen = h.stable_member("g")
    assert ok(h.commit("g", [("orders", 0, 5)], member_id=member, generation=gen))
    written = len(h.written)
    h.log.fail = CoordinatorNotAvailableError("__consumer_offsets is not writable")
    with pytest.raises(CoordinatorNotAvailableError):
        h.commit("g", [("orders", 0, 6), ("orders", 1, 1)], member_id=member, generation=gen)
    assert len(h.written) == written
    assert h.committed("g") == {("orders", 0): 5}
    assert h.group("g").state is S.STABLE and member in h.group("g").members
    h.log.fail = None
    assert ok(h.commit("g", [("orders", 0, 6)], member_id=member, generation=gen))
    assert h.committed("g") == {("orders", 0): 6}


def test_a_commit_without_a_group_creates_a_simple_empty_group(h: Harness) -> None:
    assert ok(h.commit("simple", [("orders", 0, 1)]))
    listing = h.coordinator.list_groups()
    assert [(g.group_id, g.state, g.protocol_type, g.group_type) for g in listing] == [
        ("simple", "Empty", "", "classic")
    ]


def test_commit_with_a_generation_to_an_unknown_group(h: Harness) -> None:
    with pytest.raises(IllegalGenerationError):
        h.commit("nobody", [("orders", 0, 1)], member_id="m", generation=3, api_version=8)
    with pytest.raises(GroupIdNotFoundError):
        h.commit("nobody", [("orders", 0, 1)], member_id="m", generation=3, api_version=9)
    with pytest.raises(InvalidGroupIdError):
        h.commit("", [("orders", 0, 1)])
    assert h.coordinator.groups == {} and h.written == []


def test_member_commits_are_validated(h: Harness) -> None:
    member, gen = h.stable_member("g")
    assert ok(h.commit("g", [("orders", 0, 7)], member_id=member, generation=gen))
    with pytest.raises(IllegalGenerationError):
        h.commit("g", [("orders", 0, 8)], member_id=member, generation=gen + 1)
    with pytest.raises(IllegalGenerationError):
        h.commit("g", [("orders", 0, 8)], member_id=member, generation=gen - 1)
    with pytest.raises(UnknownMemberIdError):
        h.commit("g", [("orders", 0, 8)], member_id="stranger", generation=gen)
    # An admin-style commit (no member, no generation) is refused while the group has members.
    with pytest.raises(UnknownMemberIdError):
        h.commit("g", [("orders", 0, 8)])
    assert h.committed("g") == {("orders", 0): 7}


def test_commit_while_completing_rebalance_is_rebalance_in_progress(h: Harness) -> None:
    r = h.join("g")  # the only member: the join completes at once, waiting for SyncGroup
    assert h.group("g").state is S.COMPLETING_REBALANCE
    with pytest.raises(RebalanceInProgressError):
        h.commit("g", [("orders", 0, 1)], member_id=r.member_id, generation=r.generation_id)
    assert h.committed("g") == {}


def test_commit_while_preparing_rebalance_with_the_current_generation_is_accepted(
    h: Harness,
) -> None:
    # Eager clients commit in their revocation callback, after the rebalance began and before
    # they rejoin; Kafka accepts that commit for the generation that is still current.
    member, gen = h.stable_member("g")
    second = h.write("g", lambda: h.coordinator.classic.join(
        group_id="g", member_id="", group_instance_id=None, protocol_type="consumer",
        protocols=(("range", subscription("orders")),), session_timeout_ms=SESSION,
        rebalance_timeout_ms=REBALANCE, client_id="c2", client_host="/127.0.0.1",
        require_known_member_id=False,
    ))
    assert not second.done
    assert h.group("g").state is S.PREPARING_REBALANCE
    assert ok(h.commit("g", [("orders", 0, 3)], member_id=member, generation=gen))
    assert h.committed("g") == {("orders", 0): 3}


def test_commit_from_a_fenced_static_member(h: Harness) -> None:
    old, gen = h.stable_member("g", instance="i-1")
    new = h.join("g", instance="i-1")  # the restarted process takes the instance id over
    assert new.member_id != old and new.generation_id == gen
    with pytest.raises(FencedInstanceIdError):
        h.commit("g", [("orders", 0, 1)], member_id=old, generation=gen, instance="i-1")
    assert ok(h.commit("g", [("orders", 0, 2)], member_id=new.member_id, generation=gen,
                       instance="i-1"))
    assert h.committed("g") == {("orders", 0): 2}


def test_commit_to_a_group_being_removed_is_coordinator_not_available(h: Harness) -> None:
    member, gen = h.stable_member("g")
    group = h.group("g")
    group.state = S.DEAD  # as a concurrent deletion leaves it for a request already routed
    with pytest.raises(CoordinatorNotAvailableError):
        h.commit("g", [("orders", 0, 1)], member_id=member, generation=gen)


def test_generationless_commit_with_a_member_id_to_an_empty_group(h: Harness) -> None:
    member, _ = h.stable_member("g")
    h.leave("g", [(member, None)])
    assert h.group("g").state is S.EMPTY
    assert ok(h.commit("g", [("orders", 0, 4)], member_id=member, generation=-1))


def test_metadata_too_large_is_refused_per_partition(h: Harness) -> None:
    limit = CONFIG.offset_metadata_max_bytes
    results = h.commit(
        "g",
        [
            ("orders", 0, 1, -1, "x" * limit),
            ("orders", 1, 2, -1, "x" * (limit + 1)),
            ("orders", 2, 3, -1, "é" * (limit // 2 + 1)),  # counted in UTF-8 bytes
        ],
    )
    assert results == [
        ("orders", 0, ErrorCode.none),
        ("orders", 1, ErrorCode.offset_metadata_too_large),
        ("orders", 2, ErrorCode.offset_metadata_too_large),
    ]
    assert h.committed("g") == {("orders", 0): 1}


# -- OffsetDelete -----------------------------------------------------------------------------


def test_offset_delete_on_an_unknown_group(h: Harness) -> None:
    with pytest.raises(GroupIdNotFoundError):
        h.delete_offsets("nobody", [("orders", [0])])


def test_offset_delete_of_an_empty_group_removes_what_was_committed(h: Harness) -> None:
    h.commit("g", [("orders", 0, 1), ("orders", 1, 2), ("audit", 0, 3)])
    before = len(h.written)
    results = h.delete_offsets("g", [("orders", [0, 3])])
    assert results == [("orders", 0, ErrorCode.none), ("orders", 3, ErrorCode.none)]
    assert h.committed("g") == {("orders", 1): 2, ("audit", 0): 3}
    # One tombstone: nothing was committed for partition 3.
    assert [(decode(k, v)) for _, k, v in h.written[before:]] == [
        (OffsetCommitKey("g", "orders", 0), None)
    ]


def test_offset_delete_refuses_topics_the_members_subscribe_to(h: Harness) -> None:
    member, gen = h.stable_member("g", topics=("orders",))
    assert ok(h.commit("g", [("orders", 0, 1), ("audit", 0, 2)], member_id=member,
                       generation=gen))
    results = h.delete_offsets("g", [("orders", [0]), ("audit", [0])])
    assert results == [
        ("orders", 0, ErrorCode.group_subscribed_to_topic),
        ("audit", 0, ErrorCode.none),
    ]
    assert h.committed("g") == {("orders", 0): 1}


def test_offset_delete_in_a_non_consumer_group_with_members_is_non_empty_group(
    h: Harness,
) -> None:
    member, gen = h.stable_member("connect", protocol_type="connect")
    assert ok(h.commit("connect", [("audit", 0, 2)], member_id=member, generation=gen))
    with pytest.raises(NonEmptyGroupError):
        h.delete_offsets("connect", [("audit", [0])])
    assert h.committed("connect") == {("audit", 0): 2}


# -- DeleteGroups -----------------------------------------------------------------------------


def test_delete_groups(h: Harness) -> None:
    h.stable_member("busy")
    h.commit("idle", [("orders", 0, 1), ("audit", 1, 2)])
    before = len(h.written)
    results = h.delete_groups(["busy", "idle", "nobody", ""])
    assert results == [
        ("busy", ErrorCode.non_empty_group),
        ("idle", ErrorCode.none),
        ("nobody", ErrorCode.group_id_not_found),
        ("", ErrorCode.invalid_group_id),
    ]
    assert "idle" not in h.coordinator.groups and h.committed("idle") == {}
    assert "busy" in h.coordinator.groups
    tombstones = {decode(k, v) for _, k, v in h.written[before:]}
    assert tombstones == {
        (OffsetCommitKey("idle", "orders", 0), None),
        (OffsetCommitKey("idle", "audit", 1), None),
        (GroupMetadataKey("idle"), None),
    }
    # Deleting again: gone.
    assert h.delete_groups(["idle"]) == [("idle", ErrorCode.group_id_not_found)]


def test_a_group_whose_last_member_left_can_be_deleted(h: Harness) -> None:
    member, gen = h.stable_member("g")
    assert ok(h.commit("g", [("orders", 0, 9)], member_id=member, generation=gen))
    assert h.delete_groups(["g"]) == [("g", ErrorCode.non_empty_group)]
    h.leave("g", [(member, None)])
    assert h.group("g").state is S.EMPTY
    assert h.delete_groups(["g"]) == [("g", ErrorCode.none)]
    assert h.coordinator.groups == {} and h.coordinator.offsets == {}
    assert h.reloaded().groups == {}


# -- ListGroups -------------------------------------------------------------------------------


def _consumer_group(h: Harness, group: str) -> None:
    h.write(group, lambda: h.coordinator.consumer.heartbeat(
        group_id=group, member_id="", member_epoch=0, instance_id=None, rack_id=None,
        rebalance_timeout_ms=REBALANCE, subscribed_topic_names=("orders",),
        subscribed_topic_regex=None, server_assignor=None, owned_partitions=[],
        client_id="c", client_host="/127.0.0.1",
    ))


def test_list_groups_filters_by_state_and_type(h: Harness) -> None:
    h.stable_member("stable")
    h.join("completing")
    h.commit("empty", [("orders", 0, 1)])
    _consumer_group(h, "kip848")

    def ids(states: Sequence[str] = (), types: Sequence[str] = ()) -> set[str]:
        return {g.group_id for g in h.coordinator.list_groups(states, types)}

    assert ids() == {"stable", "completing", "empty", "kip848"}
    # The KIP-848 group's one member got every partition at once: it is Stable too.
    assert ids(["Stable"]) == {"stable", "kip848"}
    assert ids(["stable", "EMPTY"], ["classic"]) == {"stable", "empty"}  # case-insensitive
    assert ids(["CompletingRebalance"]) == {"completing"}
    assert ids(["Dead"]) == set()
    assert ids(types=["classic"]) == {"stable", "completing", "empty"}
    assert ids(types=["Consumer"]) == {"kip848"}
    assert ids(["Empty"], ["consumer"]) == set()
    by_id = {g.group_id: g for g in h.coordinator.list_groups()}
    assert by_id["stable"].protocol_type == "consumer"
    assert by_id["kip848"].group_type == "consumer" and by_id["kip848"].protocol_type == "consumer"


# -- offset expiry ----------------------------------------------------------------------------


def test_offsets_of_a_simple_group_expire_after_retention(h: Harness) -> None:
    h.commit("simple", [("orders", 0, 1)])
    h.advance(RETENTION - CHECK_EVERY)
    assert h.committed("simple") == {("orders", 0): 1}
    h.advance(CHECK_EVERY)
    assert h.committed("simple") == {}
    # The group had nothing else: it goes too, and stays gone after a reload.
    assert "simple" not in h.coordinator.groups
    assert h.reloaded().groups == {}


def test_each_commit_has_its_own_retention_in_a_simple_group(h: Harness) -> None:
    h.commit("simple", [("orders", 0, 1)])
    h.advance(RETENTION // 2)
    h.commit("simple", [("orders", 1, 2)])
    h.advance(RETENTION // 2)
    assert h.committed("simple") == {("orders", 1): 2}
    h.advance(RETENTION // 2)
    assert h.committed("simple") == {}


def test_offsets_of_a_group_with_members_do_not_expire(h: Harness) -> None:
    member, gen = h.stable_member("g")
    assert ok(h.commit("g", [("orders", 0, 5)], member_id=member, generation=gen))
    for _ in range(3 * RETENTION // (SESSION // 2)):
        h.advance(SESSION // 2)
        h.coordinator.classic.heartbeat(
            group_id="g", generation_id=gen, member_id=member, group_instance_id=None
        )
    assert h.committed("g") == {("orders", 0): 5}
    # Once the group is empty, retention counts from the moment it became empty (KIP-211).
    h.leave("g", [(member, None)])
    assert h.group("g").state is S.EMPTY
    h.advance(RETENTION - CHECK_EVERY)
    assert h.committed("g") == {("orders", 0): 5}
    h.advance(CHECK_EVERY)
    assert h.committed("g") == {}
    assert "g" not in h.coordinator.groups


def test_an_explicit_expiry_time_wins_over_retention(h: Harness) -> None:
    h.commit("simple", [("orders", 0, 1)], expire_timestamp=START_MS + 5 * CHECK_EVERY)
    h.commit("simple", [("orders", 1, 2)])
    h.advance(5 * CHECK_EVERY)
    assert h.committed("simple") == {("orders", 1): 2}


def test_session_expiry_empties_the_group_and_offsets_then_age(h: Harness) -> None:
    member, gen = h.stable_member("g")
    assert ok(h.commit("g", [("orders", 2, 8)], member_id=member, generation=gen))
    h.advance(SESSION)  # no heartbeat
    assert h.group("g").state is S.EMPTY and h.group("g").members == {}
    assert h.committed("g") == {("orders", 2): 8}
    h.advance(RETENTION)
    assert h.committed("g") == {}


# -- reloading --------------------------------------------------------------------------------


def _classic_state(groups: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for gid, g in groups.items():
        if isinstance(g, ClassicGroup):
            out[gid] = (
                g.state, g.generation_id, g.protocol_type, g.protocol_name, g.leader_id,
                {m.member_id: (m.group_instance_id, m.assignment) for m in g.members.values()},
                dict(g.static_members),
            )
        else:
            assert isinstance(g, ConsumerGroup)
            out[gid] = ("consumer", g.group_epoch, sorted(g.members))
    return out


def test_a_reloaded_coordinator_has_the_same_offsets_and_groups(h: Harness) -> None:
    member, gen = h.stable_member("stable", instance="i-1")
    assert ok(h.commit("stable", [("orders", 0, 5, 2, "m")], member_id=member, generation=gen))
    h.commit("simple", [("orders", 1, 10), ("audit", 0, 3)])
    h.delete_offsets("simple", [("audit", [0])])
    h.commit("deleted", [("orders", 3, 1)])
    h.delete_groups(["deleted"])
    left, left_gen = h.stable_member("left")
    assert ok(h.commit("left", [("audit", 1, 4)], member_id=left, generation=left_gen))
    h.leave("left", [(left, None)])
    _consumer_group(h, "kip848")
    # Every record of a group went to that group's partition.
    for partition, key, value in h.written:
        decoded = decode(key, value)
        assert decoded is not None
        group_id = decoded[0].group_id
        assert partition == partition_for(group_id, CONFIG.offsets_partitions)

    fresh = h.reloaded()
    assert fresh.offsets == h.coordinator.offsets
    assert _classic_state(fresh.groups) == _classic_state(h.coordinator.groups)
    assert {g.group_id for g in fresh.list_groups()} == {"stable", "simple", "left", "kip848"}
    assert fresh.fetch_offsets("stable", [("orders", [0])]) == [
        CommittedOffset("orders", 0, 5, 2, "m")
    ]
    # The loaded member keeps its generation: it can go on committing and heartbeating.
    fresh.classic.heartbeat(
        group_id="stable", generation_id=gen, member_id=member, group_instance_id="i-1"
    )
    assert h.reload_runtime is not None
    results = h.reload_runtime.write(fresh.partition_for("stable"), lambda: fresh.commit_offsets(
        "stable", member_id=member, generation_or_epoch=gen, instance_id="i-1",
        offsets=[("orders", 0, 6, -1, None)], api_version=8,
    ))
    assert ok(results)


def test_a_reloaded_member_that_never_returns_expires(h: Harness) -> None:
    member, gen = h.stable_member("g")
    assert ok(h.commit("g", [("orders", 0, 5)], member_id=member, generation=gen))
    fresh = h.reloaded()
    group = fresh.groups["g"]
    assert isinstance(group, ClassicGroup) and group.state is S.STABLE
    h.clock.advance(SESSION)
    assert h.reload_runtime is not None
    h.reload_runtime.poll(h.clock.milliseconds())
    assert group.state is S.EMPTY
    assert fresh.fetch_offsets("g", None) == [CommittedOffset("orders", 0, 5)]


_groups = st.sampled_from(["a", "b", "c"])
_tps = st.tuples(st.sampled_from(["orders", "audit"]), st.integers(0, 1))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), _groups, _tps, st.integers(0, 1000)),
        st.tuples(st.just("delete_offset"), _groups, _tps, st.just(0)),
        st.tuples(st.just("delete_group"), _groups, _tps, st.just(0)),
        st.tuples(st.just("wait"), _groups, _tps, st.sampled_from([CHECK_EVERY, RETENTION // 2])),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ops=_ops)
def test_any_history_reloads_to_the_same_state(ops: list[tuple[str, str, Any, int]]) -> None:
    h = Harness()
    model: dict[str, dict[tuple[str, int], tuple[int, int]]] = {}  # offset, commit time
    for kind, group, (topic, partition), n in ops:
        if kind == "commit":
            assert ok(h.commit(group, [(topic, partition, n)]))
            model.setdefault(group, {})[(topic, partition)] = (n, h.clock.milliseconds())
        elif kind == "delete_offset":
            if group in h.coordinator.groups:
                assert ok(h.delete_offsets(group, [(topic, [partition])]))
                model.get(group, {}).pop((topic, partition), None)
            else:
                with pytest.raises(GroupIdNotFoundError):
                    h.delete_offsets(group, [(topic, [partition])])
        elif kind == "delete_group":
            code = ErrorCode.none if group in h.coordinator.groups else (
                ErrorCode.group_id_not_found
            )
            assert h.delete_groups([group]) == [(group, code)]
            model.pop(group, None)
        else:
            h.advance(n)
            # Every advance ends on an expiry check; a simple group's offset ages from its commit.
            for offsets in model.values():
                for tp, (_, at) in list(offsets.items()):
                    if h.clock.milliseconds() - at >= RETENTION:
                        del offsets[tp]
        expected = {g: {tp: o for tp, (o, _) in offsets.items()} for g, offsets in model.items()}
        assert {g: h.committed(g) for g in model} == expected
    fresh = h.reloaded()
    assert fresh.offsets == h.coordinator.offsets
    assert set(fresh.groups) == set(h.coordinator.groups)


def test_offsets_of_unsubscribed_topics_expire_in_a_stable_group(h: Harness) -> None:
    member, gen = h.stable_member("g", topics=("orders",))
    assert ok(h.commit("g", [("orders", 0, 1), ("audit", 0, 2)], member_id=member,
                       generation=gen))
    for _ in range(2 * RETENTION // (SESSION // 2)):
        h.advance(SESSION // 2)
        h.coordinator.classic.heartbeat(
            group_id="g", generation_id=gen, member_id=member, group_instance_id=None
        )
    assert h.committed("g") == {("orders", 0): 1}


def test_static_leader_rejoining_without_skip_assignment_is_not_made_leader(h: Harness) -> None:
    old, gen = h.stable_member("g", instance="i-1")
    r = h.join("g", instance="i-1")  # supports_skip_assignment defaults to False (old client)
    assert r.generation_id == gen and not r.skip_assignment
    assert r.leader != r.member_id or r.members != ()


def test_a_classic_join_takes_over_an_empty_consumer_group(h: Harness) -> None:
    """The KIP-848 group's records are deleted first (replaying the tombstones drops it), then
    the join runs as for a new classic group; a reload agrees."""
    joined = h.write("g", lambda: h.coordinator.consumer.heartbeat(
        group_id="g", member_id="", member_epoch=0, instance_id=None, rack_id=None,
        rebalance_timeout_ms=REBALANCE, subscribed_topic_names=("orders",),
        subscribed_topic_regex=None, server_assignor=None, owned_partitions=[],
        client_id="c", client_host="/127.0.0.1",
    ))
    h.write("g", lambda: h.coordinator.consumer.heartbeat(
        group_id="g", member_id=joined.member_id, member_epoch=-1, instance_id=None,
        rack_id=None, rebalance_timeout_ms=-1, subscribed_topic_names=None,
        subscribed_topic_regex=None, server_assignor=None, owned_partitions=None,
        client_id="c", client_host="/127.0.0.1",
    ))
    assert isinstance(h.coordinator.groups["g"], ConsumerGroup)
    member, _ = h.stable_member("g")
    assert h.group("g").members.keys() == {member}
    fresh = h.reloaded()
    assert isinstance(fresh.groups["g"], ClassicGroup)
    assert fresh.groups["g"].members.keys() == {member}
