"""Topic-level settings: what a client may set on a topic, each defaulting from a broker setting
(its synonym), and how a topic's overrides become the storage engine's ``LogConfig``.

No topic setting has a default of its own: it is computed from the broker table's defaults, so
``retention.ms`` defaults to 604800000 because ``log.retention.hours`` defaults to 168.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from odradek.config._broker_defs import (
    BROKER_CONFIGS,
    CLEANUP_POLICIES,
    COMPRESSION_TYPES,
    MIN_SEGMENT_BYTES,
    TIMESTAMP_TYPES,
)
from odradek.config._derived import flush_ms, retention_ms, roll_jitter_ms, roll_ms
from odradek.config._types import (
    AtLeast,
    Between,
    ConfigDef,
    ConfigError,
    ConfigType,
    ListOf,
    OneOf,
    Validator,
)
from odradek.errors import InvalidConfigError

if TYPE_CHECKING:
    from odradek.config._broker import BrokerConfig
    from odradek.storage.log_config import LogConfig

__all__ = [
    "TOPIC_CONFIGS",
    "validate_topic_configs",
    "effective_topic_values",
    "topic_value",
    "log_config_for",
]

# Topic configs whose value is computed from more than one broker setting.
_DERIVED: Mapping[str, Callable[[Callable[[str], Any]], Any]] = {
    "retention.ms": retention_ms,
    "segment.ms": roll_ms,
    "segment.jitter.ms": roll_jitter_ms,
    "flush.ms": flush_ms,
}


def _table_default(key: str) -> Any:
    return BROKER_CONFIGS[key].default


def _from_broker(name: str, synonym: str, broker_value: Callable[[str], Any]) -> Any:
    derive = _DERIVED.get(name)
    return derive(broker_value) if derive is not None else broker_value(synonym)


def topic_value(definition: ConfigDef, broker_value: Callable[[str], Any]) -> Any:
    """A topic config's value when the topic does not override it, from the broker's settings
    (``broker_value`` gives a broker key's typed value)."""
    assert definition.broker_synonym is not None
    return _from_broker(definition.name, definition.broker_synonym, broker_value)


def _topic(name: str, kind: ConfigType, synonym: str, doc: str,
           validator: Validator | None = None) -> ConfigDef:
    """A topic config defaulting from the broker setting ``synonym`` (and, in DescribeConfigs,
    from that setting's own synonyms)."""
    default = _from_broker(name, synonym, _table_default)
    synonyms = BROKER_CONFIGS[synonym].synonyms or (synonym,)
    return ConfigDef(name, kind, default, doc, validator, synonyms)


_INT, _LONG, _BOOL = ConfigType.INT, ConfigType.LONG, ConfigType.BOOLEAN

TOPIC_CONFIGS: Mapping[str, ConfigDef] = {d.name: d for d in sorted([
    _topic("cleanup.policy", ConfigType.LIST, "log.cleanup.policy",
           "delete: drop old segments by time or size; compact: keep the last record per key; "
           "both; or empty: neither (the log is kept whole).",
           ListOf(CLEANUP_POLICIES, allow_empty=True)),
    _topic("compression.type", ConfigType.STRING, "compression.type",
           "Compression of stored batches; 'producer' keeps what the producer sent.",
           OneOf(COMPRESSION_TYPES)),
    _topic("delete.retention.ms", _LONG, "log.cleaner.delete.retention.ms",
           "How long tombstones survive compaction.", AtLeast(0)),
    _topic("file.delete.delay.ms", _LONG, "log.segment.delete.delay.ms",
           "Delay before a deleted segment's files are removed.", AtLeast(0)),
    _topic("flush.messages", _LONG, "log.flush.interval.messages",
           "fsync after this many messages.", AtLeast(1)),
    _topic("flush.ms", _LONG, "log.flush.interval.ms",
           "fsync when the oldest unflushed message is this old.", AtLeast(0)),
    _topic("index.interval.bytes", _INT, "log.index.interval.bytes",
           "Bytes between offset index entries.", AtLeast(0)),
    _topic("max.compaction.lag.ms", _LONG, "log.cleaner.max.compaction.lag.ms",
           "Longest a record may stay uncompacted.", AtLeast(1)),
    _topic("max.message.bytes", _INT, "message.max.bytes",
           "Largest record batch this topic accepts.", AtLeast(0)),
    _topic("message.timestamp.type", ConfigType.STRING, "log.message.timestamp.type",
           "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's.",
           OneOf(TIMESTAMP_TYPES)),
    _topic("message.timestamp.difference.max.ms", _LONG,
           "log.message.timestamp.difference.max.ms", "Largest allowed distance of a "
           "CreateTime timestamp from the broker's clock.", AtLeast(0)),
    _topic("message.timestamp.before.max.ms", _LONG, "log.message.timestamp.before.max.ms",
           "How far in the past a CreateTime timestamp may be.", AtLeast(0)),
    _topic("message.timestamp.after.max.ms", _LONG, "log.message.timestamp.after.max.ms",
           "How far in the future a CreateTime timestamp may be.", AtLeast(0)),
    _topic("min.cleanable.dirty.ratio", ConfigType.DOUBLE, "log.cleaner.min.cleanable.ratio",
           "Compact once this fraction of the log is dirty.", Between(0, 1)),
    _topic("min.compaction.lag.ms", _LONG, "log.cleaner.min.compaction.lag.ms",
           "Shortest time a record stays uncompacted.", AtLeast(0)),
    _topic("min.insync.replicas", _INT, "min.insync.replicas",
           "Replicas that must have a write for acks=all.", AtLeast(1)),
    _topic("preallocate", _BOOL, "log.preallocate", "Preallocate segment files."),
    _topic("retention.bytes", _LONG, "log.retention.bytes",
           "Delete old segments while the partition is larger than this; -1 for no limit."),
    _topic("retention.ms", _LONG, "log.retention.ms",
           "Delete segments older than this; -1 keeps them forever.", AtLeast(-1)),
    _topic("segment.bytes", _INT, "log.segment.bytes", "Largest size of one segment file.",
           AtLeast(MIN_SEGMENT_BYTES)),
    _topic("segment.index.bytes", _INT, "log.index.size.max.bytes",
           "Size of a segment's offset and time indexes.", AtLeast(4)),
    _topic("segment.jitter.ms", _LONG, "log.roll.jitter.ms",
           "Largest random amount subtracted from segment.ms.", AtLeast(0)),
    _topic("segment.ms", _LONG, "log.roll.ms", "Roll a new segment after this long.",
           AtLeast(1)),
    _topic("unclean.leader.election.enable", _BOOL, "unclean.leader.election.enable",
           "Allow an out-of-sync replica to lead."),
    _topic("message.downconversion.enable", _BOOL, "log.message.downconversion.enable",
           "Down-convert batches for old fetchers."),
], key=lambda d: d.name)}


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
        else:
            values[name] = topic_value(definition, broker.value_of)
    unknown = sorted(set(overrides) - set(TOPIC_CONFIGS))
    if unknown:
        raise InvalidConfigError(f"{unknown[0]}: unknown topic config")
    _check_topic_consistency(values)
    return values


def log_config_for(broker: BrokerConfig, overrides: Mapping[str, str]) -> LogConfig:
    """The storage engine's settings for a topic with the given overrides.

    Every field of ``LogConfig`` named like a topic config (dots as underscores:
    ``segment.bytes`` -> ``segment_bytes``) gets that config's effective value."""
    from odradek.storage.log_config import LogConfig

    values = effective_topic_values(broker, overrides)
    available = {name.replace(".", "_"): value for name, value in values.items()}
    kwargs: dict[str, Any] = {}
    for log_field in fields(LogConfig):
        if log_field.name in available:
            value = available[log_field.name]
            if log_field.name == "cleanup_policy":
                value = ",".join(value)  # the storage engine keeps Kafka's string form
            kwargs[log_field.name] = value
    return LogConfig(**kwargs)
