"""The leader's log of refused ISR changes: a refusal repeated at every follower fetch (a
follower's broker epoch stale for seconds) is logged once per interval, news at once."""

from __future__ import annotations

from odradek.broker.replica_manager import RepeatedRefusals

TP = ("t", 0)
STALE = "ISR expand to [1, 2] refused: some of [1, 2] are not registered under their epochs"


def test_a_repeated_refusal_is_logged_once_per_interval() -> None:
    refusals = RepeatedRefusals(30_000)
    assert refusals.first(TP, STALE, 0)
    assert not any(refusals.first(TP, STALE, now) for now in range(100, 30_000, 100))
    assert refusals.first(TP, STALE, 30_000)
    assert not refusals.first(TP, STALE, 30_100)


def test_another_refusal_another_partition_or_an_isr_change_in_between_is_news() -> None:
    refusals = RepeatedRefusals(30_000)
    assert refusals.first(TP, STALE, 0)
    assert refusals.first(("t", 1), STALE, 10)
    other = "ISR expand to [1, 3] refused: some of [1, 3] are not registered under their epochs"
    assert refusals.first(TP, other, 20)
    assert refusals.first(TP, STALE, 30)
    refusals.forget(TP)
    assert refusals.first(TP, STALE, 40)
