"""Topic administration: the rules for creating, growing, reconfiguring and deleting topics.

Synchronous; owned by the broker's event loop. Metadata goes to the :class:`MetadataStore` first
and the partition logs are created after, so a crash in between leaves a topic whose missing
partition directories are created again at start-up (:meth:`TopicManager.reconcile`).

The broker holds at most ``max.broker.partitions`` partitions (:mod:`odradek.broker.limits`):
creating a topic beyond it raises PolicyViolationError, adding partitions InvalidPartitionsError,
each saying how many there are, the limit and its name. The broker's own internal topics count
but are never refused (``create(internal=True)``). Start-up never refuses what is already
on disk: more partitions than the limit are served, with a warning.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping

from odradek.broker.limits import default_max_broker_partitions
from odradek.config import BrokerConfig, log_config_for, validate_topic_configs
from odradek.errors import (
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidRequestError,
    InvalidTopicError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from odradek.metadata.store import MetadataStore, TopicMetadata
from odradek.storage.log import PartitionLog
from odradek.storage.log_manager import LogManager

__all__ = ["TopicManager", "validate_topic_name", "MAX_TOPIC_NAME_LENGTH"]

MAX_TOPIC_NAME_LENGTH = 249
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_PARTITIONS = 100_000

_log = logging.getLogger("odradek.broker")


def validate_topic_name(name: str) -> None:
    if not name:
        raise InvalidTopicError("topic name is empty")
    if name in (".", ".."):
        raise InvalidTopicError(f"topic name cannot be {name!r}")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopicError(
            f"topic name is {len(name)} characters long; the limit is {MAX_TOPIC_NAME_LENGTH}"
        )
    if not _LEGAL.match(name):
        raise InvalidTopicError(
            f"topic name {name!r} is illegal: only ASCII letters, digits, '.', '_' and '-' are allowed"
        )


class TopicManager:
    def __init__(self, config: BrokerConfig, store: MetadataStore, logs: LogManager) -> None:
        self._config = config
        self._store = store
        self._logs = logs
        configured = config.max_broker_partitions
        #: ``max.broker.partitions``, as configured or derived (see odradek.broker.limits).
        self.max_partitions = (
            configured if configured is not None else default_max_broker_partitions()
        )
        held = self.partition_count()
        if held > self.max_partitions:
            _log.warning(
                "this broker holds %d partitions, more than max.broker.partitions (%d): it "
                "serves them all but refuses new ones", held, self.max_partitions,
            )

    def partition_count(self) -> int:
        """Partitions of every topic (internal ones included)."""
        return sum(meta.partitions for meta in self._store.topics())

    def _limit_exceeded(self, adding: int) -> str | None:
        """Why adding ``adding`` partitions is refused, or None when it fits."""
        held = self.partition_count()
        if held + adding <= self.max_partitions:
            return None
        source = "" if self._config.max_broker_partitions is not None else (
            ", derived from this process's memory"
        )
        return (
            f"adding {adding} partitions would bring this broker to {held + adding}; it holds "
            f"{held} and max.broker.partitions is {self.max_partitions}{source}"
        )

    # -- queries --------------------------------------------------------------------------------

    def topic(self, name: str) -> TopicMetadata | None:
        return self._store.topic(name)

    def topics(self) -> list[TopicMetadata]:
        return sorted(self._store.topics(), key=lambda t: t.name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        return self._store.topic_by_id(topic_id)

    def log(self, topic: str, partition: int) -> PartitionLog:
        meta = self._store.topic(topic)
        if meta is None or not 0 <= partition < meta.partitions:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        log = self._logs.get_log(topic, partition)
        if log is None:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} has no log")
        return log

    # -- changes --------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        num_partitions: int = -1,
        replication_factor: int = -1,
        assignments: Mapping[int, list[int]] | None = None,
        configs: Mapping[str, str | None] | None = None,
        validate_only: bool = False,
        internal: bool = False,
    ) -> TopicMetadata:
        """Create a topic. ``internal`` marks the broker's own ``__consumer_offsets`` or
        ``__transaction_state``: counted in ``max.broker.partitions`` but never refused by it,
        since groups and transactions cannot work without them."""
        validate_topic_name(name)
        if self._store.topic(name) is not None:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        if assignments:
            if num_partitions != -1 or replication_factor != -1:
                raise InvalidRequestError(
                    "both a replica assignment and numPartitions/replicationFactor were given"
                )
            if sorted(assignments) != list(range(len(assignments))):
                raise InvalidPartitionsError("replica assignment partitions must be 0..N-1")
            for p, replicas in assignments.items():
                if replicas != [self._config.node_id]:
                    raise InvalidReplicationFactorError(
                        f"partition {p}: replicas {replicas} are not all live brokers "
                        f"(the only broker is {self._config.node_id})"
                    )
            num_partitions = len(assignments)
        if num_partitions == -1:
            num_partitions = self._config.num_partitions
        if replication_factor == -1:
            replication_factor = self._config.default_replication_factor
        if num_partitions <= 0 or num_partitions > MAX_PARTITIONS:
            raise InvalidPartitionsError(
                f"number of partitions must be between 1 and {MAX_PARTITIONS}, got {num_partitions}"
            )
        if replication_factor <= 0:
            raise InvalidReplicationFactorError(
                f"replication factor must be at least 1, got {replication_factor}"
            )
        if replication_factor > 1:
            raise InvalidReplicationFactorError(
                f"replication factor {replication_factor} is larger than the number of "
                "available brokers (1)"
            )
        clean = validate_topic_configs(dict(configs or {}))
        log_config = log_config_for(self._config, clean)
        refused = None if internal else self._limit_exceeded(num_partitions)
        if refused is not None:
            raise PolicyViolationError(f"cannot create topic {name!r}: {refused}")
        meta = TopicMetadata(
            name=name, topic_id=uuid.uuid4(), partitions=num_partitions, configs=clean
        )
        if validate_only:
            return meta
        self._store.put_topic(meta)
        self._logs.create_logs(name, range(num_partitions), log_config)
        return meta

    def delete(self, name: str) -> TopicMetadata:
        meta = self._store.topic(name)
        if meta is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        self._store.remove_topic(name)
        for p in range(meta.partitions):
            self._logs.delete_log(name, p)
        return meta

    def create_partitions(self, name: str, count: int, *, validate_only: bool) -> TopicMetadata:
        meta = self._store.topic(name)
        if meta is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        if count < meta.partitions:
            raise InvalidPartitionsError(
                f"topic {name!r} has {meta.partitions} partitions; it cannot shrink to {count}"
            )
        if count == meta.partitions:
            raise InvalidPartitionsError(f"topic {name!r} already has {count} partitions")
        if count > MAX_PARTITIONS:
            raise InvalidPartitionsError(f"at most {MAX_PARTITIONS} partitions are allowed")
        refused = self._limit_exceeded(count - meta.partitions)
        if refused is not None:
            raise InvalidPartitionsError(
                f"cannot raise topic {name!r} to {count} partitions: {refused}"
            )
        if validate_only:
            return meta
        log_config = log_config_for(self._config, meta.configs)
        new = self._store.update_topic(name, partitions=count)
        self._logs.create_logs(name, range(meta.partitions, count), log_config)
        return new

    def set_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool
    ) -> TopicMetadata:
        """Replace the topic's dynamic configs with ``configs`` (validated first)."""
        meta = self._store.topic(name)
        if meta is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        clean = validate_topic_configs(dict(configs))
        log_config = log_config_for(self._config, clean)
        if validate_only:
            return meta
        new = self._store.update_topic(name, configs=clean)
        self._logs.update_config(name, log_config)
        return new

    def reconcile(self) -> None:
        """Make the disk agree with the metadata after a crash between the two: create partition
        logs the metadata names but the disk lacks, and delete logs of topics (or partitions)
        the metadata no longer has."""
        for topic, partition in self._logs.partitions():
            meta = self._store.topic(topic)
            if meta is None or partition >= meta.partitions:
                self._logs.delete_log(topic, partition)
        for meta in self._store.topics():
            log_config = log_config_for(self._config, meta.configs)
            for p in range(meta.partitions):
                if not self._logs.has_log(meta.name, p):
                    self._logs.create_log(meta.name, p, log_config)
