"""Committed offsets and classic group state survive broker restarts.

The broker is stopped and a new one started on the same data directory and port while the group's
members keep running: they carry on in the same generation without rejoining. Members then change
(one joins, one leaves), the group empties, the broker restarts again (this time as after a crash:
no clean-shutdown marker) and a new member resumes exactly after the last committed offsets. No
record is lost on the way and no committed offset ever moves back.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from groupkit import (
    ConfluentMember,
    assert_commits_never_move_back,
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

from odradek.broker.runner import BrokerThread
from odradek.storage.log_manager import CLEAN_SHUTDOWN_FILE

pytestmark = pytest.mark.integration

PARTITIONS = 4
SESSION_MS = 15_000  # members must outlive a restart without their sessions expiring
# librdkafka backs off up to 10 s between reconnects by default; the broker is back at once.
RECONNECT: dict[str, Any] = {"reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 300}


def _settle(admin: AdminClient, group: str, members: list[ConfluentMember], what: str) -> None:
    def settled() -> bool:
        mine = [m.owned() for m in members]
        if not disjoint_and_complete(mine, PARTITIONS):
            return False
        view = describe(admin, group)
        return view.state == "STABLE" and sorted(map(sorted, view.partitions())) == sorted(
            map(sorted, mine)
        )

    wait_until(settled, what, step=poll_all(members),
               detail=lambda: ([sorted(m.owned()) for m in members], describe(admin, group)))


def _generation(broker: BrokerThread, group: str) -> int:
    # Coordinators load after the broker listens: read the group once its partition is in.
    wait_until(lambda: not broker.broker.groups.is_loading(), "__consumer_offsets loaded")
    return int(broker.broker.group_coordinator.groups[group].generation_id)


def test_offsets_and_group_state_survive_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker = start_broker(data)
    port = broker.broker.port
    bootstrap = broker.bootstrap
    topic = f"restart-{uuid.uuid4().hex[:6]}"
    group = f"group-{topic}"
    members: list[ConfluentMember] = []
    try:
        create_topic(bootstrap, topic, PARTITIONS)
        admin = AdminClient({"bootstrap.servers": bootstrap, **RECONNECT})

        def member(name: str) -> ConfluentMember:
            m = ConfluentMember(bootstrap, group, [topic], name=name, session_ms=SESSION_MS,
                                **RECONNECT)
            members.append(m)
            return m

        a, b = member("a"), member("b")
        _settle(admin, group, [a, b], "two members")
        expected = produce(bootstrap, topic, [f"one-{i}" for i in range(80)], PARTITIONS)
        wait_until(lambda: set(expected) <= set(records_of([a, b])), "first records",
                   step=poll_all([a, b]))
        generation = _generation(broker, group)
        before = describe(admin, group)

        # Restart under the running members.
        broker.stop()
        broker = start_broker(data, port=port)
        assert _generation(broker, group) == generation  # loaded, not rebuilt
        expected |= produce(bootstrap, topic, [f"two-{i}" for i in range(80)], PARTITIONS)
        wait_until(lambda: set(expected) <= set(records_of([a, b])), "records after restart",
                   step=poll_all([a, b]))
        after = describe(admin, group)
        assert after.members == before.members and after.state == "STABLE"
        assert _generation(broker, group) == generation  # no rebalance was needed

        # Member changes after the restart.
        c = member("c")
        _settle(admin, group, [a, b, c], "c joined")
        a.close()
        _settle(admin, group, [b, c], "a left")
        assert _generation(broker, group) == generation + 2
        expected |= produce(bootstrap, topic, [f"three-{i}" for i in range(80)], PARTITIONS)
        per_partition = len(expected) // PARTITIONS
        wait_until(
            lambda: committed(admin, group, topic, PARTITIONS)
            == dict.fromkeys(range(PARTITIONS), per_partition),
            "everything committed", step=poll_all([b, c]),
        )
        b.close()
        c.close()
        assert describe(admin, group).state == "EMPTY"
        got = records_of(members)
        assert {k: got[k] for k in expected} == expected

        # Restart as after a crash, with the group empty: the offsets come back from the log.
        broker.stop()
        (data / CLEAN_SHUTDOWN_FILE).unlink()
        broker = start_broker(data, port=port)
        admin = AdminClient({"bootstrap.servers": bootstrap, **RECONNECT})
        assert committed(admin, group, topic, PARTITIONS) == dict.fromkeys(
            range(PARTITIONS), per_partition
        )
        assert describe(admin, group).state == "EMPTY"
        tail = produce(bootstrap, topic, [f"four-{i}" for i in range(40)], PARTITIONS)
        d = member("d")
        wait_until(lambda: set(tail) <= set(records_of([d])), "records after the last commit",
                   step=d.poll)
        # Resumed exactly after the last commit: nothing before it came again.
        assert records_of([d]) == tail
        d.close()
        assert_commits_never_move_back(commit_history(bootstrap, group))
    finally:
        for m in members:
            m.close()
        broker.stop()
