"""The memory of requests in flight, bounded across all connections (``queued.max.request.bytes``).

A connection reserves a frame's full size (as its size prefix claims it) once the prefix has
arrived and before it reads the rest, and gives the reservation back when the request has been
answered. A reservation that does not fit waits, with its connection's reading paused, until
enough is released; waiters are served in the order they came. When nothing is reserved, any
one reservation is granted whatever its size, so a request as large as
``socket.request.max.bytes`` can always proceed even under a smaller bound.

No deadlock: a holder is either receiving its frame (it needs only its peer) or being answered,
never waiting for another reservation. A peer that claims a large frame and never sends it holds
its reservation (but no memory: buffers follow the bytes received, see
:mod:`odradek.protocol.framing`) until ``request.timeout.ms`` closes its connection.

Frames that arrive whole in one read never reserve: their bytes are already in the connection's
receive chunk, whose size is bounded per connection.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["RequestMemoryPool", "PoolWaiter"]


class PoolWaiter(Protocol):
    def pool_granted(self, nbytes: int) -> None:
        """The reservation this waiter asked for is now its own."""


class RequestMemoryPool:
    """Byte reservations against one bound; ``limit <= 0`` means unbounded.

    Owned by the broker's event loop; not thread-safe.
    """

    __slots__ = ("limit", "reserved", "_waiters")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0
        self._waiters: dict[PoolWaiter, int] = {}  # in arrival order

    @property
    def waiting(self) -> int:
        """How many connections have stopped reading until memory is released."""
        return len(self._waiters)

    def try_reserve(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` now if they fit and nobody is waiting ahead."""
        if self._waiters or not self._fits(nbytes):
            return False
        self.reserved += nbytes
        return True

    def wait(self, waiter: PoolWaiter, nbytes: int) -> None:
        """Queue ``waiter`` for ``nbytes``; its :meth:`~PoolWaiter.pool_granted` is called once
        they are reserved for it."""
        self._waiters[waiter] = nbytes
        self._grant()

    def cancel(self, waiter: PoolWaiter) -> None:
        if self._waiters.pop(waiter, None) is not None:
            self._grant()

    def release(self, nbytes: int) -> None:
        self.reserved -= nbytes
        self._grant()

    def _fits(self, nbytes: int) -> bool:
        return self.limit <= 0 or self.reserved == 0 or self.reserved + nbytes <= self.limit

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter, nbytes = next(iter(waiters.items()))
            if not self._fits(nbytes):
                return
            del waiters[waiter]
            self.reserved += nbytes
            waiter.pool_granted(nbytes)
