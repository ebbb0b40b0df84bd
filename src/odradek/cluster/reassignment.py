"""Partition reassignment (KIP-455) as pure functions over a :class:`PartitionState`, in the
shape of Kafka's controller (``PartitionReassignmentReplicas``, ``PartitionReassignmentRevert``,
``PartitionChangeBuilder``).

A reassignment moves a partition from its replica set ``current`` to ``target``:

- **start** (:func:`start_reassignment`, written by whichever broker answers
  AlterPartitionReassignments): ``replicas`` = ``target`` + the current replicas not in it,
  ``adding_replicas`` = target − current, ``removing_replicas`` = current − target; ISR and
  leader unchanged. The leader now takes replica fetches from the adding replicas, which join
  the ISR as any follower does once caught up. A new target while one is in progress starts
  from the replica set as it is (a replica still being added that the new target leaves out is
  removed).
- **complete** (:func:`advance_reassignment`, the controller's rule after every change): once
  every target replica is in the ISR, ``replicas`` = target, the ISR loses the removed
  replicas, adding/removing are cleared, and if the leader was removed the first target replica
  in the ISR that is live leads. A change that removes replicas bumps ``leader_epoch`` as well
  as ``partition_epoch`` (as Kafka does), so a removed replica's fetches are fenced. A start
  whose target is already in the ISR (a reordering, a removal) completes at once.
- **cancel** (:func:`cancel_reassignment`, a null target): the adding replicas are taken out
  of the replica set and ISR, the removing ones stay. If that would empty the ISR, the revert
  needs an unclean election and is refused (INVALID_REPLICA_ASSIGNMENT) unless the topic
  allows one.

Errors are Kafka's: UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT (an empty target, a
broker twice, a broker not registered), NO_REASSIGNMENT_IN_PROGRESS (a cancel with nothing to
cancel), INVALID_REPLICATION_FACTOR (v1's ``allow_replication_factor_change=false`` and a target
of another size, KIP-860).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from odradek.cluster.model import NO_LEADER, PartitionState
from odradek.errors import (
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
    NoReassignmentInProgressError,
)

__all__ = [
    "check_target",
    "start_reassignment",
    "cancel_reassignment",
    "advance_reassignment",
]


def check_target(target: Sequence[int], registered: Collection[int]) -> None:
    """Kafka's checks of a manual assignment (``validateManualPartitionAssignment``)."""
    if not target:
        raise InvalidReplicaAssignmentError(
            "The manual partition assignment includes an empty replica list."
        )
    seen: set[int] = set()
    for broker in target:
        if broker in seen:
            raise InvalidReplicaAssignmentError(
                f"The manual partition assignment includes the broker {broker} more than once."
            )
        seen.add(broker)
        if broker not in registered:
            raise InvalidReplicaAssignmentError(
                f"The manual partition assignment includes broker {broker}, but no such broker "
                "is registered."
            )


def start_reassignment(
    state: PartitionState,
    target: Sequence[int],
    live: Collection[int],
    *,
    can_lead: Collection[int] | None = None,
    allow_replication_factor_change: bool = True,
) -> PartitionState:
    """The state once a reassignment to ``target`` has started (or, when the target is already
    in sync, completed). ``live``: the registered brokers; ``can_lead``: those that may be
    elected if the leader is removed (default: all of ``live``)."""
    target = tuple(target)
    check_target(target, live)
    original = tuple(r for r in state.replicas if r not in state.adding_replicas)
    if not allow_replication_factor_change and len(target) != len(original):
        raise InvalidReplicationFactorError(
            f"The replication factor is changed from {len(original)} to {len(target)}"
        )
    removing = tuple(r for r in state.replicas if r not in target)
    adding = tuple(r for r in target if r not in state.replicas)
    if not state.reassigning and state.replicas == target:
        return state  # nothing to move: nothing is written
    started = replace(
        state,
        replicas=target + removing,
        adding_replicas=adding,
        removing_replicas=removing,
        partition_epoch=state.partition_epoch + 1,
    )
    elected = live if can_lead is None else can_lead
    return advance_reassignment(started, elected, stored=state) or started


def cancel_reassignment(
    state: PartitionState, live: Collection[int], *, unclean: bool = False
) -> PartitionState:
    """The state with the reassignment in progress reverted: the replicas it was adding are
    dropped, those it was removing kept. ``unclean``: the topic allows an unclean election,
    needed when every ISR member was being added."""
    if not state.reassigning:
        raise NoReassignmentInProgressError(
            "No partition reassignment is in progress for this topic-partition."
        )
    adding = set(state.adding_replicas)
    replicas = tuple(r for r in state.replicas if r not in adding)
    isr = tuple(r for r in state.isr if r not in adding)
    leader = state.leader
    if not isr:
        if not unclean:
            raise InvalidReplicaAssignmentError(
                "Unable to revert the partition assignment because it would require an unclean "
                "leader election."
            )
        leader = next((r for r in replicas if r in live), NO_LEADER)
        isr = (leader,) if leader != NO_LEADER else replicas[:1]
    elif leader not in isr:
        leader = next((r for r in replicas if r in isr and r in live), NO_LEADER)
    return replace(
        state,
        replicas=replicas,
        isr=isr,
        leader=leader,
        adding_replicas=(),
        removing_replicas=(),
        # Replicas leaving the set are fenced by a new leader epoch, as at completion.
        leader_epoch=state.leader_epoch + (1 if leader != state.leader or adding else 0),
        partition_epoch=state.partition_epoch + 1,
    )


def advance_reassignment(
    state: PartitionState, live: Collection[int], *, stored: PartitionState | None = None
) -> PartitionState | None:
    """The state with its reassignment completed, if every target replica is in the ISR;
    None when there is nothing to complete. ``stored`` is the state as written, when ``state``
    is already a change of it (the epochs are bumped once over it, not twice)."""
    if not state.reassigning:
        return None
    base = stored if stored is not None else state
    target = state.target_replicas
    if not all(r in state.isr for r in target):
        return None
    isr = tuple(r for r in state.isr if r in target)
    leader = state.leader
    if leader not in isr:
        leader = next((r for r in target if r in isr and r in live), NO_LEADER)
    removed = any(r not in target for r in base.replicas)
    new_leader_epoch = leader != base.leader or removed or state.leader_epoch != base.leader_epoch
    return replace(
        state,
        replicas=target,
        isr=isr,
        leader=leader,
        adding_replicas=(),
        removing_replicas=(),
        leader_epoch=base.leader_epoch + (1 if new_leader_epoch else 0),
        partition_epoch=base.partition_epoch + 1,
    )
