"""Leader and ISR elections: pure functions from a partition's state and the registered brokers
to the partition's next state. The controller (:mod:`odradek.cluster.controller`) applies them;
a broker in controlled shutdown reads :func:`controlled_shutdown_done` to know when to stop.

The rules are Kafka's (``ReplicationControlManager`` and ``PartitionChangeBuilder``), with etcd
revisions standing in for broker epochs:

- **Lost.** A broker is lost to a partition when it is not registered, or registered after the
  partition's state was last written (``written_at``, the key's mod revision): it restarted
  since, and whatever it was then (leader, ISR member, with records it may no longer have) it
  is not now.
- **Leaving.** A broker in controlled shutdown (its registration says ``shutting_down``) is
  live but leaving: it is taken out of ISRs and loses its leaderships, and is never elected.
- **The ISR** loses every lost or leaving member, but never becomes empty: when none would be
  left, one member stays (one still registered if any, preferring the leader), so that the
  partition comes back with it.
- **The leader** stays while it is registered in the same incarnation; a leaving leader hands
  over to the first ISR member (in replica order) that can lead, and keeps leading when there is
  none (it serves until it stops). A partition without a leader, or whose leader is lost, gets
  the first replica, in replica order, that is in the ISR, registered and not leaving. Without
  one it stays at :data:`~odradek.cluster.model.NO_LEADER` with its ISR, unless unclean election
  is allowed (``unclean.leader.election.enable``): then the first registered replica that is not
  leaving leads and the ISR is just it (it may lack acknowledged records).
- **Epochs** (:func:`apply_change`, the one place a next state is built): any change bumps
  ``partition_epoch``. ``leader_epoch`` bumps when the leader changes (to or from
  :data:`~odradek.cluster.model.NO_LEADER` too), when a replica is removed from ``replicas``
  (it must not keep fetching in the old epoch), and when the same broker leads again in a new
  incarnation while the partition has other replicas: a restarted leader may have lost its
  unflushed tail, and a new epoch starting at its log end is what lets followers holding more
  truncate to it (KIP-101). A partition whose only replica restarted keeps its epochs: no other
  copy can diverge from it, so a restart of a single node (or of a broker whose partitions have
  one replica) writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from odradek.cluster.model import NO_LEADER, PartitionState

__all__ = [
    "Brokers",
    "apply_change",
    "reassess",
    "controlled_shutdown_done",
]


@dataclass(frozen=True, slots=True)
class Brokers:
    """The registered brokers as one revision of the store shows them: node id → broker epoch
    (the registration's create revision), and those in controlled shutdown."""

    epochs: Mapping[int, int]
    shutting_down: Collection[int] = frozenset()

    def registered(self, broker: int) -> bool:
        return broker in self.epochs

    def lost(self, broker: int, written_at: int) -> bool:
        """Not registered, or registered after ``written_at`` (a later incarnation)."""
        epoch = self.epochs.get(broker)
        return epoch is None or epoch > written_at

    def leaving(self, broker: int, written_at: int) -> bool:
        """Lost, or in controlled shutdown: out of ISRs and not to be elected."""
        return broker in self.shutting_down or self.lost(broker, written_at)

    def can_lead(self, broker: int) -> bool:
        """May be elected: registered (in any incarnation) and not shutting down."""
        return broker in self.epochs and broker not in self.shutting_down


def apply_change(
    state: PartitionState,
    *,
    isr: Sequence[int] | None = None,
    leader: int | None = None,
    replicas: Sequence[int] | None = None,
    new_leader_incarnation: bool = False,
) -> PartitionState | None:
    """``state`` with the given fields changed and its epochs bumped (module docstring), or None
    when nothing changes. ``new_leader_incarnation``: the leader is the same broker as before
    but registered again since (a restart). Raises ValueError for an empty ISR of a partition
    with replicas, or a leader outside its ISR (unclean election passes an ISR of the leader)."""
    new_replicas = tuple(state.replicas if replicas is None else replicas)
    new_isr = tuple(state.isr if isr is None else isr)
    new_leader = state.leader if leader is None else leader
    if new_replicas and not new_isr:
        raise ValueError(f"an empty ISR for replicas {list(new_replicas)}")
    if new_leader != NO_LEADER and new_leader not in new_isr:
        raise ValueError(f"leader {new_leader} is not in the ISR {list(new_isr)}")
    bump_leader = (
        new_leader != state.leader
        or not set(state.replicas) <= set(new_replicas)
        or (new_leader_incarnation and new_leader != NO_LEADER and len(new_replicas) > 1)
    )
    if not bump_leader and (new_isr, new_replicas) == (state.isr, state.replicas):
        return None
    return replace(
        state,
        replicas=new_replicas,
        isr=new_isr,
        leader=new_leader,
        leader_epoch=state.leader_epoch + (1 if bump_leader else 0),
        partition_epoch=state.partition_epoch + 1,
    )


def reassess(
    state: PartitionState,
    written_at: int,
    brokers: Brokers,
    *,
    unclean: bool = False,
) -> PartitionState | None:
    """The state a partition should have given the registered brokers, or None when it should
    stay as it is. ``written_at`` is the partition key's mod revision; ``unclean`` whether the
    topic allows unclean leader election."""
    isr = tuple(b for b in state.isr if not brokers.leaving(b, written_at))
    if not isr and state.isr:
        # Never an empty ISR: one member stays, preferably one still registered (a leaving one
        # holds everything), and the leader among those.
        candidates = [b for b in state.isr if not brokers.lost(b, written_at)] or list(state.isr)
        isr = (state.leader,) if state.leader in candidates else (candidates[0],)

    leader = state.leader
    if leader != NO_LEADER and brokers.lost(leader, written_at):
        leader = NO_LEADER
    if leader != NO_LEADER and leader in brokers.shutting_down:
        successor = _first(state.replicas, lambda r: r in isr and brokers.can_lead(r))
        if successor != NO_LEADER:
            leader = successor
        elif leader not in isr:  # it keeps leading until it stops, so it stays in sync
            isr = tuple(b for b in state.isr if b in isr or b == leader)
    if leader == NO_LEADER:
        # The member kept in the ISR may be registered again in a new incarnation: it may lead
        # (Kafka), it holds what the ISR held.
        leader = _first(state.replicas, lambda r: r in isr and brokers.can_lead(r))
        if leader == NO_LEADER and unclean:
            leader = _first(state.replicas, brokers.can_lead)
            if leader != NO_LEADER:
                isr = (leader,)
    again = leader == state.leader and leader != NO_LEADER and brokers.lost(leader, written_at)
    return apply_change(state, isr=isr, leader=leader, new_leader_incarnation=again)


def controlled_shutdown_done(
    state: PartitionState, node_id: int, can_lead: Collection[int]
) -> bool:
    """Whether a partition is as controlled shutdown wants it for broker ``node_id``: not its
    leader while another ISR member in ``can_lead`` (registered, not shutting down) could be,
    and not in its ISR unless the last member or its leader."""
    if node_id not in state.replicas:
        return True
    if state.leader == node_id:
        return not any(b != node_id and b in can_lead for b in state.isr)
    return node_id not in state.isr or len(state.isr) == 1


def _first(replicas: Sequence[int], eligible: Callable[[int], bool]) -> int:
    return next((r for r in replicas if eligible(r)), NO_LEADER)
