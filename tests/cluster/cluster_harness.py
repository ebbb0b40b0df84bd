"""Helpers of the cluster-metadata tests: starting etcd, a harness that runs one scenario against
either ClusterStore implementation, reading watches."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from odradek.clock import Clock, ManualClock, SystemClock
from odradek.cluster.etcd import EtcdStore
from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.store import ClusterStore, EventType, WatchEvent
from odradek.testing.etcd import EtcdProcess, etcd_binary

T = TypeVar("T")


def start_etcd(tmp: Path) -> Iterator[EtcdProcess]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian's etcd-server; `make system-deps` installs it)")
    process = EtcdProcess(tmp / "etcd")
    process.start()
    try:
        yield process
    finally:
        process.kill()


class Harness:
    """Runs a scenario against one implementation and lets time pass for it: the in-process
    store's manual clock is advanced, etcd's real time elapses."""

    _prefixes = itertools.count()

    def __init__(self, kind: str, etcd: EtcdProcess | None, *, sweep_delay_ms: int = 0) -> None:
        self.kind = kind
        self._sweep_delay_ms = sweep_delay_ms  # in-process: etcd's lag in ending leases
        self.etcd = etcd
        self.clock = ManualClock()
        self._store: InProcessStore | None = None
        self._sleepers: list[tuple[int, asyncio.Future[None]]] = []
        # Keys of each test are under a prefix of their own (the etcd is shared by a module).
        self.prefix = f"/t{next(self._prefixes)}-{id(self):x}/"

    def run(self, scenario: Callable[[ClusterStore], Awaitable[T]], timeout_s: float = 60) -> T:
        async def main() -> T:
            store = self.open()
            try:
                async with asyncio.timeout(timeout_s):
                    return await scenario(store)
            finally:
                await store.close()

        return asyncio.run(main())

    def open(self) -> ClusterStore:
        """A store (call it inside the event loop); for in-process, the same one every time."""
        if self.kind == "inprocess":
            if self._store is None:
                self._store = InProcessStore(self.clock, sweep_delay_ms=self._sweep_delay_ms)
            return _Shared(self._store)
        assert self.etcd is not None
        return EtcdStore([self.etcd.endpoint])

    def now(self) -> float:
        """Seconds on the clock that governs lease expiry."""
        if self.kind == "inprocess":
            return self.clock.monotonic_ms() / 1000
        return asyncio.get_running_loop().time()

    async def pass_time(self, seconds: float) -> None:
        if self.kind != "inprocess":
            await asyncio.sleep(seconds)  # real time passing is what is under test
            return
        assert self._store is not None
        # In steps of at most 100 ms: timers due in a step fire (and their tasks run) before
        # the store ends the leases that are due, as renewals would come first in real time.
        remaining = int(seconds * 1000)
        while True:
            step = min(100, remaining)
            self.clock.advance(step)
            remaining -= step
            now = self.clock.monotonic_ms()
            for deadline, waiter in list(self._sleepers):
                if deadline <= now:
                    self._sleepers.remove((deadline, waiter))
                    if not waiter.done():
                        waiter.set_result(None)
            for _ in range(10):
                await asyncio.sleep(0)
            self._store.maybe_expire_leases()
            await asyncio.sleep(0)
            if remaining <= 0:
                return

    async def sleep(self, seconds: float) -> None:
        """What timers in the code under test wait with: the manual clock for in-process."""
        if self.kind != "inprocess":
            await asyncio.sleep(seconds)
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (self.clock.monotonic_ms() + int(seconds * 1000), waiter)
        self._sleepers.append(entry)
        try:
            await waiter
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    @property
    def session_clock(self) -> Clock:
        return self.clock if self.kind == "inprocess" else SystemClock()

    async def until(self, awaitable: Awaitable[T], max_s: float) -> T:
        """Await ``awaitable`` while time passes, up to ``max_s`` seconds of store time."""
        task = asyncio.ensure_future(awaitable)
        if self.kind != "inprocess":
            return await asyncio.wait_for(task, max_s)
        waited = 0.0
        while not task.done():
            if waited >= max_s:
                task.cancel()
                raise TimeoutError(f"not done after {max_s}s of manual time")
            await self.pass_time(0.1)
            waited += 0.1
        return task.result()


class _Shared:
    """An in-process store handed out more than once: closing one handle leaves it open, as
    closing one EtcdStore leaves etcd running."""

    def __init__(self, store: InProcessStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def close(self) -> None:
        pass


async def next_events(watch: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    """The next ``count`` events of a watch (bound the wait with ``asyncio.timeout`` around it:
    cancelling a pending ``anext`` would end the watch)."""
    return [await anext(watch) for _ in range(count)]


async def next_delete(watch: AsyncIterator[WatchEvent]) -> WatchEvent:
    while True:
        event = await anext(watch)
        if event.type is EventType.DELETE:
            return event
