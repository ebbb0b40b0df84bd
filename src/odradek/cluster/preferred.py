"""Leader elections on request (ElectLeaders, KIP-460) and the controller's automatic
preferred-leader election, as pure functions over :class:`PartitionState`.

- **PREFERRED**: the *preferred replica* (the first in ``replicas``) takes over when it is
  live and in the ISR. It already leading is ELECTION_NOT_NEEDED; it being dead or out of sync
  is PREFERRED_LEADER_NOT_AVAILABLE.
- **UNCLEAN**: for a partition without a leader only (one that has a leader is
  ELECTION_NOT_NEEDED): the first live ISR member in replica order, else the first live replica
  whatever its ISR membership (the ISR becomes just it: it may lack acknowledged records), else
  ELIGIBLE_LEADERS_NOT_AVAILABLE.

Either bumps ``leader_epoch`` and ``partition_epoch``.

**Automatic rebalance** (Kafka's ``auto.leader.rebalance.enable``, default true): every
``leader.imbalance.check.interval.seconds`` (300) the controller counts, for each broker, the
partitions it is the preferred replica of and how many of those it does not lead; when that
share is above ``leader.imbalance.per.broker.percentage`` (10), it elects the preferred replica
of each of those partitions where it is live (and not restarted since the state was written)
and in the ISR, skipping partitions under reassignment. A broker that returns after a failure
thus gets its leaderships back within one interval.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from odradek.clock import Clock
from odradek.cluster.model import NO_LEADER, PartitionState
from odradek.errors import (
    ElectionNotNeededError,
    EligibleLeadersNotAvailableError,
    PreferredLeaderNotAvailableError,
)

__all__ = [
    "ElectionType",
    "elect_leader",
    "imbalanced_partitions",
    "RebalanceSettings",
    "PreferredLeaderBalancer",
]

_K = TypeVar("_K", bound=Hashable)


class ElectionType(enum.IntEnum):
    """ElectLeaders' ``election_type`` (v1+; v0 is always PREFERRED)."""

    PREFERRED = 0
    UNCLEAN = 1


def elect_leader(
    state: PartitionState, election: ElectionType, live: Collection[int]
) -> PartitionState:
    """The state after an election of type ``election`` (``live``: the brokers that may lead),
    or the partition's error (Kafka's ``ReplicationControlManager.electLeader``)."""
    if election is ElectionType.PREFERRED:
        preferred = state.replicas[0] if state.replicas else NO_LEADER
        if state.leader == preferred:
            raise ElectionNotNeededError("The preferred replica is already the leader.")
        if preferred not in live or preferred not in state.isr:
            raise PreferredLeaderNotAvailableError(
                f"The preferred replica {preferred} is not live or not in the ISR."
            )
        return _lead(state, preferred, state.isr)
    if state.leader != NO_LEADER:
        raise ElectionNotNeededError("The partition has a leader.")
    leader = next((r for r in state.replicas if r in state.isr and r in live), NO_LEADER)
    if leader != NO_LEADER:
        return _lead(state, leader, state.isr)
    leader = next((r for r in state.replicas if r in live), NO_LEADER)
    if leader == NO_LEADER:
        raise EligibleLeadersNotAvailableError("No replica of the partition is live.")
    return _lead(state, leader, (leader,))


def _lead(state: PartitionState, leader: int, isr: tuple[int, ...]) -> PartitionState:
    return replace(
        state,
        leader=leader,
        isr=isr,
        leader_epoch=state.leader_epoch + 1,
        partition_epoch=state.partition_epoch + 1,
    )


def imbalanced_partitions(
    partitions: Iterable[tuple[_K, PartitionState]],
    eligible: Callable[[_K, int], bool],
    per_broker_percentage: int,
) -> list[_K]:
    """The partitions whose preferred replica should take over: those of every broker whose
    share of preferred partitions it does not lead is above ``per_broker_percentage``, where
    the preferred replica is ``eligible`` (live, not restarted since) and in the ISR."""
    preferred_of: dict[int, int] = {}
    candidates: dict[int, list[_K]] = {}
    not_leading: dict[int, int] = {}
    for key, state in partitions:
        if not state.replicas:
            continue
        preferred = state.replicas[0]
        preferred_of[preferred] = preferred_of.get(preferred, 0) + 1
        if state.leader == preferred:
            continue
        not_leading[preferred] = not_leading.get(preferred, 0) + 1
        if not state.reassigning and preferred in state.isr and eligible(key, preferred):
            candidates.setdefault(preferred, []).append(key)
    chosen: list[_K] = []
    for broker, count in sorted(not_leading.items()):
        if count * 100 > per_broker_percentage * preferred_of[broker]:
            chosen.extend(candidates.get(broker, ()))
    return chosen


@dataclass(frozen=True, slots=True)
class RebalanceSettings:
    """Kafka's ``auto.leader.rebalance.enable``, ``leader.imbalance.check.interval.seconds``
    and ``leader.imbalance.per.broker.percentage``."""

    enabled: bool = True
    check_interval_s: float = 300.0
    per_broker_percentage: int = 10


class PreferredLeaderBalancer:
    """When the controller next checks the leaders' balance, and what it then elects. Owned by
    the controller's task (one per controller term); time from its clock."""

    def __init__(self, settings: RebalanceSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._interval_ms = max(1, int(settings.check_interval_s * 1000))
        self._next_ms = clock.monotonic_ms() + self._interval_ms

    @property
    def next_check_ms(self) -> int | None:
        """The monotonic time of the next check, or None when disabled."""
        return self._next_ms if self._settings.enabled else None

    def due(self) -> bool:
        """Whether the check is due now (never when disabled)."""
        return self._settings.enabled and self._clock.monotonic_ms() >= self._next_ms

    def maybe_elect(
        self,
        partitions: Iterable[tuple[_K, PartitionState, int]],
        live: Mapping[int, int],
    ) -> list[tuple[_K, PartitionState]]:
        """At the check's time: the preferred-leader elections to write (partition, new state),
        from every partition (its key, state and the revision it was written at) and the live
        brokers (node id → broker epoch). Before it, or when disabled: nothing."""
        if not self.due():
            return []
        self._next_ms = self._clock.monotonic_ms() + self._interval_ms
        states: dict[_K, tuple[PartitionState, int]] = {k: (s, w) for k, s, w in partitions}

        def eligible(key: _K, broker: int) -> bool:
            epoch = live.get(broker)
            return epoch is not None and epoch <= states[key][1]

        chosen = imbalanced_partitions(
            ((k, s) for k, (s, _) in states.items()),
            eligible,
            self._settings.per_broker_percentage,
        )
        return [(k, elect_leader(states[k][0], ElectionType.PREFERRED, live)) for k in chosen]
