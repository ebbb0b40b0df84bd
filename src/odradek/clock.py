"""Clocks: the only place storage (and the broker) may learn the time.

Core code never calls ``time`` directly; it takes a :class:`Clock` or a ``now_ms`` argument, so
tests can drive time with :class:`ManualClock`.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "ManualClock"]


class Clock(Protocol):
    """Source of time. ``milliseconds`` is wall-clock (timestamps, retention); ``monotonic_ms``
    and ``monotonic_ns`` (the same clock, finer) never go backwards (intervals, timeouts)."""

    def milliseconds(self) -> int: ...

    def monotonic_ms(self) -> int: ...

    def monotonic_ns(self) -> int: ...


class SystemClock:
    """The real clock. Stateless; any thread may use it."""

    def milliseconds(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class ManualClock:
    """A clock that moves only when told to. Owned by the test that creates it; both readings
    advance together."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms
        self._mono = 0

    def milliseconds(self) -> int:
        return self._now

    def monotonic_ms(self) -> int:
        return self._mono

    def monotonic_ns(self) -> int:
        return self._mono * 1_000_000

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a manual clock only moves forwards")
        self._now += ms
        self._mono += ms

    def set(self, now_ms: int) -> None:
        """Set the wall-clock reading (may go backwards, like a real wall clock)."""
        self._now = now_ms
