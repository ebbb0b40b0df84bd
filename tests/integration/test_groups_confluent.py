"""Classic consumer groups with librdkafka (confluent-kafka): eager and cooperative assignors,
static membership, a member killed with SIGKILL, and group administration through AdminClient.

Members run in this process (:class:`groupkit.ConfluentMember`, polled from the test thread)
except the one that is killed, which runs in a child process. After every rebalance the members'
own assignments and the broker's DescribeGroups must agree on a disjoint cover of every
partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from groupkit import (
    ChildConsumer,
    ConfluentMember,
    assert_commits_never_move_back,
    assert_disjoint_and_complete,
    commit_history,
    committed,
    create_topic,
    describe,
    disjoint_and_complete,
    poll_all,
    produce,
    records_of,
    start_broker,
    wait_until,
)
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import GroupSubscribedToTopicError, NoError

from odradek.broker.runner import BrokerThread

pytestmark = pytest.mark.integration

PARTITIONS = 6


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    b = start_broker(tmp_path / "data")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def admin(broker: BrokerThread) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def _names(prefix: str) -> tuple[str, str]:
    topic = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return topic, f"group-{topic}"


def _settle(
    admin: AdminClient,
    group: str,
    members: Sequence[ConfluentMember],
    what: str,
    others: Sequence[ConfluentMember] = (),
) -> None:
    """Poll ``members`` (and ``others``, which are not in the group any more) until their
    assignments and the broker's agree on a disjoint cover of every partition."""

    def settled() -> bool:
        mine = [m.owned() for m in members]
        if not disjoint_and_complete(mine, PARTITIONS):
            return False
        view = describe(admin, group)
        return (
            view.state == "STABLE"
            and len(view.members) == len(members)
            and sorted(map(sorted, view.partitions())) == sorted(map(sorted, mine))
        )

    wait_until(
        settled, what, step=poll_all([*members, *others]),
        detail=lambda: ([sorted(m.owned()) for m in members], describe(admin, group)),
    )
    assert_disjoint_and_complete([m.owned() for m in members], PARTITIONS, what)


def _drain(members: Sequence[ConfluentMember], expected: dict[tuple[int, int], str]) -> None:
    wait_until(
        lambda: set(expected) <= set(records_of(members)), "every record processed",
        step=poll_all(members),
    )


@pytest.mark.parametrize("assignor", ["range", "roundrobin"])
def test_eager_group_join_and_leave(
    broker: BrokerThread, admin: AdminClient, assignor: str
) -> None:
    bootstrap = broker.bootstrap
    topic, group = _names(assignor)
    create_topic(bootstrap, topic, PARTITIONS)
    expected = produce(bootstrap, topic, [f"a{i}" for i in range(60)], PARTITIONS)
    members = [
        ConfluentMember(bootstrap, group, [topic], name=f"c{i}", assignor=assignor)
        for i in range(3)
    ]
    c0, c1, c2 = members
    try:
        _settle(admin, group, members, "three members")
        view = describe(admin, group)
        assert view.assignor == assignor
        assert {m.client_id for m in view.members} == {"c0", "c1", "c2"}
        if assignor == "range":
            assert sorted(map(sorted, view.partitions())) == [[0, 1], [2, 3], [4, 5]]
        else:
            assert sorted(map(sorted, view.partitions())) == [[0, 3], [1, 4], [2, 5]]
        _drain(members, expected)

        c1.close()  # LeaveGroup
        _settle(admin, group, [c0, c2], "after c1 left")
        # Eager protocol: each remaining member gave back everything and got a new full set.
        assert c0.callbacks[-2][0] == "revoke" and c0.callbacks[-1] == ("assign", c0.owned())
        expected |= produce(bootstrap, topic, [f"b{i}" for i in range(60)], PARTITIONS)
        _drain([c0, c2], {k: v for k, v in expected.items() if k[1] >= 10})

        c3 = ConfluentMember(bootstrap, group, [topic], name="c3", assignor=assignor)
        members.append(c3)
        _settle(admin, group, [c0, c2, c3], "after c3 joined", others=[c1])
        expected |= produce(bootstrap, topic, [f"c{i}" for i in range(60)], PARTITIONS)
        _drain([c0, c2, c3], {k: v for k, v in expected.items() if k[1] >= 20})
    finally:
        for m in members:
            m.close()
    got = records_of(members)
    assert {k: got[k] for k in expected} == expected
    assert_commits_never_move_back(commit_history(bootstrap, group))
    assert describe(admin, group).state == "EMPTY"
    # Everything processed was committed before its member left.
    assert committed(admin, group, topic, PARTITIONS) == {p: 30 for p in range(PARTITIONS)}


def test_cooperative_sticky_moves_only_what_changes_hands(
    broker: BrokerThread, admin: AdminClient
) -> None:
    bootstrap = broker.bootstrap
    topic, group = _names("coop")
    create_topic(bootstrap, topic, PARTITIONS)
    expected = produce(bootstrap, topic, [f"a{i}" for i in range(60)], PARTITIONS)

    def member(name: str) -> ConfluentMember:
        return ConfluentMember(bootstrap, group, [topic], name=name,
                               assignor="cooperative-sticky")

    c1, c2 = member("c1"), member("c2")
    members = [c1, c2]
    try:
        _settle(admin, group, [c1, c2], "two members")
        assert describe(admin, group).assignor == "cooperative-sticky"
        before = {m.name: m.owned() for m in (c1, c2)}
        marks = {m.name: len(m.callbacks) for m in (c1, c2)}

        c3 = member("c3")
        members.append(c3)
        _settle(admin, group, [c1, c2, c3], "after c3 joined")
        assert sorted(len(m.owned()) for m in (c1, c2, c3)) == [2, 2, 2]
        for m in (c1, c2):
            later = m.callbacks[marks[m.name]:]
            revoked = frozenset().union(*(p for kind, p in later if kind == "revoke"))
            # Only what moved to c3 was revoked; what stays was never given back, and nothing
            # was assigned to the members that already had partitions.
            assert revoked == before[m.name] - m.owned()
            assert revoked <= c3.owned()
            assert m.owned() <= before[m.name]
            assert all(not p for kind, p in later if kind == "assign")
        assert c3.owned() == frozenset().union(
            *(p for kind, p in c3.callbacks if kind == "assign")
        )

        before = {m.name: m.owned() for m in (c1, c3)}
        marks = {m.name: len(m.callbacks) for m in (c1, c3)}
        gone = c2.owned()
        c2.close()
        _settle(admin, group, [c1, c3], "after c2 left")
        gained: set[int] = set()
        for m in (c1, c3):
            later = m.callbacks[marks[m.name]:]
            assert all(not p for kind, p in later if kind == "revoke"), later
            assert m.owned() >= before[m.name]
            gained |= m.owned() - before[m.name]
        assert gained == gone
        expected |= produce(bootstrap, topic, [f"b{i}" for i in range(60)], PARTITIONS)
        _drain([c1, c3], {k: v for k, v in expected.items() if k[1] >= 10})
        _drain(members, expected)
    finally:
        for m in members:
            m.close()
    got = records_of(members)
    assert {k: got[k] for k in expected} == expected
    assert_commits_never_move_back(commit_history(bootstrap, group))


# cooperative-sticky: librdkafka's subscription lists the partitions the member owns, so the
# restarted member's differs from its predecessor's; that alone must not rebalance.
@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
@pytest.mark.parametrize("restarting", ["follower", "leader"])
def test_static_member_restart_keeps_generation_and_assignments(
    broker: BrokerThread, admin: AdminClient, restarting: str, assignor: str
) -> None:
    bootstrap = broker.bootstrap
    topic, group = _names("static")
    create_topic(bootstrap, topic, PARTITIONS)
    coordinator = broker.broker.group_coordinator

    def member(i: int) -> ConfluentMember:
        return ConfluentMember(bootstrap, group, [topic], name=f"s{i}", instance=f"i-{i}",
                               assignor=assignor, session_ms=30_000)

    members = [member(i) for i in range(3)]
    try:
        _settle(admin, group, members, "three static members")
        expected = produce(bootstrap, topic, [f"a{i}" for i in range(60)], PARTITIONS)
        _drain(members, expected)
        generation = coordinator.groups[group].generation_id
        leader_id = coordinator.groups[group].leader_id
        view = describe(admin, group)
        by_instance = {m.instance_id: m for m in view.members}
        assert set(by_instance) == {"i-0", "i-1", "i-2"}
        leader = next(m.instance_id for m in view.members if m.member_id == leader_id)
        index = next(
            i for i in range(3) if (f"i-{i}" == leader) == (restarting == "leader")
        )
        instance = f"i-{index}"
        stay = [m for i, m in enumerate(members) if i != index]
        marks = [len(m.callbacks) for m in stay]

        members[index].close()  # a static member sends no LeaveGroup: no rebalance
        assert describe(admin, group).members == view.members
        expected_new = produce(bootstrap, topic, [f"b{i}" for i in range(60)], PARTITIONS)
        new = member(index)
        members.append(new)
        mine = by_instance[instance].partitions
        wait_until(lambda: new.owned() == mine, "the restarted member's partitions",
                   step=poll_all([*stay, new]),
                   detail=lambda: (sorted(new.owned()), describe(admin, group)))
        # Same generation, same assignments; only the restarted member's id changed.
        assert coordinator.groups[group].generation_id == generation
        after = describe(admin, group)
        assert {m.instance_id: m.partitions for m in after.members} == {
            m.instance_id: m.partitions for m in view.members
        }
        assert {m.instance_id: m.member_id for m in after.members if m.instance_id != instance} == {
            m.instance_id: m.member_id for m in view.members if m.instance_id != instance
        }
        assert next(m for m in after.members if m.instance_id == instance).member_id != (
            by_instance[instance].member_id
        )
        _drain([*stay, new], expected_new)
        for m, mark in zip(stay, marks, strict=True):
            assert m.callbacks[mark:] == [], f"{m.name} saw a rebalance"
        # The restarted member resumed after its predecessor's last commit.
        assert {(p, o) for p, o, _ in new.records} == {k for k in expected_new if k[0] in mine}
    finally:
        for m in members:
            m.close()


def test_killed_member_is_expired_and_its_partitions_taken_over(
    broker: BrokerThread, admin: AdminClient
) -> None:
    bootstrap = broker.bootstrap
    topic, group = _names("crash")
    create_topic(bootstrap, topic, PARTITIONS)
    c1 = ConfluentMember(bootstrap, group, [topic], name="c1")
    c2 = ConfluentMember(bootstrap, group, [topic], name="c2")
    with ChildConsumer("confluent", bootstrap, group, [topic], name="doomed",
                       assignor="range") as doomed:
        try:
            def settled() -> bool:
                parts = [c1.owned(), c2.owned(), doomed.owned()]
                return disjoint_and_complete(parts, PARTITIONS) and (
                    len(describe(admin, group).members) == 3
                )

            wait_until(settled, "three members", step=poll_all([c1, c2]))
            expected = produce(bootstrap, topic, [f"a{i}" for i in range(120)], PARTITIONS)
            wait_until(lambda: doomed.records() != [], "the child consumes",
                       step=poll_all([c1, c2]))
            doomed_partitions = doomed.owned()
            doomed.kill()
            _settle(admin, group, [c1, c2], "after the kill")
            assert doomed_partitions <= c1.owned() | c2.owned()
            # Whatever the child processed but had not committed is delivered again.
            wait_until(
                lambda: committed(admin, group, topic, PARTITIONS)
                == {p: 20 for p in range(PARTITIONS)},
                "everything committed", step=poll_all([c1, c2]),
            )
        finally:
            c1.close()
            c2.close()
    got = {**records_of([doomed]), **records_of([c1, c2])}
    assert {k: got[k] for k in expected} == expected
    assert_commits_never_move_back(commit_history(bootstrap, group))


def test_group_administration(broker: BrokerThread, admin: AdminClient) -> None:
    bootstrap = broker.bootstrap
    topic, group = _names("admin")
    other_topic = f"other-{topic}"
    create_topic(bootstrap, topic, PARTITIONS)
    create_topic(bootstrap, other_topic, 1)
    expected = produce(bootstrap, topic, [f"a{i}" for i in range(60)], PARTITIONS)
    members = [ConfluentMember(bootstrap, group, [topic], name=f"c{i}") for i in range(2)]
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        _settle(admin, group, members, "two members")
        _drain(members, expected)

        # ListGroups, with and without a state filter.
        listed = admin.list_consumer_groups().result(timeout=10)
        states = {g.group_id: g.state for g in listed.valid}
        assert states[group] == ConsumerGroupState.STABLE
        assert not listed.errors
        only_empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(10)
        assert group not in {g.group_id for g in only_empty.valid}

        # DescribeGroups: members, their assignments, the state.
        d = admin.describe_consumer_groups([group])[group].result(timeout=10)
        assert d.state == ConsumerGroupState.STABLE and not d.is_simple_consumer_group
        assert d.partition_assignor == "range"
        assigned = {m.client_id: {tp.partition for tp in m.assignment.topic_partitions}
                    for m in d.members}
        assert assigned == {m.name: set(m.owned()) for m in members}
        assert d.coordinator.id == broker.broker.node_id

        # OffsetFetch through the admin client: what the members committed.
        assert committed(admin, group, topic, PARTITIONS) == {p: 10 for p in range(PARTITIONS)}

        # An active group can neither be deleted nor have its offsets altered or deleted.
        with pytest.raises(KafkaException) as excinfo:
            admin.delete_consumer_groups([group])[group].result(timeout=10)
        assert excinfo.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
        alter = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 3)])
        refused = admin.alter_consumer_group_offsets([alter])[group].result(timeout=10)
        assert [tp.error.code() for tp in refused.topic_partitions] == [
            KafkaError.UNKNOWN_MEMBER_ID
        ]
        deleted = kadmin.delete_group_offsets(group, [KpTopicPartition(topic, 0)])
        assert deleted[KpTopicPartition(topic, 0)] is GroupSubscribedToTopicError
    finally:
        for m in members:
            m.close()

    try:
        assert describe(admin, group).state == "EMPTY"
        # Empty now: alter offsets (also of a topic nobody subscribes to) and read them back.
        alter = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, 0, 3), TopicPartition(other_topic, 0, 0)]
        )
        result = admin.alter_consumer_group_offsets([alter])[group].result(timeout=10)
        assert {(tp.topic, tp.partition, tp.offset) for tp in result.topic_partitions} == {
            (topic, 0, 3), (other_topic, 0, 0)
        }
        assert committed(admin, group, topic, PARTITIONS) == {
            0: 3, **{p: 10 for p in range(1, PARTITIONS)}
        }

        # OffsetDelete on the empty group.
        deleted = kadmin.delete_group_offsets(
            group, [KpTopicPartition(topic, 1), KpTopicPartition(other_topic, 0)]
        )
        assert set(deleted.values()) == {NoError}
        assert committed(admin, group, topic, PARTITIONS)[1] == -1001  # none committed
        all_offsets = kadmin.list_group_offsets({group: None})[group]
        assert {(tp.topic, tp.partition) for tp in all_offsets} == {
            (topic, p) for p in range(PARTITIONS) if p != 1
        }

        # A new member resumes from the altered offsets: records 0-2 of partition 0 come again,
        # partition 1 (offsets deleted) starts from the beginning (auto.offset.reset).
        late = ConfluentMember(bootstrap, group, [topic], name="late")
        try:
            want = {(0, o) for o in range(3, 10)} | {(1, o) for o in range(10)}
            wait_until(lambda: {(p, o) for p, o, _ in late.records} >= want, "resumed records",
                       step=late.poll)
            assert {(p, o) for p, o, _ in late.records} == want
        finally:
            late.close()

        # Empty again: DeleteGroups removes the group and its offsets.
        admin.delete_consumer_groups([group])[group].result(timeout=10)
        listed = admin.list_consumer_groups().result(timeout=10)
        assert group not in {g.group_id for g in listed.valid}
        assert describe(admin, group).state == "DEAD"
        assert set(committed(admin, group, topic, PARTITIONS).values()) == {-1001}
        with pytest.raises(KafkaException) as excinfo:
            admin.delete_consumer_groups([group])[group].result(timeout=10)
        assert excinfo.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND
    finally:
        kadmin.close()
