"""The request memory pool on its own: reservations against a bound, waiters served in order."""

from __future__ import annotations

import resource

from odradek.broker.connection_limits import (
    ConnectionLimits,
    default_max_connections,
    raise_open_file_limit,
)
from odradek.broker.memory_pool import RequestMemoryPool
from odradek.broker.runner import local_config


class Waiter:
    def __init__(self, log: list[tuple[str, int]], name: str) -> None:
        self.log, self.name = log, name

    def pool_granted(self, nbytes: int) -> None:
        self.log.append((self.name, nbytes))


def test_waiters_are_granted_in_order_as_memory_is_released() -> None:
    pool = RequestMemoryPool(100)
    granted: list[tuple[str, int]] = []
    a, b, c = Waiter(granted, "a"), Waiter(granted, "b"), Waiter(granted, "c")
    assert pool.try_reserve(60)
    assert not pool.try_reserve(50)
    pool.wait(b, 50)
    assert not pool.try_reserve(10)  # fits, but b came first
    pool.wait(c, 10)
    assert (pool.reserved, pool.waiting, granted) == (60, 2, [])
    pool.release(60)
    assert granted == [("b", 50), ("c", 10)] and pool.reserved == 60
    # A reservation larger than the bound is granted when nothing else is reserved.
    pool.wait(a, 500)
    pool.release(50)
    assert pool.waiting == 1
    pool.release(10)
    assert granted[-1] == ("a", 500) and pool.reserved == 500


def test_a_cancelled_waiter_lets_the_next_one_through() -> None:
    pool = RequestMemoryPool(100)
    granted: list[tuple[str, int]] = []
    big, small = Waiter(granted, "big"), Waiter(granted, "small")
    assert pool.try_reserve(50)
    pool.wait(big, 80)
    pool.wait(small, 20)
    pool.cancel(big)
    assert granted == [("small", 20)] and pool.reserved == 70


def test_unbounded_pool_never_waits() -> None:
    pool = RequestMemoryPool(-1)
    assert pool.try_reserve(1 << 40) and pool.try_reserve(1 << 40)


def test_connection_limits_from_the_open_file_limit() -> None:
    soft = raise_open_file_limit()
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert raise_open_file_limit() == soft
    assert default_max_connections(20000) == 15000
    assert default_max_connections(1024) == 768
    limits = ConnectionLimits.from_config(local_config("/tmp/unused"), 20000)
    assert (limits.max_connections, limits.idle_s, limits.request_timeout_s) == (15000, 600, 30)
    limits = ConnectionLimits.from_config(
        local_config("/tmp/unused", max_connections="7", connections_max_idle_ms="-1"), 20000
    )
    assert (limits.max_connections, limits.idle_s) == (7, None)
