"""Elections as pure functions (cluster/election.py): the table of Kafka's rules, the epochs
each change bumps, what controlled shutdown waits for, and properties over random states."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.cluster.election import Brokers, apply_change, controlled_shutdown_done, reassess
from odradek.cluster.model import NO_LEADER, PartitionState

WRITTEN_AT = 10  # the partition state's mod revision; brokers registered later are new


def _ps(replicas: tuple[int, ...], isr: tuple[int, ...], leader: int, le: int = 0, pe: int = 0):
    return PartitionState(replicas, isr, leader, le, pe)


def _brokers(*live: int, new: tuple[int, ...] = (), down: tuple[int, ...] = ()) -> Brokers:
    """``live`` registered before the state was written, ``new`` after (restarted), ``down``
    in controlled shutdown (among the live)."""
    epochs = {b: 1 for b in live} | {b: WRITTEN_AT + 5 for b in new}
    return Brokers(epochs, frozenset(down))


@pytest.mark.parametrize(
    ("state", "brokers", "unclean", "expected"),
    [
        # Everyone in place: nothing to write.
        (_ps((1, 2, 3), (1, 2, 3), 1), _brokers(1, 2, 3), False, None),
        # A follower restarted: out of the ISR (it may lack what it acknowledged), leader epoch
        # kept (the leader did not change).
        (_ps((1, 2, 3), (1, 2, 3), 1, 4, 6), _brokers(1, 3, new=(2,)), False,
         _ps((1, 2, 3), (1, 3), 1, 4, 7)),
        # The leader gone: the next ISR member in replica order (not ISR order) leads.
        (_ps((1, 2, 3), (1, 3, 2), 1), _brokers(2, 3), False, _ps((1, 2, 3), (3, 2), 2, 1, 1)),
        # The leader and the other ISR member gone: leaderless; the last member kept is the
        # leader, so the partition comes back with the broker that has everything.
        (_ps((1, 2, 3), (1, 2), 1), _brokers(3), False, _ps((1, 2, 3), (1,), NO_LEADER, 1, 1)),
        # ... and an out-of-sync replica leads only with unclean election, alone in the ISR.
        (_ps((1, 2, 3), (1, 2), 1), _brokers(3), True, _ps((1, 2, 3), (3,), 3, 1, 1)),
        # The kept member returns (a new incarnation): it leads again, in a new epoch since
        # other replicas may hold records it lost.
        (_ps((1, 2, 3), (1,), NO_LEADER, 1, 1), _brokers(2, 3, new=(1,)), False,
         _ps((1, 2, 3), (1,), 1, 2, 2)),
        # A single replica restarted: nothing can diverge from it, no write at all.
        (_ps((4,), (4,), 4, 2, 2), _brokers(new=(4,)), False, None),
        # Controlled shutdown of a leader: another ISR member takes over, it leaves the ISR.
        (_ps((1, 2, 3), (1, 2, 3), 1), _brokers(1, 2, 3, down=(1,)), False,
         _ps((1, 2, 3), (2, 3), 2, 1, 1)),
        # ... of a follower: it leaves the ISR, the leader epoch stays.
        (_ps((1, 2, 3), (1, 2, 3), 1), _brokers(1, 2, 3, down=(3,)), False,
         _ps((1, 2, 3), (1, 2), 1, 0, 1)),
        # ... of the only ISR member: it keeps leading (and its ISR) until it stops.
        (_ps((1, 2, 3), (1,), 1), _brokers(1, 2, 3, down=(1,)), False, None),
        # ... of a broker whose partition is leaderless: it is never elected.
        (_ps((1, 2), (1,), NO_LEADER, 3, 3), _brokers(1, 2, down=(1,)), False, None),
        # Two brokers shutting down at once: the one left leads.
        (_ps((1, 2, 3), (1, 2, 3), 2), _brokers(1, 2, 3, down=(1, 2)), False,
         _ps((1, 2, 3), (3,), 3, 1, 1)),
        # A shutting-down broker is not an unclean candidate either.
        (_ps((1, 2, 3), (1,), 1), _brokers(2, 3, down=(2,)), True,
         _ps((1, 2, 3), (3,), 3, 1, 1)),
    ],
)
def test_reassess(
    state: PartitionState, brokers: Brokers, unclean: bool, expected: PartitionState | None
) -> None:
    assert reassess(state, WRITTEN_AT, brokers, unclean=unclean) == expected


def test_apply_change_bumps_epochs_as_kafka() -> None:
    state = _ps((1, 2, 3), (1, 2, 3), 1, 5, 9)
    assert apply_change(state) is None
    assert apply_change(state, isr=(1, 2, 3), leader=1) is None
    # ISR only: the partition epoch.
    assert apply_change(state, isr=(1, 2)) == _ps((1, 2, 3), (1, 2), 1, 5, 10)
    # A new leader: both.
    assert apply_change(state, leader=2) == _ps((1, 2, 3), (1, 2, 3), 2, 6, 10)
    # A replica removed (reassignment): both, so the removed replica is fenced.
    assert apply_change(state, replicas=(1, 2), isr=(1, 2)) == _ps((1, 2), (1, 2), 1, 6, 10)
    # A replica added: the partition epoch only.
    assert apply_change(state, replicas=(1, 2, 3, 4)) == _ps((1, 2, 3, 4), (1, 2, 3), 1, 5, 10)
    # The same leader in a new incarnation: a new leader epoch, unless it is the only replica.
    assert apply_change(state, new_leader_incarnation=True) == _ps((1, 2, 3), (1, 2, 3), 1, 6, 10)
    assert apply_change(_ps((1,), (1,), 1, 5, 9), new_leader_incarnation=True) is None
    with pytest.raises(ValueError, match="empty ISR"):
        apply_change(state, isr=())
    with pytest.raises(ValueError, match="not in the ISR"):
        apply_change(state, isr=(2, 3))


@pytest.mark.parametrize(
    ("state", "done"),
    [
        (_ps((1, 2, 3), (1, 2, 3), 1), False),  # leads, others could
        (_ps((1, 2, 3), (2, 3), 2), True),  # handed over and out of the ISR
        (_ps((2, 1, 3), (2, 1, 3), 2), False),  # a follower still in the ISR
        (_ps((2, 1), (1,), NO_LEADER), True),  # the last member: stays
        (_ps((1, 3), (1, 3), 1), True),  # leads, but 3 cannot lead (shutting down too)
        (_ps((2, 3), (2, 3), 2), True),  # not a replica
    ],
)
def test_controlled_shutdown_done(state: PartitionState, done: bool) -> None:
    assert controlled_shutdown_done(state, 1, can_lead={2, 4}) is done


_node = st.integers(1, 5)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[PartitionState, Brokers, bool]:
    replicas = tuple(draw(st.lists(_node, min_size=1, max_size=4, unique=True)))
    isr = tuple(draw(st.lists(st.sampled_from(replicas), min_size=1, unique=True)))
    leader = draw(st.sampled_from((*isr, NO_LEADER)))
    state = _ps(replicas, isr, leader, draw(st.integers(0, 5)), draw(st.integers(0, 5)))
    epochs = draw(st.dictionaries(_node, st.integers(1, 2 * WRITTEN_AT)))
    down = draw(st.sets(st.sampled_from(sorted(epochs)))) if epochs else set()
    return state, Brokers(epochs, frozenset(down)), draw(st.booleans())


@given(_cases())
def test_reassess_properties(case: tuple[PartitionState, Brokers, bool]) -> None:
    state, brokers, unclean = case
    new = reassess(state, WRITTEN_AT, brokers, unclean=unclean)
    if new is None:
        return
    assert new.replicas == state.replicas
    assert new.isr and set(new.isr) <= set(state.replicas)  # never an empty ISR
    assert new.leader == NO_LEADER or new.leader in new.isr
    if new.leader != state.leader and new.leader != NO_LEADER:
        # A new leader is registered and not shutting down, and was in sync unless unclean.
        assert brokers.can_lead(new.leader)
        assert new.leader in state.isr or (unclean and new.isr == (new.leader,))
    if not unclean:
        assert set(new.isr) <= set(state.isr)  # only an unclean election adds to the ISR
    assert new.partition_epoch == state.partition_epoch + 1
    assert new.leader_epoch in (state.leader_epoch, state.leader_epoch + 1)
    assert (new.leader_epoch > state.leader_epoch) >= (new.leader != state.leader)
    # Written now (every registration is older than the write): a fixed point.
    now = Brokers({b: 1 for b in brokers.epochs}, brokers.shutting_down)
    assert reassess(new, WRITTEN_AT, now, unclean=unclean) is None
