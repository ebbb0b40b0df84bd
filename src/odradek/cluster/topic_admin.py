"""Topic administration on the cluster store: create and delete topics, add partitions, replace
a topic's configs, each by compare-and-swap so that any broker may do it.

- **Create**: the topic key must be absent. The first transaction puts the
  :class:`~odradek.cluster.model.TopicRecord` and as many partition states as fit (or, when
  partition keys of an earlier topic of the name are left, deletes them and puts the record);
  the following ones put the rest, each compared on the record's create revision (still the
  topic this call created). etcd refuses transactions of more than ``--max-txn-ops``
  (128 by default) operations, so at most ``max_txn_ops`` go in one. Until the last is written
  the topic is incomplete and no view shows it.
- **Create partitions**: the new partitions' states first, the record with the new count last,
  each compared on the record's mod revision as read; the topic stays visible all along.
- **Delete**: the record and every partition key in one transaction, compared on the record's
  mod revision.
- **Alter configs**: the record replaced, compared on its mod revision.

Each call returns once the caller's :class:`~odradek.cluster.image.MetadataImage` shows the
write, so a client told "created" finds the topic on this broker at once.

Placement is Kafka's: round robin over the live brokers from a random start, each further
replica shifted by a random amount that grows every full round; with racks the brokers are
ordered alternating between racks and a partition's replicas take distinct racks while any
is unused. The leader is the first replica, the ISR every replica, epochs 0.

The rules about which topics may be created (names, internal topics, partition limits, config
validation) are the broker's (``odradek.broker.topics``); this module checks only what concerns
the cluster (existence, live brokers, assignments).
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import TypeVar

from odradek.cluster.image import MetadataImage
from odradek.cluster.membership import BrokerInfo, ClusterKeys
from odradek.cluster.model import PartitionState, TopicInfo, TopicRecord
from odradek.cluster.store import (
    ClusterStore,
    Compare,
    Delete,
    KeyValue,
    OutcomeUnknown,
    Put,
    TxnOp,
    absent,
    create_revision_is,
    mod_revision_is,
)
from odradek.errors import (
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

_Op = TypeVar("_Op", bound=TxnOp)

__all__ = ["TopicAdmin", "assign_replicas", "rack_alternating", "MAX_TXN_OPS"]

#: Operations per transaction: under etcd's default ``--max-txn-ops`` (128).
MAX_TXN_OPS = 100

#: Attempts of a compare-and-swap that keeps losing to other writers before giving up.
_CAS_ATTEMPTS = 10


def rack_alternating(brokers: Sequence[BrokerInfo]) -> list[BrokerInfo]:
    """Brokers ordered so that consecutive ones are on different racks where possible: the
    first broker of each rack (racks in name order), then the second of each, and so on. Without
    racks, by node id."""
    ordered = sorted(brokers, key=lambda b: b.node_id)
    if not any(b.rack for b in ordered):
        return ordered
    by_rack: dict[str, list[BrokerInfo]] = {}
    for b in ordered:
        by_rack.setdefault(b.rack or "", []).append(b)
    columns = [by_rack[r] for r in sorted(by_rack)]
    return [
        b
        for row in itertools.zip_longest(*columns)
        for b in row
        if b is not None
    ]


def assign_replicas(
    brokers: Sequence[BrokerInfo],
    partitions: int,
    replication_factor: int,
    *,
    start: int,
    shift: int,
    first_partition: int = 0,
) -> list[tuple[int, ...]]:
    """Replica lists for partitions ``first_partition .. first_partition + partitions - 1``
    over ``brokers`` (already in placement order, see :func:`rack_alternating`). ``start``
    picks partition 0's first replica, ``shift`` the spacing of the others (both taken modulo
    the broker count; callers draw them at random so that topics do not all start on one
    broker)."""
    n = len(brokers)
    if replication_factor > n:
        raise InvalidReplicationFactorError(
            f"replication factor {replication_factor} is larger than the number of live "
            f"brokers ({n})"
        )
    racks = {b.rack for b in brokers if b.rack}
    out: list[tuple[int, ...]] = []
    for p in range(first_partition, first_partition + partitions):
        # The spacing grows once per full round, so that round k's followers differ from round
        # k-1's for the same first replica.
        step = shift + p // n
        first = (p + start) % n
        chosen = [first]
        used_racks = {brokers[first].rack}
        candidates = [(first + 1 + (step + j) % (n - 1)) % n for j in range(n - 1)] if n > 1 else []
        for c in candidates:
            if len(chosen) == replication_factor:
                break
            # With racks: a rack already holding a replica waits until every rack holds one.
            if racks and brokers[c].rack in used_racks and len(used_racks) < len(racks):
                continue
            chosen.append(c)
            used_racks.add(brokers[c].rack)
        for c in candidates:  # racks exhausted: fill with whatever is left, in order
            if len(chosen) == replication_factor:
                break
            if c not in chosen:
                chosen.append(c)
        out.append(tuple(brokers[i].node_id for i in chosen))
    return out


def _initial_state(replicas: tuple[int, ...]) -> PartitionState:
    return PartitionState(replicas=replicas, isr=replicas, leader=replicas[0])


class TopicAdmin:
    """Writes topics to the store for one broker and waits until its image shows them.

    Owned by the broker's event loop. ``rng`` draws the placement start and spacing (tests
    pass a seeded one)."""

    def __init__(
        self,
        store: ClusterStore,
        keys: ClusterKeys,
        image: MetadataImage,
        *,
        max_txn_ops: int = MAX_TXN_OPS,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._image = image
        self._max_ops = max(3, max_txn_ops)
        self._rng = rng or random.Random()

    # --- placement ----------------------------------------------------------------------------

    def _live(self) -> list[BrokerInfo]:
        # A broker in controlled shutdown is about to go: new replicas are not placed on it.
        return rack_alternating(
            [b.info for b in self._image.live_brokers() if not b.info.shutting_down]
        )

    def place(
        self, partitions: int, replication_factor: int, *, first_partition: int = 0
    ) -> list[tuple[int, ...]]:
        """Replica lists for new partitions on the live brokers."""
        if replication_factor <= 0:
            raise InvalidReplicationFactorError(
                f"replication factor must be at least 1, got {replication_factor}"
            )
        brokers = self._live()
        if not brokers:
            raise InvalidReplicationFactorError("there are no live brokers to place replicas on")
        return assign_replicas(
            brokers,
            partitions,
            replication_factor,
            start=self._rng.randrange(len(brokers)),
            shift=self._rng.randrange(len(brokers)),
            first_partition=first_partition,
        )

    def check_assignments(
        self,
        assignments: Sequence[Sequence[int]],
        *,
        replication_factor: int | None = None,
    ) -> list[tuple[int, ...]]:
        """Explicit replica lists, checked: non-empty, no broker twice, every broker live, all
        of one length (``replication_factor`` when given)."""
        live = {b.info.node_id for b in self._image.live_brokers()}
        out: list[tuple[int, ...]] = []
        for p, replicas in enumerate(assignments):
            if not replicas:
                raise InvalidReplicaAssignmentError(
                    f"partition {p}: the replica assignment is empty"
                )
            if len(set(replicas)) != len(replicas):
                raise InvalidReplicaAssignmentError(
                    f"partition {p}: the replica assignment {list(replicas)} names a broker "
                    "more than once"
                )
            for r in replicas:
                if r not in live:
                    raise InvalidReplicaAssignmentError(
                        f"partition {p}: the replica assignment includes broker {r}, but no "
                        "such broker is registered"
                    )
            expected = replication_factor or len(assignments[0])
            if len(replicas) != expected:
                raise InvalidReplicaAssignmentError(
                    f"partition {p} has {len(replicas)} replicas, inconsistent with the "
                    f"others' {expected}"
                )
            out.append(tuple(replicas))
        return out

    # --- create -------------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        *,
        partitions: int = 0,
        replication_factor: int = 0,
        assignments: Sequence[Sequence[int]] | None = None,
        configs: Mapping[str, str] | None = None,
        validate_only: bool = False,
    ) -> TopicInfo:
        """Create ``name`` with ``partitions`` placed at ``replication_factor``, or with the
        explicit ``assignments`` (partition i's replicas, leader first). Raises
        :class:`TopicAlreadyExistsError` when the name is taken (by whichever creator was
        first), and the placement errors. ``validate_only`` checks and writes nothing."""
        if self._image.topic(name) is not None:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        if assignments:
            replicas = self.check_assignments(assignments)
        else:
            if partitions <= 0:
                raise InvalidPartitionsError(
                    f"number of partitions must be at least 1, got {partitions}"
                )
            replicas = self.place(partitions, replication_factor)
        record = TopicRecord(uuid.uuid4(), len(replicas), dict(configs or {}))
        states = [_initial_state(r) for r in replicas]
        info = TopicInfo(name, record.topic_id, record.configs, tuple(states))
        if validate_only:
            if await self._store.get(self._keys.topic(name)) is not None:
                raise TopicAlreadyExistsError(f"topic {name!r} already exists")
            return info
        revision = await self._write_new_topic(name, record, states)
        await self._image.wait_for_revision(revision)
        return self._image.topic(name) or info

    async def _write_new_topic(
        self, name: str, record: TopicRecord, states: Sequence[PartitionState]
    ) -> int:
        topic_key = self._keys.topic(name)
        puts = [Put(self._keys.partition(name, p), s.encode()) for p, s in enumerate(states)]
        head: list[TxnOp] = [Put(topic_key, record.encode())]
        first = self._max_ops - len(head)
        leftovers = await self._store.range(self._keys.topic_partitions(name), prefix=True, limit=1)
        if leftovers.kvs:
            # Partition keys of an earlier topic of this name (written by a writer that did not
            # clean up). etcd refuses a delete and puts of one key in one transaction, so the
            # first transaction is the cleanup and the record alone.
            head.insert(0, Delete(self._keys.topic_partitions(name), prefix=True))
            first = 0
        created = await self._create_record(topic_key, record, [*head, *puts[:first]])
        revision = created
        for chunk in _chunks(puts[first:], self._max_ops):
            revision = max(revision, await self._put_absent(name, created, chunk))
        return revision

    async def _put_absent(self, name: str, created: int, puts: Sequence[Put]) -> int:
        """Put the partition states of a topic being created that are not there yet; returns a
        revision at which all of them exist. Each put is compared absent: a creator stalled past
        the controller's grace finds the topic completed by the controller, whose states (maybe
        led and written to already) stay. A lost answer is recognised the same way."""
        topic_key = self._keys.topic(name)
        pending = list(puts)
        revision = 0
        for _ in range(_CAS_ATTEMPTS):
            if not pending:
                return revision
            compares = [create_revision_is(topic_key, created), *(absent(p.key) for p in pending)]
            try:
                result = await self._store.txn(compares, pending)
                if result.succeeded:
                    return result.revision
            except OutcomeUnknown:
                pass
            kv = await self._store.get(topic_key)
            if kv is None or kv.create_revision != created:
                raise UnknownTopicOrPartitionError(
                    f"topic {name!r} was deleted while it was being created"
                )
            held = await self._store.range(self._keys.topic_partitions(name), prefix=True)
            existing = {kv.key for kv in held.kvs}
            revision = held.revision
            pending = [p for p in pending if p.key not in existing]
        raise OutcomeUnknown(f"no answer from the metadata store (creating topic {name!r})")

    async def _create_record(self, topic_key: str, record: TopicRecord, ops: list[TxnOp]) -> int:
        """The first transaction of a create; returns its revision (the record's create
        revision)."""
        name = topic_key[len(self._keys.topics):]
        for _ in range(_CAS_ATTEMPTS):
            try:
                result = await self._store.txn([absent(topic_key)], ops)
            except OutcomeUnknown:
                kv = await self._store.get(topic_key)
                if kv is None:
                    continue  # it did not happen: try again
                if _topic_id(kv) == record.topic_id:
                    return kv.create_revision  # it did
                raise TopicAlreadyExistsError(f"topic {name!r} already exists") from None
            if not result.succeeded:
                raise TopicAlreadyExistsError(f"topic {name!r} already exists")
            return result.revision
        raise OutcomeUnknown(f"could not learn whether topic {name!r} was created")

    async def _txn_or_retry(self, guard: Compare, ops: Sequence[TxnOp], gone: str) -> int:
        """One guarded transaction of puts, repeated while its answer is lost (the puts are the
        same whether or not it happened). Raises UnknownTopicOrPartitionError(``gone``) when
        the guard fails."""
        for _ in range(_CAS_ATTEMPTS):
            try:
                result = await self._store.txn([guard], ops)
            except OutcomeUnknown:
                continue
            if not result.succeeded:
                raise UnknownTopicOrPartitionError(gone)
            return result.revision
        raise OutcomeUnknown(f"no answer from the metadata store ({gone})")

    # --- delete -------------------------------------------------------------------------------

    async def delete_topic(self, name: str) -> TopicRecord:
        """Delete ``name`` (record and partitions in one transaction); returns its last record.
        Raises :class:`UnknownTopicOrPartitionError` when there is no such topic."""
        topic_key = self._keys.topic(name)
        for _ in range(_CAS_ATTEMPTS):
            kv = await self._store.get(topic_key)
            if kv is None:
                raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
            record = TopicRecord.decode(kv.value)
            try:
                result = await self._store.txn(
                    [mod_revision_is(topic_key, kv.mod_revision)],
                    [Delete(topic_key), Delete(self._keys.topic_partitions(name), prefix=True)],
                )
            except OutcomeUnknown:
                now = await self._store.get(topic_key)
                if now is None or _topic_id(now) != record.topic_id:
                    # Deleted, by this call or another: either way it is gone.
                    await self._image.wait_for_revision(await self._current_revision())
                    return record
                continue
            if result.succeeded:
                await self._image.wait_for_revision(result.revision)
                return record
        raise UnknownTopicOrPartitionError(f"topic {name!r} kept changing while being deleted")

    async def _current_revision(self) -> int:
        return (await self._store.range(self._keys.cluster_id)).revision

    # --- partitions and configs -----------------------------------------------------------------

    async def create_partitions(
        self,
        name: str,
        count: int,
        *,
        assignments: Sequence[Sequence[int]] | None = None,
        validate_only: bool = False,
    ) -> TopicRecord:
        """Raise ``name`` to ``count`` partitions, placed like its partition 0 (or on the
        explicit ``assignments`` of the new partitions). Returns the new record."""
        topic_key = self._keys.topic(name)
        attempted: TopicRecord | None = None
        for _ in range(_CAS_ATTEMPTS):
            kv = await self._store.get(topic_key)
            if kv is None:
                raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
            record = TopicRecord.decode(kv.value)
            if record == attempted:
                # The last attempt's answer was lost (or its guard failed on its own retry),
                # but the record it wrote is there: done.
                await self._image.wait_for_revision(kv.mod_revision)
                return record
            old = record.partition_count
            if count < old:
                raise InvalidPartitionsError(
                    f"topic {name!r} has {old} partitions; it cannot shrink to {count}"
                )
            if count == old:
                raise InvalidPartitionsError(f"topic {name!r} already has {count} partitions")
            first = await self._store.get(self._keys.partition(name, 0))
            rf = len(PartitionState.decode(first.value).replicas) if first else 1
            if assignments:
                if len(assignments) != count - old:
                    raise InvalidReplicaAssignmentError(
                        f"{count - old} partitions are added but {len(assignments)} "
                        "assignments were given"
                    )
                replicas = self.check_assignments(assignments, replication_factor=rf)
            else:
                replicas = self.place(count - old, rf, first_partition=old)
            grown = TopicRecord(record.topic_id, count, record.configs)
            if validate_only:
                return grown
            puts: list[TxnOp] = [
                Put(self._keys.partition(name, old + i), _initial_state(r).encode())
                for i, r in enumerate(replicas)
            ]
            # The record last: the topic never shows a count its partitions do not fill yet.
            ops = [*puts, Put(topic_key, grown.encode())]
            guard = mod_revision_is(topic_key, kv.mod_revision)
            attempted = grown
            try:
                revision = 0
                for chunk in _chunks(ops, self._max_ops):
                    revision = await self._txn_or_retry(guard, chunk, f"topic {name!r} changed")
            except UnknownTopicOrPartitionError:
                continue  # the topic changed under us: read it again
            await self._image.wait_for_revision(revision)
            return grown
        raise InvalidPartitionsError(f"topic {name!r} kept changing while partitions were added")

    async def alter_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool = False
    ) -> TopicRecord:
        """Replace ``name``'s configs with ``configs``; returns the new record."""
        topic_key = self._keys.topic(name)
        for _ in range(_CAS_ATTEMPTS):
            kv = await self._store.get(topic_key)
            if kv is None:
                raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
            record = TopicRecord.decode(kv.value)
            new = TopicRecord(record.topic_id, record.partition_count, dict(configs))
            if validate_only:
                return new
            try:
                result = await self._store.txn(
                    [mod_revision_is(topic_key, kv.mod_revision)],
                    [Put(topic_key, new.encode())],
                )
            except OutcomeUnknown:
                continue  # a repeat writes the same record
            if result.succeeded:
                await self._image.wait_for_revision(result.revision)
                return new
        raise UnknownTopicOrPartitionError(f"topic {name!r} kept changing while being altered")


def _chunks(ops: Sequence[_Op], size: int) -> list[Sequence[_Op]]:
    return [ops[i : i + size] for i in range(0, len(ops), size)]


def _topic_id(kv: KeyValue) -> uuid.UUID | None:
    try:
        return TopicRecord.decode(kv.value).topic_id
    except (ValueError, KeyError):
        return None
