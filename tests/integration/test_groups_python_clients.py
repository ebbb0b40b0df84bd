"""Classic consumer groups with kafka-python and aiokafka members.

Every member runs in a child process (:class:`groupkit.ChildConsumer`): kafka-python's sender
busy-loops and would starve the in-process broker, and a child can be killed with SIGKILL to
show that the broker expires a silent member's session. Each test takes a group through join,
a graceful leave and a crash, checking after every rebalance that the members' own view and the
broker's DescribeGroups agree on a disjoint assignment that covers every partition; at the end
every record was processed and no committed offset ever moved back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from groupkit import (
    ChildConsumer,
    all_records_processed,
    assert_commits_never_move_back,
    assert_disjoint_and_complete,
    assert_every_record_processed,
    commit_history,
    create_topic,
    describe,
    disjoint_and_complete,
    produce,
    start_broker,
    unassigned_report,
    wait_until,
)
from kafka.admin import KafkaAdminClient, MemberToRemove
from kafka.errors import NoError, UnknownMemberIdError

from odradek.broker.runner import BrokerThread

pytestmark = pytest.mark.integration

PARTITIONS = 6


@pytest.fixture
def bootstrap(tmp_path: Path) -> Iterator[str]:
    broker = start_broker(tmp_path / "data")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def _stable(
    admin: AdminClient, group: str, members: Sequence[ChildConsumer], what: str
) -> None:
    """Wait until the members' own assignments, and the broker's, are the same disjoint cover
    of every partition."""

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
        settled, what,
        detail=lambda: (
            [sorted(m.owned()) for m in members], describe(admin, group),
            unassigned_report(members),
        ),
    )
    assert_disjoint_and_complete([m.owned() for m in members], PARTITIONS, what)


@pytest.mark.parametrize(
    ("client", "assignor"),
    [
        ("kafka-python", "range"),
        ("kafka-python", "cooperative-sticky"),
        ("aiokafka", "roundrobin"),
    ],
)
def test_join_leave_crash(bootstrap: str, client: str, assignor: str) -> None:
    topic = f"g-{client}-{uuid.uuid4().hex[:6]}"
    group = f"group-{topic}"
    create_topic(bootstrap, topic, PARTITIONS)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    expected = produce(bootstrap, topic, [f"a{i}" for i in range(120)], PARTITIONS)

    def member(name: str) -> ChildConsumer:
        return ChildConsumer(client, bootstrap, group, [topic], name=name, assignor=assignor)

    with member("m1") as m1, member("m2") as m2, member("m3") as m3:
        _stable(admin, group, [m1, m2, m3], "three members")
        assert describe(admin, group).assignor == assignor
        wait_until(lambda: all_records_processed([m1, m2, m3], expected), "first records")

        m2.close()  # LeaveGroup: the others take over at once
        _stable(admin, group, [m1, m3], "after m2 left")
        expected |= produce(bootstrap, topic, [f"b{i}" for i in range(60)], PARTITIONS)

        m3.kill()  # no LeaveGroup: only the session expiry tells the broker
        _stable(admin, group, [m1], "after m3 was killed")
        expected |= produce(bootstrap, topic, [f"c{i}" for i in range(60)], PARTITIONS)

        with member("m4") as m4:
            _stable(admin, group, [m1, m4], "after m4 joined")
            expected |= produce(bootstrap, topic, [f"d{i}" for i in range(60)], PARTITIONS)
            everyone = [m1, m2, m3, m4]
            wait_until(lambda: all_records_processed(everyone, expected), "every record")
            m4.close()
        # (a consumer that closes gives back everything it has: not a rebalance)
        revokes_before_close = [e["tps"] for e in m1.events("revoke")]
        m1.close()
    assert_every_record_processed(everyone, expected)
    assert_commits_never_move_back(commit_history(bootstrap, group))
    if assignor == "cooperative-sticky":
        # Incremental protocol: a member that stays is never asked to give back everything.
        assert all(len(r) < PARTITIONS for r in revokes_before_close), revokes_before_close
    assert describe(admin, group).state == "EMPTY"


def test_mixed_clients_share_one_group(bootstrap: str) -> None:
    """kafka-python, aiokafka and confluent-kafka members agree on the ``range`` protocol."""
    topic = f"mixed-{uuid.uuid4().hex[:6]}"
    group = f"group-{topic}"
    create_topic(bootstrap, topic, PARTITIONS)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    expected = produce(bootstrap, topic, [f"v{i}" for i in range(90)], PARTITIONS)
    with (
        ChildConsumer("kafka-python", bootstrap, group, [topic], name="kp", assignor="range")
        as kp,
        ChildConsumer("aiokafka", bootstrap, group, [topic], name="aio", assignor="range")
        as aio,
        ChildConsumer("confluent", bootstrap, group, [topic], name="ck", assignor="range") as ck,
    ):
        members = [kp, aio, ck]
        _stable(admin, group, members, "three clients")
        assert describe(admin, group).assignor == "range"
        wait_until(lambda: all_records_processed(members, expected), "every record")
        aio.close()
        _stable(admin, group, [kp, ck], "after aiokafka left")
        for m in (kp, ck):
            m.close()
    assert_every_record_processed(members, expected)
    assert_commits_never_move_back(commit_history(bootstrap, group))


@pytest.mark.parametrize("client", ["aiokafka", "kafka-python"])
@pytest.mark.parametrize("restarting", ["follower", "leader"])
def test_static_member_restart(tmp_path: Path, client: str, restarting: str) -> None:
    """A static member killed and restarted within its session timeout gets its partitions
    back without a rebalance: the generation and the other member's assignment stay."""
    broker: BrokerThread = start_broker(tmp_path / "data")
    try:
        bootstrap = broker.bootstrap
        topic = f"static-{uuid.uuid4().hex[:6]}"
        group = f"group-{topic}"
        create_topic(bootstrap, topic, PARTITIONS)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        coordinator = broker.broker.group_coordinator

        def member(name: str) -> ChildConsumer:
            return ChildConsumer(client, bootstrap, group, [topic], name=name,
                                 assignor="range", instance=name, session_ms=20_000)

        with member("s1") as s1, member("s2") as s2:
            _stable(admin, group, [s1, s2], "two static members")
            generation = coordinator.groups[group].generation_id
            view = describe(admin, group)
            before = {m.instance_id: m.partitions for m in view.members}
            leader_id = coordinator.groups[group].leader_id
            leader = next(m.instance_id for m in view.members if m.member_id == leader_id)
            gone, stays = (s1, s2) if (leader == "s1") == (restarting == "leader") else (s2, s1)
            marks = len(stays.events("revoke")) + len(stays.events("assign"))
            gone.kill()
            with member(gone.name) as back:
                wait_until(lambda: back.owned() == before[gone.name],
                           f"{gone.name} back with its partitions",
                           detail=lambda: (sorted(back.owned()), describe(admin, group)))
                assert coordinator.groups[group].generation_id == generation
                after = {m.instance_id: m.partitions for m in describe(admin, group).members}
                assert after == before
                # The other member never noticed: no revocation, no new assignment.
                assert len(stays.events("revoke")) + len(stays.events("assign")) == marks
                back.close()
            stays.close()
    finally:
        broker.stop()


def test_admin_removes_a_crashed_static_member(tmp_path: Path) -> None:
    """A static member that crashed would hold its partitions until its (long) session expires;
    LeaveGroup by group instance id from an admin client hands them over at once."""
    broker: BrokerThread = start_broker(tmp_path / "data")
    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        bootstrap = broker.bootstrap
        topic = f"remove-{uuid.uuid4().hex[:6]}"
        group = f"group-{topic}"
        create_topic(bootstrap, topic, PARTITIONS)
        admin = AdminClient({"bootstrap.servers": bootstrap})

        def member(name: str) -> ChildConsumer:
            return ChildConsumer("aiokafka", bootstrap, group, [topic], name=name,
                                 assignor="range", instance=name, session_ms=60_000)

        with member("s1") as s1, member("s2") as s2:
            _stable(admin, group, [s1, s2], "two static members")
            s2.kill()
            assert len(describe(admin, group).members) == 2  # still holding its partitions
            result = kadmin.remove_group_members(group, [MemberToRemove(group_instance_id="s2")])
            assert list(result.values()) == [NoError]
            _stable(admin, group, [s1], "s2 removed")
            assert describe(admin, group).members[0].instance_id == "s1"
            # Removing it again: the instance is unknown now.
            again = kadmin.remove_group_members(group, [MemberToRemove(group_instance_id="s2")])
            assert list(again.values()) == [UnknownMemberIdError]
            s1.close()
    finally:
        kadmin.close()
        broker.stop()
