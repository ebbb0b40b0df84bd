"""Topic administration: the broker's rules for creating, growing, reconfiguring and deleting
topics, and the partition logs of the topics this broker holds.

Owned by the broker's event loop. Topics live in the cluster store: queries read the broker's
:class:`~odradek.cluster.image.MetadataImage`, changes are written by
:class:`~odradek.cluster.topic_admin.TopicAdmin` (so they are async) and return once the image
shows them. Partition logs follow the image, not the call that made the change: a listener
creates the logs of the partitions this broker is a replica of when they appear (whichever
broker created them), and deletes them when they go. A crash between a change and its logs is
mended at start-up (:meth:`TopicManager.reconcile`).

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
from collections.abc import Mapping, Sequence

from odradek.broker.limits import default_max_broker_partitions
from odradek.cluster.image import MetadataImage, TopicsChange
from odradek.cluster.model import TopicInfo
from odradek.cluster.topic_admin import TopicAdmin
from odradek.config import BROKER_CONFIGS, BrokerConfig, log_config_for, validate_topic_configs
from odradek.errors import (
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidRequestError,
    InvalidTopicError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from odradek.metadata.store import TopicMetadata
from odradek.storage.log import PartitionLog
from odradek.storage.log_manager import LogManager
from odradek.topic_names import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC

__all__ = [
    "TopicManager",
    "validate_topic_name",
    "internal_topic_replication",
    "MAX_TOPIC_NAME_LENGTH",
    "MAX_REPLICATION_FACTOR",
]

MAX_TOPIC_NAME_LENGTH = 249
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_PARTITIONS = 100_000
#: CreateTopics carries the replication factor as an int16.
MAX_REPLICATION_FACTOR = 32767

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


def _explicit(config: BrokerConfig, key: str) -> bool:
    """Whether broker setting ``key`` was set (in the file, or as a keyword by an embedder)."""
    return key in config.explicit_keys or config.value_of(key) != BROKER_CONFIGS[key].default


def internal_topic_replication(
    config: BrokerConfig, name: str, live_brokers: int
) -> tuple[int, dict[str, str]]:
    """The replication factor of internal topic ``name`` and the configs it adds, when created
    with ``live_brokers`` registered: ``offsets.topic.replication.factor`` /
    ``transaction.state.log.replication.factor`` as set (Kafka's meaning: creation fails, and
    the coordinators stay unavailable, until that many brokers are live), or unless set
    min(3, live brokers), so a single node (or a cluster still starting) gets a working topic.
    ``__transaction_state`` takes ``min.insync.replicas`` from
    ``transaction.state.log.min.isr``; unless set, capped at the replication factor (Kafka's
    default of 2 would leave a one-replica topic unwritable)."""
    key = (
        "offsets.topic.replication.factor"
        if name == OFFSETS_TOPIC
        else "transaction.state.log.replication.factor"
    )
    factor = int(config.value_of(key))
    if not _explicit(config, key):
        factor = max(1, min(factor, live_brokers))
    configs: dict[str, str] = {}
    if name == TRANSACTION_STATE_TOPIC:
        min_isr = config.transaction_state_log_min_isr
        if not _explicit(config, "transaction.state.log.min.isr"):
            min_isr = min(min_isr, factor)
        configs["min.insync.replicas"] = str(min_isr)
    return factor, configs


class TopicManager:
    def __init__(
        self,
        config: BrokerConfig,
        image: MetadataImage,
        admin: TopicAdmin,
        logs: LogManager,
    ) -> None:
        self._config = config
        self._node = config.node_id
        self._image = image
        self._admin = admin
        self._logs = logs
        # name -> (the image's value, its TopicMetadata), so that handlers keep their shape
        # and a topic is converted once per change.
        self._converted: dict[str, tuple[TopicInfo, TopicMetadata]] = {}
        self._held = sum(len(self._held_partitions(t)) for t in image.topics())
        image.add_topics_listener(self._on_topics)
        configured = config.max_broker_partitions
        #: ``max.broker.partitions``, as configured or derived (see odradek.broker.limits).
        self.max_partitions = (
            configured if configured is not None else default_max_broker_partitions()
        )
        if self._held > self.max_partitions:
            _log.warning(
                "this broker holds %d partitions, more than max.broker.partitions (%d): it "
                "serves them all but refuses new ones", self._held, self.max_partitions,
            )

    def partition_count(self) -> int:
        """Partitions this broker is a replica of, of every topic (internal ones included)."""
        return self._held

    def _held_partitions(self, info: TopicInfo) -> list[int]:
        node = self._node
        return [p for p, state in enumerate(info.partitions) if node in state.replicas]

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

    def _meta(self, info: TopicInfo) -> TopicMetadata:
        cached = self._converted.get(info.name)
        if cached is not None and cached[0] is info:
            return cached[1]
        meta = TopicMetadata(info.name, info.topic_id, len(info.partitions), info.configs)
        self._converted[info.name] = (info, meta)
        return meta

    def topic(self, name: str) -> TopicMetadata | None:
        info = self._image.topic(name)
        return None if info is None else self._meta(info)

    def topics(self) -> list[TopicMetadata]:
        """Every topic, by name."""
        return [self._meta(info) for info in self._image.topics()]

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        info = self._image.topic_by_id(topic_id)
        return None if info is None else self._meta(info)

    def log(self, topic: str, partition: int) -> PartitionLog:
        info = self._image.topic(topic)
        if info is None or not 0 <= partition < len(info.partitions):
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        log = self._logs.get_log(topic, partition)
        if log is None:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} has no log")
        return log

    # -- changes --------------------------------------------------------------------------------

    async def create(
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
        since groups and transactions cannot work without them; its replication factor, unless
        given, is :func:`internal_topic_replication`'s.

        A replication factor above the live brokers is INVALID_REPLICATION_FACTOR (Kafka's
        answer; a partition is never placed on fewer brokers than asked)."""
        validate_topic_name(name)
        if self._image.topic(name) is not None:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        if internal and replication_factor == -1 and not assignments:
            live = len(self._image.live_brokers())
            replication_factor, added = internal_topic_replication(self._config, name, live)
            configs = {**added, **(configs or {})}
        replicas: list[list[int]] | None = None
        if assignments:
            if num_partitions != -1 or replication_factor != -1:
                raise InvalidRequestError(
                    "both a replica assignment and numPartitions/replicationFactor were given"
                )
            if sorted(assignments) != list(range(len(assignments))):
                raise InvalidPartitionsError("replica assignment partitions must be 0..N-1")
            replicas = [assignments[p] for p in range(len(assignments))]
            num_partitions = len(assignments)
        if num_partitions == -1:
            num_partitions = self._config.num_partitions
        if replication_factor == -1:
            replication_factor = self._config.default_replication_factor
        if num_partitions <= 0 or num_partitions > MAX_PARTITIONS:
            raise InvalidPartitionsError(
                f"number of partitions must be between 1 and {MAX_PARTITIONS}, got {num_partitions}"
            )
        if replicas is None and not 0 < replication_factor <= MAX_REPLICATION_FACTOR:
            raise InvalidReplicationFactorError(
                f"replication factor must be between 1 and {MAX_REPLICATION_FACTOR}, got "
                f"{replication_factor}"
            )
        clean = validate_topic_configs(dict(configs or {}))
        log_config_for(self._config, clean)  # refuses what the log cannot take
        refused = None if internal else self._limit_exceeded(num_partitions)
        if refused is not None:
            raise PolicyViolationError(f"cannot create topic {name!r}: {refused}")
        info = await self._admin.create_topic(
            name,
            partitions=num_partitions,
            replication_factor=replication_factor,
            assignments=replicas,
            configs=clean,
            validate_only=validate_only,
        )
        return TopicMetadata(info.name, info.topic_id, len(info.partitions), info.configs)

    async def delete(self, name: str) -> TopicMetadata:
        record = await self._admin.delete_topic(name)
        return TopicMetadata(name, record.topic_id, record.partition_count, record.configs)

    async def create_partitions(
        self,
        name: str,
        count: int,
        *,
        validate_only: bool,
        assignments: Sequence[Sequence[int]] | None = None,
    ) -> TopicMetadata:
        meta = self.topic(name)
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
        record = await self._admin.create_partitions(
            name, count, assignments=assignments, validate_only=validate_only
        )
        if validate_only:
            return meta
        return TopicMetadata(name, record.topic_id, record.partition_count, record.configs)

    async def set_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool
    ) -> TopicMetadata:
        """Replace the topic's dynamic configs with ``configs`` (validated first)."""
        meta = self.topic(name)
        if meta is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        clean = validate_topic_configs(dict(configs))
        log_config_for(self._config, clean)
        if validate_only:
            return meta
        record = await self._admin.alter_configs(name, clean)
        return TopicMetadata(name, record.topic_id, record.partition_count, record.configs)

    # -- the logs follow the image ----------------------------------------------------------------

    def _on_topics(self, change: TopicsChange) -> None:
        for info in change.removed:
            self._drop(info)
        for old, new in change.changed:
            if old.topic_id != new.topic_id:
                self._drop(old)
                self._add(new)
                continue
            before, after = set(self._held_partitions(old)), self._held_partitions(new)
            self._held += len(after) - len(before)
            if old.configs != new.configs:
                self._logs.update_config(new.name, log_config_for(self._config, new.configs))
            for p in sorted(before - set(after)):
                self._logs.delete_log(new.name, p)
            self._create_logs(new, [p for p in after if p not in before])
        for info in change.added:
            self._add(info)

    def _add(self, info: TopicInfo) -> None:
        held = self._held_partitions(info)
        self._held += len(held)
        self._create_logs(info, held)

    def _create_logs(self, info: TopicInfo, partitions: list[int]) -> None:
        if partitions:
            self._logs.create_logs(
                info.name, partitions, log_config_for(self._config, info.configs)
            )

    def _drop(self, info: TopicInfo) -> None:
        held = self._held_partitions(info)
        self._held -= len(held)
        self._converted.pop(info.name, None)
        for p in held:
            self._logs.delete_log(info.name, p)

    def reconcile(self) -> None:
        """Make the disk agree with the metadata after a crash between the two: create the logs
        of partitions this broker holds that the disk lacks, and delete logs of topics (or
        partitions) it no longer holds."""
        for topic, partition in self._logs.partitions():
            info = self._image.topic(topic)
            if (
                info is None
                or partition >= len(info.partitions)
                or self._node not in info.partitions[partition].replicas
            ):
                self._logs.delete_log(topic, partition)
        for info in self._image.topics():
            missing = [p for p in self._held_partitions(info)
                       if not self._logs.has_log(info.name, p)]
            if missing:
                self._create_logs(info, missing)
