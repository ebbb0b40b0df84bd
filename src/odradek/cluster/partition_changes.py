"""Changes to partition states asked for by clients (reassignments, leader elections), written
by whichever broker received the request, each a compare-and-swap of the partition's key.

In Kafka these requests go to the controller; here any broker may write a partition state, as
:class:`~odradek.cluster.topic_admin.TopicAdmin` writes topics, because every write is compared
on what it read: the key's ``mod_revision``, and the registration (broker epoch) of every broker
the new state names as leader, ISR member or replica being added, so a broker that left or
restarted meanwhile is not taken for its earlier self. A change is computed on the state as the
controller would leave it (:func:`~odradek.cluster.election.reassess` first: lost and leaving
brokers out of the ISR, a leader elected), so a write never makes a restarted broker look like
the ISR member it was; only brokers that may lead (registered, not in controlled shutdown) are
elected. A refused compare re-reads and computes again; a lost answer is re-read
and recognised by its value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from odradek.cluster.controller import UNCLEAN_LEADER_ELECTION
from odradek.cluster.election import Brokers, reassess
from odradek.cluster.image import MetadataImage
from odradek.cluster.membership import BrokerInfo, ClusterKeys
from odradek.cluster.model import NO_LEADER, PartitionState
from odradek.cluster.preferred import ElectionType, elect_leader
from odradek.cluster.reassignment import cancel_reassignment, start_reassignment
from odradek.cluster.store import (
    ClusterStore,
    OutcomeUnknown,
    Put,
    create_revision_is,
    mod_revision_is,
)
from odradek.errors import (
    ElectionNotNeededError,
    KafkaError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)

__all__ = ["PartitionKey", "ChangeFn", "PartitionChanges"]

log = logging.getLogger(__name__)

#: (topic, partition)
PartitionKey = tuple[str, int]

#: (the partition's state as the controller would leave it, the registered brokers, whether
#: the topic allows unclean elections) → the state to write, or None to write nothing. Raises a
#: :class:`~odradek.errors.KafkaError` for the partition's error.
ChangeFn = Callable[[PartitionState, Brokers, bool], PartitionState | None]

_CAS_ATTEMPTS = 10


class PartitionChanges:
    """Writes requested partition-state changes for one broker and waits until its image
    shows them. Owned by the broker's event loop; keeps nothing between calls."""

    def __init__(
        self,
        store: ClusterStore,
        keys: ClusterKeys,
        image: MetadataImage,
        *,
        unclean_leader_election: bool = False,
    ) -> None:
        """``unclean_leader_election``: the broker's ``unclean.leader.election.enable``, for
        topics that do not set it."""
        self._store = store
        self._keys = keys
        self._image = image
        self._unclean_default = unclean_leader_election

    async def alter_reassignments(
        self,
        targets: Mapping[PartitionKey, Sequence[int] | None],
        *,
        allow_replication_factor_change: bool = True,
    ) -> dict[PartitionKey, KafkaError | None]:
        """AlterPartitionReassignments: start the reassignment of each partition to its target,
        or cancel it (None); each partition's error, or None once written."""

        def change(target: Sequence[int] | None) -> ChangeFn:
            def apply(state: PartitionState, brokers: Brokers, unclean: bool) -> PartitionState:
                if target is None:
                    return cancel_reassignment(state, _can_lead(brokers), unclean=unclean)
                return start_reassignment(
                    state, target, brokers.epochs.keys(),
                    can_lead=_can_lead(brokers),
                    allow_replication_factor_change=allow_replication_factor_change,
                )

            return apply

        return await self.change({key: change(target) for key, target in targets.items()})

    async def elect_leaders(
        self, election: ElectionType, partitions: Sequence[PartitionKey] | None
    ) -> dict[PartitionKey, KafkaError | None]:
        """ElectLeaders of every partition named, or of every partition (None); then, as
        Kafka answers, partitions that needed no election are left out of the result."""

        def apply(state: PartitionState, brokers: Brokers, unclean: bool) -> PartitionState:
            return elect_leader(state, election, _can_lead(brokers))

        if partitions is not None:
            return await self.change(dict.fromkeys(partitions, apply))
        # Only those the image shows needing one: a store read per partition is for candidates.
        every = [
            (info.name, p)
            for info in self._image.topics()
            for p, state in enumerate(info.partitions)
            if (
                state.leader == NO_LEADER
                if election is ElectionType.UNCLEAN
                else state.replicas[:1] != (state.leader,)
            )
        ]
        results = await self.change(dict.fromkeys(every, apply))
        return {k: e for k, e in results.items() if not isinstance(e, ElectionNotNeededError)}

    async def change(
        self, changes: Mapping[PartitionKey, ChangeFn]
    ) -> dict[PartitionKey, KafkaError | None]:
        """Apply each change (in order); each partition's error, or None once written (or
        nothing needed writing) and shown by this broker's image."""
        results: dict[PartitionKey, KafkaError | None] = {}
        revision = 0
        for key, fn in changes.items():
            try:
                revision = max(revision, await self._change_one(key, fn))
            except KafkaError as e:
                results[key] = e
            else:
                results[key] = None
        if revision:
            await self._image.wait_for_revision(revision)
        return results

    async def _brokers(self) -> Brokers:
        """The registered brokers, with their epochs, and those in controlled shutdown."""
        result = await self._store.range(self._keys.brokers, prefix=True)
        epochs: dict[int, int] = {}
        leaving: set[int] = set()
        for kv in result.kvs:
            try:
                node = int(kv.key[len(self._keys.brokers) :])
                info = BrokerInfo.decode(kv.value)
            except (ValueError, KeyError, TypeError):
                continue
            epochs[node] = kv.create_revision
            if info.shutting_down:
                leaving.add(node)
        return Brokers(epochs, frozenset(leaving))

    async def _change_one(self, key: PartitionKey, fn: ChangeFn) -> int:
        """The revision of the write, or 0 when nothing was written."""
        topic, partition = key
        store_key = self._keys.partition(topic, partition)
        attempted: bytes | None = None
        for _ in range(_CAS_ATTEMPTS):
            info = self._image.topic(topic)
            if info is None or not 0 <= partition < len(info.partitions):
                raise UnknownTopicOrPartitionError(
                    f"topic-partition {topic}-{partition} does not exist"
                )
            brokers = await self._brokers()
            kv = await self._store.get(store_key)
            if kv is None:
                raise UnknownTopicOrPartitionError(
                    f"topic-partition {topic}-{partition} does not exist"
                )
            if attempted is not None and kv.value == attempted:
                return kv.mod_revision  # the last attempt's answer was lost, but it happened
            stored = PartitionState.decode(kv.value)
            flag = info.configs.get(UNCLEAN_LEADER_ELECTION)
            unclean = self._unclean_default if flag is None else flag.strip().lower() == "true"
            reassessed = reassess(stored, kv.mod_revision, brokers, unclean=unclean)
            current = reassessed or stored
            new = fn(current, brokers, unclean)
            if new is None:
                if reassessed is None:
                    return 0
                new = current
            if new == stored:
                return 0
            if reassessed is not None and new is not current:
                # One change of the stored state: its epochs bumped once over it.
                bump = 1 if new.leader_epoch > stored.leader_epoch else 0
                new = replace(
                    new,
                    partition_epoch=stored.partition_epoch + 1,
                    leader_epoch=stored.leader_epoch + bump,
                )
            named = {*new.isr, *new.adding_replicas}
            if new.leader != NO_LEADER:
                named.add(new.leader)
            epochs = brokers.epochs
            guards = [
                create_revision_is(self._keys.broker(b), epochs[b])
                for b in sorted(named & epochs.keys())
            ]
            attempted = new.encode()
            try:
                result = await self._store.txn(
                    [mod_revision_is(store_key, kv.mod_revision), *guards],
                    [Put(store_key, attempted)],
                )
            except OutcomeUnknown as e:
                log.warning("change of %s-%d: the answer was lost (%s)", topic, partition, e)
                continue
            if result.succeeded:
                log.info("partition %s-%d: %s → %s", topic, partition, stored, new)
                return result.revision
        raise RequestTimedOutError(
            f"topic-partition {topic}-{partition} kept changing while being changed"
        )


def _can_lead(brokers: Brokers) -> list[int]:
    """The brokers that may be elected: registered and not in controlled shutdown."""
    return [b for b in brokers.epochs if brokers.can_lead(b)]
