"""Keyed deadlines for coordinator state machines, driven by whoever owns the coordinator.

A coordinator schedules work (a session expiry, the end of a rebalance) under a key; scheduling
the same key again replaces the earlier deadline. The owner calls :meth:`Timer.advance` with the
current time — the coordinator runtime from the broker's event loop, tests after moving a manual
clock — and due callbacks run in deadline order, inside that call. Callbacks may schedule or
cancel timers. A callback may return a value (a coordinator's timers return the records to
write): ``advance(now, run=...)`` hands each due callback to ``run``, which calls it and deals
with what it returns.

Owned by one coordinator; not thread-safe.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable

Callback = Callable[[], object]

__all__ = ["Callback", "Timer"]


class Timer:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Hashable]] = []
        # key -> (deadline, sequence, callback); heap entries whose sequence differs are stale.
        self._live: dict[Hashable, tuple[int, int, Callback]] = {}
        self._seq = itertools.count()
        #: Called with the new earliest deadline whenever it may have moved earlier.
        self.on_schedule: Callable[[int], None] | None = None

    def schedule(self, key: Hashable, deadline_ms: int, callback: Callback) -> None:
        """Run ``callback`` once the time reaches ``deadline_ms``, replacing any timer of ``key``."""
        seq = next(self._seq)
        self._live[key] = (deadline_ms, seq, callback)
        heapq.heappush(self._heap, (deadline_ms, seq, key))
        if self.on_schedule is not None and self._heap[0][1] == seq:
            self.on_schedule(deadline_ms)

    def cancel(self, key: Hashable) -> bool:
        """Forget the timer of ``key``; True if there was one."""
        return self._live.pop(key, None) is not None

    def is_scheduled(self, key: Hashable) -> bool:
        return key in self._live

    def deadline(self, key: Hashable) -> int | None:
        entry = self._live.get(key)
        return entry[0] if entry else None

    def next_deadline(self) -> int | None:
        """The earliest live deadline, or None when nothing is scheduled."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def advance(self, now_ms: int, run: Callable[[Callback], object] | None = None) -> int:
        """Run every callback due at ``now_ms``, earliest first (through ``run`` when given);
        returns how many ran."""
        ran = 0
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now_ms:
                return ran
            _, seq, key = heapq.heappop(self._heap)
            _, _, callback = self._live.pop(key)
            if run is None:
                callback()
            else:
                run(callback)
            ran += 1

    def __len__(self) -> int:
        return len(self._live)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            deadline, seq, key = heap[0]
            live = self._live.get(key)
            if live is not None and live[1] == seq:
                return
            heapq.heappop(heap)
