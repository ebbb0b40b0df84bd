"""The client commands (``odradek topics|produce|consume``), run as real subprocesses against a
broker started in-process, plus unit tests of their pure helpers."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from odradek.cli._records import (
    ConsumedRecord,
    decode_json_value,
    encode_json_value,
    format_json,
    format_plain,
    parse_assignments,
    parse_bootstrap,
    parse_headers,
    parse_timestamp,
    split_line,
)

# -- pure helpers ---------------------------------------------------------------------------------


def test_parse_assignments_keeps_equals_in_values() -> None:
    assert parse_assignments(["a=1", "b=x=y", "c="], "config") == {"a": "1", "b": "x=y", "c": ""}


@pytest.mark.parametrize(
    ("items", "message"),
    [(["novalue"], "key=value"), (["=1"], "key=value"), (["a=1", "a=2"], "more than once")],
)
def test_parse_assignments_rejects_mistakes(items: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_assignments(items, "config")


def test_parse_headers_allows_repeated_keys_in_order() -> None:
    assert parse_headers(["a=1", "b=", "a=x=y"]) == [("a", b"1"), ("b", b""), ("a", b"x=y")]
    with pytest.raises(ValueError):
        parse_headers(["nokey"])


@pytest.mark.parametrize(
    "text", ["localhost:9092", "127.0.0.1:1,example.com:65535", "[::1]:9092"]
)
def test_parse_bootstrap_accepts(text: str) -> None:
    assert parse_bootstrap(text) == text


@pytest.mark.parametrize("text", ["", "localhost", "localhost:", ":9092", "h:0", "h:70000", "h:x"])
def test_parse_bootstrap_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bootstrap(text)


def test_parse_timestamp_forms() -> None:
    assert parse_timestamp("1700000000123") == 1_700_000_000_123
    assert parse_timestamp("1970-01-01T00:00:01Z") == 1000
    assert parse_timestamp("1970-01-01T00:00:01.5") == 1500  # naive means UTC
    assert parse_timestamp("1970-01-01T02:00:00+02:00") == 0
    assert parse_timestamp("2024-05-01") == 1_714_521_600_000
    for bad in ("yesterday", "-5", "1960-01-01T00:00:00Z", ""):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


@given(
    st.datetimes(
        min_value=datetime.datetime(1970, 1, 1),
        max_value=datetime.datetime(2200, 1, 1),
    )
)
def test_parse_timestamp_iso_agrees_with_datetime(moment: datetime.datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    aware = moment.replace(tzinfo=datetime.UTC)
    assert parse_timestamp(aware.isoformat()) == round(aware.timestamp() * 1000)


def test_split_line() -> None:
    assert split_line(b"a:b:c", b":") == (b"a", b"b:c")
    assert split_line(b"::", b"::") == (b"", b"")
    assert split_line(b"no sep", None) == (None, b"no sep")
    with pytest.raises(ValueError):
        split_line(b"missing", b"\t")


@given(st.one_of(st.none(), st.binary(max_size=64)))
def test_json_bytes_round_trip(data: bytes | None) -> None:
    encoded = encode_json_value(data)
    assert decode_json_value(json.loads(json.dumps(encoded))) == data
    if data is not None:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            assert isinstance(encoded, dict)
        else:
            assert encoded == data.decode("utf-8")


def test_format_plain_and_json() -> None:
    record = ConsumedRecord(
        topic="t",
        partition=2,
        offset=7,
        timestamp_type=1,
        timestamp=123,
        key=None,
        value=b"\xff",
        headers=(("h", b"v"), ("n", None)),
    )
    assert format_plain(record) == b"\xff"
    assert (
        format_plain(record, print_key=True, print_headers=True, print_timestamp=True)
        == b"CreateTime:123\th:v,n:null\tnull\t\xff"
    )
    bare = ConsumedRecord("t", 0, 0, 0, -1, b"k", None)
    assert format_plain(bare, print_headers=True, print_timestamp=True, print_key=True) == (
        b"NO_TIMESTAMP\tNO_HEADERS\tk\tnull"
    )
    assert json.loads(format_json(record)) == {
        "topic": "t",
        "partition": 2,
        "offset": 7,
        "timestamp": 123,
        "timestamp_type": "CreateTime",
        "key": None,
        "value": {"base64": "/w=="},
        "headers": [{"key": "h", "value": "v"}, {"key": "n", "value": None}],
    }


# -- against a broker -----------------------------------------------------------------------------


def _served_api_keys() -> set[int]:
    from odradek.broker.registry import handlers

    return set(handlers())


_API = _served_api_keys()
_DESCRIBE_CONFIGS, _ALTER_CONFIGS, _CREATE_PARTITIONS, _DELETE_TOPICS = 32, 44, 37, 20
_GROUP_APIS = {8, 9, 10, 11, 12, 13, 14}  # commit, fetch offsets, coordinator, join..sync


def _needs(*keys: int) -> pytest.MarkDecorator:
    missing = sorted(set(keys) - _API)
    return pytest.mark.skipif(bool(missing), reason=f"broker does not serve API keys {missing}")


def _lacks(*keys: int) -> pytest.MarkDecorator:
    return pytest.mark.skipif(set(keys) <= _API, reason=f"broker serves API keys {sorted(keys)}")


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from odradek.broker.runner import BrokerThread, local_config

    with BrokerThread(local_config(tmp_path_factory.mktemp("cli") / "data")) as broker:
        yield broker.bootstrap


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ODRADEK_BOOTSTRAP"}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def odradek(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "odradek", *args],
        input=stdin,
        capture_output=True,
        env=env or _env(),
        timeout=60,
        check=False,
    )


def ok(*args: str, stdin: bytes = b"") -> str:
    result = odradek(*args, stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def fails(*args: str, stdin: bytes = b"") -> str:
    """Run a command that must fail with exit status 1 and one readable line on stderr."""
    result = odradek(*args, stdin=stdin)
    err = result.stderr.decode()
    assert result.returncode == 1, (result.stdout, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def _topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create(bootstrap: str, partitions: int = 1, *extra: str) -> str:
    name = _topic()
    out = ok("topics", "create", name, "--partitions", str(partitions), *extra,
             "--bootstrap-server", bootstrap)  # fmt: skip
    assert out.strip() == f"Created topic {name}."
    return name


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


integration = pytest.mark.integration


@integration
def test_create_list_describe(bootstrap: str) -> None:
    name = _create(bootstrap, 3, "--config", "retention.ms=123456", "--config", "segment.ms=999999")
    env = {**_env(), "ODRADEK_BOOTSTRAP": bootstrap}  # the default comes from the environment
    listed = subprocess.run(
        [sys.executable, "-m", "odradek", "topics", "list"],
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert name in listed.stdout.decode().split()

    result = odradek("topics", "describe", name, "--bootstrap-server", bootstrap)
    assert result.returncode == 0, result.stderr
    head, *parts = result.stdout.decode().splitlines()
    assert head.startswith(f"Topic: {name}\tPartitionCount: 3\tReplicationFactor: 1\tConfigs: ")
    assert parts == [
        f"\tTopic: {name}\tPartition: {i}\tLeader: 1\tReplicas: 1\tIsr: 1" for i in range(3)
    ]
    configs = head.split("Configs: ", 1)[1]
    if _DESCRIBE_CONFIGS in _API:
        assert configs == "retention.ms=123456,segment.ms=999999"
    else:
        assert configs == "?"
        assert "does not describe configs" in result.stderr.decode()


@integration
def test_create_mistakes(bootstrap: str) -> None:
    name = _create(bootstrap)
    b = ("--bootstrap-server", bootstrap)
    assert fails("topics", "create", name, *b).endswith(f"topic {name!r} already exists")
    assert ok("topics", "create", name, "--if-not-exists", *b) == ""
    assert "invalid config" in fails("topics", "create", _topic(), "--config", "nope=1", *b)
    err = fails("topics", "create", _topic(), "--config", "retention.ms=soon", *b)
    assert "invalid config" in err and "retention.ms" in err
    assert "key=value" in fails("topics", "create", _topic(), "--config", "retention.ms", *b)
    assert "illegal" in fails("topics", "create", "bad name!", *b)
    assert "--partitions must be positive" in fails("topics", "create", _topic(), "--partitions",
                                                     "0", *b)  # fmt: skip
    listed = ok("topics", "list", *b).split()
    assert "bad name!" not in listed and name in listed


@integration
def test_describe_unknown_topic(bootstrap: str) -> None:
    err = fails("topics", "describe", "no-such-topic", "--bootstrap-server", bootstrap)
    assert err == "odradek topics: topic 'no-such-topic' does not exist"


@integration
def test_alter_without_changes_or_shrinking(bootstrap: str) -> None:
    name = _create(bootstrap, 2)
    b = ("--bootstrap-server", bootstrap)
    assert "nothing to alter" in fails("topics", "alter", name, *b)
    assert "can be added, not removed" in fails("topics", "alter", name, "--partitions", "1", *b)
    assert "both set and deleted" in fails(
        "topics", "alter", name, "--config", "retention.ms=1", "--delete-config", "retention.ms",
        *b,
    )  # fmt: skip
    assert "does not exist" in fails("topics", "alter", _topic(), "--partitions", "3", *b)


@integration
@_needs(_CREATE_PARTITIONS, _ALTER_CONFIGS, _DESCRIBE_CONFIGS)
def test_alter_partitions_and_configs(bootstrap: str) -> None:
    name = _create(bootstrap, 1, "--config", "retention.ms=1000000")
    b = ("--bootstrap-server", bootstrap)
    out = ok("topics", "alter", name, "--partitions", "4", "--config", "cleanup.policy=compact", *b)
    assert out.strip() == f"Altered topic {name}."
    head, *parts = ok("topics", "describe", name, *b).splitlines()
    assert "PartitionCount: 4" in head
    assert head.endswith("Configs: cleanup.policy=compact,retention.ms=1000000")
    assert len(parts) == 4
    ok("topics", "alter", name, "--delete-config", "retention.ms", *b)
    head = ok("topics", "describe", name, *b).splitlines()[0]
    assert head.endswith("Configs: cleanup.policy=compact")
    assert "invalid config" in fails("topics", "alter", name, "--config", "retention.ms=x", *b)


@integration
@_lacks(_CREATE_PARTITIONS, _ALTER_CONFIGS)
def test_alter_on_a_broker_without_the_apis(bootstrap: str) -> None:
    name = _create(bootstrap, 1)
    b = ("--bootstrap-server", bootstrap)
    if _ALTER_CONFIGS not in _API:
        err = fails("topics", "alter", name, "--config", "retention.ms=1", *b)
        assert "does not support" in err
    if _CREATE_PARTITIONS not in _API:
        assert "does not support" in fails("topics", "alter", name, "--partitions", "2", *b)


@integration
@_needs(_DELETE_TOPICS)
def test_delete(bootstrap: str) -> None:
    first, second = _create(bootstrap), _create(bootstrap)
    b = ("--bootstrap-server", bootstrap)
    out = ok("topics", "delete", first, second, *b)
    assert out.splitlines() == [f"Deleted topic {first}.", f"Deleted topic {second}."]
    listed = ok("topics", "list", *b).split()
    assert first not in listed and second not in listed
    assert fails("topics", "delete", first, *b).endswith(f"topic {first!r} does not exist")
    assert ok("topics", "delete", first, "--if-exists", *b) == ""


@integration
@_lacks(_DELETE_TOPICS)
def test_delete_on_a_broker_without_the_api(bootstrap: str) -> None:
    name = _create(bootstrap)
    assert "does not support" in fails("topics", "delete", name, "--bootstrap-server", bootstrap)


@integration
def test_produce_keys_and_headers_then_consume(bootstrap: str) -> None:
    name = _create(bootstrap)
    b = ("--bootstrap-server", bootstrap)
    lines = "k1|v1\nk2|v|with|bars\n|empty key\r\nk4|ünïcode\n"
    out = ok("produce", name, "--key-separator", "|", "--header", "src=cli", "--header", "n=2", *b,
             stdin=lines.encode())  # fmt: skip
    assert out == ""

    plain = ok("consume", name, "--from-beginning", *b)
    assert plain.splitlines() == ["v1", "v|with|bars", "empty key", "ünïcode"]
    full = ok("consume", name, "--from-beginning", "--print-key", "--print-headers", *b)
    assert full.splitlines()[:2] == ["src:cli,n:2\tk1\tv1", "src:cli,n:2\tk2\tv|with|bars"]

    records = _json_lines(ok("consume", name, "--from-beginning", "--json", *b))
    assert [(r["offset"], r["key"], r["value"]) for r in records] == [
        (0, "k1", "v1"),
        (1, "k2", "v|with|bars"),
        (2, "", "empty key"),
        (3, "k4", "ünïcode"),
    ]
    assert all(r["topic"] == name and r["partition"] == 0 for r in records)
    assert all(r["timestamp_type"] == "CreateTime" for r in records)
    assert records[0]["headers"] == [{"key": "src", "value": "cli"}, {"key": "n", "value": "2"}]

    # An independent client sees the same keys and headers.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(name, 0, 0)])
        msgs = c.consume(num_messages=4, timeout=10)
        assert [(m.key(), m.value()) for m in msgs] == [
            (b"k1", b"v1"),
            (b"k2", b"v|with|bars"),
            (b"", b"empty key"),
            (b"k4", "ünïcode".encode()),
        ]
        assert msgs[3].headers() == [("src", b"cli"), ("n", b"2")]
    finally:
        c.close()


@integration
def test_consume_json_marks_binary_as_base64(bootstrap: str) -> None:
    name = _create(bootstrap)
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(name, key=b"\xff\x00", value=b"\x80text", headers=[("bin", b"\xfe"), ("nul", None)])
    p.produce(name, key=None, value=None)
    assert p.flush(10) == 0
    first, second = _json_lines(
        ok("consume", name, "--from-beginning", "--json", "--bootstrap-server", bootstrap)
    )
    assert first["key"] == {"base64": "/wA="}
    assert first["value"] == {"base64": "gHRleHQ="}
    assert first["headers"] == [{"key": "bin", "value": {"base64": "/g=="}},
                                {"key": "nul", "value": None}]  # fmt: skip
    assert (second["key"], second["value"], second["offset"]) == (None, None, 1)


@integration
def test_consume_by_offset_and_by_timestamp(bootstrap: str) -> None:
    name = _create(bootstrap)
    b = ("--bootstrap-server", bootstrap)
    base = 1_600_000_000_000  # 2020-09-13T12:26:40Z
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(10):
        p.produce(name, value=str(i).encode(), timestamp=base + i * 1000)
        assert p.flush(10) == 0  # one batch each, so a lookup must land inside the log
    assert ok("consume", name, "--offset", "7", *b).split() == ["7", "8", "9"]
    assert ok("consume", name, "--offset", "10", *b) == ""
    assert "beyond the end" in fails("consume", name, "--offset", "11", *b)
    by_ms = ok("consume", name, "--timestamp", str(base + 4500), "--print-timestamp", *b)
    assert by_ms.splitlines() == [f"CreateTime:{base + i * 1000}\t{i}" for i in range(5, 10)]
    by_iso = ok("consume", name, "--timestamp", "2020-09-13T12:26:48Z", *b)
    assert by_iso.split() == ["8", "9"]
    by_zone = ok("consume", name, "--timestamp", "2020-09-13T14:26:48+02:00", *b)
    assert by_zone.split() == ["8", "9"]
    assert ok("consume", name, "--timestamp", "2030-01-01T00:00:00Z", *b) == ""
    assert "ISO 8601" in fails("consume", name, "--timestamp", "last tuesday", *b)


@integration
def test_consume_stops_at_the_end_and_limits(bootstrap: str) -> None:
    name = _create(bootstrap, 3)
    b = ("--bootstrap-server", bootstrap)
    stdin = "".join(f"key{i}:{i}\n" for i in range(30)).encode()
    ok("produce", name, "--key-separator", ":", "--compression", "gzip", "--acks", "1", *b,
       stdin=stdin)  # fmt: skip
    records = _json_lines(ok("consume", name, "--from-beginning", "--json", *b))
    assert sorted(int(str(r["value"])) for r in records) == list(range(30))
    assert len({r["partition"] for r in records}) > 1  # keys spread over partitions
    for r in records:  # one key, one partition
        assert all(o["partition"] == r["partition"] for o in records if o["key"] == r["key"])
    assert ok("consume", name, *b) == ""  # starts at the end; stops there without --follow
    assert len(ok("consume", name, "--from-beginning", "--max-messages", "4", *b).split()) == 4
    only = {r["partition"] for r in records}.pop()
    mine = _json_lines(ok("consume", name, "--from-beginning", "--partition", str(only), "--json",
                          *b))  # fmt: skip
    assert [r["offset"] for r in mine] == list(range(len(mine)))
    assert {r["partition"] for r in mine} == {only}
    assert "no partition 3" in fails("consume", name, "--partition", "3", *b)
    assert "give --partition" in fails("consume", name, "--offset", "0", *b)


@integration
def test_consume_follow_sees_new_records(bootstrap: str) -> None:
    name = _create(bootstrap)
    b = ("--bootstrap-server", bootstrap)
    ok("produce", name, *b, stdin=b"before\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "odradek", "consume", name, "--from-beginning", "--follow",
         "--max-messages", "2", *b],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )  # fmt: skip
    try:
        # The follower prints the first record once it is running; only then add the second.
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"before\n"
        ok("produce", name, *b, stdin=b"after\n")
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
        follower.wait()
    assert follower.returncode == 0, err
    assert out == b"after\n"


@integration
def test_produce_to_a_partition_and_failures(bootstrap: str) -> None:
    name = _create(bootstrap, 2)
    b = ("--bootstrap-server", bootstrap)
    ok("produce", name, "--partition", "1", "--compression", "zstd", *b, stdin=b"x\ny\n")
    assert ok("consume", name, "--from-beginning", "--partition", "1", *b).split() == ["x", "y"]
    assert ok("consume", name, "--from-beginning", "--partition", "0", *b) == ""

    assert "no partition 2" in fails("produce", name, "--partition", "2", *b, stdin=b"z\n")
    result = odradek("produce", name, "--partition", "0", "--key-separator", "=", *b,
                     stdin=b"k=v\nno separator\nk2=v2\n")  # fmt: skip
    assert result.returncode == 1
    err = result.stderr.decode().splitlines()
    assert err == [
        "odradek produce: line 2: no key separator on this line",
        "odradek produce: 1 of 3 records failed",
    ]
    assert ok("consume", name, "--from-beginning", "--partition", "0", *b).split() == ["v", "v2"]
    assert "key=value" in fails("produce", name, "--header", "oops", *b)


@integration
def test_consume_unknown_topic(bootstrap: str) -> None:
    err = fails("consume", "never-created", "--bootstrap-server", bootstrap)
    assert err == "odradek consume: topic 'never-created' does not exist"


@integration
@_needs(*_GROUP_APIS)
def test_consume_with_a_group_commits_offsets(bootstrap: str) -> None:
    name = _create(bootstrap, 2)
    b = ("--bootstrap-server", bootstrap)
    ok("produce", name, "--key-separator", ":", *b, stdin=b"a:1\nb:2\nc:3\nd:4\n")
    group = _topic("g")
    got = ok("consume", name, "--group", group, "--from-beginning", "--timeout", "20", *b)
    assert sorted(got.split()) == ["1", "2", "3", "4"]
    ok("produce", name, "--key-separator", ":", *b, stdin=b"e:5\n")
    again = ok("consume", name, "--group", group, "--timeout", "20", *b)
    assert again.split() == ["5"]


@integration
@_lacks(*_GROUP_APIS)
def test_consume_with_a_group_on_a_broker_without_groups(bootstrap: str) -> None:
    name = _create(bootstrap)
    err = fails("consume", name, "--group", "g", "--timeout", "1", "--bootstrap-server", bootstrap)
    assert "does the broker support consumer groups?" in err


@integration
def test_produce_unknown_topic_without_auto_create(tmp_path: Path) -> None:
    from odradek.broker.runner import BrokerThread, local_config

    config = local_config(tmp_path / "data", auto_create_topics_enable="false")
    with BrokerThread(config) as broker:
        err = fails("produce", "missing", "--bootstrap-server", broker.bootstrap, stdin=b"x\n")
        assert err == "odradek produce: topic 'missing' does not exist"
        listed = ok("topics", "list", "--bootstrap-server", broker.bootstrap)
        assert "missing" not in listed.split()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "command",
    [("topics", "list"), ("produce", "t"), ("consume", "t"), ("topics", "create", "t")],
)
def test_unreachable_broker(command: tuple[str, ...]) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    err = fails(*command, "--bootstrap-server", address, "--connect-timeout", "0.5", stdin=b"x\n")
    assert err == f"odradek {command[0]}: cannot reach broker at {address} (no answer within 0.5 s)"


def test_bad_arguments_fail_before_connecting() -> None:
    assert "HOST:PORT" in fails("topics", "list", "--bootstrap-server", "localhost")
    assert "positive" in fails("consume", "t", "--max-messages", "0")
    assert "--group" in fails("consume", "t", "--group", "g", "--partition", "0")
    assert "--json" in fails("consume", "t", "--json", "--print-key")
