"""Wake-ups for requests that wait on new data (Kafka's delayed-fetch purgatory, simplified).

A waiting fetch registers one future on every partition it reads; an append to any of them
resolves it (with the append's ``time.perf_counter_ns()``, for the broker's request timings),
and the fetch then reads again. Owned by the broker's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

__all__ = ["AppendWatch"]

TopicPartition = tuple[str, int]


class AppendWatch:
    def __init__(self) -> None:
        self._waiters: dict[TopicPartition, list[asyncio.Future[int]]] = {}

    def watch(self, partitions: Iterable[TopicPartition]) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        for tp in partitions:
            self._waiters.setdefault(tp, []).append(fut)
        return fut

    def unwatch(self, partitions: Iterable[TopicPartition], fut: asyncio.Future[int]) -> None:
        for tp in partitions:
            waiters = self._waiters.get(tp)
            if waiters is None:
                continue
            try:
                waiters.remove(fut)
            except ValueError:
                pass
            if not waiters:
                del self._waiters[tp]

    def notify(self, tp: TopicPartition) -> None:
        waiters = self._waiters.pop(tp, None)
        if waiters:
            now = time.perf_counter_ns()
            for fut in waiters:
                if not fut.done():
                    fut.set_result(now)

    def notify_all(self) -> None:
        for tp in list(self._waiters):
            self.notify(tp)
