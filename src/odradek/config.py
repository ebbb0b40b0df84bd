"""Broker and topic configuration, in Kafka's vocabulary and with Kafka's defaults.

Two halves:

- :class:`BrokerConfig` — the static broker settings, read from a Java-properties file
  (``server.properties`` style) by :func:`load_properties` / :meth:`BrokerConfig.from_properties`,
  then adjusted by the CLI with :meth:`BrokerConfig.with_overrides`. Field names are Kafka's keys
  with dots replaced by underscores (``log.segment.bytes`` -> ``log_segment_bytes``); the defaults
  are Kafka 3.x's.
- Topic configs — :data:`TOPIC_CONFIGS` describes every topic-level setting we know, which broker
  setting it defaults from (its "synonym"), its type and its validation.
  :func:`validate_topic_configs` checks what a client sends in CreateTopics / AlterConfigs,
  :func:`effective_topic_configs` and :func:`broker_config_entries` build DescribeConfigs answers
  and :func:`log_config_for` turns a topic's overrides into the storage engine's ``LogConfig``.

Everything here is pure: no clocks, no sockets (the one exception is
:meth:`BrokerConfig.advertised_listener`, which asks the OS for its host name when the broker binds
to the wildcard address and nothing else was advertised). Errors in the broker's own file are
:class:`ConfigError` (a ``ValueError``: the process should refuse to start); errors in what a client
sends are :class:`odradek.errors.InvalidConfigError` (Kafka's INVALID_CONFIG). Both messages start
with the offending key.

Deliberate differences from Kafka:

- One PLAINTEXT listener and one log directory; anything else is refused with a clear message.
  Listeners named in ``controller.listener.names`` are dropped (with a warning) so Kafka's stock
  KRaft ``server.properties`` works unchanged.
- Keys Kafka knows but odradek does not act on (thread pools, socket buffers, ZooKeeper, KRaft
  controller, TLS/SASL, replication...) are accepted and recorded in :attr:`BrokerConfig.warnings`;
  see :data:`IGNORED_BROKER_KEYS` and :data:`IGNORED_BROKER_KEY_PREFIXES`. Other keys are errors.
- DescribeConfigs synonyms list every broker synonym that is set, in precedence order (for
  ``retention.ms``: ``log.retention.ms``, ``log.retention.minutes``, ``log.retention.hours``), and
  the source of a topic config follows the first of them. Kafka drops the time-unit variants from
  the list (so a file with only ``log.retention.hours`` shows up as DEFAULT_CONFIG there); we
  report it as STATIC_BROKER_CONFIG, which is what actually happened.
- ``cluster.id`` may be set in the file (an odradek extension); the broker otherwise generates one.
"""

from __future__ import annotations

import difflib
import math
import re
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from odradek.errors import InvalidConfigError

if TYPE_CHECKING:
    from odradek.storage.log_config import LogConfig

__all__ = [
    "INT_MAX",
    "LONG_MAX",
    "DOUBLE_MAX",
    "ConfigType",
    "ConfigSource",
    "ConfigError",
    "Validator",
    "AtLeast",
    "Between",
    "OneOf",
    "ListOf",
    "ConfigDef",
    "ConfigSynonym",
    "ConfigEntry",
    "Listener",
    "BrokerConfig",
    "BROKER_CONFIGS",
    "BROKER_KEY_ALIASES",
    "IGNORED_BROKER_KEYS",
    "IGNORED_BROKER_KEY_PREFIXES",
    "TOPIC_CONFIGS",
    "parse_properties",
    "load_properties",
    "validate_topic_configs",
    "effective_topic_values",
    "effective_topic_configs",
    "log_config_for",
    "broker_config_entries",
]

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
SHORT_MIN = -(2**15)
SHORT_MAX = 2**15 - 1
LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
DOUBLE_MAX = sys.float_info.max

_MS_PER_MINUTE = 60 * 1000
_MS_PER_HOUR = 60 * _MS_PER_MINUTE


class ConfigType(IntEnum):
    """DescribeConfigs ``config_type`` codes (Kafka's ConfigDef.Type)."""

    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7
    CLASS = 8
    PASSWORD = 9


class ConfigSource(IntEnum):
    """DescribeConfigs ``config_source`` codes."""

    UNKNOWN = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5
    DYNAMIC_BROKER_LOGGER_CONFIG = 6


class ConfigError(ValueError):
    """The broker's configuration is unusable; the message starts with the offending key."""

    def __init__(self, key: str | None, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


# -- validators ---------------------------------------------------------------------------------


class Validator(Protocol):
    """Checks an already-typed value; returns the problem's description, or None if it is fine."""

    def check(self, value: Any) -> str | None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AtLeast:
    minimum: int | float

    def check(self, value: Any) -> str | None:
        if value is not None and value < self.minimum:
            return f"must be at least {self.minimum}, got {_plain(value)}"
        return None

    def describe(self) -> str:
        return f"[{self.minimum},...]"


@dataclass(frozen=True, slots=True)
class Between:
    low: int | float
    high: int | float

    def check(self, value: Any) -> str | None:
        if value is not None and not (self.low <= value <= self.high):
            return f"must be between {self.low} and {self.high}, got {_plain(value)}"
        return None

    def describe(self) -> str:
        return f"[{self.low},...,{self.high}]"


@dataclass(frozen=True, slots=True)
class OneOf:
    """A string from a fixed set (case-sensitive, as Kafka's ValidString)."""

    choices: tuple[str, ...]

    def check(self, value: Any) -> str | None:
        if value is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        return None

    def describe(self) -> str:
        return "[" + ", ".join(self.choices) + "]"


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list whose items all come from a fixed set."""

    choices: tuple[str, ...]
    allow_empty: bool = False

    def check(self, value: Any) -> str | None:
        if value is None:
            return None
        if not value and not self.allow_empty:
            return f"must list at least one of {', '.join(self.choices)}"
        for item in value:
            if item not in self.choices:
                return f"must be a list of {', '.join(self.choices)}, got {item!r}"
        if len(set(value)) != len(value):
            return f"lists a value twice: {','.join(value)!r}"
        return None

    def describe(self) -> str:
        return "[" + ", ".join(self.choices) + "]"


def _plain(value: Any) -> str:
    return _java_double(value) if isinstance(value, float) else str(value)


# -- typed values ------------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]+")
_JAVA_TRIMMED = "".join(chr(code) for code in range(0x21))
_DOUBLE_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _java_trim(text: str) -> str:
    """Java's ``String.trim``: strips every character up to and including U+0020, nothing else."""
    return text.strip(_JAVA_TRIMMED)


def _java_double(value: float) -> str:
    """Format a float as Java's ``Double.toString`` does (which is how Kafka prints doubles)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    magnitude = abs(value)
    sign = "-" if value < 0 else ""
    if 1e-3 <= magnitude < 1e7:
        text = repr(magnitude)
        return sign + (text if "." in text else text + ".0")
    parts = Decimal(repr(magnitude)).as_tuple()
    digits = "".join(map(str, parts.digits))
    exponent = len(digits) + int(parts.exponent) - 1
    digits = digits.rstrip("0") or "0"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exponent}"


@dataclass(frozen=True, slots=True)
class ConfigDef:
    """One Kafka setting: its name, type, default (already typed; None means null) and checks.

    ``synonyms`` is only set for topic configs: the broker settings the topic default comes from, in
    precedence order (``retention.ms`` <- ``log.retention.ms``, ``log.retention.minutes``,
    ``log.retention.hours``).
    """

    name: str
    type: ConfigType
    default: Any
    doc: str
    validator: Validator | None = None
    synonyms: tuple[str, ...] = ()
    sensitive: bool = False

    @property
    def broker_synonym(self) -> str | None:
        """The main broker setting this topic config defaults from."""
        return self.synonyms[0] if self.synonyms else None

    def parse(self, raw: str) -> Any:
        """Convert a string to this setting's type and validate it; raises :class:`ConfigError`."""
        value = self._convert(_java_trim(raw))
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        """Validate an already-typed value; raises :class:`ConfigError`."""
        if self.validator is not None:
            problem = self.validator.check(value)
            if problem is not None:
                raise ConfigError(self.name, problem)

    def format(self, value: Any) -> str | None:
        """The string form Kafka prints for a typed value (None stays None, i.e. null)."""
        if value is None or self.sensitive:
            return None
        if self.type is ConfigType.BOOLEAN:
            return "true" if value else "false"
        if self.type is ConfigType.DOUBLE:
            return _java_double(float(value))
        if self.type is ConfigType.LIST:
            return ",".join(str(item) for item in value)
        return str(value)

    def _convert(self, text: str) -> Any:
        kind = self.type
        if kind is ConfigType.BOOLEAN:
            lowered = text.lower()
            if lowered not in ("true", "false"):
                raise ConfigError(self.name, f"expected true or false, got {text!r}")
            return lowered == "true"
        if kind in (ConfigType.INT, ConfigType.SHORT, ConfigType.LONG):
            if not _INT_RE.fullmatch(text):
                raise ConfigError(self.name, f"expected an integer, got {text!r}")
            number = int(text)
            low, high, what = {
                ConfigType.SHORT: (SHORT_MIN, SHORT_MAX, "a 16-bit"),
                ConfigType.INT: (INT_MIN, INT_MAX, "a 32-bit"),
                ConfigType.LONG: (LONG_MIN, LONG_MAX, "a 64-bit"),
            }[kind]
            if not (low <= number <= high):
                raise ConfigError(
                    self.name, f"expected {what} integer, got {text!r} (out of range)"
                )
            return number
        if kind is ConfigType.DOUBLE:
            if not _DOUBLE_RE.fullmatch(text):
                raise ConfigError(self.name, f"expected a number, got {text!r}")
            number_f = float(text)
            if math.isinf(number_f):
                raise ConfigError(self.name, f"expected a finite number, got {text!r}")
            return number_f
        if kind is ConfigType.LIST:
            if not text:
                return ()
            return tuple(_java_trim(item) for item in text.split(","))
        return text


def _int(name: str, default: int | None, doc: str, *, minimum: int | None = None,
         synonyms: tuple[str, ...] = ()) -> ConfigDef:
    validator = AtLeast(minimum) if minimum is not None else None
    return ConfigDef(name, ConfigType.INT, default, doc, validator, synonyms)


def _long(name: str, default: int | None, doc: str, *, minimum: int | None = None,
          synonyms: tuple[str, ...] = ()) -> ConfigDef:
    validator = AtLeast(minimum) if minimum is not None else None
    return ConfigDef(name, ConfigType.LONG, default, doc, validator, synonyms)


def _bool(name: str, default: bool, doc: str, *, synonyms: tuple[str, ...] = ()) -> ConfigDef:
    return ConfigDef(name, ConfigType.BOOLEAN, default, doc, None, synonyms)


def _table(defs: Iterable[ConfigDef]) -> dict[str, ConfigDef]:
    return {d.name: d for d in defs}


_CLEANUP_POLICIES = ("compact", "delete")
_TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
_COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
#: The smallest segment that can hold one record (Kafka 3.x's LegacyRecord.RECORD_OVERHEAD_V0).
MIN_SEGMENT_BYTES = 14


# -- broker configuration ----------------------------------------------------------------------

BROKER_CONFIGS: Mapping[str, ConfigDef] = _table([
    ConfigDef("listeners", ConfigType.LIST, ("PLAINTEXT://:9092",),
              "Where the broker accepts connections, as NAME://host:port; an empty host means all "
              "interfaces, port 0 a free port. odradek serves exactly one PLAINTEXT listener."),
    ConfigDef("advertised.listeners", ConfigType.LIST, None,
              "The listener clients are told to connect to, if it differs from `listeners`."),
    ConfigDef("listener.security.protocol.map", ConfigType.STRING,
              "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
              "Maps listener names to security protocols, as NAME:PROTOCOL pairs."),
    ConfigDef("controller.listener.names", ConfigType.LIST, (),
              "Listener names used by a KRaft controller; odradek ignores those listeners."),
    _int("node.id", 1, "This broker's id (also accepted as `broker.id`).", minimum=0),
    ConfigDef("log.dirs", ConfigType.LIST, ("/tmp/kafka-logs",),
              "The directory holding the broker's data (`log.dir` is accepted too); odradek "
              "supports exactly one."),
    ConfigDef("cluster.id", ConfigType.STRING, None,
              "The cluster id (22 characters of URL-safe base64); generated on first start if "
              "unset. An odradek extension; Kafka keeps it only in meta.properties."),
    _int("num.partitions", 1, "Partitions of an automatically created topic.", minimum=1),
    _int("default.replication.factor", 1, "Replication factor of an automatically created topic.",
         minimum=1),
    _bool("auto.create.topics.enable", True,
          "Create a topic when a client asks for metadata of, or produces to, an unknown one."),
    _bool("delete.topic.enable", True, "Allow DeleteTopics."),
    _int("log.segment.bytes", 1024 * 1024 * 1024, "Largest size of one segment file.",
         minimum=MIN_SEGMENT_BYTES),
    _long("log.roll.ms", None, "Roll a new segment after this long; overrides log.roll.hours.",
          minimum=1),
    _int("log.roll.hours", 168, "Roll a new segment after this many hours.", minimum=1),
    _long("log.roll.jitter.ms", None, "Largest random amount subtracted from the roll time; "
          "overrides log.roll.jitter.hours.", minimum=0),
    _int("log.roll.jitter.hours", 0, "Largest random number of hours subtracted from the roll "
         "time.", minimum=0),
    _long("log.retention.ms", None, "Delete segments older than this; -1 keeps them forever. "
          "Wins over log.retention.minutes and log.retention.hours."),
    _int("log.retention.minutes", None, "Retention time in minutes; wins over "
         "log.retention.hours."),
    _int("log.retention.hours", 168, "Retention time in hours."),
    _long("log.retention.bytes", -1, "Delete old segments while a partition is larger than this; "
          "-1 means no size limit."),
    _long("log.retention.check.interval.ms", 300000, "How often retention is enforced.",
          minimum=1),
    ConfigDef("log.cleanup.policy", ConfigType.LIST, ("delete",),
              "What happens to old segments: delete, compact, or both.",
              ListOf(_CLEANUP_POLICIES)),
    _long("log.flush.interval.messages", LONG_MAX, "fsync a partition after this many "
          "messages.", minimum=1),
    _long("log.flush.interval.ms", None, "fsync a partition when its oldest unflushed message is "
          "this old; null falls back to log.flush.scheduler.interval.ms.", minimum=0),
    _long("log.flush.scheduler.interval.ms", LONG_MAX, "How often to look for partitions that "
          "need an fsync; also the default of log.flush.interval.ms."),
    _int("log.index.interval.bytes", 4096, "Add an offset index entry every this many bytes.",
         minimum=0),
    _int("log.index.size.max.bytes", 10 * 1024 * 1024, "Largest size of an offset or time index.",
         minimum=4),
    ConfigDef("log.message.timestamp.type", ConfigType.STRING, "CreateTime",
              "Whether a record's timestamp is the producer's (CreateTime) or the broker's "
              "(LogAppendTime).", OneOf(_TIMESTAMP_TYPES)),
    _long("log.message.timestamp.difference.max.ms", LONG_MAX, "Largest allowed distance between a "
          "CreateTime timestamp and the broker's clock.", minimum=0),
    _long("log.message.timestamp.before.max.ms", LONG_MAX, "How far in the past a CreateTime "
          "timestamp may be.", minimum=0),
    _long("log.message.timestamp.after.max.ms", LONG_MAX, "How far in the future a CreateTime "
          "timestamp may be.", minimum=0),
    _bool("log.message.downconversion.enable", True, "Down-convert batches for old fetchers."),
    _bool("log.preallocate", False, "Preallocate segment files."),
    _long("log.segment.delete.delay.ms", 60000, "Wait this long before removing a deleted "
          "segment's files.", minimum=0),
    ConfigDef("compression.type", ConfigType.STRING, "producer",
              "Compression of stored batches; 'producer' keeps what the producer sent.",
              OneOf(_COMPRESSION_TYPES)),
    _int("message.max.bytes", 1048588, "Largest record batch the broker accepts.", minimum=0),
    _int("socket.request.max.bytes", 104857600, "Largest request frame the broker reads.",
         minimum=1),
    _int("min.insync.replicas", 1, "Replicas that must have a write for acks=all.", minimum=1),
    _bool("unclean.leader.election.enable", False, "Allow an out-of-sync replica to lead."),
    _int("offsets.topic.num.partitions", 50, "Partitions of __consumer_offsets.", minimum=1),
    ConfigDef("offsets.topic.replication.factor", ConfigType.SHORT, 3,
              "Replication factor of __consumer_offsets.", AtLeast(1)),
    _int("offsets.retention.minutes", 10080, "Keep committed offsets of an empty group this "
         "long.", minimum=1),
    _long("offsets.retention.check.interval.ms", 600000, "How often stale offsets are removed.",
          minimum=1),
    _int("transaction.state.log.num.partitions", 50, "Partitions of __transaction_state.",
         minimum=1),
    _int("transactional.id.expiration.ms", 604800000, "Forget a transactional id after this long "
         "without activity.", minimum=1),
    _int("transaction.abort.timed.out.transaction.cleanup.interval.ms", 10000, "How often "
         "transactions past their timeout are aborted.", minimum=1),
    _int("transaction.remove.expired.transaction.cleanup.interval.ms", 3600000, "How often "
         "transactional ids past transactional.id.expiration.ms are removed.", minimum=1),
    _int("transaction.max.timeout.ms", 900000, "Largest transaction timeout a producer may ask "
         "for.", minimum=1),
    _int("producer.id.expiration.check.interval.ms", 600000, "How often idle producer ids "
         "are forgotten.", minimum=1),
    _int("producer.id.expiration.ms", 86400000, "Forget an idle producer id's state after this "
         "long.", minimum=1),
    _int("group.initial.rebalance.delay.ms", 3000, "How long a new group waits for more members "
         "before its first rebalance.", minimum=0),
    _int("group.min.session.timeout.ms", 6000, "Smallest session timeout a member may ask for."),
    _int("group.max.session.timeout.ms", 1800000, "Largest session timeout a member may ask "
         "for."),
    _int("group.max.size", INT_MAX, "Most members one consumer group may have.", minimum=1),
    ConfigDef("group.coordinator.rebalance.protocols", ConfigType.LIST, ("classic", "consumer"),
              "Group protocols the coordinator serves.", ListOf(("classic", "consumer"))),
    _int("group.consumer.session.timeout.ms", 45000, "Session timeout of KIP-848 consumer group "
         "members.", minimum=1),
    _int("group.consumer.min.session.timeout.ms", 45000, "Smallest session timeout of a consumer "
         "group.", minimum=1),
    _int("group.consumer.max.session.timeout.ms", 60000, "Largest session timeout of a consumer "
         "group.", minimum=1),
    _int("group.consumer.heartbeat.interval.ms", 5000, "Heartbeat interval given to KIP-848 "
         "consumer group members.", minimum=1),
    _int("group.consumer.min.heartbeat.interval.ms", 5000, "Smallest heartbeat interval of a "
         "consumer group.", minimum=1),
    _int("group.consumer.max.heartbeat.interval.ms", 15000, "Largest heartbeat interval of a "
         "consumer group.", minimum=1),
    _int("group.consumer.max.size", INT_MAX, "Most members one KIP-848 consumer group may have.",
         minimum=1),
    ConfigDef("group.consumer.assignors", ConfigType.LIST, ("uniform", "range"),
              "Server-side assignors of KIP-848 consumer groups; the first is the default.",
              ListOf(("uniform", "range"))),
    _bool("log.cleaner.enable", True, "Run the log cleaner (needed for compacted topics)."),
    _int("log.cleaner.threads", 1, "Threads compacting logs.", minimum=0),
    _long("log.cleaner.backoff.ms", 15000, "Pause of the cleaner when no log needs cleaning.",
          minimum=0),
    _long("log.cleaner.dedupe.buffer.size", 128 * 1024 * 1024, "Memory for deduplicating keys "
          "during compaction, across all cleaner threads."),
    ConfigDef("log.cleaner.io.max.bytes.per.second", ConfigType.DOUBLE, DOUBLE_MAX,
              "Throttle on the cleaner's reads plus writes."),
    ConfigDef("log.cleaner.min.cleanable.ratio", ConfigType.DOUBLE, 0.5,
              "Smallest ratio of dirty to total log that makes a log worth compacting.",
              Between(0, 1)),
    _long("log.cleaner.delete.retention.ms", 86400000, "Keep tombstones of compacted topics this "
          "long.", minimum=0),
    _long("log.cleaner.min.compaction.lag.ms", 0, "A record stays uncompacted at least this long.",
          minimum=0),
    _long("log.cleaner.max.compaction.lag.ms", LONG_MAX, "A record becomes eligible for compaction "
          "after at most this long.", minimum=1),
])

#: Other spellings Kafka accepts: ``broker.id`` for ``node.id``, ``log.dir`` for ``log.dirs``
#: (``log.dirs`` wins when both are given).
BROKER_KEY_ALIASES: Mapping[str, str] = {"broker.id": "node.id", "log.dir": "log.dirs"}

#: Kafka broker settings accepted but not acted on (each one adds an entry to ``warnings``).
IGNORED_BROKER_KEYS: frozenset[str] = frozenset({
    "num.network.threads", "num.io.threads", "num.replica.fetchers",
    "num.recovery.threads.per.data.dir", "background.threads", "queued.max.requests",
    "queued.max.request.bytes", "socket.send.buffer.bytes", "socket.receive.buffer.bytes",
    "socket.listen.backlog.size", "socket.connection.setup.timeout.ms",
    "socket.connection.setup.timeout.max.ms", "connections.max.idle.ms",
    "connections.max.reauth.ms", "max.connections", "max.connections.per.ip",
    "max.connections.per.ip.overrides", "max.connection.creation.rate", "process.roles",
    "inter.broker.listener.name", "inter.broker.protocol.version", "security.inter.broker.protocol",
    "security.providers", "broker.rack", "reserved.broker.max.id", "broker.id.generation.enable",
    "auto.leader.rebalance.enable", "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr", "transaction.state.log.segment.bytes",
    "transaction.state.log.load.buffer.size",
    "transaction.partition.verification.enable",
    "offsets.topic.segment.bytes", "offsets.topic.compression.codec", "offsets.load.buffer.size",
    "offsets.commit.timeout.ms", "offsets.commit.required.acks",
    "log.flush.offset.checkpoint.interval.ms", "log.flush.start.offset.checkpoint.interval.ms",
    "log.cleaner.io.buffer.size", "log.cleaner.io.buffer.load.factor",
    "log.dir.failure.timeout.ms", "log.message.format.version", "log.local.retention.ms",
    "log.local.retention.bytes", "log.initial.task.delay.ms", "request.timeout.ms",
    "authorizer.class.name", "super.users", "allow.everyone.if.no.acl.found",
    "create.topic.policy.class.name", "alter.config.policy.class.name",
    "initial.broker.registration.timeout.ms", "broker.heartbeat.interval.ms",
    "broker.session.timeout.ms", "unstable.api.versions.enable", "unstable.feature.versions.enable",
    "fetch.max.bytes", "fetch.purgatory.purge.interval.requests",
    "producer.purgatory.purge.interval.requests",
    "delete.records.purgatory.purge.interval.requests",
    "compression.gzip.level", "compression.lz4.level", "compression.zstd.level",
    "auto.include.jmx.reporter", "principal.builder.class",
    "connection.failed.authentication.delay.ms",
})

#: Families of Kafka broker settings accepted but not acted on.
IGNORED_BROKER_KEY_PREFIXES: tuple[str, ...] = (
    "zookeeper.", "controller.", "listener.name.", "ssl.", "sasl.", "metric.", "metrics.",
    "kafka.metrics.", "replica.", "remote.log.", "leader.imbalance.", "metadata.", "quota.",
    "client.quota.", "password.encoder.", "delegation.token.", "group.share.",
    "share.", "alter.log.dirs.replication.quota.", "confluent.",
)

_WILDCARD_HOSTS = ("", "0.0.0.0", "::")
_LISTENER_RE = re.compile(
    r"([A-Za-z0-9_-]+)://(\[[0-9A-Za-z:.%]*\]|[^:/\[\]\s]*):(-?[0-9]+)"
)
_CLUSTER_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass(frozen=True, slots=True)
class Listener:
    """One ``NAME://host:port`` endpoint. An empty host means all interfaces, port 0 a free port."""

    name: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}://{host}:{self.port}"

    @classmethod
    def parse(cls, key: str, text: str) -> Listener:
        match = _LISTENER_RE.fullmatch(text.strip())
        if match is None:
            raise ConfigError(key, f"expected NAME://host:port, got {text.strip()!r}")
        name, host, port_text = match.groups()
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ConfigError(key, f"port must be between 0 and 65535, got {port}")
        return cls(name.upper(), host.strip("[]"), port)


def _listener_list(key: str, items: Iterable[str]) -> tuple[Listener, ...]:
    listeners = tuple(Listener.parse(key, item) for item in items)
    names = [listener.name for listener in listeners]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(key, f"listener name {name} is used twice")
    return listeners


def _protocol_map(key: str, text: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, protocol = item.partition(":")
        if not sep or not name.strip() or not protocol.strip():
            raise ConfigError(key, f"expected NAME:PROTOCOL pairs, got {item!r}")
        pairs.append((name.strip().upper(), protocol.strip().upper()))
    return tuple(pairs)


def _field_name(key: str) -> str:
    return key.replace(".", "_")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """The broker's static configuration (immutable; build a new one to change anything).

    Construct it with :meth:`from_properties` / :func:`load_properties` (Kafka key names) or
    directly with keyword arguments (field names). Either way every value is validated on
    construction and a bad one raises :class:`ConfigError` naming the Kafka key. ``explicit_keys``
    records which Kafka keys were set (they are STATIC_BROKER_CONFIG in DescribeConfigs),
    ``warnings`` the keys that were accepted but ignored.

    A plain value: no owner, shareable between threads; nothing is persisted from here.
    """

    listeners: tuple[Listener, ...] = (Listener("PLAINTEXT", "", 9092),)
    advertised_listeners: tuple[Listener, ...] | None = None
    listener_security_protocol_map: tuple[tuple[str, str], ...] = (
        ("PLAINTEXT", "PLAINTEXT"), ("SSL", "SSL"), ("SASL_PLAINTEXT", "SASL_PLAINTEXT"),
        ("SASL_SSL", "SASL_SSL"),
    )
    controller_listener_names: tuple[str, ...] = ()
    node_id: int = 1
    log_dirs: tuple[str, ...] = ("/tmp/kafka-logs",)
    cluster_id: str | None = None
    num_partitions: int = 1
    default_replication_factor: int = 1
    auto_create_topics_enable: bool = True
    delete_topic_enable: bool = True
    log_segment_bytes: int = 1024 * 1024 * 1024
    log_roll_ms: int | None = None
    log_roll_hours: int = 168
    log_roll_jitter_ms: int | None = None
    log_roll_jitter_hours: int = 0
    log_retention_ms: int | None = None
    log_retention_minutes: int | None = None
    log_retention_hours: int = 168
    log_retention_bytes: int = -1
    log_retention_check_interval_ms: int = 300000
    log_cleanup_policy: tuple[str, ...] = ("delete",)
    log_flush_interval_messages: int = LONG_MAX
    log_flush_interval_ms: int | None = None
    log_flush_scheduler_interval_ms: int = LONG_MAX
    log_index_interval_bytes: int = 4096
    log_index_size_max_bytes: int = 10 * 1024 * 1024
    log_message_timestamp_type: str = "CreateTime"
    log_message_timestamp_difference_max_ms: int = LONG_MAX
    log_message_timestamp_before_max_ms: int = LONG_MAX
    log_message_timestamp_after_max_ms: int = LONG_MAX
    log_message_downconversion_enable: bool = True
    log_preallocate: bool = False
    log_segment_delete_delay_ms: int = 60000
    compression_type: str = "producer"
    message_max_bytes: int = 1048588
    socket_request_max_bytes: int = 104857600
    min_insync_replicas: int = 1
    unclean_leader_election_enable: bool = False
    offsets_topic_num_partitions: int = 50
    offsets_topic_replication_factor: int = 3
    offsets_retention_minutes: int = 10080
    offsets_retention_check_interval_ms: int = 600000
    transaction_state_log_num_partitions: int = 50
    transactional_id_expiration_ms: int = 604800000
    transaction_max_timeout_ms: int = 900000
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = 10000
    transaction_remove_expired_transaction_cleanup_interval_ms: int = 3600000
    producer_id_expiration_ms: int = 86400000
    producer_id_expiration_check_interval_ms: int = 600000
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1800000
    group_max_size: int = INT_MAX
    group_coordinator_rebalance_protocols: tuple[str, ...] = ("classic", "consumer")
    group_consumer_session_timeout_ms: int = 45000
    group_consumer_min_session_timeout_ms: int = 45000
    group_consumer_max_session_timeout_ms: int = 60000
    group_consumer_heartbeat_interval_ms: int = 5000
    group_consumer_min_heartbeat_interval_ms: int = 5000
    group_consumer_max_heartbeat_interval_ms: int = 15000
    group_consumer_max_size: int = INT_MAX
    group_consumer_assignors: tuple[str, ...] = ("uniform", "range")
    log_cleaner_enable: bool = True
    log_cleaner_threads: int = 1
    log_cleaner_backoff_ms: int = 15000
    log_cleaner_dedupe_buffer_size: int = 128 * 1024 * 1024
    log_cleaner_io_max_bytes_per_second: float = DOUBLE_MAX
    log_cleaner_min_cleanable_ratio: float = 0.5
    log_cleaner_delete_retention_ms: int = 86400000
    log_cleaner_min_compaction_lag_ms: int = 0
    log_cleaner_max_compaction_lag_ms: int = LONG_MAX
    explicit_keys: frozenset[str] = field(default=frozenset(), compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    # -- construction ------------------------------------------------------------------------

    def __post_init__(self) -> None:
        for key, definition in BROKER_CONFIGS.items():
            if key in _SPECIAL_FIELDS:
                continue
            _check_typed(definition, getattr(self, _field_name(key)))
        self._check_listeners()
        if len(self.log_dirs) != 1 or not self.log_dirs[0]:
            raise ConfigError(
                "log.dirs",
                f"odradek supports exactly one log directory, got {len(self.log_dirs)}: "
                f"{','.join(self.log_dirs)!r}",
            )
        if self.cluster_id is not None and not _CLUSTER_ID_RE.fullmatch(self.cluster_id):
            raise ConfigError(
                "cluster.id",
                f"expected 22 characters of URL-safe base64 (a UUID), got {self.cluster_id!r}",
            )
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms:
            raise ConfigError(
                "group.min.session.timeout.ms",
                f"must not exceed group.max.session.timeout.ms "
                f"({self.group_min_session_timeout_ms} > {self.group_max_session_timeout_ms})",
            )
        if self.log_cleaner_min_compaction_lag_ms > self.log_cleaner_max_compaction_lag_ms:
            raise ConfigError(
                "log.cleaner.min.compaction.lag.ms",
                f"must not exceed log.cleaner.max.compaction.lag.ms "
                f"({self.log_cleaner_min_compaction_lag_ms} > "
                f"{self.log_cleaner_max_compaction_lag_ms})",
            )

    def _check_listeners(self) -> None:
        protocols = dict(self.listener_security_protocol_map)
        if len(self.listeners) != 1:
            raise ConfigError(
                "listeners",
                f"odradek serves exactly one listener, got {len(self.listeners)}: "
                f"{','.join(map(str, self.listeners))!r}",
            )
        listener = self.listeners[0]
        _check_protocol("listeners", listener, protocols)
        if self.advertised_listeners is None:
            return
        if len(self.advertised_listeners) != 1:
            raise ConfigError(
                "advertised.listeners",
                f"odradek advertises exactly one listener, got "
                f"{len(self.advertised_listeners)}",
            )
        advertised = self.advertised_listeners[0]
        if advertised.name != listener.name:
            raise ConfigError(
                "advertised.listeners",
                f"listener name {advertised.name} is not one of the listeners ({listener.name})",
            )
        if advertised.host in ("0.0.0.0", "::"):
            raise ConfigError(
                "advertised.listeners",
                f"cannot advertise the wildcard address {advertised.host}",
            )
        if advertised.port == 0:
            raise ConfigError("advertised.listeners", "cannot advertise port 0")

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> BrokerConfig:
        """Build a config from Kafka-named string settings (a parsed ``server.properties``)."""
        typed: dict[str, Any] = {}
        warnings: list[str] = []
        explicit: set[str] = set()
        aliases: dict[str, Any] = {}
        for raw_key, raw_value in props.items():
            key = _java_trim(raw_key)
            if key in BROKER_KEY_ALIASES:
                target = BROKER_CONFIGS[BROKER_KEY_ALIASES[key]]
                aliases[key] = replace(target, name=key).parse(raw_value)
            elif key in BROKER_CONFIGS:
                typed[key] = BROKER_CONFIGS[key].parse(raw_value)
                explicit.add(key)
            elif key in IGNORED_BROKER_KEYS or key.startswith(IGNORED_BROKER_KEY_PREFIXES):
                warnings.append(f"{key}: not used by odradek, ignored")
            else:
                raise ConfigError(key, "unknown configuration key" + _suggestion(key))

        if "broker.id" in aliases:
            broker_id = aliases["broker.id"]
            if "node.id" in typed and typed["node.id"] != broker_id:
                raise ConfigError(
                    "broker.id",
                    f"{broker_id} differs from node.id {typed['node.id']}; set only one",
                )
            typed.setdefault("node.id", broker_id)
            explicit.add("node.id")
        if "log.dir" in aliases and "log.dirs" not in typed:
            typed["log.dirs"] = aliases["log.dir"]
            explicit.add("log.dirs")

        kwargs: dict[str, Any] = {}
        for key, value in typed.items():
            if key not in _SPECIAL_FIELDS:
                kwargs[_field_name(key)] = value
        if "listener.security.protocol.map" in typed:
            kwargs["listener_security_protocol_map"] = _protocol_map(
                "listener.security.protocol.map", typed["listener.security.protocol.map"]
            )
        controllers = set(typed.get("controller.listener.names", ()))
        controllers = {name.upper() for name in controllers}
        for key in ("listeners", "advertised.listeners"):
            if key not in typed:
                continue
            kept: list[Listener] = []
            for listener in _listener_list(key, typed[key]):
                if listener.name in controllers:
                    warnings.append(f"{key}: controller listener {listener} ignored")
                else:
                    kept.append(listener)
            kwargs[_field_name(key)] = tuple(kept)
        if "advertised_listeners" in kwargs and not kwargs["advertised_listeners"]:
            kwargs["advertised_listeners"] = None
        return cls(**kwargs, explicit_keys=frozenset(explicit), warnings=tuple(warnings))

    def with_overrides(
        self, listen: str | None = None, data_dir: str | None = None
    ) -> BrokerConfig:
        """The CLI's ``--listen HOST:PORT`` and ``--data-dir DIR``, which win over the file."""
        changes: dict[str, Any] = {}
        explicit = set(self.explicit_keys)
        if listen is not None:
            text = listen.strip()
            if "://" not in text:
                text = f"{self.listeners[0].name}://{text}"
            try:
                listener = Listener.parse("--listen", text)
            except ConfigError as exc:
                raise ConfigError("--listen", f"expected HOST:PORT, got {listen!r}") from exc
            changes["listeners"] = (listener,)
            explicit.add("listeners")
        if data_dir is not None:
            if not data_dir.strip():
                raise ConfigError("--data-dir", "must not be empty")
            changes["log_dirs"] = (data_dir,)
            explicit.add("log.dirs")
        return replace(self, **changes, explicit_keys=frozenset(explicit))

    # -- derived values ----------------------------------------------------------------------

    @property
    def listener(self) -> Listener:
        """The one listener the broker binds."""
        return self.listeners[0]

    @property
    def listener_host(self) -> str | None:
        """The host to bind, as ``asyncio.create_server`` wants it: None for all interfaces."""
        host = self.listener.host
        return host or None

    @property
    def listener_port(self) -> int:
        """The port to bind; 0 asks the OS for a free one."""
        return self.listener.port

    @property
    def advertised_address(self) -> tuple[str, int]:
        """``(host, port)`` to tell clients, from :meth:`advertised_listener`; a port of 0 means
        "the port actually bound"."""
        advertised = self.advertised_listener()
        return advertised.host, advertised.port

    @property
    def data_dir(self) -> Path:
        """The one log directory."""
        return Path(self.log_dirs[0])

    def advertised_listener(self, bound_port: int | None = None) -> Listener:
        """What Metadata/FindCoordinator tell clients: ``advertised.listeners`` if set, else the
        bound listener with port 0 replaced by ``bound_port`` (the port actually bound) and a
        wildcard host replaced by this machine's host name (as Kafka does)."""
        if self.advertised_listeners:
            return self.advertised_listeners[0]
        listener = self.listener
        host = listener.host
        if host in _WILDCARD_HOSTS:
            host = socket.gethostname()
        port = listener.port
        if port == 0 and bound_port is not None:
            port = bound_port
        return Listener(listener.name, host, port)

    @property
    def effective_retention_ms(self) -> int:
        """``log.retention.ms``, else minutes, else hours; any negative value means -1 (forever)."""
        if self.log_retention_ms is not None:
            millis = self.log_retention_ms
        elif self.log_retention_minutes is not None:
            millis = self.log_retention_minutes * _MS_PER_MINUTE
        else:
            millis = self.log_retention_hours * _MS_PER_HOUR
        return -1 if millis < 0 else millis

    @property
    def effective_roll_ms(self) -> int:
        """``log.roll.ms``, else ``log.roll.hours`` in ms."""
        if self.log_roll_ms is not None:
            return self.log_roll_ms
        return self.log_roll_hours * _MS_PER_HOUR

    @property
    def effective_roll_jitter_ms(self) -> int:
        """``log.roll.jitter.ms``, else ``log.roll.jitter.hours`` in ms."""
        if self.log_roll_jitter_ms is not None:
            return self.log_roll_jitter_ms
        return self.log_roll_jitter_hours * _MS_PER_HOUR

    @property
    def effective_flush_ms(self) -> int:
        """``log.flush.interval.ms``, or when null ``log.flush.scheduler.interval.ms`` (whose
        default, Long.MAX_VALUE, means never)."""
        if self.log_flush_interval_ms is not None:
            return self.log_flush_interval_ms
        return self.log_flush_scheduler_interval_ms

    def value_of(self, key: str) -> Any:
        """The typed value of a Kafka broker key, in the form :data:`BROKER_CONFIGS` formats."""
        if key not in BROKER_CONFIGS:
            raise KeyError(key)
        if key in ("listeners", "advertised.listeners"):
            listeners = getattr(self, _field_name(key))
            return None if listeners is None else tuple(str(item) for item in listeners)
        if key == "listener.security.protocol.map":
            pairs = self.listener_security_protocol_map
            return ",".join(f"{name}:{protocol}" for name, protocol in pairs)
        return getattr(self, _field_name(key))

    def default_log_config(self) -> LogConfig:
        """The storage engine's settings for a topic without overrides."""
        return log_config_for(self, {})


_SPECIAL_FIELDS = frozenset({"listeners", "advertised.listeners", "listener.security.protocol.map"})


def _check_protocol(key: str, listener: Listener, protocols: Mapping[str, str]) -> None:
    protocol = protocols.get(listener.name)
    if protocol is None:
        raise ConfigError(
            key,
            f"no security protocol for listener name {listener.name} "
            f"(see listener.security.protocol.map)",
        )
    if protocol != "PLAINTEXT":
        raise ConfigError(
            key, f"security protocol {protocol} of {listener} is not supported (only PLAINTEXT)"
        )


def _check_typed(definition: ConfigDef, value: Any) -> None:
    """Check a directly-constructed field value's type and range, then its validator."""
    kind = definition.type
    if value is None:
        if definition.default is not None:
            raise ConfigError(definition.name, "must not be null")
        return
    if kind in (ConfigType.INT, ConfigType.SHORT, ConfigType.LONG):
        low, high = {
            ConfigType.SHORT: (SHORT_MIN, SHORT_MAX),
            ConfigType.INT: (INT_MIN, INT_MAX),
            ConfigType.LONG: (LONG_MIN, LONG_MAX),
        }[kind]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(definition.name, f"expected an integer in [{low},{high}], "
                              f"got {value!r}")
    elif kind is ConfigType.BOOLEAN and not isinstance(value, bool):
        raise ConfigError(definition.name, f"expected a boolean, got {value!r}")
    elif kind is ConfigType.DOUBLE and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        raise ConfigError(definition.name, f"expected a finite number, got {value!r}")
    elif kind is ConfigType.STRING and not isinstance(value, str):
        raise ConfigError(definition.name, f"expected a string, got {value!r}")
    elif kind is ConfigType.LIST and not (
        isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    ):
        raise ConfigError(definition.name, f"expected a tuple of strings, got {value!r}")
    definition.check(value)


def _suggestion(key: str) -> str:
    known = [*BROKER_CONFIGS, *BROKER_KEY_ALIASES, *IGNORED_BROKER_KEYS]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


# -- Java properties ----------------------------------------------------------------------------

_PROPERTY_WHITESPACE = " \t\f"
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _ends_with_continuation(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def _unescape(text: str, line_no: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        escaped = text[i + 1]
        if escaped == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ConfigError(None, f"line {line_no}: malformed \\uXXXX escape")
            out.append(chr(int(digits, 16)))
            i += 6
        else:
            out.append(_SIMPLE_ESCAPES.get(escaped, escaped))
            i += 2
    return "".join(out)


def _split_entry(line: str) -> tuple[str, str]:
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            i += 2
            continue
        if char in "=:" or char in _PROPERTY_WHITESPACE:
            break
        i += 1
    key = line[:i]
    rest = line[i:].lstrip(_PROPERTY_WHITESPACE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_PROPERTY_WHITESPACE)
    return key, rest


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java-properties text: ``key=value``, ``key: value`` or ``key value``; ``#``/``!``
    comment lines; blank lines; a line ending in an odd number of backslashes continues on the next
    (whose leading whitespace is dropped); ``\\t \\n \\r \\f \\uXXXX`` escapes. Only ``\\n``,
    ``\\r`` and ``\\r\\n`` end a line. Values are trimmed as Java's ``String.trim`` does
    (characters up to U+0020); a repeated key keeps its last value."""
    lines = _LINE_BREAK_RE.split(text.removeprefix("\ufeff"))
    result: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line_no = i + 1
        line = lines[i].lstrip(_PROPERTY_WHITESPACE)
        i += 1
        if not line or line[0] in "#!":
            continue
        while _ends_with_continuation(line):
            line = line[:-1]
            if i >= len(lines):
                break
            line += lines[i].lstrip(_PROPERTY_WHITESPACE)
            i += 1
        raw_key, raw_value = _split_entry(line)
        result[_unescape(raw_key, line_no)] = _java_trim(_unescape(raw_value, line_no))
    return result


def load_properties(path: str | Path) -> BrokerConfig:
    """Read a ``server.properties`` file into a :class:`BrokerConfig`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(None, f"cannot read {path}: {exc}") from exc
    return BrokerConfig.from_properties(parse_properties(text))


# -- topic configuration -----------------------------------------------------------------------

TOPIC_CONFIGS: Mapping[str, ConfigDef] = _table(sorted([
    ConfigDef("cleanup.policy", ConfigType.LIST, ("delete",),
              "delete: drop old segments by time or size; compact: keep the last record per key; "
              "or both.", ListOf(_CLEANUP_POLICIES), ("log.cleanup.policy",)),
    ConfigDef("compression.type", ConfigType.STRING, "producer",
              "Compression of stored batches; 'producer' keeps what the producer sent.",
              OneOf(_COMPRESSION_TYPES), ("compression.type",)),
    _long("delete.retention.ms", 86400000, "How long tombstones survive compaction.", minimum=0,
          synonyms=("log.cleaner.delete.retention.ms",)),
    _long("file.delete.delay.ms", 60000, "Delay before a deleted segment's files are removed.",
          minimum=0, synonyms=("log.segment.delete.delay.ms",)),
    _long("flush.messages", LONG_MAX, "fsync after this many messages.", minimum=1,
          synonyms=("log.flush.interval.messages",)),
    _long("flush.ms", LONG_MAX, "fsync when the oldest unflushed message is this old.", minimum=0,
          synonyms=("log.flush.interval.ms", "log.flush.scheduler.interval.ms")),
    _int("index.interval.bytes", 4096, "Bytes between offset index entries.", minimum=0,
         synonyms=("log.index.interval.bytes",)),
    _long("max.compaction.lag.ms", LONG_MAX, "Longest a record may stay uncompacted.", minimum=1,
          synonyms=("log.cleaner.max.compaction.lag.ms",)),
    _int("max.message.bytes", 1048588, "Largest record batch this topic accepts.", minimum=0,
         synonyms=("message.max.bytes",)),
    ConfigDef("message.timestamp.type", ConfigType.STRING, "CreateTime",
              "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's.",
              OneOf(_TIMESTAMP_TYPES), ("log.message.timestamp.type",)),
    _long("message.timestamp.difference.max.ms", LONG_MAX, "Largest allowed distance of a "
          "CreateTime timestamp from the broker's clock.", minimum=0,
          synonyms=("log.message.timestamp.difference.max.ms",)),
    _long("message.timestamp.before.max.ms", LONG_MAX, "How far in the past a CreateTime "
          "timestamp may be.", minimum=0, synonyms=("log.message.timestamp.before.max.ms",)),
    _long("message.timestamp.after.max.ms", LONG_MAX, "How far in the future a CreateTime "
          "timestamp may be.", minimum=0, synonyms=("log.message.timestamp.after.max.ms",)),
    ConfigDef("min.cleanable.dirty.ratio", ConfigType.DOUBLE, 0.5,
              "Compact once this fraction of the log is dirty.", Between(0, 1),
              ("log.cleaner.min.cleanable.ratio",)),
    _long("min.compaction.lag.ms", 0, "Shortest time a record stays uncompacted.", minimum=0,
          synonyms=("log.cleaner.min.compaction.lag.ms",)),
    _int("min.insync.replicas", 1, "Replicas that must have a write for acks=all.", minimum=1,
         synonyms=("min.insync.replicas",)),
    _bool("preallocate", False, "Preallocate segment files.", synonyms=("log.preallocate",)),
    _long("retention.bytes", -1, "Delete old segments while the partition is larger than this; -1 "
          "for no limit.", synonyms=("log.retention.bytes",)),
    _long("retention.ms", 7 * 24 * _MS_PER_HOUR, "Delete segments older than this; -1 keeps "
          "them forever.", minimum=-1,
          synonyms=("log.retention.ms", "log.retention.minutes", "log.retention.hours")),
    _int("segment.bytes", 1024 * 1024 * 1024, "Largest size of one segment file.",
         minimum=MIN_SEGMENT_BYTES, synonyms=("log.segment.bytes",)),
    _int("segment.index.bytes", 10 * 1024 * 1024, "Size of a segment's offset and time indexes.",
         minimum=4, synonyms=("log.index.size.max.bytes",)),
    _long("segment.jitter.ms", 0, "Largest random amount subtracted from segment.ms.", minimum=0,
          synonyms=("log.roll.jitter.ms", "log.roll.jitter.hours")),
    _long("segment.ms", 7 * 24 * _MS_PER_HOUR, "Roll a new segment after this long.", minimum=1,
          synonyms=("log.roll.ms", "log.roll.hours")),
    _bool("unclean.leader.election.enable", False, "Allow an out-of-sync replica to lead.",
          synonyms=("unclean.leader.election.enable",)),
    _bool("message.downconversion.enable", True, "Down-convert batches for old fetchers.",
          synonyms=("log.message.downconversion.enable",)),
], key=lambda d: d.name))

# Topic configs whose broker default is computed from more than one broker setting.
_DERIVED_TOPIC_DEFAULTS: Mapping[str, Callable[[BrokerConfig], Any]] = {
    "retention.ms": lambda broker: broker.effective_retention_ms,
    "segment.ms": lambda broker: broker.effective_roll_ms,
    "segment.jitter.ms": lambda broker: broker.effective_roll_jitter_ms,
    "flush.ms": lambda broker: broker.effective_flush_ms,
}


def _parse_topic_value(name: str, raw: str | None) -> Any:
    definition = TOPIC_CONFIGS.get(name)
    if definition is None:
        raise InvalidConfigError(f"{name}: unknown topic config")
    if raw is None:
        raise InvalidConfigError(f"{name}: a null value is not supported for topic configs")
    try:
        return definition.parse(raw)
    except ConfigError as exc:
        raise InvalidConfigError(str(exc)) from exc


def _check_topic_consistency(values: Mapping[str, Any]) -> None:
    low = values.get("min.compaction.lag.ms")
    high = values.get("max.compaction.lag.ms")
    if low is not None and high is not None and low > high:
        raise InvalidConfigError(
            f"min.compaction.lag.ms: conflicts with max.compaction.lag.ms ({low} > {high})"
        )


def validate_topic_configs(
    configs: Mapping[str, str | None], broker: BrokerConfig | None = None
) -> dict[str, str]:
    """Check topic-level settings sent by a client; return them in canonical string form.

    Raises :class:`InvalidConfigError` naming the key for unknown keys, nulls, malformed or
    out-of-range values and ``min.compaction.lag.ms > max.compaction.lag.ms``. With ``broker`` the
    values are also merged with the broker's defaults and turned into a ``LogConfig``, so whatever
    the storage engine would refuse is refused here too."""
    parsed = {name: _parse_topic_value(name, raw) for name, raw in configs.items()}
    canonical = {name: _format_topic(name, value) for name, value in parsed.items()}
    if broker is None:
        _check_topic_consistency(parsed)
    else:
        # Also lets the storage engine refuse what it cannot honour, before the topic exists.
        log_config_for(broker, canonical)
    return canonical


def _format_topic(name: str, value: Any) -> str:
    text = TOPIC_CONFIGS[name].format(value)
    assert text is not None
    return text


def effective_topic_values(
    broker: BrokerConfig | None, overrides: Mapping[str, str]
) -> dict[str, Any]:
    """Every topic config's typed value: the override, else the broker's setting, else Kafka's
    default (when ``broker`` is None)."""
    values: dict[str, Any] = {}
    for name, definition in TOPIC_CONFIGS.items():
        if name in overrides:
            values[name] = _parse_topic_value(name, overrides[name])
        elif broker is None:
            values[name] = definition.default
        elif name in _DERIVED_TOPIC_DEFAULTS:
            values[name] = _DERIVED_TOPIC_DEFAULTS[name](broker)
        else:
            assert definition.broker_synonym is not None
            values[name] = broker.value_of(definition.broker_synonym)
    unknown = sorted(set(overrides) - set(TOPIC_CONFIGS))
    if unknown:
        raise InvalidConfigError(f"{unknown[0]}: unknown topic config")
    _check_topic_consistency(values)
    return values


@dataclass(frozen=True, slots=True)
class ConfigSynonym:
    """One DescribeConfigs synonym: a setting that contributed (or could contribute) the value."""

    name: str
    value: str | None
    source: ConfigSource


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One DescribeConfigs result entry."""

    name: str
    value: str | None
    source: ConfigSource
    is_default: bool
    read_only: bool
    sensitive: bool
    synonyms: tuple[ConfigSynonym, ...] = ()
    config_type: ConfigType = ConfigType.STRING
    documentation: str | None = None


def _broker_synonyms(broker: BrokerConfig, keys: Iterable[str]) -> list[ConfigSynonym]:
    """Set ones first (STATIC_BROKER_CONFIG), then non-null defaults (DEFAULT_CONFIG), each group in
    the given precedence order — the order Kafka lists them."""
    keys = list(keys)
    static = [
        ConfigSynonym(key, BROKER_CONFIGS[key].format(broker.value_of(key)),
                      ConfigSource.STATIC_BROKER_CONFIG)
        for key in keys if key in broker.explicit_keys
    ]
    defaults = [
        ConfigSynonym(key, BROKER_CONFIGS[key].format(BROKER_CONFIGS[key].default),
                      ConfigSource.DEFAULT_CONFIG)
        for key in keys if BROKER_CONFIGS[key].default is not None
    ]
    return static + defaults


def effective_topic_configs(
    broker: BrokerConfig, overrides: Mapping[str, str]
) -> list[ConfigEntry]:
    """DescribeConfigs for a topic: every topic config with its effective value and source.

    The source is DYNAMIC_TOPIC_CONFIG for an override, STATIC_BROKER_CONFIG when a broker synonym
    is set in the broker's file, DEFAULT_CONFIG otherwise. ``synonyms`` lists the override, then the
    broker settings that are set, then the broker defaults."""
    values = effective_topic_values(broker, overrides)
    entries: list[ConfigEntry] = []
    for name, definition in TOPIC_CONFIGS.items():
        text = definition.format(values[name])
        synonyms: list[ConfigSynonym] = []
        if name in overrides:
            synonyms.append(ConfigSynonym(name, text, ConfigSource.DYNAMIC_TOPIC_CONFIG))
        synonyms.extend(_broker_synonyms(broker, definition.synonyms))
        source = synonyms[0].source if synonyms else ConfigSource.DEFAULT_CONFIG
        entries.append(ConfigEntry(
            name=name,
            value=text,
            source=source,
            is_default=source is ConfigSource.DEFAULT_CONFIG,
            read_only=False,
            sensitive=definition.sensitive,
            synonyms=tuple(synonyms),
            config_type=definition.type,
            documentation=definition.doc,
        ))
    return entries


def broker_config_entries(broker: BrokerConfig) -> list[ConfigEntry]:
    """DescribeConfigs for the broker resource: every setting in :data:`BROKER_CONFIGS`, read-only
    (there is no dynamic broker config yet); STATIC_BROKER_CONFIG if it was set, else
    DEFAULT_CONFIG."""
    entries: list[ConfigEntry] = []
    for name in sorted(BROKER_CONFIGS):
        definition = BROKER_CONFIGS[name]
        synonyms = _broker_synonyms(broker, [name])
        source = synonyms[0].source if synonyms else ConfigSource.DEFAULT_CONFIG
        entries.append(ConfigEntry(
            name=name,
            value=definition.format(broker.value_of(name)),
            source=source,
            is_default=source is ConfigSource.DEFAULT_CONFIG,
            read_only=True,
            sensitive=definition.sensitive,
            synonyms=tuple(synonyms),
            config_type=definition.type,
            documentation=definition.doc,
        ))
    return entries


def log_config_for(broker: BrokerConfig, overrides: Mapping[str, str]) -> LogConfig:
    """The storage engine's settings for a topic with the given overrides.

    Every field of ``LogConfig`` named like a topic config (dots as underscores:
    ``segment.bytes`` -> ``segment_bytes``) gets that config's effective value."""
    from odradek.storage.log_config import LogConfig

    values = effective_topic_values(broker, overrides)
    available = {_field_name(name): value for name, value in values.items()}
    kwargs: dict[str, Any] = {}
    for log_field in fields(LogConfig):
        if log_field.name in available:
            kwargs[log_field.name] = _to_log_field(log_field.name, available[log_field.name])
    return LogConfig(**kwargs)


def _to_log_field(name: str, value: Any) -> Any:
    if name == "cleanup_policy":
        return ",".join(value)
    return value
