"""What one cleaning pass may use: memory (:class:`OffsetMap`, the key -> last offset map of
fixed size that bounds how much of the dirty section one pass covers), I/O
(:class:`Throttler`, ``log.cleaner.io.max.bytes.per.second``) and the processor
(:class:`Pacer`, which steps aside while the event loop or another process wants to run).

Both belong to the thread running one cleaning task (:mod:`odradek.storage.cleaner_task`);
neither is thread-safe. Time comes from an injected :class:`~odradek.clock.Clock` and
waiting happens only through an injected ``sleep`` function.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable

from odradek.clock import Clock

__all__ = ["OffsetMap", "Pacer", "Throttler"]


def _largest_prime_at_most(n: int) -> int:
    def is_prime(k: int) -> bool:
        if k < 4:
            return k >= 2
        if k % 2 == 0:
            return False
        return all(k % d for d in range(3, math.isqrt(k) + 1, 2))

    while n >= 2 and not is_prime(n):
        n -= 1
    return n


class OffsetMap:
    """Key -> last offset in fixed memory (Kafka's SkimpyOffsetMap).

    Open addressing over three flat arrays allocated once: per slot a 128-bit digest of the key
    (two 64-bit words) and the offset, 24 bytes as Kafka counts them; ``memory // 24`` slots,
    rounded down to a prime so double hashing visits every slot. At most ``load_factor`` of the
    slots are used; :meth:`put` refuses a new key beyond that.

    The digest is two SipHash values -- Python's ``hash`` of the key and of the key plus one
    byte -- rather than a cryptographic hash: this interpreter's SipHash is keyed per process
    (``PYTHONHASHSEED``), so digests are stable for the lifetime of one pass, which is all a map
    lives, and cost a fifth of BLAKE2b, which dominated the cleaner's time. Two distinct keys
    with the same 128-bit digest (probability ~2**-128 per pair) would make the cleaner drop a
    record of one of them, as in Kafka.

    Owned by one cleaning task at a time (any thread); not thread-safe.
    """

    HASH_SIZE = 16
    ENTRY_SIZE = HASH_SIZE + 8

    def __init__(self, memory: int, load_factor: float = 0.9) -> None:
        slots = _largest_prime_at_most(memory // self.ENTRY_SIZE)
        if slots < 2:
            raise ValueError(f"an offset map needs at least {2 * self.ENTRY_SIZE} bytes")
        self.slots = slots
        self.max_entries = max(1, int(slots * load_factor))
        self._h1 = array("q", [0]) * slots
        self._h2 = array("q", [0]) * slots
        self._offsets = array("q", [0]) * slots  # offset + 1; 0 marks a free slot
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def utilization(self) -> float:
        return self._size / self.slots

    def clear(self) -> None:
        # Zero only the offsets (a free slot's digest is never compared), in chunks so clearing
        # never allocates a second map's worth of memory.
        view = memoryview(self._offsets).cast("B")
        chunk = bytes(min(len(view), 1 << 20))
        for start in range(0, len(view), len(chunk)):
            end = min(start + len(chunk), len(view))
            view[start:end] = chunk[: end - start]
        view.release()
        self._size = 0

    def _probe(self, i: int, d1: int, d2: int) -> tuple[int, int]:
        """From occupied slot ``i`` (not holding the digest), the slot holding ``(d1, d2)`` or
        the free slot where it would go, with its stored value."""
        slots = self.slots
        step = 1 + d2 % (slots - 1)
        offsets, h1, h2 = self._offsets, self._h1, self._h2
        while True:
            i += step
            if i >= slots:
                i -= slots
            o = offsets[i]
            if o == 0 or (h1[i] == d1 and h2[i] == d2):
                return i, o

    def put(self, key: bytes, offset: int) -> bool:
        """Map ``key`` to ``offset``; False (and no change) when the key is new and the map is
        full."""
        d1 = hash(key)
        d2 = hash(key + b"\x01")
        i = d1 % self.slots
        o = self._offsets[i]
        if o != 0 and (self._h1[i] != d1 or self._h2[i] != d2):
            i, o = self._probe(i, d1, d2)
        if o == 0:
            if self._size >= self.max_entries:
                return False
            self._h1[i] = d1
            self._h2[i] = d2
            self._size += 1
        self._offsets[i] = offset + 1
        return True

    def get(self, key: bytes) -> int:
        """The offset mapped to ``key``; -1 when absent."""
        d1 = hash(key)
        i = d1 % self.slots
        o = self._offsets[i]
        if o == 0:
            return -1
        d2 = hash(key + b"\x01")
        if self._h1[i] != d1 or self._h2[i] != d2:
            i, o = self._probe(i, d1, d2)
        return o - 1


# == throttling ===================================================================================


class Throttler:
    """Token bucket on the cleaner's bytes read plus written (``log.cleaner.io.max.bytes.per.
    second``); the bucket holds one second's worth. Time comes from ``clock.monotonic_ms``; it
    sleeps only through the ``sleep`` function it is given (seconds), else it just reports the
    wait. Owned by the thread running the cleaning task."""

    def __init__(
        self,
        bytes_per_second: float,
        clock: Clock,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.rate = bytes_per_second
        self.clock = clock
        self.sleep = sleep
        self._tokens = bytes_per_second if math.isfinite(bytes_per_second) else 0.0
        self._last_ms = clock.monotonic_ms()
        self.total_wait_s = 0.0

    def acquire(self, n: int) -> float:
        """Take ``n`` bytes; returns the seconds the caller should wait (0 if none). With a sleep
        function it sleeps that long itself."""
        if not math.isfinite(self.rate):
            return 0.0
        now = self.clock.monotonic_ms()
        self._tokens = min(self.rate, self._tokens + (now - self._last_ms) * self.rate / 1000)
        self._last_ms = now
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self.total_wait_s += wait
        if self.sleep is not None:
            self.sleep(wait)
        return wait


# == sharing the processor =======================================================================


class Pacer:
    """Makes a cleaning thread step aside while something else wants to run.

    A pass is pure Python on a worker thread of the broker's process: it competes with the
    event loop for the GIL, which it keeps for whole switch intervals (5 ms) while the loop
    waits to get it back after every socket read or write, and with the client processes for
    the machine's cores. :meth:`tick` is called between small units of work (a batch, a few
    hundred records). Every ``slice_ms`` of wall time it compares the thread's CPU time with
    the wall time that passed: when more than ``contended_above`` of the slice went to waiting
    (for the GIL or for a core), it sleeps -- releasing the GIL -- long enough that the thread
    uses at most ``share`` of the time, and keeps doing so after every slice until ``hold_ms``
    have passed without it being kept waiting (a producer's requests come in bursts: a short
    quiet spell does not mean the loop is done). Without contention the pass runs at full
    speed; on a machine kept busy by other processes it slows down, to ``share`` at worst --
    background work, run in the machine's spare time. (Stepping aside only when the thread
    blocked, i.e. for the GIL alone, left the benchmark's clients short of a core: about 5%
    of produce lost instead of 1-2%.)

    Time comes from the injected clock (``monotonic_ns``) and ``cpu_time`` (seconds of CPU this
    thread used, e.g. ``time.thread_time``); waiting happens only through ``sleep``. Without a
    sleep or CPU-time function it never pauses. Owned by the thread running the task.
    """

    def __init__(
        self,
        clock: Clock,
        sleep: Callable[[float], None] | None,
        cpu_time: Callable[[], float] | None,
        *,
        slice_ms: float,
        share: float,
        hold_ms: float = 50.0,
        contended_above: float = 0.1,
        max_pause_ms: float = 100.0,
    ) -> None:
        self.clock = clock
        self.active = sleep is not None and cpu_time is not None and share < 1.0
        self._sleep = sleep
        self._cpu_time = cpu_time
        self._slice_ns = int(slice_ms * 1_000_000)
        self._pause_per_cpu = (1.0 - share) / share if share > 0 else 0.0
        self._contended_above = contended_above
        self._hold_ns = int(hold_ms * 1_000_000)
        self._polite_until = -1
        self._max_pause_s = max_pause_ms / 1000
        self.pauses = 0
        self.paced_s = 0.0
        self._wall0 = clock.monotonic_ns()
        self._cpu0 = cpu_time() if cpu_time is not None else 0.0

    def tick(self) -> None:
        if not self.active:
            return
        now = self.clock.monotonic_ns()
        elapsed_ns = now - self._wall0
        if elapsed_ns < self._slice_ns:
            return
        assert self._sleep is not None and self._cpu_time is not None
        cpu = self._cpu_time()
        elapsed = elapsed_ns / 1e9
        used = cpu - self._cpu0
        contended = elapsed - used > elapsed * self._contended_above
        if contended:
            self._polite_until = now + self._hold_ns
        if contended or now < self._polite_until:
            pause = min(used * self._pause_per_cpu, self._max_pause_s)
            if pause > 0:
                self._sleep(pause)
                self.pauses += 1
                self.paced_s += pause
            cpu = self._cpu_time()
            now = self.clock.monotonic_ns()
        self._wall0 = now
        self._cpu0 = cpu
