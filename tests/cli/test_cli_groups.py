"""``odradek groups list|describe|delete|reset-offsets``, run as real subprocesses against a broker
started in-process, plus unit tests of the pure helpers (offset planning, parsing, tables)."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from clirun import fails, odradek, ok
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from hypothesis import given
from hypothesis import strategies as st

from odradek.cli.groups import (
    PartitionPosition,
    ResetMode,
    ResetRule,
    lag,
    parse_states,
    parse_topic_partitions,
    reset_target,
)

# -- pure helpers ---------------------------------------------------------------------------------


def _position(
    committed: int | None = None, start: int = 10, end: int = 20, at: int | None = None
) -> PartitionPosition:
    return PartitionPosition(committed, start, end, at)


@pytest.mark.parametrize(
    ("rule", "position", "expected"),
    [
        (ResetRule(ResetMode.EARLIEST), _position(15), 10),
        (ResetRule(ResetMode.LATEST), _position(15), 20),
        (ResetRule(ResetMode.OFFSET, 12), _position(), 12),
        (ResetRule(ResetMode.OFFSET, 3), _position(), 10),  # below the log start
        (ResetRule(ResetMode.OFFSET, 99), _position(), 20),  # beyond the log end
        (ResetRule(ResetMode.SHIFT, 2), _position(15), 17),
        (ResetRule(ResetMode.SHIFT, -2), _position(15), 13),
        (ResetRule(ResetMode.SHIFT, -100), _position(15), 10),
        (ResetRule(ResetMode.SHIFT, 100), _position(15), 20),
        (ResetRule(ResetMode.DATETIME, 5), _position(at=14), 14),
        (ResetRule(ResetMode.DATETIME, 5), _position(at=None), 20),  # later than every record
        (ResetRule(ResetMode.LATEST), _position(start=0, end=0), 0),  # empty partition
    ],
)
def test_reset_target(rule: ResetRule, position: PartitionPosition, expected: int) -> None:
    assert reset_target(rule, position) == expected


def test_shift_needs_a_committed_offset() -> None:
    with pytest.raises(ValueError, match="no committed offset"):
        reset_target(ResetRule(ResetMode.SHIFT, 1), _position(None))


@given(
    mode=st.sampled_from(list(ResetMode)),
    value=st.integers(-(2**40), 2**40),
    start=st.integers(0, 1000),
    length=st.integers(0, 1000),
    committed=st.one_of(st.none(), st.integers(0, 3000)),
    at=st.one_of(st.none(), st.integers(0, 3000)),
)
def test_reset_target_stays_within_the_log(
    mode: ResetMode, value: int, start: int, length: int, committed: int | None, at: int | None
) -> None:
    position = PartitionPosition(committed, start, start + length, at)
    try:
        target = reset_target(ResetRule(mode, value), position)
    except ValueError:
        assert mode is ResetMode.SHIFT and committed is None
        return
    assert start <= target <= start + length
    if mode is ResetMode.OFFSET and start <= value <= start + length:
        assert target == value  # an offset inside the log is taken as given


def test_lag() -> None:
    assert lag(3, 10) == 7
    assert lag(10, 10) == 0
    assert lag(None, 10) is None
    assert lag(3, None) is None


def test_parse_topic_partitions() -> None:
    assert parse_topic_partitions("orders") == ("orders", None)
    assert parse_topic_partitions("orders:0") == ("orders", (0,))
    assert parse_topic_partitions("orders:2, 0,2") == ("orders", (2, 0))
    for bad in ("", ":1", "orders:", "orders:x", "orders:1,-1", "orders:1,"):
        with pytest.raises(ValueError):
            parse_topic_partitions(bad)


def test_parse_states() -> None:
    assert parse_states([]) == set()
    assert parse_states(["stable,Empty", "PREPARINGREBALANCE"]) == {
        "STABLE",
        "EMPTY",
        "PREPARING_REBALANCING",
    }
    with pytest.raises(ValueError, match="valid states: Empty, Stable"):
        parse_states(["Sleeping"])
    with pytest.raises(ValueError):
        parse_states(["Unknown"])


# -- against a broker -----------------------------------------------------------------------------

integration = pytest.mark.integration


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from odradek.broker.runner import BrokerThread, local_config

    config = local_config(
        tmp_path_factory.mktemp("cli-groups") / "data", group_initial_rebalance_delay_ms="0"
    )
    with BrokerThread(config) as broker:
        yield broker.bootstrap


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _topic(bootstrap: str, counts: list[int], base_ms: int | None = None) -> str:
    """A topic with ``counts[p]`` records in partition p, one batch per record; with
    ``base_ms``, record i of each partition has timestamp base_ms + i * 1000."""
    name = _name("t")
    ok("topics", "create", name, "--partitions", str(len(counts)), "--bootstrap-server", bootstrap)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for partition, count in enumerate(counts):
        for i in range(count):
            stamp = {} if base_ms is None else {"timestamp": base_ms + i * 1000}
            producer.produce(name, value=b"%d" % i, partition=partition, **stamp)
            assert producer.flush(10) == 0
    return name


def _consumer(bootstrap: str, group: str, **extra: object) -> Consumer:
    return Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, **extra}
    )


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = _consumer(bootstrap, group)
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = _consumer(bootstrap, group)
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}


def _group(bootstrap: str, topic: str, offsets: dict[int, int]) -> str:
    group = _name("g")
    _commit(bootstrap, group, topic, offsets)
    return group


def _rows(text: str) -> list[list[str]]:
    """The rows (header first) of the table that starts with TOPIC in describe's output."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("TOPIC "))
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return [line.split() for line in lines[start:end]]


def _subscribed(bootstrap: str, group: str, topic: str) -> Consumer:
    """A consumer that has joined ``group`` and been given partitions of ``topic``."""
    consumer = _consumer(bootstrap, group, **{"client.id": "busy-client"})
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while not consumer.assignment():
        assert time.monotonic() < deadline, "no assignment"
        consumer.poll(0.1)
    return consumer


@integration
def test_list(bootstrap: str) -> None:
    topic = _topic(bootstrap, [3])
    group = _group(bootstrap, topic, {0: 1})
    b = ("--bootstrap-server", bootstrap)
    lines = ok("groups", "list", *b).splitlines()
    assert lines[0].split() == ["GROUP", "TYPE", "STATE"]
    assert [group, "classic", "Empty"] in [line.split() for line in lines[1:]]
    assert group in ok("groups", "list", "--state", "empty,stable", "--type", "classic", *b)
    assert group not in ok("groups", "list", "--state", "Stable", *b)
    assert group not in ok("groups", "list", "--type", "consumer", *b)
    assert "unknown group state 'asleep'" in fails("groups", "list", "--state", "asleep", *b)


@integration
def test_describe_shows_committed_end_and_lag(bootstrap: str) -> None:
    topic = _topic(bootstrap, [10, 4, 0])
    group = _group(bootstrap, topic, {0: 3, 1: 4})
    b = ("--bootstrap-server", bootstrap)
    out = ok("groups", "describe", group, *b)
    summary = out.splitlines()[:2]
    assert summary[0].split()[:4] == ["GROUP", "TYPE", "STATE", "ASSIGNMENT-STRATEGY"]
    assert summary[1].split()[:3] == [group, "classic", "Empty"]
    assert summary[1].split()[-1] == "0"  # members
    assert _rows(out) == [
        ["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
         "CLIENT-ID"],
        [topic, "0", "3", "10", "7", "-", "-", "-"],
        [topic, "1", "4", "4", "0", "-", "-", "-"],
    ]  # fmt: skip

    described = json.loads(ok("groups", "describe", group, "--json", *b))
    assert (described["group"], described["state"], described["members"]) == (group, "Empty", [])
    assert described["offsets"] == [
        {"topic": topic, "partition": 0, "committed_offset": 3, "log_end_offset": 10, "lag": 7,
         "member_id": None},
        {"topic": topic, "partition": 1, "committed_offset": 4, "log_end_offset": 4, "lag": 0,
         "member_id": None},
    ]  # fmt: skip


@integration
def test_describe_an_active_group(bootstrap: str) -> None:
    topic = _topic(bootstrap, [5, 2])
    group = _group(bootstrap, topic, {1: 1})
    consumer = _subscribed(bootstrap, group, topic)
    try:
        described = json.loads(
            ok("groups", "describe", group, "--json", "--bootstrap-server", bootstrap)
        )
        text = ok("groups", "describe", group, "--bootstrap-server", bootstrap)
    finally:
        consumer.close()
    assert described["state"] == "Stable"
    assert described["assignment_strategy"] in ("range", "roundrobin", "cooperative-sticky")
    (member,) = described["members"]
    assert member["client_id"] == "busy-client"
    assert member["assignment"] == [
        {"topic": topic, "partition": 0},
        {"topic": topic, "partition": 1},
    ]
    rows = {(r["partition"], r["committed_offset"], r["lag"], r["member_id"])
            for r in described["offsets"]}  # fmt: skip
    assert rows == {(0, None, None, member["member_id"]), (1, 1, 1, member["member_id"])}
    assert [topic, "0", "-", "5", "-", member["member_id"]] == _rows(text)[1][:6]
    assert f"{topic}:0,1" in text  # the members table's ASSIGNMENT column


@integration
def test_describe_unknown_group(bootstrap: str) -> None:
    err = fails("groups", "describe", "never-used", "--bootstrap-server", bootstrap)
    assert err == "odradek groups: group 'never-used' does not exist"


@integration
def test_reset_dry_run_then_execute(bootstrap: str) -> None:
    topic = _topic(bootstrap, [10, 6])
    group = _group(bootstrap, topic, {0: 3, 1: 6})
    b = ("--bootstrap-server", bootstrap)
    out = ok("groups", "reset-offsets", group, "--topic", topic, "--to-earliest", *b)
    lines = out.splitlines()
    assert [line.split() for line in lines[:3]] == [
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
        [group, topic, "0", "3", "0"],
        [group, topic, "1", "6", "0"],
    ]
    assert "Dry run" in lines[-1] and "--execute" in lines[-1]
    assert _committed(bootstrap, group, topic, 2) == {0: 3, 1: 6}

    out = ok("groups", "reset-offsets", group, "--topic", f"{topic}:1", "--to-earliest",
             "--execute", *b)  # fmt: skip
    assert [line.split() for line in out.splitlines()[1:2]] == [[group, topic, "1", "6", "0"]]
    assert "Dry run" not in out
    assert _committed(bootstrap, group, topic, 2) == {0: 3, 1: 0}


@integration
def test_reset_modes(bootstrap: str) -> None:
    base = 1_600_000_000_000  # 2020-09-13T12:26:40Z
    topic = _topic(bootstrap, [10, 10], base_ms=base)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # Move partition 1's log start to 4, so clamping below has a start other than 0.
    for future in admin.delete_records([TopicPartition(topic, 1, 4)]).values():
        future.result(timeout=30)
    group = _group(bootstrap, topic, {0: 5, 1: 5})
    b = ("--bootstrap-server", bootstrap)

    def reset(*how: str) -> dict[int, int | None]:
        ok("groups", "reset-offsets", group, "--topic", topic, *how, "--execute", *b)
        return _committed(bootstrap, group, topic, 2)

    assert reset("--to-earliest") == {0: 0, 1: 4}
    assert reset("--to-latest") == {0: 10, 1: 10}
    assert reset("--to-offset", "2") == {0: 2, 1: 4}  # clamped up to the log start
    assert reset("--to-offset", "50") == {0: 10, 1: 10}  # clamped down to the log end
    assert reset("--to-offset", "7") == {0: 7, 1: 7}
    assert reset("--shift-by", "-2") == {0: 5, 1: 5}
    assert reset("--shift-by", "-3") == {0: 2, 1: 4}
    assert reset("--shift-by", "100") == {0: 10, 1: 10}
    assert reset("--to-datetime", "2020-09-13T12:26:46.500Z") == {0: 7, 1: 7}
    assert reset("--to-datetime", str(base + 3000)) == {0: 3, 1: 4}  # start wins over time
    assert reset("--to-datetime", "2020-09-13T14:26:41+02:00") == {0: 1, 1: 4}
    assert reset("--to-datetime", "2030-01-01T00:00:00Z") == {0: 10, 1: 10}  # after all: end


@integration
def test_reset_mistakes(bootstrap: str) -> None:
    topic = _topic(bootstrap, [3, 3])
    group = _group(bootstrap, topic, {0: 1})
    b = ("--bootstrap-server", bootstrap)
    err = fails("groups", "reset-offsets", group, "--topic", topic, "--shift-by", "1", *b)
    assert err == f"odradek groups: partition {topic}-1: there is no committed offset to shift"
    err = fails("groups", "reset-offsets", group, "--topic", "no-such-topic", "--to-latest", *b)
    assert err == "odradek groups: topic 'no-such-topic' does not exist"
    err = fails("groups", "reset-offsets", group, "--topic", f"{topic}:0,2", "--to-latest", *b)
    assert f"topic {topic!r} has no partition 2" in err
    assert _committed(bootstrap, group, topic, 2) == {0: 1, 1: None}
    # --all-topics: the partitions with committed offsets.
    out = ok("groups", "reset-offsets", group, "--all-topics", "--to-latest", "--execute", *b)
    assert [line.split() for line in out.splitlines()[1:2]] == [[group, topic, "0", "1", "3"]]
    assert _committed(bootstrap, group, topic, 2) == {0: 3, 1: None}


@integration
def test_reset_a_group_that_does_not_exist_yet(bootstrap: str) -> None:
    topic = _topic(bootstrap, [4])
    group = _name("fresh")
    out = ok("groups", "reset-offsets", group, "--topic", topic, "--to-offset", "2", "--execute",
             "--bootstrap-server", bootstrap)  # fmt: skip
    assert out.splitlines()[1].split() == [group, topic, "0", "-", "2"]
    assert _committed(bootstrap, group, topic, 1) == {0: 2}


@integration
def test_reset_and_delete_refused_while_the_group_is_active(bootstrap: str) -> None:
    topic = _topic(bootstrap, [6])
    group = _group(bootstrap, topic, {0: 4})
    b = ("--bootstrap-server", bootstrap)
    consumer = _subscribed(bootstrap, group, topic)
    try:
        err = fails("groups", "reset-offsets", group, "--topic", topic, "--to-earliest",
                    "--execute", *b)  # fmt: skip
        assert err == (
            f"odradek groups: group {group!r} is active (state Stable, 1 member); "
            "offsets can only be reset while it has no members"
        )
        # Refused even as a dry run: the plan could not be carried out.
        fails("groups", "reset-offsets", group, "--topic", topic, "--to-earliest", *b)
        assert fails("groups", "delete", group, *b) == (
            f"odradek groups: group {group!r} has active members"
        )
        assert [group, "classic", "Stable"] in [
            line.split() for line in ok("groups", "list", *b).splitlines()
        ]
    finally:
        consumer.close()
    assert _committed(bootstrap, group, topic, 1) == {0: 4}
    # Once the consumer has left, the group is Empty and both work.
    ok("groups", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute", *b)
    assert _committed(bootstrap, group, topic, 1) == {0: 0}
    assert ok("groups", "delete", group, *b) == f"Deleted group {group}.\n"
    assert group not in ok("groups", "list", *b)


@integration
def test_delete(bootstrap: str) -> None:
    topic = _topic(bootstrap, [2])
    first, second = _group(bootstrap, topic, {0: 1}), _group(bootstrap, topic, {0: 2})
    b = ("--bootstrap-server", bootstrap)
    result = odradek("groups", "delete", first, "missing-group", second, *b)
    assert result.returncode == 1
    assert result.stdout.decode().splitlines() == [f"Deleted group {first}.",
                                                   f"Deleted group {second}."]  # fmt: skip
    assert result.stderr.decode().splitlines() == [
        "odradek groups: group 'missing-group' does not exist"
    ]
    listed = ok("groups", "list", *b)
    assert first not in listed and second not in listed
    assert _committed(bootstrap, first, topic, 1) == {0: None}


@integration
def test_a_consumer_protocol_group(bootstrap: str) -> None:
    topic = _topic(bootstrap, [3])
    group = _name("kip848")
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer"}
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    try:
        while not consumer.assignment():
            assert time.monotonic() < deadline, "no assignment"
            consumer.poll(0.1)
        b = ("--bootstrap-server", bootstrap)
        assert group in ok("groups", "list", "--type", "consumer", *b)
        assert group not in ok("groups", "list", "--type", "classic", *b)
        described = json.loads(ok("groups", "describe", group, "--json", *b))
        assert described["type"] == "consumer"
        assert len(described["members"]) == 1
        assert "is active" in fails(
            "groups", "reset-offsets", group, "--topic", topic, "--to-latest", *b
        )
    finally:
        consumer.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "command",
    [
        ("list",),
        ("describe", "g"),
        ("delete", "g"),
        ("reset-offsets", "g", "--topic", "t", "--to-latest"),
    ],
)
def test_unreachable_broker(command: tuple[str, ...]) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    err = fails("groups", *command, "--bootstrap-server", address, "--connect-timeout", "0.5")
    assert err == f"odradek groups: cannot reach broker at {address} (no answer within 0.5 s)"


def test_bad_arguments_fail_before_connecting() -> None:
    nowhere = ("--bootstrap-server", f"127.0.0.1:{_closed_port()}")
    assert "--topic or --all-topics" in fails("groups", "reset-offsets", "g", "--to-latest",
                                              *nowhere)  # fmt: skip
    assert "not a partition number" in fails(
        "groups", "reset-offsets", "g", "--topic", "t:x", "--to-latest", *nowhere
    )
    assert "must not be negative" in fails(
        "groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "-1", *nowhere
    )
    assert "ISO 8601" in fails(
        "groups", "reset-offsets", "g", "--topic", "t", "--to-datetime", "soon", *nowhere
    )
    assert "unknown group state" in fails("groups", "list", "--state", "busy", *nowhere)
