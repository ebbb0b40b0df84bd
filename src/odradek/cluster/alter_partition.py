"""A leader's change of its partition's ISR: KIP-497's AlterPartition as a compare-and-swap.

The leader proposes a new ISR from the partition state it holds (``expected``); the change is
made only if the store still holds exactly that state (nobody -- the controller, a new leader
-- changed the partition since), compared on the key's ``mod_revision`` as read, and, for every
member being *added*, only if that broker's registration is still the one the follower fetched
under: its key's create revision equals the broker epoch the follower sent (KIP-903), so a
broker that restarted (and may have lost what it had acknowledged) does not come back into the
ISR on the strength of its previous life. The new state bumps ``partition_epoch``; leader,
leader epoch and replicas are kept. An ISR is never empty.

A lost race raises :class:`StalePartitionState` with what the store holds (the leader then
re-evaluates against it, as Kafka's leader does on INVALID_UPDATE_VERSION); a member whose
registration moved raises :class:`IneligibleReplica` (Kafka's INELIGIBLE_REPLICA), and so does a
member *kept* that registered again after ``expected`` was written (it restarted; the controller
takes it out, and a write now would hide the restart from it). A write whose
answer was lost is re-read and recognised by its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from odradek.cluster.membership import ClusterKeys
from odradek.cluster.model import PartitionState
from odradek.cluster.store import (
    ClusterStore,
    Compare,
    CompareOp,
    CompareTarget,
    Get,
    OutcomeUnknown,
    Put,
    RangeResult,
    create_revision_is,
    mod_revision_is,
)

__all__ = [
    "AlterPartitionRefused",
    "StalePartitionState",
    "IneligibleReplica",
    "alter_partition",
]


class AlterPartitionRefused(Exception):
    """The ISR change was not made."""


class StalePartitionState(AlterPartitionRefused):
    """The partition is no longer in the state the change was proposed from; ``current`` is
    what the store holds (None: the partition is gone)."""

    def __init__(self, current: PartitionState | None) -> None:
        super().__init__(f"the partition state changed: now {current}")
        self.current = current


class IneligibleReplica(AlterPartitionRefused):
    """A member to add is not registered under the broker epoch it fetched with, or a member
    kept registered again since the state was written; ``replicas`` is the ISR proposed."""

    def __init__(self, replicas: tuple[int, ...]) -> None:
        super().__init__(f"some of {list(replicas)} are not registered under their epochs")
        self.replicas = replicas


def _registered(keys: ClusterKeys, node_id: int, epoch: int) -> Compare:
    key = keys.broker(node_id)
    if epoch >= 0:
        return create_revision_is(key, epoch)
    # A follower that sent no epoch (Fetch before v15): it must at least be registered.
    return Compare(key, CompareTarget.CREATE, CompareOp.GREATER, 0)


async def alter_partition(
    store: ClusterStore,
    keys: ClusterKeys,
    topic: str,
    partition: int,
    *,
    expected: PartitionState,
    new_isr: tuple[int, ...],
    member_epochs: Mapping[int, int],
) -> PartitionState:
    """Replace ``expected``'s ISR with ``new_isr``; returns the state written. ``member_epochs``
    gives the broker epoch of each member added (-1 or absent: only checked to be registered).
    Raises ValueError for an empty ISR or a member that is not a replica, and the refusals
    above; store errors other than a lost answer propagate."""
    if not new_isr:
        raise ValueError(f"{topic}-{partition}: an ISR is never empty")
    strangers = [r for r in new_isr if r not in expected.replicas]
    if strangers or len(set(new_isr)) != len(new_isr):
        raise ValueError(f"{topic}-{partition}: ISR {list(new_isr)} is not a set of replicas "
                         f"{list(expected.replicas)}")
    key = keys.partition(topic, partition)
    added = tuple(r for r in new_isr if r not in expected.isr)
    target = replace(expected, isr=new_isr, partition_epoch=expected.partition_epoch + 1)
    while True:
        kv = await store.get(key)
        current = PartitionState.decode(kv.value) if kv is not None else None
        if kv is None or current != expected:
            if current == target:  # our own write, whose answer was lost earlier
                return target
            raise StalePartitionState(current)
        compares = [mod_revision_is(key, kv.mod_revision)]
        compares += [_registered(keys, r, member_epochs.get(r, -1)) for r in added]
        # A kept member registered after the state was written has restarted since (the
        # controller's test, election.Brokers.lost): writing the state again would make its
        # new registration look older than the state, and the controller would keep it.
        compares += [
            Compare(keys.broker(r), CompareTarget.CREATE, CompareOp.LESS, kv.mod_revision)
            for r in new_isr
            if r not in added
        ]
        try:
            result = await store.txn(compares, [Put(key, target.encode())], [Get(key)])
        except OutcomeUnknown:
            continue  # re-read: our value, the old one (retry) or someone else's
        if result.succeeded:
            return target
        read = result.responses[0]
        assert isinstance(read, RangeResult)
        if read.kvs and read.kvs[0].mod_revision == kv.mod_revision:
            raise IneligibleReplica(new_isr)
        # The partition moved between the read and the transaction: report what it is now.
