"""Broker and topic configuration, in Kafka's vocabulary and with Kafka's defaults.

Each setting's default is written once, in the broker table (``_broker_defs.BROKER_CONFIGS``):

- :class:`BrokerConfig` — the static broker settings, one field per key of the table (dots as
  underscores: ``log.segment.bytes`` -> ``log_segment_bytes``) whose default is the table's. Read
  from a Java-properties file (``server.properties``) by :func:`load_properties` /
  :meth:`BrokerConfig.from_properties`, then adjusted by the CLI with
  :meth:`BrokerConfig.with_overrides`.
- Topic configs — :data:`TOPIC_CONFIGS` describes every topic-level setting we know: the broker
  setting it defaults from (its "synonym"; the default is computed from the broker table), its
  type and its validation. :func:`validate_topic_configs` checks what a client sends in
  CreateTopics / AlterConfigs, and :func:`log_config_for` turns a topic's overrides into the
  storage engine's ``LogConfig``.
- DescribeConfigs — :func:`effective_topic_configs` and :func:`broker_config_entries` give every
  setting's value, source and synonyms.

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
- Broker settings are static: every broker DescribeConfigs entry is read-only.
- DescribeConfigs for a topic lists every broker synonym that has a value (Kafka drops the
  time-unit variants ahead of the main one); an unset ``advertised.listeners`` of the broker is
  reported as what the broker advertises. See :mod:`odradek.config._describe`.
- ``cluster.id`` may be set in the file (an odradek extension); the broker otherwise generates one.
"""

from __future__ import annotations

from odradek.config._broker import BrokerConfig, Listener, load_properties
from odradek.config._broker_defs import (
    BROKER_CONFIGS,
    BROKER_KEY_ALIASES,
    IGNORED_BROKER_KEY_PREFIXES,
    IGNORED_BROKER_KEYS,
    RACK_AWARE_REPLICA_SELECTOR,
)
from odradek.config._describe import (
    ConfigEntry,
    ConfigSynonym,
    broker_config_entries,
    effective_topic_configs,
)
from odradek.config._properties import parse_properties
from odradek.config._topic import (
    TOPIC_CONFIGS,
    effective_topic_values,
    log_config_for,
    validate_topic_configs,
)
from odradek.config._types import (
    DOUBLE_MAX,
    INT_MAX,
    LONG_MAX,
    AtLeast,
    Between,
    ConfigDef,
    ConfigError,
    ConfigSource,
    ConfigType,
    ListOf,
    OneOf,
    Validator,
)

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
    "RACK_AWARE_REPLICA_SELECTOR",
    "TOPIC_CONFIGS",
    "parse_properties",
    "load_properties",
    "validate_topic_configs",
    "effective_topic_values",
    "effective_topic_configs",
    "log_config_for",
    "broker_config_entries",
]
