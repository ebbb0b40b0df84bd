"""The broker's client connections as a whole: how many it accepts, and when it closes them.

- ``max.connections`` and ``max.connections.per.ip`` (Kafka's names and meaning): a connection
  beyond either is closed right after it is accepted, with one log line. Unset,
  ``max.connections`` is derived from the open-file limit, which :func:`raise_open_file_limit`
  raises to its hard limit at start, as servers do; a quarter of it (at least 256) is kept for
  segment and index files.
- ``connections.max.idle.ms``: a connection with no request and no response for that long is
  closed.
- ``request.timeout.ms``: a connection whose request has been partly received for that long (a
  stalled or trickling frame) is closed. A connection waiting for its own response (a
  long-polling fetch), for its peer to read, or for the memory pool is not stalled.
- A connection quiet for :data:`RELEASE_BUFFER_AFTER_S` gives its receive chunk back, so idle
  connections cost little memory. Once idle and closed connections have let go of
  :data:`TRIM_AFTER_BYTES`, the heap is trimmed (glibc's ``malloc_trim``), as chunks freed among
  live objects would otherwise stay with the process; not for every one, as a trim costs time
  in proportion to the heap.

Deadlines are checked by one periodic sweep over all connections rather than a timer per
connection, so the request path only stores a timestamp per read.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from odradek.config import BrokerConfig

if TYPE_CHECKING:
    from odradek.broker.connection import KafkaConnection

__all__ = [
    "ConnectionLimits",
    "Connections",
    "raise_open_file_limit",
    "default_max_connections",
    "RELEASE_BUFFER_AFTER_S",
    "TRIM_AFTER_BYTES",
]

log = logging.getLogger("odradek.connection")

#: An idle connection keeps its receive chunk this long before giving it back.
RELEASE_BUFFER_AFTER_S = 1.0
#: Trim the heap once idle and closed connections have let go of this much since the last trim.
TRIM_AFTER_BYTES = 64 << 20
_MAX_SWEEP_INTERVAL_S = 1.0
_MIN_SWEEP_INTERVAL_S = 0.005
# Linux refuses a soft limit above fs.nr_open even when the hard limit is "unlimited".
_UNLIMITED_CAP = 1 << 20


def _heap_trimmer() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)`` (returns free heap pages to the system), or a no-op."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0) and None


_trim_heap = _heap_trimmer()


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit now in
    force. Logs a change once (later calls find nothing to change)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return _UNLIMITED_CAP if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, e)
        return soft
    log.info("raised the open-file limit (RLIMIT_NOFILE) from %d to %d", soft, target)
    return target


def default_max_connections(open_file_limit: int) -> int:
    """``max.connections`` when unset: the open-file limit less what files may need."""
    return max(open_file_limit - max(256, open_file_limit // 4), open_file_limit // 2)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    max_connections_per_ip: int
    idle_s: float | None  # None: never close idle connections
    request_timeout_s: float

    @classmethod
    def from_config(cls, config: BrokerConfig, open_file_limit: int) -> ConnectionLimits:
        max_connections = config.max_connections
        if max_connections is None:
            max_connections = default_max_connections(open_file_limit)
        idle_ms = config.connections_max_idle_ms
        return cls(
            max_connections=max_connections,
            max_connections_per_ip=config.max_connections_per_ip,
            idle_s=idle_ms / 1000 if idle_ms >= 0 else None,
            request_timeout_s=config.request_timeout_ms / 1000,
        )

    @property
    def sweep_interval_s(self) -> float:
        """Deadlines are enforced within about a quarter of the shortest one."""
        shortest = min(self.request_timeout_s, self.idle_s or self.request_timeout_s)
        return min(max(shortest / 4, _MIN_SWEEP_INTERVAL_S), _MAX_SWEEP_INTERVAL_S)


class Connections:
    """The open client connections of one broker, counted per IP address.

    Owned by the broker's event loop; connections add and remove themselves
    (:meth:`admit` from ``connection_made``, :meth:`remove` from ``connection_lost``).
    """

    def __init__(self, limits: ConnectionLimits,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """``monotonic`` (seconds) times the connections' idleness and stalled requests: the
        real monotonic clock unless given (the simulation's virtual one, ``odradek.sim``)."""
        self.limits = limits
        self.monotonic = monotonic
        # A dict, not a set: the sweep visits connections in the order they came, not in the
        # order of their addresses (which a simulated run could not replay).
        self._open: dict[KafkaConnection, None] = {}
        self._per_ip: Counter[str] = Counter()
        self._freed = 0  # heap bytes let go by connections since the last trim

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[KafkaConnection]:
        return iter(list(self._open))

    def admit(self, conn: KafkaConnection) -> str | None:
        """Count ``conn`` in, or say why it must be closed."""
        limits = self.limits
        if len(self._open) >= limits.max_connections:
            return f"max.connections={limits.max_connections} reached"
        host = conn.peer_host
        if self._per_ip[host] >= limits.max_connections_per_ip:
            return (f"max.connections.per.ip={limits.max_connections_per_ip} reached for "
                    f"{host or 'this address'}")
        self._open[conn] = None
        self._per_ip[host] += 1
        return None

    def remove(self, conn: KafkaConnection, freed: int = 0) -> None:
        """``conn`` is gone, and ``freed`` bytes of heap with it."""
        self._freed += freed
        if conn in self._open:
            del self._open[conn]
            host = conn.peer_host
            if self._per_ip[host] <= 1:
                del self._per_ip[host]
            else:
                self._per_ip[host] -= 1

    def per_ip(self, host: str) -> int:
        return self._per_ip[host]

    def close_all(self) -> None:
        for conn in list(self._open):
            conn.close()

    def sweep(self, now: float) -> None:
        """Close idle and stalled connections; take receive chunks back from quiet ones."""
        limits = self.limits
        idle_s, stall_s = limits.idle_s, limits.request_timeout_s
        for conn in list(self._open):
            if conn.awaiting_response or conn.waiting_for_memory:
                continue
            if conn.partial_since and not conn.write_paused:
                stalled = now - conn.partial_since
                if stalled > stall_s:
                    conn.close(
                        f"a request has been partly received for {stalled * 1000:.0f} ms "
                        f"(request.timeout.ms={stall_s * 1000:.0f})",
                        logging.WARNING,
                    )
                continue
            quiet = now - conn.active_at
            if idle_s is not None and quiet > idle_s:
                conn.close(
                    f"idle for {quiet * 1000:.0f} ms "
                    f"(connections.max.idle.ms={idle_s * 1000:.0f})",
                    logging.INFO,
                )
            elif quiet > RELEASE_BUFFER_AFTER_S:
                self._freed += conn.release_idle_buffer()
        if self._freed >= TRIM_AFTER_BYTES:
            _trim_heap()
            self._freed = 0

    async def sweep_forever(self) -> None:
        interval = self.limits.sweep_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep(self.monotonic())
            except Exception:
                log.exception("connection sweep failed")
