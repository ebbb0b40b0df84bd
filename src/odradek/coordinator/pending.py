"""A sans-IO promise: a coordinator answers some requests later (a JoinGroup waits for the
rebalance) and hands the caller a :class:`Pending` that it completes when the answer is known.

The broker turns it into an asyncio future; unit tests read :attr:`Pending.value` directly.
Owned by the coordinator's thread; callbacks run synchronously inside :meth:`complete`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Pending"]

T = TypeVar("T")


class Pending(Generic[T]):
    __slots__ = ("_callbacks", "_done", "_value")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[T], None]] = []
        self._done = False
        self._value: T | None = None

    @classmethod
    def completed(cls, value: T) -> Pending[T]:
        p: Pending[T] = cls()
        p.complete(value)
        return p

    @property
    def done(self) -> bool:
        return self._done

    @property
    def value(self) -> T:
        if not self._done:
            raise RuntimeError("not completed yet")
        return self._value  # type: ignore[return-value]

    def complete(self, value: T) -> bool:
        """Set the answer and run the callbacks; False (and nothing happens) if already done."""
        if self._done:
            return False
        self._done = True
        self._value = value
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(value)
        return True

    def on_done(self, callback: Callable[[T], None]) -> None:
        if self._done:
            callback(self._value)  # type: ignore[arg-type]
        else:
            self._callbacks.append(callback)
