"""The broker's static configuration: :class:`BrokerConfig`, whose fields and defaults come from
:data:`~odradek.config._broker_defs.BROKER_CONFIGS`, and reading it from ``server.properties``."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from odradek.config._broker_defs import (
    BROKER_CONFIGS,
    BROKER_KEY_ALIASES,
    IGNORED_BROKER_KEY_PREFIXES,
    IGNORED_BROKER_KEYS,
)
from odradek.config._derived import flush_ms, retention_ms, roll_jitter_ms, roll_ms
from odradek.config._properties import parse_properties
from odradek.config._topic import log_config_for
from odradek.config._types import ConfigError, java_trim

if TYPE_CHECKING:
    from odradek.storage.log_config import LogConfig

__all__ = [
    "Listener",
    "BrokerConfig",
    "load_properties",
    "retention_ms",
    "roll_ms",
    "roll_jitter_ms",
    "flush_ms",
]

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


def _listener_list(key: str, items: Iterable[str] | None) -> tuple[Listener, ...] | None:
    if items is None:
        return None
    listeners = tuple(Listener.parse(key, item) for item in items)
    names = [listener.name for listener in listeners]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(key, f"listener name {name} is used twice")
    return listeners


def _listener_strings(listeners: tuple[Listener, ...] | None) -> tuple[str, ...] | None:
    return None if listeners is None else tuple(str(item) for item in listeners)


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


def _protocol_map_string(pairs: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{name}:{protocol}" for name, protocol in pairs)


# Settings whose field holds a richer form than the table's typed value: key -> (typed value to
# field, field to typed value). Every other field holds the typed value itself.
_FIELD_FORMS: Mapping[str, tuple[Callable[[str, Any], Any], Callable[[Any], Any]]] = {
    "listeners": (_listener_list, _listener_strings),
    "advertised.listeners": (_listener_list, _listener_strings),
    "listener.security.protocol.map": (_protocol_map, _protocol_map_string),
}


def _field_name(key: str) -> str:
    return key.replace(".", "_")


def _to_field(key: str, value: Any) -> Any:
    form = _FIELD_FORMS.get(key)
    return value if form is None else form[0](key, value)


class _FromTable:
    def __repr__(self) -> str:
        return "<default from BROKER_CONFIGS>"


#: The default of a :class:`BrokerConfig` field: replaced, before the dataclass is made, by the
#: default of the Kafka key the field is named after (``log_roll_hours`` <- ``log.roll.hours``).
_FROM_TABLE: Any = _FromTable()

_C = TypeVar("_C")


def _defaults_from_table(cls: type[_C]) -> type[_C]:
    """Give every field marked :data:`_FROM_TABLE` its key's default from the table, and check
    that the class has exactly one field per key of the table."""
    keys = set()
    for name in cls.__annotations__:
        if cls.__dict__.get(name) is _FROM_TABLE:
            key = name.replace("_", ".")
            setattr(cls, name, _to_field(key, BROKER_CONFIGS[key].default))
            keys.add(key)
    if keys != set(BROKER_CONFIGS):
        raise TypeError(f"{cls.__name__} lacks fields for {sorted(set(BROKER_CONFIGS) - keys)}")
    return cls


# -- settings computed from several keys ----------------------------------------------------------
# Each takes a getter of typed values, so they serve a BrokerConfig and the table's defaults alike.

@dataclass(frozen=True, slots=True)
@_defaults_from_table
class BrokerConfig:
    """The broker's static configuration (immutable; build a new one to change anything).

    There is one field per key of :data:`BROKER_CONFIGS`, named after it with dots as underscores
    (``log.segment.bytes`` -> ``log_segment_bytes``), whose default is the table's. Fields hold the
    typed value, except ``listeners``/``advertised_listeners`` (:class:`Listener` tuples) and
    ``listener_security_protocol_map`` (name, protocol) pairs; :meth:`value_of` gives any key's
    typed value.

    Construct it with :meth:`from_properties` / :func:`load_properties` (Kafka key names) or
    directly with keyword arguments (field names). Either way every value is validated on
    construction and a bad one raises :class:`ConfigError` naming the Kafka key. ``explicit_keys``
    records which Kafka keys were set, in the file or on the command line (they are
    STATIC_BROKER_CONFIG in DescribeConfigs); ``warnings`` the keys that were accepted but ignored.

    A plain value: no owner, shareable between threads; nothing is persisted from here.
    """

    listeners: tuple[Listener, ...] = _FROM_TABLE
    advertised_listeners: tuple[Listener, ...] | None = _FROM_TABLE
    listener_security_protocol_map: tuple[tuple[str, str], ...] = _FROM_TABLE
    controller_listener_names: tuple[str, ...] = _FROM_TABLE
    node_id: int = _FROM_TABLE
    log_dirs: tuple[str, ...] = _FROM_TABLE
    cluster_id: str | None = _FROM_TABLE
    num_partitions: int = _FROM_TABLE
    default_replication_factor: int = _FROM_TABLE
    auto_create_topics_enable: bool = _FROM_TABLE
    delete_topic_enable: bool = _FROM_TABLE
    max_broker_partitions: int | None = _FROM_TABLE
    log_max_open_files: int | None = _FROM_TABLE
    log_page_cache_retain_bytes: int = _FROM_TABLE
    log_segment_bytes: int = _FROM_TABLE
    log_roll_ms: int | None = _FROM_TABLE
    log_roll_hours: int = _FROM_TABLE
    log_roll_jitter_ms: int | None = _FROM_TABLE
    log_roll_jitter_hours: int = _FROM_TABLE
    log_retention_ms: int | None = _FROM_TABLE
    log_retention_minutes: int | None = _FROM_TABLE
    log_retention_hours: int = _FROM_TABLE
    log_retention_bytes: int = _FROM_TABLE
    log_retention_check_interval_ms: int = _FROM_TABLE
    log_cleanup_policy: tuple[str, ...] = _FROM_TABLE
    log_flush_interval_messages: int = _FROM_TABLE
    log_flush_interval_ms: int | None = _FROM_TABLE
    log_flush_scheduler_interval_ms: int = _FROM_TABLE
    log_index_interval_bytes: int = _FROM_TABLE
    log_index_size_max_bytes: int = _FROM_TABLE
    log_message_timestamp_type: str = _FROM_TABLE
    log_message_timestamp_difference_max_ms: int = _FROM_TABLE
    log_message_timestamp_before_max_ms: int = _FROM_TABLE
    log_message_timestamp_after_max_ms: int = _FROM_TABLE
    log_message_downconversion_enable: bool = _FROM_TABLE
    log_preallocate: bool = _FROM_TABLE
    log_segment_delete_delay_ms: int = _FROM_TABLE
    compression_type: str = _FROM_TABLE
    message_max_bytes: int = _FROM_TABLE
    socket_request_max_bytes: int = _FROM_TABLE
    fetch_max_bytes: int = _FROM_TABLE
    queued_max_request_bytes: int = _FROM_TABLE
    connections_max_idle_ms: int = _FROM_TABLE
    request_timeout_ms: int = _FROM_TABLE
    max_connections: int | None = _FROM_TABLE
    max_connections_per_ip: int = _FROM_TABLE
    min_insync_replicas: int = _FROM_TABLE
    replica_lag_time_max_ms: int = _FROM_TABLE
    replica_selector_class: str | None = _FROM_TABLE
    unclean_leader_election_enable: bool = _FROM_TABLE
    auto_leader_rebalance_enable: bool = _FROM_TABLE
    leader_imbalance_check_interval_seconds: int = _FROM_TABLE
    leader_imbalance_per_broker_percentage: int = _FROM_TABLE
    num_replica_fetchers: int = _FROM_TABLE
    replica_fetch_max_bytes: int = _FROM_TABLE
    replica_fetch_response_max_bytes: int = _FROM_TABLE
    replica_fetch_wait_max_ms: int = _FROM_TABLE
    replica_fetch_min_bytes: int = _FROM_TABLE
    replica_fetch_backoff_ms: int = _FROM_TABLE
    replica_socket_timeout_ms: int = _FROM_TABLE
    replica_socket_receive_buffer_bytes: int = _FROM_TABLE
    offsets_topic_num_partitions: int = _FROM_TABLE
    offsets_topic_replication_factor: int = _FROM_TABLE
    offsets_retention_minutes: int = _FROM_TABLE
    offsets_retention_check_interval_ms: int = _FROM_TABLE
    transaction_state_log_num_partitions: int = _FROM_TABLE
    transaction_state_log_replication_factor: int = _FROM_TABLE
    transaction_state_log_min_isr: int = _FROM_TABLE
    transactional_id_expiration_ms: int = _FROM_TABLE
    transaction_max_timeout_ms: int = _FROM_TABLE
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = _FROM_TABLE
    transaction_remove_expired_transaction_cleanup_interval_ms: int = _FROM_TABLE
    producer_id_expiration_ms: int = _FROM_TABLE
    producer_id_expiration_check_interval_ms: int = _FROM_TABLE
    group_initial_rebalance_delay_ms: int = _FROM_TABLE
    group_min_session_timeout_ms: int = _FROM_TABLE
    group_max_session_timeout_ms: int = _FROM_TABLE
    group_max_size: int = _FROM_TABLE
    group_coordinator_rebalance_protocols: tuple[str, ...] = _FROM_TABLE
    group_consumer_session_timeout_ms: int = _FROM_TABLE
    group_consumer_min_session_timeout_ms: int = _FROM_TABLE
    group_consumer_max_session_timeout_ms: int = _FROM_TABLE
    group_consumer_heartbeat_interval_ms: int = _FROM_TABLE
    group_consumer_min_heartbeat_interval_ms: int = _FROM_TABLE
    group_consumer_max_heartbeat_interval_ms: int = _FROM_TABLE
    group_consumer_max_size: int = _FROM_TABLE
    group_consumer_assignors: tuple[str, ...] = _FROM_TABLE
    log_cleaner_enable: bool = _FROM_TABLE
    log_cleaner_threads: int = _FROM_TABLE
    log_cleaner_backoff_ms: int = _FROM_TABLE
    log_cleaner_dedupe_buffer_size: int = _FROM_TABLE
    log_cleaner_io_max_bytes_per_second: float = _FROM_TABLE
    log_cleaner_min_cleanable_ratio: float = _FROM_TABLE
    log_cleaner_delete_retention_ms: int = _FROM_TABLE
    log_cleaner_min_compaction_lag_ms: int = _FROM_TABLE
    log_cleaner_max_compaction_lag_ms: int = _FROM_TABLE
    log_scrubber_enable: bool = _FROM_TABLE
    log_scrubber_bytes_per_second: int = _FROM_TABLE
    log_scrubber_interval_ms: int = _FROM_TABLE
    etcd_endpoints: tuple[str, ...] = _FROM_TABLE
    etcd_prefix: str = _FROM_TABLE
    broker_rack: str | None = _FROM_TABLE
    controlled_shutdown_enable: bool = _FROM_TABLE
    broker_session_timeout_ms: int = _FROM_TABLE
    schema_registry_listeners: tuple[str, ...] = _FROM_TABLE
    explicit_keys: frozenset[str] = field(default=frozenset(), compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    # -- construction ------------------------------------------------------------------------

    def __post_init__(self) -> None:
        for key, definition in BROKER_CONFIGS.items():
            definition.check_typed(self.value_of(key))
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
        for endpoint in self.etcd_endpoints:
            if not endpoint.startswith(("http://", "https://")):
                raise ConfigError(
                    "etcd.endpoints", f"expected http://host:port URLs, got {endpoint!r}"
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
        aliases: dict[str, Any] = {}
        for raw_key, raw_value in props.items():
            key = java_trim(raw_key)
            if key in BROKER_KEY_ALIASES:
                target = BROKER_CONFIGS[BROKER_KEY_ALIASES[key]]
                aliases[key] = replace(target, name=key).parse(raw_value)
            elif key in BROKER_CONFIGS:
                typed[key] = BROKER_CONFIGS[key].parse(raw_value)
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
        if "log.dir" in aliases:
            typed.setdefault("log.dirs", aliases["log.dir"])

        controllers = {name.upper() for name in typed.get("controller.listener.names", ())}
        kwargs: dict[str, Any] = {}
        for key, value in typed.items():
            kept = value
            if key in ("listeners", "advertised.listeners"):
                # Kafka's stock KRaft file names a controller listener; odradek serves none.
                kept = []
                for item in value:
                    if Listener.parse(key, item).name in controllers:
                        warnings.append(f"{key}: controller listener {item} ignored")
                    else:
                        kept.append(item)
                if key == "advertised.listeners" and not kept:
                    kept = None
            kwargs[_field_name(key)] = _to_field(key, kept)
        return cls(**kwargs, explicit_keys=frozenset(typed), warnings=tuple(warnings))

    def with_overrides(
        self, listen: str | None = None, data_dir: str | None = None
    ) -> BrokerConfig:
        """The CLI's ``--listen HOST:PORT`` and ``--data-dir DIR``, which win over the file (as
        ``listeners`` and ``log.dirs``: STATIC_BROKER_CONFIG, like Kafka's ``--override``)."""
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

    def value_of(self, key: str) -> Any:
        """The typed value of a Kafka broker key, in the form :data:`BROKER_CONFIGS` formats."""
        if key not in BROKER_CONFIGS:
            raise KeyError(key)
        value = getattr(self, _field_name(key))
        form = _FIELD_FORMS.get(key)
        return value if form is None else form[1](value)

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
        return retention_ms(self.value_of)

    @property
    def effective_roll_ms(self) -> int:
        """``log.roll.ms``, else ``log.roll.hours`` in ms."""
        return roll_ms(self.value_of)

    @property
    def effective_roll_jitter_ms(self) -> int:
        """``log.roll.jitter.ms``, else ``log.roll.jitter.hours`` in ms."""
        return roll_jitter_ms(self.value_of)

    @property
    def effective_flush_ms(self) -> int:
        """``log.flush.interval.ms``, or when null ``log.flush.scheduler.interval.ms``."""
        return flush_ms(self.value_of)

    def default_log_config(self) -> LogConfig:
        """The storage engine's settings for a topic without overrides."""
        return log_config_for(self, {})


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


def _suggestion(key: str) -> str:
    import difflib  # only on this error path: not worth its import at start-up

    known = [*BROKER_CONFIGS, *BROKER_KEY_ALIASES, *IGNORED_BROKER_KEYS]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


def load_properties(path: str | Path) -> BrokerConfig:
    """Read a ``server.properties`` file into a :class:`BrokerConfig`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(None, f"cannot read {path}: {exc}") from exc
    return BrokerConfig.from_properties(parse_properties(text))
