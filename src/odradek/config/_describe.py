"""DescribeConfigs answers: every setting of a topic or of the broker with its value, source and
synonyms, as Kafka's ``ConfigHelper`` builds them.

A setting's synonyms are collected layer by layer, highest precedence first — dynamic per-broker,
dynamic cluster default, static (the file or the command line), Kafka's default — and within a
layer in the order of the setting's synonym list. The entry's source is that of its first
synonym, DEFAULT_CONFIG when there is none. odradek has no dynamic broker configs (changing them
is refused), so its layers are the static one and the defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from odradek.config._broker import BrokerConfig, Listener
from odradek.config._broker_defs import BROKER_CONFIGS
from odradek.config._topic import TOPIC_CONFIGS, effective_topic_values
from odradek.config._types import ConfigSource, ConfigType

__all__ = [
    "ConfigSynonym",
    "ConfigEntry",
    "effective_topic_configs",
    "broker_config_entries",
]


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
    """The broker settings among ``keys`` that have a value, layer by layer: those set in the file
    or on the command line (STATIC_BROKER_CONFIG), then non-null defaults (DEFAULT_CONFIG)."""
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


def _from_own_name(name: str, synonyms: list[ConfigSynonym]) -> list[ConfigSynonym]:
    """Kafka drops the synonyms ahead of the setting's own first one (none if it has none)."""
    for i, synonym in enumerate(synonyms):
        if synonym.name == name:
            return synonyms[i:]
    return []


def _entry(name: str, value: str | None, synonyms: list[ConfigSynonym], *, read_only: bool,
           config_type: ConfigType, sensitive: bool, doc: str) -> ConfigEntry:
    source = synonyms[0].source if synonyms else ConfigSource.DEFAULT_CONFIG
    return ConfigEntry(
        name=name,
        value=value,
        source=source,
        is_default=source is ConfigSource.DEFAULT_CONFIG,
        read_only=read_only,
        sensitive=sensitive,
        synonyms=tuple(synonyms),
        config_type=config_type,
        documentation=doc,
    )


def effective_topic_configs(
    broker: BrokerConfig, overrides: Mapping[str, str]
) -> list[ConfigEntry]:
    """DescribeConfigs for a topic: every topic config with its effective value and source.

    The source is DYNAMIC_TOPIC_CONFIG for an override, STATIC_BROKER_CONFIG when a broker synonym
    is set in the broker's file, DEFAULT_CONFIG otherwise. ``synonyms`` lists the override, then the
    broker settings that are set, then the broker defaults. Unlike Kafka, every broker synonym is
    kept (Kafka drops those ahead of the main one, so a file with only ``log.retention.hours``
    shows ``retention.ms`` as DEFAULT_CONFIG; we report STATIC_BROKER_CONFIG, which is what
    actually happened)."""
    values = effective_topic_values(broker, overrides)
    entries: list[ConfigEntry] = []
    for name, definition in TOPIC_CONFIGS.items():
        text = definition.format(values[name])
        synonyms: list[ConfigSynonym] = []
        if name in overrides:
            synonyms.append(ConfigSynonym(name, text, ConfigSource.DYNAMIC_TOPIC_CONFIG))
        synonyms.extend(_broker_synonyms(broker, definition.synonyms))
        entries.append(_entry(
            name, text, synonyms, read_only=False, config_type=definition.type,
            sensitive=definition.sensitive, doc=definition.doc,
        ))
    return entries


def broker_config_entries(
    broker: BrokerConfig, advertised: Listener | None = None
) -> list[ConfigEntry]:
    """DescribeConfigs for this broker: every setting in :data:`BROKER_CONFIGS`, by name.

    As Kafka: the value is the setting's own (null if unset, even where another setting stands in
    for it); synonyms are the setting's Kafka synonyms layer by layer with those ahead of the
    setting itself dropped (``log.retention.hours`` lists ``log.retention.hours`` from the file,
    then its default, but not ``log.retention.ms``; an unset ``log.retention.ms`` has none).
    Every entry is read-only: odradek cannot change broker settings while it runs.

    One addition: an unset ``advertised.listeners`` reports what the broker does advertise
    (``advertised``, the listener with the port actually bound, else one derived from
    ``listeners``) with ``listeners`` as its synonym, so its source is STATIC_BROKER_CONFIG when
    ``listeners`` came from the file or ``--listen``. Kafka reports null there."""
    entries: list[ConfigEntry] = []
    for name in sorted(BROKER_CONFIGS):
        definition = BROKER_CONFIGS[name]
        value = broker.value_of(name)
        layered = _broker_synonyms(broker, definition.synonyms or (name,))
        synonyms = _from_own_name(name, layered)
        if name == "advertised.listeners" and value is None:
            value = (str(advertised or broker.advertised_listener()),)
            synonyms = _broker_synonyms(broker, ("listeners",))
        entries.append(_entry(
            name, definition.format(value), synonyms, read_only=True,
            config_type=definition.type, sensitive=definition.sensitive, doc=definition.doc,
        ))
    return entries
