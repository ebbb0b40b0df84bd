"""The group coordinator: the registry of groups (classic and KIP-848), committed offsets, and
the one place records of ``__consumer_offsets`` are replayed.

Operations return a :class:`~odradek.coordinator.runtime.CoordinatorResult` — the records to
write and the response — and change no persisted state; the
:class:`~odradek.coordinator.runtime.CoordinatorRuntime` writes the records to the group's
partition of ``__consumer_offsets`` and then calls :meth:`GroupCoordinator.replay`, the same
code that rebuilds the state when a partition is loaded. Committed offsets, group tombstones
and every KIP-848 record change state only through replay; classic-group membership is
transient and persisted as a snapshot record per generation (see ``classic``), whose records
are written but not replayed live (the group in memory is what they snapshot), as in Kafka.

This class is the runtime's :class:`~odradek.coordinator.runtime.CoordinatorShard` for every
partition of ``__consumer_offsets``: :meth:`on_loaded` starts the timers of a loaded
partition's groups and :meth:`on_unloaded` forgets them.

Committed offsets are read (OffsetFetch, :meth:`fetch_offsets`) as of the durable part of the
log, as Kafka's runtime reads at its last committed offset: a commit is replayed at once (the
operations that follow validate against it), but until the high watermark covers it OffsetFetch
answers the offset it replaced (and, with require_stable, whether a transaction's offset was
pending then). The runtime says what is not durable (:meth:`on_pending`, :meth:`on_durable`);
for each (group, topic, partition) changed by records not durable yet, :attr:`_undurable`
keeps what each of those changes replaced, until the high watermark passes it: the first one
kept is the value as of the durable log.
With one replica every write is durable when written, and nothing is kept.

Owned by one thread (the broker's event loop). Time comes from the injected clock; the runtime
runs :attr:`timer`'s callbacks (operations too) when their deadlines are reached.
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from odradek.clock import Clock
from odradek.coordinator.group.classic import ClassicGroup, ClassicGroups, ClassicGroupState
from odradek.coordinator.group.consumer import ConsumerGroup, ConsumerGroups
from odradek.coordinator.group.context import GroupConfig, TopicInfo
from odradek.coordinator.group.records import (
    GroupMetadataKey,
    OffsetCommitKey,
    OffsetCommitValue,
    RecordKey,
    RecordValue,
    decode,
    encode_key,
    encode_value,
    partition_for,
)
from odradek.coordinator.runtime import CoordinatorResult, StoredMarker, StoredRecord
from odradek.coordinator.timer import Timer
from odradek.errors import (
    CoordinatorNotAvailableError,
    ErrorCode,
    FencedInstanceIdError,
    GroupIdNotFoundError,
    IllegalGenerationError,
    InvalidGroupIdError,
    NonEmptyGroupError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

__all__ = [
    "GroupCoordinator",
    "Group",
    "CommittedOffset",
    "GroupListing",
    "Record",
    "StoredRecord",
    "StoredMarker",
]

log = logging.getLogger("odradek.coordinator.group")


Group = ClassicGroup | ConsumerGroup
#: A record of ``__consumer_offsets``: typed key and value (None: a tombstone).
Record = tuple[RecordKey, RecordValue | None]
_OffsetResults = list[tuple[str, int, ErrorCode]]
#: An offset as it was before a change not durable yet: (the log offset of that change; the
#: committed value before it, None for none; whether a transaction's offset was pending).
_Before = tuple[int, "OffsetCommitValue | None", bool]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    topic: str
    partition: int
    offset: int  # -1 when nothing is committed
    leader_epoch: int = -1
    metadata: str = ""
    error: ErrorCode = ErrorCode.none


@dataclass(frozen=True, slots=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str
    group_type: str  # "classic" or "consumer"


class GroupCoordinator:
    """Implements :class:`~odradek.coordinator.group.context.CoordinatorContext` for its
    group machines and :class:`~odradek.coordinator.runtime.CoordinatorShard` for the
    runtime."""

    def __init__(
        self,
        config: GroupConfig,
        clock: Clock,
        *,
        topics: Callable[[], Mapping[str, TopicInfo]],
    ) -> None:
        self._config = config
        self._clock = clock
        self._topics = topics
        self._timer = Timer()
        self.groups: dict[str, Any] = {}
        #: Committed offsets: group id -> (topic, partition) -> value.
        self.offsets: dict[str, dict[tuple[str, int], OffsetCommitValue]] = {}
        #: Offsets committed inside open transactions: producer id -> group -> partition.
        self.pending_txn_offsets: dict[int, dict[str, dict[tuple[str, int], OffsetCommitValue]]]
        self.pending_txn_offsets = {}
        # Log offsets of the records behind the committed and the pending values.
        self._positions: dict[str, dict[tuple[str, int], int]] = {}
        self._pending_positions: dict[tuple[int, str, str, int], int] = {}
        #: Per partition whose durability the runtime tracks: the offset below which its
        #: records count as durable (the high watermark as last told, or where a load's pending
        #: records begin); records replayed at or past it are not durable yet. A partition
        #: without one replays only durable records (no replication, a test).
        self._committed: dict[int, int] = {}
        #: Per such partition: group -> (topic, partition) -> the offset's changes not durable
        #: yet, oldest first, each with what it changed; the first says what is durable.
        self._undurable: dict[int, dict[str, dict[tuple[str, int], list[_Before]]]] = {}
        self.classic = ClassicGroups(
            self, self.groups, take_over_consumer_group=self.consumer_group_tombstones
        )
        self.consumer = ConsumerGroups(self, self.groups)
        self._schedule_offset_expiry()

    # -- CoordinatorContext -----------------------------------------------------------------

    @property
    def timer(self) -> Timer:
        return self._timer

    @property
    def config(self) -> GroupConfig:
        return self._config

    def now_ms(self) -> int:
        return self._clock.milliseconds()

    def topics(self) -> Mapping[str, TopicInfo]:
        return self._topics()

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        for info in self._topics().values():
            if info.topic_id == topic_id:
                return info
        return None

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self._config.offsets_partitions)

    # -- CoordinatorShard: records, replay, loading -------------------------------------------

    def partition_of(self, record: Record) -> int:
        return self.partition_for(record[0].group_id)

    @staticmethod
    def encode(record: Record) -> tuple[bytes, bytes | None]:
        return encode_key(record[0]), encode_value(record[1])

    @staticmethod
    def decode(key: bytes, value: bytes | None) -> Record | None:
        """Records with unknown key versions decode to None and are skipped, as Kafka does."""
        return decode(key, value)

    def replay(
        self, record: Record, *, partition: int, offset: int, producer_id: int | None
    ) -> None:
        """Apply one record; ``producer_id`` when it is in a transactional batch, ``offset``
        its position in ``__consumer_offsets`` (orders transactional and plain commits)."""
        key, value = record
        if isinstance(key, OffsetCommitKey):
            committed = self._committed.get(partition)
            if committed is not None and offset >= committed:
                self._changing(partition, key.group_id, (key.topic, key.partition), offset)
            if producer_id is not None:
                self._replay_pending_offset(producer_id, key, value, offset)
            else:
                self._replay_offset(key, value, offset)
        elif isinstance(key, GroupMetadataKey):
            self.classic.replay(key, value)  # type: ignore[arg-type]
        else:
            self.consumer.replay(key, value)

    def replay_marker(
        self, partition: int, producer_id: int, commit: bool, offset: int = -1
    ) -> None:
        self.complete_transaction(producer_id, commit, partition, offset)

    # -- durability (see the module docs) ---------------------------------------------------

    def on_pending(self, partition: int, offset: int) -> None:
        # An offset known already stays: what lies below it is durable, what lies between
        # it and ``offset`` may not be.
        self._committed.setdefault(partition, offset)

    def on_durable(self, partition: int, end_offset: int) -> None:
        committed = self._committed.get(partition)
        if committed is None or end_offset <= committed:
            return
        self._committed[partition] = end_offset
        groups = self._undurable.get(partition)
        if not groups:
            return
        for group_id in list(groups):
            changes = groups[group_id]
            for tp in list(changes):
                before = changes[tp]
                durable = 0
                while durable < len(before) and before[durable][0] < end_offset:
                    durable += 1
                if durable == len(before):
                    del changes[tp]
                elif durable:
                    del before[:durable]
            if not changes:
                del groups[group_id]
        if not groups:
            del self._undurable[partition]

    def _changing(
        self, partition: int, group_id: str, tp: tuple[str, int], offset: int
    ) -> None:
        """The record at ``offset`` of ``partition`` is about to change ``group_id``'s offset of
        ``tp`` (its committed value, or a transaction's pending one): if the record is not
        durable, keep what it changes until it is."""
        committed = self._committed.get(partition)
        if committed is None or offset < committed:
            return
        changes = self._undurable.setdefault(partition, {}).setdefault(group_id, {})
        before = changes.setdefault(tp, [])
        if before and before[-1][0] == offset:
            return  # a second change by one record (a marker's): what it changed is kept
        value = self.offsets.get(group_id, {}).get(tp)
        before.append((offset, value, self.has_pending_offsets(group_id, *tp)))

    def on_loaded(self, partition: int) -> None:
        """Every member of a loaded classic group must heartbeat within its session timeout
        from now (KIP-848 members got their timers when their records were replayed)."""
        self.classic.start_session_timers(
            [gid for gid in self.groups if self.partition_for(gid) == partition]
        )

    def on_unloaded(self, partition: int) -> None:
        """Forget the groups, offsets and pending transactional offsets of ``partition``."""
        mine = [gid for gid in self.groups if self.partition_for(gid) == partition]
        for group_id in mine:
            group = self.groups[group_id]
            if isinstance(group, ClassicGroup):
                # Waiting members look for the coordinator again, as Kafka answers them.
                self.classic.drop(group, ErrorCode.not_coordinator)
            else:
                self.consumer.drop(group_id)
        for group_id in [g for g in self.offsets if self.partition_for(g) == partition]:
            del self.offsets[group_id]
            self._positions.pop(group_id, None)
        for producer_id, groups in list(self.pending_txn_offsets.items()):
            for group_id in [g for g in groups if self.partition_for(g) == partition]:
                del groups[group_id]
            if not groups:
                del self.pending_txn_offsets[producer_id]
        for pending_key in [
            k for k in self._pending_positions if self.partition_for(k[1]) == partition
        ]:
            del self._pending_positions[pending_key]
        self._committed.pop(partition, None)
        self._undurable.pop(partition, None)

    def _replay_offset(
        self, key: OffsetCommitKey, value: RecordValue | None, position: int
    ) -> None:
        tp = (key.topic, key.partition)
        if value is None:
            # A tombstone also cancels offsets of the partition pending in open transactions
            # (written before it), as in Kafka: a deleted group's offsets stay deleted.
            for groups in self.pending_txn_offsets.values():
                groups.get(key.group_id, {}).pop(tp, None)
            offsets = self.offsets.get(key.group_id)
            if offsets is not None:
                offsets.pop(tp, None)
                self._positions.get(key.group_id, {}).pop(tp, None)
                if not offsets:
                    del self.offsets[key.group_id]
                    self._positions.pop(key.group_id, None)
            return
        assert isinstance(value, OffsetCommitValue)
        if key.group_id not in self.groups:
            # Offsets committed without a membership (a "simple" group, or an admin client).
            self.classic.get_or_create(key.group_id)
        self.offsets.setdefault(key.group_id, {})[tp] = value
        self._positions.setdefault(key.group_id, {})[tp] = position

    def _replay_pending_offset(
        self, producer_id: int, key: OffsetCommitKey, value: RecordValue | None, position: int
    ) -> None:
        groups = self.pending_txn_offsets.setdefault(producer_id, {})
        if value is None:
            groups.get(key.group_id, {}).pop((key.topic, key.partition), None)
            return
        assert isinstance(value, OffsetCommitValue)
        groups.setdefault(key.group_id, {})[(key.topic, key.partition)] = value
        self._pending_positions[(producer_id, key.group_id, key.topic, key.partition)] = position

    def complete_transaction(
        self, producer_id: int, commit: bool, partition: int, offset: int = -1
    ) -> None:
        """A COMMIT or ABORT marker of ``producer_id`` is in ``partition`` of
        ``__consumer_offsets`` (at ``offset``; -1: unknown, durable): its pending offsets of
        the groups there become committed, or are dropped. Called live after the marker is
        written and when one is replayed."""
        groups = self.pending_txn_offsets.get(producer_id)
        if not groups:
            return
        for group_id in [g for g in groups if self.partition_for(g) == partition]:
            if self._committed:
                for tp in groups[group_id]:
                    self._changing(partition, group_id, tp, offset)
            pending = groups.pop(group_id)
            positions = self._positions.get(group_id, {})
            for (topic, p), value in pending.items():
                position = self._pending_positions.pop((producer_id, group_id, topic, p), -1)
                # As Kafka: a plain commit written after the transactional one wins, so the
                # outcome is the same live and after compaction.
                if commit and position >= positions.get((topic, p), -1):
                    self._replay_offset(OffsetCommitKey(group_id, topic, p), value, position)
        if not groups:
            del self.pending_txn_offsets[producer_id]

    def _has_open_transactions(self, group_id: str) -> bool:
        return any(group_id in groups for groups in self.pending_txn_offsets.values())

    def has_pending_offsets(self, group_id: str, topic: str, partition: int) -> bool:
        return any(
            (topic, partition) in groups.get(group_id, {})
            for groups in self.pending_txn_offsets.values()
        )

    # -- offsets ----------------------------------------------------------------------------

    def _validate_commit(
        self,
        group_id: str,
        member_id: str,
        generation_or_epoch: int,
        instance_id: str | None,
        api_version: int,
    ) -> None:
        if not group_id:
            raise InvalidGroupIdError("the group id must not be empty")
        group = self.groups.get(group_id)
        if group is None:
            if generation_or_epoch < 0:
                return  # a simple group is created when the commit is replayed
            if api_version >= 9:
                raise GroupIdNotFoundError(f"group {group_id} does not exist")
            raise IllegalGenerationError(f"group {group_id} does not exist")
        if isinstance(group, ConsumerGroup):
            self.consumer.validate_offset_commit(group_id, member_id, generation_or_epoch)
            return
        if group.state is ClassicGroupState.DEAD:
            raise CoordinatorNotAvailableError(f"group {group_id} is being removed")
        if generation_or_epoch < 0 and group.state is ClassicGroupState.EMPTY:
            return  # an admin client or a consumer without group management
        if generation_or_epoch >= 0 or member_id or instance_id is not None:
            self._validate_classic_member(group, member_id, instance_id)
            if generation_or_epoch != group.generation_id:
                raise IllegalGenerationError(
                    f"generation {generation_or_epoch} is not group {group_id}'s "
                    f"{group.generation_id}"
                )
        elif not group.is_empty():
            # Commits without a membership are only for groups nobody consumes in.
            raise UnknownMemberIdError(f"group {group_id} has members; give a member id")
        if group.state is ClassicGroupState.COMPLETING_REBALANCE:
            raise RebalanceInProgressError(f"group {group_id} is completing a rebalance")

    @staticmethod
    def _validate_classic_member(
        group: ClassicGroup, member_id: str, instance_id: str | None
    ) -> None:
        if instance_id is not None:
            current = group.static_members.get(instance_id)
            if current is not None and current != member_id:
                raise FencedInstanceIdError(f"instance {instance_id} is now {current}")
        if member_id not in group.members:
            raise UnknownMemberIdError(f"{member_id} is not a member of {group.group_id}")

    def commit_offsets(
        self,
        group_id: str,
        *,
        member_id: str,
        generation_or_epoch: int,
        instance_id: str | None,
        offsets: Sequence[tuple[str, int, int, int, str | None]],
        api_version: int,
        expire_timestamp: int = -1,
    ) -> CoordinatorResult[_OffsetResults]:
        """OffsetCommit of (topic, partition, offset, leader epoch, metadata) tuples. A
        whole-request problem raises; a per-partition one is reported in that partition's
        result."""
        self._validate_commit(group_id, member_id, generation_or_epoch, instance_id, api_version)
        results, records = self._offset_records(group_id, offsets, expire_timestamp)
        return CoordinatorResult(records, results)

    def _offset_records(
        self,
        group_id: str,
        offsets: Sequence[tuple[str, int, int, int, str | None]],
        expire_timestamp: int,
    ) -> tuple[_OffsetResults, list[Record]]:
        """Per-partition results and the records of a commit (metadata over
        ``offset.metadata.max.bytes`` is refused for its partition only)."""
        now = self.now_ms()
        results: _OffsetResults = []
        records: list[Record] = []
        limit = self._config.offset_metadata_max_bytes
        for topic, partition, offset, leader_epoch, metadata in offsets:
            meta = metadata or ""
            if len(meta.encode()) > limit:
                results.append((topic, partition, ErrorCode.offset_metadata_too_large))
                continue
            records.append(
                (
                    OffsetCommitKey(group_id, topic, partition),
                    OffsetCommitValue(offset, leader_epoch, meta, now, expire_timestamp),
                )
            )
            results.append((topic, partition, ErrorCode.none))
        return results, records

    def txn_commit_offsets(
        self,
        group_id: str,
        *,
        producer_id: int,
        producer_epoch: int,
        member_id: str,
        generation_id: int,
        instance_id: str | None,
        offsets: Sequence[tuple[str, int, int, int, str | None]],
    ) -> CoordinatorResult[_OffsetResults]:
        """TxnOffsetCommit: like :meth:`commit_offsets`, but the records go in a transactional
        batch of the producer and the offsets stay pending until the transaction's marker
        reaches the group's partition (see :meth:`complete_transaction`)."""
        if not group_id:
            raise InvalidGroupIdError("the group id must not be empty")
        group = self.groups.get(group_id)
        if isinstance(group, ClassicGroup) and (generation_id >= 0 or member_id):
            if group.state is ClassicGroupState.DEAD:
                raise CoordinatorNotAvailableError(f"group {group_id} is being removed")
            self._validate_classic_member(group, member_id, instance_id)
            if generation_id != group.generation_id:
                raise IllegalGenerationError(
                    f"generation {generation_id} is not group {group_id}'s {group.generation_id}"
                )
        elif isinstance(group, ConsumerGroup) and member_id:
            self.consumer.validate_offset_commit(group_id, member_id, generation_id)
        results, records = self._offset_records(group_id, offsets, -1)
        return CoordinatorResult(records, results, producer=(producer_id, producer_epoch))

    def fetch_offsets(
        self,
        group_id: str,
        topics: Sequence[tuple[str, Sequence[int]]] | None,
        *,
        member_id: str | None = None,
        member_epoch: int = -1,
        require_stable: bool = False,
    ) -> list[CommittedOffset]:
        """Committed offsets of the given partitions (``None``: every committed partition) as
        of the durable log (see the module docs); partitions without a commit get offset -1.
        With ``require_stable`` a partition with an offset pending in an open transaction
        answers UNSTABLE_OFFSET_COMMIT (KIP-447)."""
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup) and (member_id is not None or member_epoch >= 0):
            self.consumer.validate_offset_fetch(group_id, member_id, member_epoch)
        committed = self.offsets.get(group_id, {})
        changes: dict[tuple[str, int], list[_Before]] = {}
        if self._undurable:
            changes = self._undurable.get(self.partition_for(group_id), {}).get(group_id, changes)
        if changes:
            # As of the durable log: an offset with changes not durable yet is what it was
            # before the first of them (see the module docs).
            committed = dict(committed)
            for tp, before in changes.items():
                value = before[0][1]
                if value is None:
                    committed.pop(tp, None)
                else:
                    committed[tp] = value
        unstable = self._unstable_as_durable(group_id, changes) if require_stable else None
        out: list[CommittedOffset] = []
        if topics is None:
            for (topic, partition), value in sorted(committed.items()):
                if unstable is not None and unstable(topic, partition):
                    out.append(
                        CommittedOffset(
                            topic, partition, -1, error=ErrorCode.unstable_offset_commit
                        )
                    )
                    continue
                out.append(
                    CommittedOffset(
                        topic, partition, value.offset, value.leader_epoch, value.metadata
                    )
                )
            return out
        for topic, partitions in topics:
            for partition in partitions:
                v = committed.get((topic, partition))
                if unstable is not None and unstable(topic, partition):
                    out.append(
                        CommittedOffset(
                            topic, partition, -1, error=ErrorCode.unstable_offset_commit
                        )
                    )
                elif v is None:
                    out.append(CommittedOffset(topic, partition, -1))
                else:
                    out.append(
                        CommittedOffset(topic, partition, v.offset, v.leader_epoch, v.metadata)
                    )
        return out

    def _unstable_as_durable(
        self, group_id: str, changes: Mapping[tuple[str, int], list[_Before]]
    ) -> Callable[[str, int], bool]:
        """Whether an offset of ``group_id`` was pending in a transaction as of the durable
        log (``changes``: the group's changes not durable yet)."""

        def unstable(topic: str, partition: int) -> bool:
            before = changes.get((topic, partition))
            if before is not None:
                return before[0][2]
            return self.has_pending_offsets(group_id, topic, partition)

        return unstable

    def delete_offsets(
        self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]]
    ) -> CoordinatorResult[_OffsetResults]:
        """OffsetDelete: refused per partition while the group consumes from the topic."""
        group = self.groups.get(group_id)
        if group is None or (
            isinstance(group, ClassicGroup) and group.state is ClassicGroupState.DEAD
        ):
            raise GroupIdNotFoundError(f"group {group_id} does not exist")
        if isinstance(group, ClassicGroup):
            if not group.is_empty() and group.protocol_type != "consumer":
                raise NonEmptyGroupError(f"group {group_id} is not empty")
            subscribed = _classic_subscribed_topics(group)
        else:
            subscribed = set(group.subscribed_topic_names())
        results: _OffsetResults = []
        records: list[Record] = []
        committed = self.offsets.get(group_id, {})
        for topic, partitions in topics:
            for partition in partitions:
                if topic in subscribed:
                    results.append((topic, partition, ErrorCode.group_subscribed_to_topic))
                    continue
                if (topic, partition) in committed:
                    records.append((OffsetCommitKey(group_id, topic, partition), None))
                results.append((topic, partition, ErrorCode.none))
        return CoordinatorResult(records, results)

    def on_topic_deleted(self, topic: str) -> list[CoordinatorResult[None]]:
        """Forget every group's committed offsets of a deleted topic (as Kafka does, so a topic
        created again under the same name starts without stale positions): one operation per
        group with offsets of it. Pending transactional offsets of the topic are dropped now
        (they are not committed state; their marker will find nothing to apply)."""
        for groups in self.pending_txn_offsets.values():
            for pending in groups.values():
                for tp in [tp for tp in pending if tp[0] == topic]:
                    del pending[tp]
        out = []
        for group_id, committed in self.offsets.items():
            records: list[Record] = [
                (OffsetCommitKey(group_id, t, p), None) for t, p in committed if t == topic
            ]
            if records:
                out.append(CoordinatorResult(records, None))
        return out

    # -- whole groups -----------------------------------------------------------------------

    def list_groups(
        self, states: Sequence[str] = (), types: Sequence[str] = ()
    ) -> list[GroupListing]:
        wanted_states = {s.lower() for s in states}
        wanted_types = {t.lower() for t in types}
        out = []
        for group_id, group in self.groups.items():
            listing = self.listing(group_id, group)
            if wanted_states and listing.state.lower() not in wanted_states:
                continue
            if wanted_types and listing.group_type not in wanted_types:
                continue
            out.append(listing)
        return out

    @staticmethod
    def listing(group_id: str, group: Group) -> GroupListing:
        if isinstance(group, ClassicGroup):
            return GroupListing(
                group_id, group.protocol_type or "", group.state.value, "classic"
            )
        return GroupListing(group_id, "consumer", group.state, "consumer")

    def delete_group(self, group_id: str) -> CoordinatorResult[None]:
        """DeleteGroups, for one group: tombstones for its offsets (pending transactional ones
        too) and its records. Raises the group's error."""
        if not group_id:
            raise InvalidGroupIdError("the group id must not be empty")
        group = self.groups.get(group_id)
        if group is None:
            raise GroupIdNotFoundError(f"group {group_id} does not exist")
        if not group.is_empty():
            raise NonEmptyGroupError(f"group {group_id} has members")
        partitions = set(self.offsets.get(group_id, {}))
        for groups in self.pending_txn_offsets.values():
            partitions.update(groups.get(group_id, {}))
        records: list[Record] = [
            (OffsetCommitKey(group_id, t, p), None) for t, p in sorted(partitions)
        ]
        if isinstance(group, ClassicGroup):
            records.append((GroupMetadataKey(group_id), None))
        else:
            records.extend(self.consumer.tombstones(group_id))

        def forget(error: Exception | None) -> None:
            # The tombstone's replay drops the group; this catches any leftover object.
            if error is None and self.groups.get(group_id) is group:
                del self.groups[group_id]

        return CoordinatorResult(records, None, on_written=forget)

    def consumer_group_tombstones(self, group_id: str) -> list[Record]:
        """Records deleting the empty KIP-848 group ``group_id`` (a classic JoinGroup takes its
        id over): replaying them drops the group."""
        return self.consumer.tombstones(group_id)

    # -- offset expiry ----------------------------------------------------------------------

    def _schedule_offset_expiry(self) -> None:
        self._timer.schedule(
            "offsets-expiry",
            self.now_ms() + self._config.offsets_retention_check_interval_ms,
            self._expiry_tick,
        )

    def _expiry_tick(self) -> list[CoordinatorResult[None]]:
        self._schedule_offset_expiry()
        try:
            return self.expire_offsets()
        except Exception:
            log.exception("expiring committed offsets failed")
            return []

    def expire_offsets(self) -> list[CoordinatorResult[None]]:
        """Remove committed offsets older than ``offsets.retention.minutes``: every offset of an
        empty group, and (KIP-496) offsets of topics a consuming group no longer subscribes
        to; then empty classic groups left without offsets. One operation per group (a group
        whose write fails keeps its offsets until the next check)."""
        now = self.now_ms()
        retention = self._config.offsets_retention_ms
        out: list[CoordinatorResult[None]] = []
        for group_id in list(self.groups):
            group = self.groups[group_id]
            committed = self.offsets.get(group_id, {})
            if group.is_empty():
                subscribed: set[str] = set()
                # An empty group's offsets age from when it became empty.
                base_state = (
                    group.current_state_timestamp
                    if isinstance(group, ClassicGroup)
                    and group.protocol_type
                    and group.current_state_timestamp >= 0
                    else None
                )
            elif isinstance(group, ConsumerGroup):
                subscribed, base_state = set(group.subscribed_topic_names()), None
            elif group.protocol_type == "consumer" and group.state is ClassicGroupState.STABLE:
                subscribed, base_state = _classic_subscribed_topics(group), None
            else:
                continue  # subscriptions unknown (another protocol, or mid-rebalance)
            records: list[Record] = []
            for (topic, partition), v in committed.items():
                if topic in subscribed or self.has_pending_offsets(group_id, topic, partition):
                    continue
                if v.expire_timestamp >= 0:
                    due = now >= v.expire_timestamp
                else:
                    base = base_state if base_state is not None else v.commit_timestamp
                    due = now - base >= retention
                if due:
                    records.append((OffsetCommitKey(group_id, topic, partition), None))
            if (
                isinstance(group, ClassicGroup)
                and group.state is ClassicGroupState.EMPTY
                and len(records) == len(committed)
                and not self._has_open_transactions(group_id)
                and now - max(group.current_state_timestamp, 0) >= retention
            ):
                records.append((GroupMetadataKey(group_id), None))
            if records:
                out.append(CoordinatorResult(records, None))
        return out


def _classic_subscribed_topics(group: ClassicGroup) -> set[str]:
    """Topics the members of a ``consumer``-type classic group subscribe to (read from their
    ConsumerProtocolSubscription metadata; an undecodable one counts as no topics)."""
    topics: set[str] = set()
    if group.protocol_type != "consumer":
        return topics
    for member in group.members.values():
        topics.update(_subscription_topics(member.metadata(group.protocol_name)))
    return topics


def _subscription_topics(data: bytes) -> list[str]:
    # ConsumerProtocolSubscription v0-v3: int16 version, then array of int16-length strings.
    try:
        (count,) = struct.unpack_from(">i", data, 2)
        pos = 6
        out = []
        for _ in range(max(count, 0)):
            (n,) = struct.unpack_from(">h", data, pos)
            pos += 2
            out.append(bytes(data[pos : pos + n]).decode())
            pos += n
        return out
    except (struct.error, UnicodeDecodeError):
        return []
