"""A task of the cluster code cancelled while it ends a helper task of its own ends cancelled.

``helper.cancel()`` then ``with suppress(CancelledError): await helper`` also swallows a
cancellation of the task itself arriving during that await: it then goes on as if nobody had
asked it to stop, and whoever cancelled it and waits for it (a broker stopping) waits for ever.
Each test cancels the task 0..N loop turns into a moment where it ends a helper, and asks that
every trial ends cancelled, within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from odradek.broker.internal_topics import TimerTask
from odradek.clock import ManualClock, SystemClock
from odradek.cluster.controller import Controller, ControllerRunner
from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.membership import ClusterKeys, ControllerElection, Session
from odradek.coordinator.timer import Timer

TURNS = 40


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _failing_turns(trial: Callable[[int], Awaitable[bool]], turns: int = TURNS) -> list[int]:
    """The numbers of turns, of 0..``turns`` - 1, for which ``trial`` failed."""

    async def scenario() -> list[int]:
        return [n for n in range(turns) if not await trial(n)]

    return asyncio.run(scenario())


@contextlib.asynccontextmanager
async def _store_and_session() -> AsyncIterator[tuple[InProcessStore, ClusterKeys, Session]]:
    store = InProcessStore(SystemClock())
    session = await Session.open(store, 30)
    try:
        yield store, ClusterKeys("c"), session
    finally:
        session.abandon()
        await store.close()


async def _controlling_runner(
    store: InProcessStore, keys: ClusterKeys, session: Session,
) -> tuple[ControllerRunner, asyncio.Future[None]]:
    """A runner that has become controller, and its task, once its watch is up."""
    runner = ControllerRunner(store, keys, 1)
    running = asyncio.ensure_future(runner.run(session))
    for _ in range(1000):
        if runner.controller is not None:
            break
        await asyncio.sleep(0)
    assert runner.controller is not None
    await _turns(20)  # its watch is up
    return runner, running


async def _ended_cancelled(task: asyncio.Future[None]) -> bool:
    """Cancel ``task``; whether it then ends cancelled within half a second (a swallowed
    cancellation leaves it running, or ends it without the cancellation)."""
    task.cancel()
    await asyncio.wait((task,), timeout=0.5)
    if not task.done():
        task.cancel()  # a second cancellation, so that the trial cleans up
        await asyncio.wait((task,), timeout=0.5)
        return False
    return task.cancelled()


def test_a_controller_cancelled_while_it_reads_again_after_a_conflict_ends_cancelled() -> None:
    """Controller._follow ends its watch pump after a conflicting write (the controller then
    reads everything again): a cancellation of the controller arriving then (its broker
    stopping) must end it, not let it go on controlling."""

    async def trial(turns: int) -> bool:
        async with _store_and_session() as (store, keys, session):
            election = ControllerElection(store, keys, session, 1)
            await election.campaign()
            controller = Controller(store, keys, election)

            async def conflict() -> bool:  # every write found the store changed
                await asyncio.sleep(0)
                return False

            controller._reconcile = conflict  # type: ignore[method-assign]
            running = asyncio.ensure_future(controller.run())
            await _turns(turns)
            assert not running.done()
            return await _ended_cancelled(running)

    assert _failing_turns(trial) == []


def test_a_runner_cancelled_as_its_controller_is_deposed_ends_cancelled() -> None:
    """The controller's key goes (deposed) and the runner is cancelled a few turns later, while
    the controller ends its lease reaper: the runner must end cancelled, not campaign again
    and serve a new term (ControllerRunner.run then waited for it for ever)."""

    async def trial(turns: int) -> bool:
        async with _store_and_session() as (store, keys, session):
            runner, running = await _controlling_runner(store, keys, session)
            await store.delete(keys.controller)
            await _turns(turns)
            return await _ended_cancelled(running)

    assert _failing_turns(trial) == []


def test_a_runner_cancelled_as_it_ends_its_candidacy_ends_cancelled() -> None:
    """The session is lost and the runner, ending its candidacy, is cancelled meanwhile: it
    ends cancelled (it returned as if only the session had ended)."""

    async def trial(turns: int) -> bool:
        async with _store_and_session() as (store, keys, session):
            runner, running = await _controlling_runner(store, keys, session)
            session.lost.set()
            await _turns(turns)
            if running.done():
                return True  # ended before the cancellation: nothing to check
            return await _ended_cancelled(running)

    assert _failing_turns(trial) == []


def test_a_timer_task_stopped_as_a_timer_is_scheduled_stops() -> None:
    """TimerTask waits for its wake-up with a timeout: a stop arriving just as a timer is
    scheduled (the wake-up set) must end it (asyncio.wait_for of Python 3.11 returned the
    wake-up instead, and the task ran on, and stop() waited for ever)."""

    async def trial(turns: int) -> bool:
        timer = Timer()
        task = TimerTask(timer, ManualClock(), "test timers")
        task.start()
        timer.schedule("far", 10**12, lambda: None)
        await _turns(5)  # waiting for its wake-up, with a timeout (the deadline)
        timer.schedule("near", 10**11, lambda: None)  # sooner: it is woken
        await _turns(turns)
        running = task._task
        assert running is not None
        stopping = asyncio.ensure_future(task.stop())
        await asyncio.wait((stopping,), timeout=0.5)
        if not stopping.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
            return False
        return running.cancelled()

    assert _failing_turns(trial, 8) == []


def test_a_runner_cancelled_again_while_it_stops_still_resigns() -> None:
    """Cancelled, the runner ends its candidacy, then resigns; a second cancellation arriving
    while the candidacy ends (a stop that is itself cancelled) still ends it resigned: the
    controller key goes at once rather than with the session's lease."""

    async def trial(turns: int) -> bool:
        async with _store_and_session() as (store, keys, session):
            runner, running = await _controlling_runner(store, keys, session)
            running.cancel()
            await _turns(turns)
            ended = await _ended_cancelled(running)
            held = (await store.range(keys.controller)).kvs
            return ended and not held and not runner.is_controller

    assert _failing_turns(trial) == []
