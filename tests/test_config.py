"""Tests for odradek.config: properties parsing, broker defaults and precedence, error messages,
topic config validation and DescribeConfigs entries."""

from __future__ import annotations

import socket
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.config import (
    BROKER_CONFIGS,
    DOUBLE_MAX,
    INT_MAX,
    LONG_MAX,
    TOPIC_CONFIGS,
    BrokerConfig,
    ConfigError,
    ConfigSource,
    ConfigSynonym,
    ConfigType,
    Listener,
    broker_config_entries,
    effective_topic_configs,
    effective_topic_values,
    load_properties,
    log_config_for,
    parse_properties,
    validate_topic_configs,
)
from odradek.errors import ErrorCode, InvalidConfigError
from odradek.storage.log_config import LogConfig

DEFAULT = ConfigSource.DEFAULT_CONFIG
STATIC = ConfigSource.STATIC_BROKER_CONFIG
TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG


def broker(**props: str) -> BrokerConfig:
    """A broker config from Kafka-named settings written with underscores for dots."""
    return BrokerConfig.from_properties({k.replace("_", "."): v for k, v in props.items()})


# -- Java properties syntax ---------------------------------------------------------------------


def test_both_separators_whitespace_separator_and_trimming() -> None:
    text = "a=1\nb: 2\nc 3\n  d  =  four  \ne:five\nf\t=\tsix\ng=\n"
    assert parse_properties(text) == {
        "a": "1", "b": "2", "c": "3", "d": "four", "e": "five", "f": "six", "g": "",
    }


def test_comments_and_blank_lines_are_skipped() -> None:
    text = (
        "# a comment\n! another = comment\n   # indented comment\n\n   \n"
        "key=value # not a comment\n"
    )
    assert parse_properties(text) == {"key": "value # not a comment"}


def test_backslash_continuation_drops_leading_whitespace_of_next_line() -> None:
    text = "listeners=PLAINTEXT://a:1,\\\n        PLAINTEXT://b:2\nnext=x\n"
    assert parse_properties(text) == {"listeners": "PLAINTEXT://a:1,PLAINTEXT://b:2", "next": "x"}


def test_continued_line_starting_with_hash_is_value_not_comment() -> None:
    assert parse_properties("a=x\\\n# y\n") == {"a": "x# y"}


def test_even_number_of_backslashes_is_an_escaped_backslash_not_a_continuation() -> None:
    assert parse_properties("path=C:\\\\\nother=1\n") == {"path": "C:\\", "other": "1"}


def test_continuation_on_last_line_and_comment_lines_do_not_continue() -> None:
    assert parse_properties("# comment \\\na=1\nb=2\\") == {"a": "1", "b": "2"}


def test_escapes_in_keys_and_values() -> None:
    text = "a\\=b=c\\td\nkey\\ with\\ space = \\u0041\\u00e9\\q\n"
    assert parse_properties(text) == {"a=b": "c\td", "key with space": "A\u00e9q"}


def test_malformed_unicode_escape_is_an_error() -> None:
    with pytest.raises(ConfigError, match="line 2: malformed"):
        parse_properties("ok=1\nbad=\\u12G4\n")


def test_line_endings_bom_and_last_duplicate_wins() -> None:
    assert parse_properties("\ufeffa=1\r\nb=2\rc=3\na=4") == {"a": "4", "b": "2", "c": "3"}


def _escape(text: str, is_key: bool) -> str:
    out = []
    for char in text:
        if char in "\\=:#!" or (char == " " and is_key):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif char == "\f":
            out.append("\\f")
        else:
            out.append(char)
    return "".join(out)


_PROP_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_JAVA_TRIM = "".join(chr(code) for code in range(0x21))


@given(st.dictionaries(_PROP_TEXT.filter(bool), _PROP_TEXT, max_size=8),
       st.sampled_from(["=", ":", " = ", "\t"]))
def test_escaped_properties_round_trip(props: dict[str, str], sep: str) -> None:
    text = "\n".join(f"{_escape(k, True)}{sep}{_escape(v, False)}" for k, v in props.items())
    parsed = parse_properties(text)
    # Values are trimmed as Java's String.trim does (escaped line breaks included).
    assert parsed == {k: v.strip(_JAVA_TRIM) for k, v in props.items()}


def test_only_cr_and_lf_end_lines_and_trim_is_javas() -> None:
    text = "a=x\x1ey\u2028z\x85\nb=\u3000w\u3000\n"
    assert parse_properties(text) == {"a": "x\x1ey\u2028z\x85", "b": "\u3000w\u3000"}


# -- broker defaults ----------------------------------------------------------------------------

KAFKA_DEFAULTS = {
    "node_id": 1,
    "log_dirs": ("/tmp/kafka-logs",),
    "num_partitions": 1,
    "default_replication_factor": 1,
    "auto_create_topics_enable": True,
    "delete_topic_enable": True,
    "log_segment_bytes": 1073741824,
    "log_roll_ms": None,
    "log_roll_hours": 168,
    "log_retention_ms": None,
    "log_retention_minutes": None,
    "log_retention_hours": 168,
    "log_retention_bytes": -1,
    "log_retention_check_interval_ms": 300000,
    "log_cleanup_policy": ("delete",),
    "log_flush_interval_messages": 9223372036854775807,
    "log_flush_interval_ms": None,
    "log_flush_scheduler_interval_ms": 9223372036854775807,
    "log_index_interval_bytes": 4096,
    "log_index_size_max_bytes": 10485760,
    "log_message_timestamp_type": "CreateTime",
    "message_max_bytes": 1048588,
    "socket_request_max_bytes": 104857600,
    "log_segment_delete_delay_ms": 60000,
    "offsets_topic_num_partitions": 50,
    "offsets_topic_replication_factor": 3,
    "transaction_state_log_num_partitions": 50,
    "group_initial_rebalance_delay_ms": 3000,
    "group_min_session_timeout_ms": 6000,
    "group_max_session_timeout_ms": 1800000,
    "group_max_size": 2147483647,
    "offsets_retention_minutes": 10080,
    "transactional_id_expiration_ms": 604800000,
    "producer_id_expiration_ms": 86400000,
    "log_cleaner_enable": True,
    "log_cleaner_threads": 1,
    "log_cleaner_dedupe_buffer_size": 134217728,
    "log_cleaner_io_max_bytes_per_second": 1.7976931348623157e308,
    "log_cleaner_min_cleanable_ratio": 0.5,
    "log_cleaner_delete_retention_ms": 86400000,
    "log_cleaner_min_compaction_lag_ms": 0,
    "log_cleaner_max_compaction_lag_ms": 9223372036854775807,
    "compression_type": "producer",
    "cluster_id": None,
    "advertised_listeners": None,
}


@pytest.mark.parametrize("field_name, expected", sorted(KAFKA_DEFAULTS.items()))
def test_defaults_equal_kafkas(field_name: str, expected: object) -> None:
    config = BrokerConfig.from_properties({})
    assert getattr(config, field_name) == expected


def test_empty_file_equals_constructor_defaults_and_table_defaults() -> None:
    config = BrokerConfig.from_properties({})
    assert config == BrokerConfig()
    assert config.explicit_keys == frozenset() and config.warnings == ()
    assert config.listeners == (Listener("PLAINTEXT", "", 9092),)
    for key, definition in BROKER_CONFIGS.items():
        assert definition.format(config.value_of(key)) == definition.format(definition.default), key


def test_default_log_config_matches_storage_defaults() -> None:
    assert BrokerConfig().default_log_config() == LogConfig()


def test_every_broker_key_round_trips_through_its_string_form() -> None:
    config = BrokerConfig()
    props = {}
    for key, definition in BROKER_CONFIGS.items():
        text = definition.format(config.value_of(key))
        if text is not None:
            props[key] = text
    again = BrokerConfig.from_properties(props)
    assert again == config
    assert again.explicit_keys == frozenset(props)


def test_topic_defaults_agree_with_broker_defaults() -> None:
    from_broker = effective_topic_values(BrokerConfig(), {})
    from_table = effective_topic_values(None, {})
    assert from_broker == from_table
    for name, definition in TOPIC_CONFIGS.items():
        assert from_table[name] == definition.default, name


def test_topic_config_catalogue() -> None:
    assert set(TOPIC_CONFIGS) == {
        "cleanup.policy", "compression.type", "delete.retention.ms", "file.delete.delay.ms",
        "flush.messages", "flush.ms", "index.interval.bytes", "max.compaction.lag.ms",
        "max.message.bytes", "message.timestamp.type", "message.timestamp.difference.max.ms",
        "message.timestamp.before.max.ms", "message.timestamp.after.max.ms",
        "min.cleanable.dirty.ratio", "min.compaction.lag.ms", "min.insync.replicas",
        "preallocate", "retention.bytes", "retention.ms", "segment.bytes", "segment.index.bytes",
        "segment.jitter.ms", "segment.ms", "unclean.leader.election.enable",
        "message.downconversion.enable",
    }
    assert TOPIC_CONFIGS["retention.ms"].synonyms == (
        "log.retention.ms", "log.retention.minutes", "log.retention.hours",
    )
    assert TOPIC_CONFIGS["segment.ms"].broker_synonym == "log.roll.ms"
    assert TOPIC_CONFIGS["max.message.bytes"].broker_synonym == "message.max.bytes"
    assert TOPIC_CONFIGS["min.cleanable.dirty.ratio"].type is ConfigType.DOUBLE
    for definition in TOPIC_CONFIGS.values():
        assert definition.doc and not definition.sensitive
        for synonym in definition.synonyms:
            assert synonym in BROKER_CONFIGS, synonym
    assert [int(t) for t in ConfigType] == list(range(1, 10))
    assert (TOPIC, STATIC, DEFAULT) == (1, 4, 5)


# -- precedence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "props, expected",
    [
        ({}, 168 * 3600 * 1000),
        ({"log.retention.hours": "24"}, 24 * 3600 * 1000),
        ({"log.retention.hours": "24", "log.retention.minutes": "30"}, 30 * 60 * 1000),
        ({"log.retention.hours": "24", "log.retention.minutes": "30", "log.retention.ms": "5"}, 5),
        ({"log.retention.ms": "-1", "log.retention.hours": "24"}, -1),
        ({"log.retention.minutes": "-5"}, -1),
        ({"log.retention.hours": "-1"}, -1),
    ],
)
def test_retention_precedence_ms_then_minutes_then_hours(
    props: dict[str, str], expected: int
) -> None:
    config = BrokerConfig.from_properties(props)
    assert config.effective_retention_ms == expected
    assert config.default_log_config().retention_ms == expected


def test_roll_and_jitter_precedence() -> None:
    assert broker(log_roll_hours="2").effective_roll_ms == 7200000
    assert broker(log_roll_hours="2", log_roll_ms="1234").effective_roll_ms == 1234
    assert broker().effective_roll_jitter_ms == 0
    assert broker(log_roll_jitter_hours="1").effective_roll_jitter_ms == 3600000
    config = broker(log_roll_jitter_hours="1", log_roll_jitter_ms="99", log_roll_ms="500")
    assert config.effective_roll_jitter_ms == 99
    assert effective_topic_values(config, {})["segment.jitter.ms"] == 99
    assert config.default_log_config().segment_ms == 500


def test_null_flush_interval_falls_back_to_scheduler_interval_meaning_never() -> None:
    assert broker().effective_flush_ms == LONG_MAX
    assert broker(log_flush_scheduler_interval_ms="3000").effective_flush_ms == 3000
    config = broker(log_flush_scheduler_interval_ms="3000", log_flush_interval_ms="10")
    assert config.effective_flush_ms == 10
    assert config.default_log_config().flush_ms == 10


def test_log_dirs_wins_over_log_dir() -> None:
    assert BrokerConfig.from_properties({"log.dir": "/a"}).data_dir == Path("/a")
    config = BrokerConfig.from_properties({"log.dir": "/a", "log.dirs": "/b"})
    assert config.log_dirs == ("/b",)
    assert "log.dirs" in config.explicit_keys


def test_broker_id_is_an_alias_of_node_id() -> None:
    assert BrokerConfig.from_properties({"broker.id": "7"}).node_id == 7
    assert BrokerConfig.from_properties({"broker.id": "7", "node.id": "7"}).node_id == 7
    with pytest.raises(ConfigError, match=r"^broker\.id: 7 differs from node\.id 8"):
        BrokerConfig.from_properties({"broker.id": "7", "node.id": "8"})
    with pytest.raises(ConfigError, match=r"^broker\.id: expected an integer, got 'x'"):
        BrokerConfig.from_properties({"broker.id": "x"})


def test_cli_overrides_win_over_the_file() -> None:
    config = broker(listeners="PLAINTEXT://10.0.0.1:9092", log_dirs="/from/file")
    overridden = config.with_overrides(listen="127.0.0.1:0", data_dir="/from/cli")
    assert overridden.listener == Listener("PLAINTEXT", "127.0.0.1", 0)
    assert overridden.data_dir == Path("/from/cli")
    assert {"listeners", "log.dirs"} <= overridden.explicit_keys
    assert config.with_overrides() == config
    assert config.with_overrides(listen="[::1]:9093").listener == Listener("PLAINTEXT", "::1", 9093)
    assert config.with_overrides(listen=":9093").listener == Listener("PLAINTEXT", "", 9093)
    assert str(config.with_overrides(listen="[::1]:9093").listener) == "PLAINTEXT://[::1]:9093"


@pytest.mark.parametrize(
    "listen, key",
    [("localhost", "--listen"), ("localhost:port", "--listen"), ("host:70000", "--listen"),
     ("SSL://h:1", "listeners")],
)
def test_bad_listen_override_names_the_flag(listen: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig().with_overrides(listen=listen)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_custom_listener_name_mapped_to_plaintext_is_accepted() -> None:
    config = broker(
        listeners="CLIENT://:9092,CONTROLLER://:9093",
        advertised_listeners="CONTROLLER://c:9093",
        listener_security_protocol_map="CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        controller_listener_names="CONTROLLER",
    )
    assert config.listener == Listener("CLIENT", "", 9092)
    assert config.advertised_listeners is None
    moved = config.with_overrides(listen="127.0.0.1:1")
    assert moved.listener == Listener("CLIENT", "127.0.0.1", 1)


def test_empty_data_dir_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match="^--data-dir: "):
        BrokerConfig().with_overrides(data_dir=" ")


def test_advertised_listener_defaults_to_the_bound_one() -> None:
    config = broker(listeners="PLAINTEXT://127.0.0.1:0")
    assert config.advertised_listener(bound_port=40123) == Listener("PLAINTEXT", "127.0.0.1", 40123)
    assert config.advertised_listener() == Listener("PLAINTEXT", "127.0.0.1", 0)
    wildcard = broker(listeners="PLAINTEXT://0.0.0.0:9092")
    assert wildcard.advertised_listener().host == socket.gethostname()
    explicit = broker(listeners="PLAINTEXT://:0", advertised_listeners="PLAINTEXT://kafka:9092")
    assert explicit.advertised_listener(bound_port=5) == Listener("PLAINTEXT", "kafka", 9092)


def test_bind_and_advertised_address_helpers() -> None:
    wildcard = BrokerConfig()
    assert (wildcard.listener_host, wildcard.listener_port) == (None, 9092)
    assert wildcard.advertised_address == (socket.gethostname(), 9092)
    local = broker(listeners="PLAINTEXT://127.0.0.1:0")
    assert (local.listener_host, local.listener_port) == ("127.0.0.1", 0)
    assert local.advertised_address == ("127.0.0.1", 0)
    explicit = broker(advertised_listeners="PLAINTEXT://kafka.example:19092")
    assert explicit.advertised_address == ("kafka.example", 19092)


def test_kafka_stock_kraft_server_properties_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text(
        "# Licensed to the Apache Software Foundation\n"
        "process.roles=broker,controller\n"
        "node.id=1\n"
        "controller.quorum.voters=1@localhost:9093\n"
        "listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n"
        "inter.broker.listener.name=PLAINTEXT\n"
        "advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093\n"
        "controller.listener.names=CONTROLLER\n"
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL\n"
        "num.network.threads=3\n"
        "num.io.threads=8\n"
        "socket.send.buffer.bytes=102400\n"
        "socket.receive.buffer.bytes=102400\n"
        "socket.request.max.bytes=104857600\n"
        f"log.dirs={tmp_path / 'kraft-combined-logs'}\n"
        "num.partitions=1\n"
        "num.recovery.threads.per.data.dir=1\n"
        "offsets.topic.replication.factor=1\n"
        "transaction.state.log.replication.factor=1\n"
        "transaction.state.log.min.isr=1\n"
        "#log.flush.interval.messages=10000\n"
        "log.retention.hours=168\n"
        "log.segment.bytes=1073741824\n"
        "log.retention.check.interval.ms=300000\n"
        "ssl.keystore.password=hunter2\n",
        encoding="utf-8",
    )
    config = load_properties(path)
    assert config.listeners == (Listener("PLAINTEXT", "", 9092),)
    assert config.advertised_listener() == Listener("PLAINTEXT", "localhost", 9092)
    assert config.data_dir == tmp_path / "kraft-combined-logs"
    assert config.offsets_topic_replication_factor == 1
    assert config.transaction_state_log_replication_factor == 1
    assert config.transaction_state_log_min_isr == 1
    assert config.log_flush_interval_messages == LONG_MAX
    ignored = {w.split(":")[0] for w in config.warnings}
    assert {"process.roles", "num.network.threads", "controller.quorum.voters",
            "ssl.keystore.password"} <= ignored
    assert any("CONTROLLER://:9093" in w for w in config.warnings)
    assert not any("hunter2" in w for w in config.warnings)
    assert "num.network.threads" not in config.explicit_keys
    assert "log.retention.hours" in config.explicit_keys


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_properties(tmp_path / "nope.properties")


# -- broker errors name the key -----------------------------------------------------------------


@pytest.mark.parametrize(
    "props, key, fragment",
    [
        ({"log.segment.bytes": "abc"}, "log.segment.bytes", "expected an integer, got 'abc'"),
        ({"log.segment.bytes": "13"}, "log.segment.bytes", "at least 14"),
        ({"log.segment.bytes": "1_000"}, "log.segment.bytes", "expected an integer"),
        ({"num.partitions": "0"}, "num.partitions", "at least 1, got 0"),
        ({"num.partitions": ""}, "num.partitions", "expected an integer, got ''"),
        ({"message.max.bytes": "99999999999"}, "message.max.bytes", "32-bit"),
        ({"log.retention.ms": "9223372036854775808"}, "log.retention.ms", "64-bit"),
        ({"offsets.topic.replication.factor": "40000"}, "offsets.topic.replication.factor",
         "16-bit"),
        ({"auto.create.topics.enable": "yes"}, "auto.create.topics.enable",
         "expected true or false, got 'yes'"),
        ({"log.message.timestamp.type": "createtime"}, "log.message.timestamp.type",
         "CreateTime, LogAppendTime"),
        ({"log.cleanup.policy": "delete,remove"}, "log.cleanup.policy", "'remove'"),
        ({"log.cleanup.policy": "delete,delete"}, "log.cleanup.policy", "twice"),
        ({"log.cleaner.min.cleanable.ratio": "1.5"}, "log.cleaner.min.cleanable.ratio",
         "between 0 and 1"),
        ({"log.cleaner.min.cleanable.ratio": "half"}, "log.cleaner.min.cleanable.ratio",
         "expected a number"),
        ({"compression.type": "brotli"}, "compression.type", "'brotli'"),
        ({"node.id": "-1"}, "node.id", "at least 0"),
        ({"log.roll.hours": "0"}, "log.roll.hours", "at least 1"),
        ({"listeners": "PLAINTEXT://localhost"}, "listeners", "NAME://host:port"),
        ({"listeners": "localhost:9092"}, "listeners", "NAME://host:port"),
        ({"listeners": "PLAINTEXT://:70000"}, "listeners", "between 0 and 65535"),
        ({"listeners": "SSL://:9093"}, "listeners", "SSL"),
        ({"listeners": "CLIENT://:9093"}, "listeners", "no security protocol for listener"),
        ({"listeners": "PLAINTEXT://:1,PLAINTEXT://:2"}, "listeners", "used twice"),
        ({"listeners": "PLAINTEXT://:1,CLIENT://:2",
          "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CLIENT:PLAINTEXT"},
         "listeners", "exactly one listener"),
        ({"listener.security.protocol.map": "PLAINTEXT"}, "listener.security.protocol.map",
         "NAME:PROTOCOL"),
        ({"advertised.listeners": "PLAINTEXT://0.0.0.0:9092"}, "advertised.listeners",
         "wildcard"),
        ({"advertised.listeners": "PLAINTEXT://h:0"}, "advertised.listeners", "port 0"),
        ({"advertised.listeners": "SSL://h:1"}, "advertised.listeners", "not one of"),
        ({"advertised.listeners": "PLAINTEXT://a:1,PLAINTEXT://b:2"}, "advertised.listeners",
         "used twice"),
        ({"log.dirs": "/a,/b"}, "log.dirs", "exactly one log directory"),
        ({"log.dirs": ""}, "log.dirs", "exactly one log directory"),
        ({"cluster.id": "not-a-uuid"}, "cluster.id", "22 characters"),
        ({"group.min.session.timeout.ms": "5000", "group.max.session.timeout.ms": "4000"},
         "group.min.session.timeout.ms", "must not exceed"),
        ({"log.cleaner.min.compaction.lag.ms": "10", "log.cleaner.max.compaction.lag.ms": "5"},
         "log.cleaner.min.compaction.lag.ms", "must not exceed"),
        ({"foo.bar": "1"}, "foo.bar", "unknown configuration key"),
        ({"num.partition": "3"}, "num.partition", "did you mean num.partitions?"),
    ],
)
def test_every_broker_error_names_the_key(props: dict[str, str], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_properties(props)
    assert isinstance(info.value, ValueError)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"num_partitions": 0}, "num.partitions"),
        ({"num_partitions": True}, "num.partitions"),
        ({"num_partitions": None}, "num.partitions"),
        ({"log_segment_bytes": 2**31}, "log.segment.bytes"),
        ({"log_cleanup_policy": "delete"}, "log.cleanup.policy"),
        ({"auto_create_topics_enable": 1}, "auto.create.topics.enable"),
        ({"log_cleaner_min_cleanable_ratio": float("nan")}, "log.cleaner.min.cleanable.ratio"),
        ({"listeners": ()}, "listeners"),
    ],
)
def test_direct_construction_is_validated(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key


def test_valid_values_parse_to_typed_fields() -> None:
    config = broker(
        auto_create_topics_enable="FALSE",
        log_cleanup_policy="compact, delete",
        log_cleaner_min_cleanable_ratio="1e-1",
        message_max_bytes="+2048",
        cluster_id="MkU3OEVBNTcwNTJENDM2Qk",
        listeners="plaintext://[::1]:9092",
    )
    assert config.auto_create_topics_enable is False
    assert config.log_cleanup_policy == ("compact", "delete")
    assert config.log_cleaner_min_cleanable_ratio == 0.1
    assert config.message_max_bytes == 2048
    assert config.cluster_id == "MkU3OEVBNTcwNTJENDM2Qk"
    assert config.listener == Listener("PLAINTEXT", "::1", 9092)


# -- topic config validation --------------------------------------------------------------------


def test_valid_topic_configs_come_back_canonical() -> None:
    assert validate_topic_configs({
        "cleanup.policy": "compact, delete",
        "preallocate": "TRUE",
        "min.cleanable.dirty.ratio": ".25",
        "retention.ms": " -1 ",
        "segment.bytes": "14",
        "message.timestamp.type": "LogAppendTime",
        "compression.type": "zstd",
    }) == {
        "cleanup.policy": "compact,delete",
        "preallocate": "true",
        "min.cleanable.dirty.ratio": "0.25",
        "retention.ms": "-1",
        "segment.bytes": "14",
        "message.timestamp.type": "LogAppendTime",
        "compression.type": "zstd",
    }
    assert validate_topic_configs({}) == {}


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("segment.bytes", "13", "at least 14"),
        ("segment.bytes", "big", "expected an integer"),
        ("cleanup.policy", "foo", "'foo'"),
        ("cleanup.policy", "delete,delete", "twice"),
        ("message.timestamp.type", "createtime", "CreateTime, LogAppendTime"),
        ("min.cleanable.dirty.ratio", "1.5", "between 0 and 1"),
        ("min.cleanable.dirty.ratio", "-0.1", "between 0 and 1"),
        ("min.cleanable.dirty.ratio", "NaN", "expected a number"),
        ("retention.ms", "-2", "at least -1"),
        ("segment.ms", "0", "at least 1"),
        ("flush.messages", "0", "at least 1"),
        ("max.compaction.lag.ms", "0", "at least 1"),
        ("segment.index.bytes", "3", "at least 4"),
        ("compression.type", "brotli", "'brotli'"),
        ("preallocate", "1", "true or false"),
        ("no.such.config", "1", "unknown topic config"),
        ("retention.bytes", None, "null"),
    ],
)
def test_bad_topic_configs_raise_invalid_config_naming_the_key(
    name: str, value: str | None, fragment: str
) -> None:
    with pytest.raises(InvalidConfigError) as info:
        validate_topic_configs({"retention.bytes": "100", name: value})
    assert info.value.code == ErrorCode.invalid_config
    assert str(info.value).startswith(f"{name}: ")
    assert fragment in str(info.value)


def test_compaction_lag_conflict_is_checked_alone_and_against_broker_defaults() -> None:
    with pytest.raises(InvalidConfigError, match="^min.compaction.lag.ms: conflicts"):
        validate_topic_configs({"min.compaction.lag.ms": "10", "max.compaction.lag.ms": "5"})
    config = broker(log_cleaner_max_compaction_lag_ms="100")
    assert validate_topic_configs({"min.compaction.lag.ms": "1000"}) == {
        "min.compaction.lag.ms": "1000"
    }
    with pytest.raises(InvalidConfigError, match="^min.compaction.lag.ms: conflicts"):
        validate_topic_configs({"min.compaction.lag.ms": "1000"}, broker=config)


def test_with_a_broker_the_storage_engines_limits_apply_too() -> None:
    assert validate_topic_configs({"segment.index.bytes": "8"}) == {"segment.index.bytes": "8"}
    assert validate_topic_configs({"segment.index.bytes": "8"}, broker=BrokerConfig()) == {
        "segment.index.bytes": "8"
    }
    with pytest.raises(InvalidConfigError, match="segment.index.bytes"):
        validate_topic_configs({"segment.index.bytes": "3"}, broker=BrokerConfig())


@given(st.sampled_from(sorted(n for n, d in TOPIC_CONFIGS.items() if d.type is ConfigType.LONG)),
       st.integers(min_value=-1, max_value=LONG_MAX))
def test_long_topic_configs_accept_exactly_their_range(name: str, number: int) -> None:
    definition = TOPIC_CONFIGS[name]
    problem = definition.validator.check(number) if definition.validator else None
    if problem is None:
        assert validate_topic_configs({name: str(number)}) == {name: str(number)}
    else:
        with pytest.raises(InvalidConfigError, match=f"^{name}: "):
            validate_topic_configs({name: str(number)})


@given(st.integers(min_value=INT_MAX + 1, max_value=LONG_MAX))
def test_int_topic_configs_reject_longs(number: int) -> None:
    with pytest.raises(InvalidConfigError, match="^max.message.bytes: expected a 32-bit"):
        validate_topic_configs({"max.message.bytes": str(number)})


# -- effective topic configs (DescribeConfigs for topics) ----------------------------------------


def _by_name(entries: list) -> dict:  # type: ignore[type-arg]
    return {entry.name: entry for entry in entries}


def test_topic_entries_without_overrides_are_defaults() -> None:
    entries = effective_topic_configs(BrokerConfig(), {})
    assert [e.name for e in entries] == sorted(TOPIC_CONFIGS)
    for entry in entries:
        assert entry.source is DEFAULT and entry.is_default
        assert not entry.read_only and not entry.sensitive
        assert entry.config_type is TOPIC_CONFIGS[entry.name].type
        assert entry.documentation
        assert all(s.source is DEFAULT for s in entry.synonyms)
    by_name = _by_name(entries)
    assert by_name["retention.ms"].value == "604800000"
    assert by_name["retention.ms"].synonyms == (
        ConfigSynonym("log.retention.hours", "168", DEFAULT),
    )
    assert by_name["segment.ms"].synonyms == (ConfigSynonym("log.roll.hours", "168", DEFAULT),)
    assert by_name["flush.ms"].value == str(LONG_MAX)
    assert by_name["flush.ms"].synonyms == (
        ConfigSynonym("log.flush.scheduler.interval.ms", str(LONG_MAX), DEFAULT),
    )
    assert by_name["min.cleanable.dirty.ratio"].value == "0.5"
    assert by_name["cleanup.policy"].value == "delete"
    assert by_name["preallocate"].value == "false"
    assert by_name["max.message.bytes"].synonyms == (
        ConfigSynonym("message.max.bytes", "1048588", DEFAULT),
    )


def test_topic_override_is_dynamic_topic_config_first_in_synonyms() -> None:
    config = broker(log_retention_hours="24")
    by_name = _by_name(effective_topic_configs(
        config, {"retention.ms": "1000", "cleanup.policy": "compact,delete"}
    ))
    entry = by_name["retention.ms"]
    assert (entry.value, entry.source, entry.is_default) == ("1000", TOPIC, False)
    assert entry.synonyms == (
        ConfigSynonym("retention.ms", "1000", TOPIC),
        ConfigSynonym("log.retention.hours", "24", STATIC),
        ConfigSynonym("log.retention.hours", "168", DEFAULT),
    )
    assert by_name["cleanup.policy"].value == "compact,delete"
    assert by_name["cleanup.policy"].source is TOPIC


def test_broker_file_settings_show_as_static_broker_config() -> None:
    config = broker(log_retention_hours="24", log_retention_ms="5000", log_segment_bytes="1048576")
    by_name = _by_name(effective_topic_configs(config, {}))
    retention = by_name["retention.ms"]
    assert (retention.value, retention.source, retention.is_default) == ("5000", STATIC, False)
    assert retention.synonyms == (
        ConfigSynonym("log.retention.ms", "5000", STATIC),
        ConfigSynonym("log.retention.hours", "24", STATIC),
        ConfigSynonym("log.retention.hours", "168", DEFAULT),
    )
    segment = by_name["segment.bytes"]
    assert (segment.value, segment.source) == ("1048576", STATIC)
    assert by_name["segment.ms"].source is DEFAULT


def test_effective_topic_configs_reject_bad_stored_overrides() -> None:
    with pytest.raises(InvalidConfigError, match="^bogus: unknown topic config"):
        effective_topic_configs(BrokerConfig(), {"bogus": "1"})
    with pytest.raises(InvalidConfigError, match="^segment.bytes: "):
        effective_topic_configs(BrokerConfig(), {"segment.bytes": "1"})


# -- broker entries (DescribeConfigs for the broker) --------------------------------------------


def test_broker_entries_are_read_only_with_sources() -> None:
    config = broker(num_partitions="3", listeners="PLAINTEXT://127.0.0.1:9092")
    entries = broker_config_entries(config)
    assert [e.name for e in entries] == sorted(BROKER_CONFIGS)
    assert all(e.read_only and not e.sensitive for e in entries)
    by_name = _by_name(entries)
    partitions = by_name["num.partitions"]
    assert (partitions.value, partitions.source, partitions.is_default) == ("3", STATIC, False)
    assert partitions.synonyms == (
        ConfigSynonym("num.partitions", "3", STATIC),
        ConfigSynonym("num.partitions", "1", DEFAULT),
    )
    assert partitions.config_type is ConfigType.INT
    assert by_name["listeners"].value == "PLAINTEXT://127.0.0.1:9092"
    assert by_name["listeners"].source is STATIC
    assert by_name["log.segment.bytes"].source is DEFAULT
    assert by_name["log.segment.bytes"].is_default
    assert by_name["log.retention.ms"].value is None
    assert by_name["log.retention.ms"].synonyms == ()
    assert by_name["log.cleaner.io.max.bytes.per.second"].value == "1.7976931348623157E308"
    assert by_name["auto.create.topics.enable"].value == "true"
    assert by_name["log.cleanup.policy"].value == "delete"
    assert by_name["listener.security.protocol.map"].value.startswith("PLAINTEXT:PLAINTEXT,")


def test_cli_overrides_are_static_in_broker_entries() -> None:
    config = BrokerConfig().with_overrides(listen="127.0.0.1:0", data_dir="/data")
    by_name = _by_name(broker_config_entries(config))
    assert (by_name["listeners"].value, by_name["listeners"].source) == (
        "PLAINTEXT://127.0.0.1:0", STATIC,
    )
    assert (by_name["log.dirs"].value, by_name["log.dirs"].source) == ("/data", STATIC)


def test_broker_synonyms_follow_kafkas_groups_and_drop_those_ahead_of_the_name() -> None:
    config = broker(log_retention_ms="5000", log_retention_hours="24", log_roll_ms="1000",
                    log_flush_scheduler_interval_ms="3000")
    by_name = _by_name(broker_config_entries(config))
    assert by_name["log.retention.ms"].synonyms == (  # the name first, then those behind it
        ConfigSynonym("log.retention.ms", "5000", STATIC),
        ConfigSynonym("log.retention.hours", "24", STATIC),
        ConfigSynonym("log.retention.hours", "168", DEFAULT),
    )
    hours = by_name["log.retention.hours"]
    assert (hours.value, hours.source) == ("24", STATIC)
    assert hours.synonyms == (
        ConfigSynonym("log.retention.hours", "24", STATIC),
        ConfigSynonym("log.retention.hours", "168", DEFAULT),
    )
    minutes = by_name["log.retention.minutes"]  # unset, null default: Kafka lists nothing
    assert (minutes.value, minutes.source, minutes.synonyms) == (None, DEFAULT, ())
    roll_hours = by_name["log.roll.hours"]  # log.roll.ms is set, but it is ahead of the name
    assert (roll_hours.source, roll_hours.synonyms) == (
        DEFAULT, (ConfigSynonym("log.roll.hours", "168", DEFAULT),),
    )
    flush = by_name["log.flush.interval.ms"]  # its fallback is set, it is not
    assert (flush.value, flush.source, flush.synonyms) == (None, DEFAULT, ())
    assert by_name["log.flush.scheduler.interval.ms"].synonyms[0] == ConfigSynonym(
        "log.flush.scheduler.interval.ms", "3000", STATIC,
    )


def test_unset_advertised_listeners_report_what_the_broker_advertises() -> None:
    config = BrokerConfig().with_overrides(listen="127.0.0.1:0")
    bound = Listener("PLAINTEXT", "127.0.0.1", 40123)
    entry = _by_name(broker_config_entries(config, bound))["advertised.listeners"]
    assert (entry.value, entry.source, entry.is_default) == (
        "PLAINTEXT://127.0.0.1:40123", STATIC, False,
    )
    assert entry.synonyms == (
        ConfigSynonym("listeners", "PLAINTEXT://127.0.0.1:0", STATIC),
        ConfigSynonym("listeners", "PLAINTEXT://:9092", DEFAULT),
    )
    untouched = _by_name(broker_config_entries(BrokerConfig()))["advertised.listeners"]
    assert (untouched.value, untouched.source) == (
        f"PLAINTEXT://{socket.gethostname()}:9092", DEFAULT,
    )
    explicit = broker(advertised_listeners="PLAINTEXT://kafka:9092")
    entry = _by_name(broker_config_entries(explicit, bound))["advertised.listeners"]
    assert (entry.value, entry.source) == ("PLAINTEXT://kafka:9092", STATIC)
    assert entry.synonyms == (ConfigSynonym("advertised.listeners", "PLAINTEXT://kafka:9092",
                                            STATIC),)


# -- one declaration per default ------------------------------------------------------------------


def test_broker_config_has_one_field_per_table_key_with_the_tables_default() -> None:
    names = {f.name for f in fields(BrokerConfig)} - {"explicit_keys", "warnings"}
    assert names == {key.replace(".", "_") for key in BROKER_CONFIGS}
    config = BrokerConfig()
    for key, definition in BROKER_CONFIGS.items():
        assert config.value_of(key) == definition.default, key


def test_a_table_key_without_a_field_is_refused_when_the_class_is_made() -> None:
    from odradek.config._broker import _FROM_TABLE, _defaults_from_table

    class Partial:
        num_partitions: int = _FROM_TABLE

    with pytest.raises(TypeError, match="lacks fields for"):
        _defaults_from_table(Partial)


def test_topic_defaults_follow_the_broker_table() -> None:
    assert TOPIC_CONFIGS["segment.bytes"].default == BROKER_CONFIGS["log.segment.bytes"].default
    assert TOPIC_CONFIGS["retention.ms"].default == 168 * 3600 * 1000
    assert TOPIC_CONFIGS["flush.ms"].default == LONG_MAX
    assert TOPIC_CONFIGS["cleanup.policy"].default == ("delete",)


# -- empty cleanup.policy ---------------------------------------------------------------------------


def test_empty_cleanup_policy_means_neither_delete_nor_compact() -> None:
    assert validate_topic_configs({"cleanup.policy": ""}) == {"cleanup.policy": ""}
    assert validate_topic_configs({"cleanup.policy": " "}, broker=BrokerConfig()) == {
        "cleanup.policy": ""
    }
    log_config = log_config_for(BrokerConfig(), {"cleanup.policy": ""})
    assert log_config.cleanup_policy == ""
    assert not log_config.delete and not log_config.compact
    by_name = _by_name(effective_topic_configs(BrokerConfig(), {"cleanup.policy": ""}))
    assert (by_name["cleanup.policy"].value, by_name["cleanup.policy"].source) == ("", TOPIC)
    # The broker-wide default may be empty too.
    config = broker(log_cleanup_policy="")
    assert config.log_cleanup_policy == ()
    assert config.default_log_config().cleanup_policy == ""


@pytest.mark.parametrize(
    "value, text",
    [(0.5, "0.5"), (1.0, "1.0"), (0.001, "0.001"), (0.0001, "1.0E-4"), (1e7, "1.0E7"),
     (12345678.0, "1.2345678E7"), (9999999.0, "9999999.0"), (DOUBLE_MAX, "1.7976931348623157E308"),
     (0.0, "0.0"), (-2.5, "-2.5")],
)
def test_doubles_print_like_java(value: float, text: str) -> None:
    assert BROKER_CONFIGS["log.cleaner.io.max.bytes.per.second"].format(value) == text


# -- LogConfig mapping --------------------------------------------------------------------------


def test_log_config_for_applies_overrides_over_broker_defaults() -> None:
    config = broker(
        log_segment_bytes="1048576", log_retention_minutes="10", message_max_bytes="500"
    )
    log_config = log_config_for(config, {
        "cleanup.policy": "compact,delete",
        "message.timestamp.type": "LogAppendTime",
        "retention.bytes": "4096",
        "flush.messages": "1",
    })
    assert log_config == LogConfig(
        segment_bytes=1048576,
        segment_ms=604800000,
        segment_index_bytes=10485760,
        index_interval_bytes=4096,
        retention_ms=600000,
        retention_bytes=4096,
        flush_messages=1,
        flush_ms=LONG_MAX,
        message_timestamp_type="LogAppendTime",
        max_message_bytes=500,
        file_delete_delay_ms=60000,
        cleanup_policy="compact,delete",
    )


def test_log_config_for_rejects_invalid_overrides() -> None:
    with pytest.raises(InvalidConfigError, match="^retention.ms: "):
        log_config_for(BrokerConfig(), {"retention.ms": "soon"})


def test_cluster_keys() -> None:
    config = BrokerConfig.from_properties(
        {
            "etcd.endpoints": "http://127.0.0.1:2379,http://127.0.0.1:2381",
            "broker.rack": "r1",
            "broker.session.timeout.ms": "3000",
        }
    )
    assert config.etcd_endpoints == ("http://127.0.0.1:2379", "http://127.0.0.1:2381")
    assert (config.etcd_prefix, config.broker_rack) == ("/odradek", "r1")
    assert config.broker_session_timeout_ms == 3000
    assert not config.warnings  # broker.rack is acted on now, no longer ignored
    assert BrokerConfig().etcd_endpoints == ()
    with pytest.raises(ConfigError, match=r"^etcd\.endpoints: expected http://"):
        BrokerConfig.from_properties({"etcd.endpoints": "127.0.0.1:2379"})
    with pytest.raises(ConfigError, match=r"^broker\.session\.timeout\.ms"):
        BrokerConfig.from_properties({"broker.session.timeout.ms": "10"})
