"""The KIP-848 consumer-group state machine, driven with a manual clock and an in-memory log."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odradek.coordinator.group.consumer import (
    ConsumerGroup,
    ConsumerGroups,
    HeartbeatResult,
    IllegalReplayError,
    MemberState,
    rebalance_timer_key,
    session_timer_key,
)
from odradek.coordinator.group.context import GroupConfig, TopicInfo
from odradek.coordinator.group.records import (
    ConsumerGroupCurrentMemberAssignmentKey,
    ConsumerGroupCurrentMemberAssignmentValue,
    ConsumerGroupMetadataKey,
    ConsumerGroupMetadataValue,
    GroupMetadataKey,
    RecordKey,
    RecordValue,
    TopicPartitions,
    decode,
    encode_key,
    encode_value,
)
from odradek.coordinator.runtime import CoordinatorResult, CoordinatorRuntime
from odradek.coordinator.timer import Timer
from odradek.errors import (
    FencedInstanceIdError,
    FencedMemberEpochError,
    GroupIdNotFoundError,
    GroupMaxSizeReachedError,
    InvalidGroupIdError,
    InvalidRegularExpressionError,
    InvalidRequestError,
    KafkaError,
    StaleMemberEpochError,
    UnknownMemberIdError,
    UnreleasedInstanceIdError,
    UnsupportedAssignorError,
)

T = TypeVar("T")
SESSION_MS = 45_000
REBALANCE_MS = 30_000
GROUP = "g"


def tid(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, name)


class FakeCoordinator:
    """The CoordinatorContext double, and the shard of a real CoordinatorRuntime (one
    partition): a real Timer, a manual clock, a dict of topics; ``log`` keeps every record the
    runtime replayed after writing it."""

    def __init__(self, config: GroupConfig | None = None, **topics: int) -> None:
        self.timer = Timer()
        self.config = config or GroupConfig(consumer_session_timeout_ms=SESSION_MS)
        self.now = 0
        self._topics: dict[str, TopicInfo] = {}
        for name, n in topics.items():
            self.set_topic(name, n)
        self.log: list[tuple[RecordKey, RecordValue | None]] = []
        self.groups: dict[str, Any] = {}
        ids = (f"m{i}" for i in itertools.count(1))
        self.consumer = ConsumerGroups(self, self.groups, new_member_id=lambda: next(ids))
        self.runtime = CoordinatorRuntime(self, self._write, topic="__consumer_offsets")
        self.runtime.load(0, ())
        self._written = 0

    def set_topic(self, name: str, partitions: int) -> None:
        self._topics[name] = TopicInfo(name, tid(name), partitions)

    def delete_topic(self, name: str) -> None:
        del self._topics[name]

    def now_ms(self) -> int:
        return self.now

    def topics(self) -> Mapping[str, TopicInfo]:
        return self._topics

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        return next((t for t in self._topics.values() if t.topic_id == topic_id), None)

    # -- CoordinatorShard ----------------------------------------------------------------

    def partition_of(self, record: Any) -> int:
        return 0

    def encode(self, record: Any) -> tuple[bytes, bytes | None]:
        return encode_key(record[0]), encode_value(record[1])

    def decode(self, key: bytes, value: bytes | None) -> Any:
        return decode(key, value)

    def replay(
        self, record: Any, *, partition: int, offset: int, producer_id: int | None
    ) -> None:
        key, value = record
        self.log.append((key, value))
        if isinstance(key, GroupMetadataKey):
            self.groups.pop(key.group_id, None)  # the coordinator's part: classic groups
        else:
            self.consumer.replay(key, value)

    def replay_marker(
        self, partition: int, producer_id: int, commit: bool, offset: int = -1
    ) -> None:
        pass

    def on_pending(self, partition: int, offset: int) -> None:
        pass

    def on_durable(self, partition: int, end_offset: int) -> None:
        pass

    def on_loaded(self, partition: int) -> None:
        pass

    def on_unloaded(self, partition: int) -> None:
        pass

    def _write(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        producer: tuple[int, int] | None,
    ) -> int:
        base = self._written
        self._written += len(records)
        return base

    # -- driving ---------------------------------------------------------------------------

    def write(self, op: Callable[[], CoordinatorResult[T]]) -> T:
        return self.runtime.write(0, op)

    def append(
        self, group_id: str, records: Sequence[tuple[RecordKey, RecordValue | None]]
    ) -> None:
        self.runtime.execute(CoordinatorResult(records, None))

    def advance(self, ms: int) -> None:
        self.now += ms
        self.runtime.poll(self.now)

    def group(self, group_id: str = GROUP) -> ConsumerGroup:
        return self.consumer.describe(group_id)


@dataclass
class Client:
    """A well-behaved KIP-848 consumer: reports what it owns, applies each assignment it gets
    (revoking at once), rejoins from scratch when fenced."""

    coord: FakeCoordinator
    member_id: str = ""
    topics: tuple[str, ...] = ("t",)
    regex: str | None = None
    instance_id: str | None = None
    assignor: str | None = None
    epoch: int = 0
    owned: dict[uuid.UUID, frozenset[int]] = field(default_factory=dict)
    joined: bool = False

    def heartbeat(self, *, full: bool = False, owned: Any = "mine") -> HeartbeatResult:
        joining = self.epoch == 0
        reported = self.owned_list() if owned == "mine" else owned
        result = self.coord.write(lambda: self.coord.consumer.heartbeat(
            group_id=GROUP,
            member_id=self.member_id,
            member_epoch=self.epoch,
            instance_id=self.instance_id,
            rack_id=None,
            rebalance_timeout_ms=REBALANCE_MS if joining or full else -1,
            subscribed_topic_names=self.topics if joining or full else None,
            subscribed_topic_regex=self.regex if joining or full else None,
            server_assignor=self.assignor,
            owned_partitions=reported,
            client_id="cid",
            client_host="/127.0.0.1",
        ))
        self.member_id, self.epoch, self.joined = result.member_id, result.member_epoch, True
        if result.assignment is not None:
            self.owned = {tp.topic_id: frozenset(tp.partitions) for tp in result.assignment}
        return result

    def safe_heartbeat(self) -> None:
        """Heartbeat, handling the errors a real client handles by rejoining."""
        try:
            self.heartbeat()
        except (FencedMemberEpochError, UnknownMemberIdError):
            self.fenced()

    def fenced(self) -> None:
        self.owned = {}
        self.epoch = 0

    def leave(self, epoch: int = -1) -> HeartbeatResult:
        result = self.coord.write(lambda: self.coord.consumer.heartbeat(
            group_id=GROUP,
            member_id=self.member_id,
            member_epoch=epoch,
            instance_id=self.instance_id,
            rack_id=None,
            rebalance_timeout_ms=-1,
            subscribed_topic_names=None,
            subscribed_topic_regex=None,
            server_assignor=None,
            owned_partitions=None,
            client_id="cid",
            client_host="/127.0.0.1",
        ))
        self.owned, self.epoch, self.joined = {}, 0, False
        return result

    def owned_list(self) -> list[TopicPartitions]:
        return [TopicPartitions(t, tuple(sorted(ps))) for t, ps in sorted(self.owned.items())]

    def partitions(self, topic: str = "t") -> set[int]:
        return set(self.owned.get(tid(topic), frozenset()))


def converge(clients: Iterable[Client], rounds: int = 20) -> None:
    clients = list(clients)
    for _ in range(rounds):
        for c in clients:
            c.safe_heartbeat()
            assert_disjoint(clients)
        group = clients[0].coord.group()
        if group.state == "Stable" and all(c.epoch == group.group_epoch for c in clients):
            return
    raise AssertionError(f"did not converge: {clients[0].coord.group().state}")


def assert_disjoint(clients: Iterable[Client]) -> None:
    seen: set[tuple[uuid.UUID, int]] = set()
    for c in clients:
        mine = {(t, p) for t, ps in c.owned.items() for p in ps}
        assert not (seen & mine), f"{c.member_id} consumes partitions someone else holds"
        seen |= mine


def snapshot(groups: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for gid, g in groups.items():
        assert isinstance(g, ConsumerGroup)
        out[gid] = (
            g.group_epoch,
            g.assignment_epoch,
            dict(g.members),
            dict(g.target_assignment),
            dict(g.subscription_metadata),
            dict(g.static_members),
            g._partition_epochs,
            g.state,
        )
    return out


def replayed(coord: FakeCoordinator) -> dict[str, Any]:
    """The state a fresh coordinator reaches by replaying ``coord``'s log."""
    fresh = FakeCoordinator(coord.config)
    for key, value in coord.log:
        if not isinstance(key, GroupMetadataKey):
            fresh.consumer.replay(key, value)
    return snapshot(fresh.groups)


# -- joining, epochs and reconciliation -------------------------------------------------------


def test_first_member_joins_and_gets_every_partition() -> None:
    coord = FakeCoordinator(t=6)
    a = Client(coord)
    result = a.heartbeat()
    assert result.member_id == "m1"  # generated: the client sent an empty id
    assert result.member_epoch == 1
    assert result.heartbeat_interval_ms == coord.config.consumer_heartbeat_interval_ms
    assert a.partitions() == set(range(6))
    group = coord.group()
    assert (group.group_epoch, group.assignment_epoch, group.state) == (1, 1, "Stable")
    assert group.members["m1"].client_host == "/127.0.0.1"
    assert coord.timer.is_scheduled(session_timer_key(GROUP, "m1"))


def test_client_chosen_member_id_is_kept() -> None:
    coord = FakeCoordinator(t=2)
    a = Client(coord, member_id="my-own-id")
    assert a.heartbeat().member_id == "my-own-id"
    assert set(coord.group().members) == {"my-own-id"}


def test_incremental_heartbeat_sends_no_assignment_when_unchanged() -> None:
    coord = FakeCoordinator(t=4)
    a = Client(coord)
    a.heartbeat()
    before = len(coord.log)
    result = a.heartbeat()
    assert result.assignment is None
    assert result.member_epoch == 1
    assert len(coord.log) == before  # nothing changed, nothing written
    # A full heartbeat (as after a client-side error) gets the assignment again.
    assert a.heartbeat(full=True).assignment is not None


def test_owned_partitions_that_differ_get_the_assignment_resent() -> None:
    coord = FakeCoordinator(t=4)
    a = Client(coord)
    a.heartbeat()
    result = a.heartbeat(owned=[])
    assert result.assignment is not None
    assert {p for tp in result.assignment for p in tp.partitions} == set(range(4))


def test_second_member_gets_partitions_only_after_the_first_revoked_them() -> None:
    coord = FakeCoordinator(t=6)
    a, b = Client(coord), Client(coord)
    a.heartbeat()

    r = b.heartbeat()
    group = coord.group()
    assert group.group_epoch == 2 and group.assignment_epoch == 2
    assert r.member_epoch == 2 and b.partitions() == set()  # all still owned by a
    assert group.members[b.member_id].state is MemberState.UNRELEASED_PARTITIONS
    assert group.state == "Reconciling"

    r = a.heartbeat()  # learns what to revoke; stays at epoch 1 until it has
    assert r.member_epoch == 1
    assert len(a.partitions()) == 3
    member_a = coord.group().members[a.member_id]
    assert member_a.state is MemberState.UNREVOKED_PARTITIONS
    assert coord.timer.is_scheduled(rebalance_timer_key(GROUP, a.member_id))

    assert b.heartbeat().assignment is None  # a has not confirmed the revocation yet
    assert b.partitions() == set()

    assert a.heartbeat().member_epoch == 2  # reports the smaller set: revocation done
    assert not coord.timer.is_scheduled(rebalance_timer_key(GROUP, a.member_id))
    b.heartbeat()
    assert b.partitions() == set(range(6)) - a.partitions()
    assert len(b.partitions()) == 3
    assert coord.group().state == "Stable"


def test_three_members_converge_disjoint_and_complete() -> None:
    coord = FakeCoordinator(t=6, u=3)
    clients = [Client(coord, topics=("t", "u")) for _ in range(3)]
    converge(clients)
    got = [(t, p) for c in clients for t, ps in c.owned.items() for p in ps]
    assert len(got) == len(set(got)) == 9
    assert sorted(len(c.partitions("t")) + len(c.partitions("u")) for c in clients) == [3, 3, 3]


def test_leave_bumps_epoch_and_the_rest_take_over() -> None:
    coord = FakeCoordinator(t=6)
    a, b = Client(coord), Client(coord)
    converge([a, b])
    epoch = coord.group().group_epoch
    result = a.leave()
    assert result.member_epoch == -1
    group = coord.group()
    assert group.group_epoch == epoch + 1
    assert set(group.members) == {b.member_id}
    assert not coord.timer.is_scheduled(session_timer_key(GROUP, "m1"))
    converge([b])
    assert b.partitions() == set(range(6))


def test_last_member_leaving_leaves_an_empty_group() -> None:
    coord = FakeCoordinator(t=1)
    a = Client(coord)
    a.heartbeat()
    a.leave()
    group = coord.group()
    assert group.is_empty() and group.state == "Empty"
    assert group.group_epoch == 2


def test_rejoin_with_same_id_after_fencing() -> None:
    coord = FakeCoordinator(t=4)
    a, b = Client(coord), Client(coord)
    converge([a, b])
    # a "loses" the response that moved it and rejoins from scratch under its own id.
    a.fenced()
    result = a.heartbeat()
    assert result.member_epoch == coord.group().members[a.member_id].member_epoch
    assert result.assignment is not None
    converge([a, b])


def test_member_epoch_validation() -> None:
    coord = FakeCoordinator(t=4)
    a, b = Client(coord), Client(coord)
    a.heartbeat()
    with pytest.raises(FencedMemberEpochError):
        replace(a, epoch=5).heartbeat()
    b.heartbeat()
    a.heartbeat()
    a.heartbeat()  # now at epoch 2, previous epoch 1
    member = coord.group().members[a.member_id]
    assert (member.member_epoch, member.previous_member_epoch) == (2, 1)
    # The previous epoch is accepted when the member owns a subset of its assignment...
    assert replace(a, epoch=1).heartbeat().member_epoch == 2
    # ...and fenced when it claims more, or does not say what it owns.
    with pytest.raises(FencedMemberEpochError):
        replace(a, epoch=1).heartbeat(owned=[TopicPartitions(tid("t"), (0, 1, 2, 3))])
    with pytest.raises(FencedMemberEpochError):
        replace(a, epoch=1).heartbeat(owned=None)
    with pytest.raises(UnknownMemberIdError):
        Client(coord, member_id="nobody", epoch=2).heartbeat()


# -- timers ------------------------------------------------------------------------------------


def test_session_expiry_fences_the_silent_member() -> None:
    coord = FakeCoordinator(t=6)
    a, b = Client(coord), Client(coord)
    converge([a, b])
    epoch = coord.group().group_epoch
    coord.advance(SESSION_MS - 1000)
    b.heartbeat()  # b keeps its session alive; a says nothing
    coord.advance(1000)
    group = coord.group()
    assert set(group.members) == {b.member_id}
    assert group.group_epoch == epoch + 1
    coord.advance(SESSION_MS - 2000)  # b's own deadline is still 1 s away
    assert set(coord.group().members) == {b.member_id}
    b.heartbeat()
    assert b.partitions() == set(range(6))
    with pytest.raises(UnknownMemberIdError):
        a.heartbeat()


def test_rebalance_timeout_fences_a_member_that_does_not_revoke() -> None:
    coord = FakeCoordinator(t=6)
    a, b = Client(coord), Client(coord)
    a.heartbeat()
    b.heartbeat()
    a.heartbeat()  # told to revoke three partitions
    stubborn = [TopicPartitions(tid("t"), tuple(range(6)))]
    for _ in range(3):
        coord.advance(REBALANCE_MS // 4)
        a.heartbeat(owned=stubborn)  # heartbeats (no session expiry) but never revokes
        b.heartbeat()
    assert a.member_id in coord.group().members
    coord.advance(REBALANCE_MS // 4)
    assert a.member_id not in coord.group().members
    b.heartbeat()
    assert b.partitions() == set(range(6))


# -- static membership ------------------------------------------------------------------------


def test_static_member_rejoining_keeps_its_assignment_without_rebalance() -> None:
    coord = FakeCoordinator(t=6)
    a = Client(coord, member_id="a1", instance_id="i-a")
    b = Client(coord, member_id="b1")
    converge([a, b])
    kept = a.partitions()
    epoch = coord.group().group_epoch
    assert a.leave(epoch=-2).member_epoch == -2
    assert coord.group().members["a1"].member_epoch == -2
    assert coord.group().group_epoch == epoch  # a temporary leave is no rebalance

    a2 = Client(coord, member_id="a2", instance_id="i-a")
    r = a2.heartbeat()
    group = coord.group()
    assert set(group.members) == {"a2", "b1"}
    assert group.static_members == {"i-a": "a2"}
    assert group.group_epoch == epoch
    assert r.member_epoch == epoch
    assert a2.partitions() == kept
    assert group.state == "Stable"


def test_static_instance_in_use_is_unreleased_and_old_incarnation_fenced() -> None:
    coord = FakeCoordinator(t=2)
    a = Client(coord, member_id="a1", instance_id="i-a")
    a.heartbeat()
    with pytest.raises(UnreleasedInstanceIdError):
        Client(coord, member_id="a2", instance_id="i-a").heartbeat()
    a.leave(epoch=-2)
    Client(coord, member_id="a2", instance_id="i-a").heartbeat()
    with pytest.raises(FencedInstanceIdError):
        a.epoch = 1
        a.heartbeat()
    with pytest.raises(UnknownMemberIdError):
        Client(coord, member_id="z", instance_id="i-z", epoch=1).heartbeat()


def test_static_member_that_never_returns_expires() -> None:
    coord = FakeCoordinator(t=2)
    a = Client(coord, member_id="a1", instance_id="i-a")
    a.heartbeat()
    a.leave(epoch=-2)
    coord.advance(SESSION_MS)
    assert coord.group().is_empty()


def test_static_member_leaving_for_good() -> None:
    coord = FakeCoordinator(t=2)
    a = Client(coord, member_id="a1", instance_id="i-a")
    a.heartbeat()
    a.leave(epoch=-1)
    assert coord.group().is_empty()
    assert coord.group().static_members == {}


# -- limits, subscriptions and topics ---------------------------------------------------------


def test_group_max_size() -> None:
    coord = FakeCoordinator(GroupConfig(consumer_max_size=2), t=4)
    a, b = Client(coord), Client(coord)
    a.heartbeat()
    b.heartbeat()
    with pytest.raises(GroupMaxSizeReachedError):
        Client(coord).heartbeat()
    with pytest.raises(GroupMaxSizeReachedError):
        Client(coord, member_id="explicit").heartbeat()
    a.heartbeat()  # members already in are not refused
    assert len(coord.group().members) == 2


def test_partition_growth_is_picked_up_at_the_next_heartbeat() -> None:
    coord = FakeCoordinator(t=4)
    a, b = Client(coord), Client(coord)
    converge([a, b])
    epoch = coord.group().group_epoch
    coord.set_topic("t", 8)
    a.heartbeat()
    assert coord.group().group_epoch == epoch + 1
    converge([a, b])
    assert a.partitions() | b.partitions() == set(range(8))


def test_topic_created_later_and_deleted() -> None:
    coord = FakeCoordinator(t=2)
    a = Client(coord, topics=("t", "later"))
    a.heartbeat()
    assert a.owned.keys() == {tid("t")}
    coord.set_topic("later", 3)
    a.heartbeat()
    a.heartbeat()
    assert a.partitions("later") == {0, 1, 2}
    coord.delete_topic("later")
    converge([a])
    assert a.owned.keys() == {tid("t")}


def test_subscription_change_moves_partitions() -> None:
    coord = FakeCoordinator(t=2, u=2)
    a = Client(coord, topics=("t",))
    a.heartbeat()
    a.topics = ("u",)
    a.heartbeat(full=True)  # revokes t
    a.heartbeat()
    converge([a])
    assert a.owned.keys() == {tid("u")}


def test_regex_subscription_follows_topics_and_skips_internal_ones() -> None:
    coord = FakeCoordinator(**{"orders-1": 2, "other": 1, "__consumer_offsets": 50})
    a = Client(coord, topics=(), regex="orders-.*|__.*")
    converge([a])
    assert a.owned.keys() == {tid("orders-1")}
    coord.set_topic("orders-2", 1)
    converge([a])
    assert a.owned.keys() == {tid("orders-1"), tid("orders-2")}
    assert coord.group().is_subscribed_to_topic("orders-2")
    assert not coord.group().is_subscribed_to_topic("other")


def test_server_assignor_choice() -> None:
    coord = FakeCoordinator(t=4, u=4)
    a = Client(coord, topics=("t", "u"), assignor="range", member_id="a")
    b = Client(coord, topics=("t", "u"), assignor="range", member_id="b")
    converge([a, b])
    assert coord.consumer.assignor_name(coord.group()) == "range"
    # Range co-partitions: the same member gets partition p of both topics.
    assert a.partitions("t") == a.partitions("u") == {0, 1}
    coord2 = FakeCoordinator(t=1)
    assert coord2.consumer.assignor_name(ConsumerGroup("x")) == "uniform"


# -- classic groups, validation, describe, offsets, tombstones --------------------------------


class ClassicGroup:
    def __init__(self, empty: bool) -> None:
        self.empty = empty

    def is_empty(self) -> bool:
        return self.empty


def test_empty_classic_group_is_taken_over() -> None:
    coord = FakeCoordinator(t=1)
    coord.groups[GROUP] = ClassicGroup(empty=True)
    Client(coord).heartbeat()
    assert coord.log[0] == (GroupMetadataKey(GROUP), None)
    assert isinstance(coord.groups[GROUP], ConsumerGroup)


def test_non_empty_classic_group_is_not_a_consumer_group() -> None:
    coord = FakeCoordinator(t=1)
    coord.groups[GROUP] = ClassicGroup(empty=False)
    with pytest.raises(GroupIdNotFoundError):
        Client(coord).heartbeat()
    with pytest.raises(GroupIdNotFoundError):
        coord.consumer.describe(GROUP)
    with pytest.raises(IllegalReplayError):
        coord.consumer.replay(ConsumerGroupMetadataKey(GROUP), ConsumerGroupMetadataValue(1))
    assert isinstance(coord.groups[GROUP], ClassicGroup)
    assert coord.log == []


def test_heartbeat_to_unknown_group() -> None:
    coord = FakeCoordinator(t=1)
    with pytest.raises(GroupIdNotFoundError):
        Client(coord, member_id="x", epoch=3).heartbeat()
    with pytest.raises(GroupIdNotFoundError):
        Client(coord, member_id="x").leave()
    with pytest.raises(GroupIdNotFoundError):
        coord.consumer.describe("nope")


def _hb(coord: FakeCoordinator, **overrides: Any) -> HeartbeatResult:
    args: dict[str, Any] = dict(
        group_id=GROUP,
        member_id="m",
        member_epoch=0,
        instance_id=None,
        rack_id=None,
        rebalance_timeout_ms=1000,
        subscribed_topic_names=["t"],
        subscribed_topic_regex=None,
        server_assignor=None,
        owned_partitions=[],
        client_id="c",
        client_host="h",
    )
    args.update(overrides)
    return coord.write(lambda: coord.consumer.heartbeat(**args))


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"group_id": ""}, InvalidGroupIdError),
        ({"instance_id": ""}, InvalidRequestError),
        ({"rack_id": ""}, InvalidRequestError),
        ({"rebalance_timeout_ms": -1}, InvalidRequestError),
        ({"owned_partitions": None}, InvalidRequestError),
        ({"owned_partitions": [TopicPartitions(tid("t"), (0,))]}, InvalidRequestError),
        ({"subscribed_topic_names": None}, InvalidRequestError),
        ({"member_epoch": -3}, InvalidRequestError),
        ({"member_epoch": 1, "member_id": ""}, InvalidRequestError),
        ({"member_epoch": -2, "instance_id": None}, InvalidRequestError),
        ({"server_assignor": "sticky"}, UnsupportedAssignorError),
        ({"subscribed_topic_regex": "(unclosed"}, InvalidRegularExpressionError),
    ],
)
def test_invalid_requests(overrides: dict[str, Any], error: type[KafkaError]) -> None:
    coord = FakeCoordinator(t=1)
    with pytest.raises(error):
        _hb(coord, **overrides)
    assert coord.log == [] and coord.groups == {}


def test_join_with_only_a_regex_or_an_empty_subscription() -> None:
    coord = FakeCoordinator(t=1)
    assert _hb(coord, subscribed_topic_names=None, subscribed_topic_regex="t").member_epoch == 1
    r = _hb(coord, member_id="n", subscribed_topic_names=[])
    assert r.assignment == ()


def test_validate_offset_commit_and_fetch() -> None:
    coord = FakeCoordinator(t=2)
    a = Client(coord)
    a.heartbeat()
    consumer = coord.consumer
    consumer.validate_offset_commit(GROUP, a.member_id, 1)
    with pytest.raises(StaleMemberEpochError):
        consumer.validate_offset_commit(GROUP, a.member_id, 0)
    with pytest.raises(UnknownMemberIdError):
        consumer.validate_offset_commit(GROUP, "", -1)  # admin commit to a live group
    consumer.validate_offset_fetch(GROUP, None, -1)
    consumer.validate_offset_fetch(GROUP, a.member_id, 1)
    with pytest.raises(StaleMemberEpochError):
        consumer.validate_offset_fetch(GROUP, a.member_id, 2)
    with pytest.raises(UnknownMemberIdError):
        consumer.validate_offset_fetch(GROUP, "x", 1)
    a.leave()
    consumer.validate_offset_commit(GROUP, "", -1)  # empty group: admin commits allowed
    with pytest.raises(GroupIdNotFoundError):
        consumer.validate_offset_commit("other", "", -1)


def test_tombstones_delete_the_group() -> None:
    coord = FakeCoordinator(t=2)
    a, b = Client(coord, instance_id="i"), Client(coord)
    converge([a, b])
    records = coord.consumer.tombstones(GROUP)
    assert all(v is None for _, v in records)
    assert records[-1] == (ConsumerGroupMetadataKey(GROUP), None)
    coord.append(GROUP, records)
    assert GROUP not in coord.groups
    assert len(coord.timer) == 0
    assert coord.consumer.tombstones(GROUP) == []
    assert replayed(coord) == {}


def test_unknown_member_state_must_rejoin_empty() -> None:
    coord = FakeCoordinator(t=2)
    a = Client(coord)
    a.heartbeat()
    coord.consumer.replay(
        ConsumerGroupCurrentMemberAssignmentKey(GROUP, a.member_id),
        ConsumerGroupCurrentMemberAssignmentValue(1, 0, 99, (), ()),
    )
    assert coord.group().members[a.member_id].state is MemberState.UNKNOWN
    with pytest.raises(FencedMemberEpochError):
        a.heartbeat()
    a.fenced()
    a.heartbeat()
    assert coord.group().members[a.member_id].state is MemberState.STABLE


# -- restart ------------------------------------------------------------------------------------


def test_replaying_the_log_rebuilds_the_same_state_and_timers() -> None:
    coord = FakeCoordinator(t=6, u=2)
    clients = [Client(coord, topics=("t", "u")) for _ in range(3)]
    clients.append(Client(coord, instance_id="s", topics=("t",)))
    converge(clients)
    clients[0].leave()
    clients[1].heartbeat()  # mid-rebalance state
    assert replayed(coord) == snapshot(coord.groups)

    fresh = FakeCoordinator(coord.config)
    for key, value in coord.log:
        fresh.consumer.replay(key, value)
    for mid in fresh.groups[GROUP].members:
        assert fresh.timer.is_scheduled(session_timer_key(GROUP, mid))
    fresh.advance(SESSION_MS)  # nobody heartbeats after the restart: all expire
    assert fresh.group().is_empty()


# -- property: any interleaving keeps ownership exclusive and converges -----------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("hb"), st.integers(0, 3)),
        st.tuples(st.just("leave"), st.integers(0, 3)),
        st.tuples(st.just("grow"), st.integers(1, 3)),
        st.tuples(st.just("tick"), st.integers(1, SESSION_MS // 3)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, assignor=st.sampled_from(["uniform", "range"]))
def test_any_interleaving_is_exclusive_and_converges(
    ops: list[tuple[str, int]], assignor: str
) -> None:
    coord = FakeCoordinator(
        GroupConfig(consumer_session_timeout_ms=SESSION_MS, consumer_assignors=(assignor,)),
        t=4,
        u=3,
    )
    clients = [Client(coord, member_id=f"c{i}", topics=("t", "u")) for i in range(4)]
    for op, arg in ops:
        if op == "hb":
            clients[arg].safe_heartbeat()
        elif op == "leave" and clients[arg].joined:
            try:
                clients[arg].leave()
            except (UnknownMemberIdError, GroupIdNotFoundError):
                clients[arg].fenced()
        elif op == "grow":
            coord.set_topic("u", coord.topics()["u"].partitions + arg)
        elif op == "tick":
            coord.advance(arg)
            group = coord.consumer.get(GROUP)
            for c in clients:  # a client whose session ended has lost its partitions
                if group is None or c.member_id not in group.members:
                    c.fenced()
        assert_disjoint(clients)
    assert replayed(coord) == snapshot(coord.groups)

    active = [c for c in clients if c.joined]
    if not active:
        return
    converge(active)
    want = {(tid(n), p) for n in ("t", "u") for p in range(coord.topics()[n].partitions)}
    got = [(t, p) for c in active for t, ps in c.owned.items() for p in ps]
    assert sorted(got) == sorted(want)
    assert replayed(coord) == snapshot(coord.groups)
